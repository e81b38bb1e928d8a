// Package experiment runs the one-command experiment researchers (and the
// people who judge the system) use: build a training dataset from one
// folder of device captures and a test dataset from another, train a model
// on the first, and say per test capture which device it recorded.
package experiment

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/homemole/homemole/pipeline/build"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
)

// Config is one experiment.
type Config struct {
	TrainDir, TestDir string // folders of device folders (IoT Sentinel layout)
	View              string // lan, napt or vpn
	Cipher            gateway.Cipher
	Kind              string // schemas.KindInd or schemas.KindNoise
	Window            int
	Spec              train.Spec
	// SaveAs stores the trained model as models/SaveAs/ when set, with an
	// unknown-device threshold cross-validated over the training captures
	// in CalibrationFolds folds (0: train.CalibrationFolds).
	SaveAs           string
	CalibrationFolds int
	// Pool gives every packet of an ind window the class its packets
	// jointly find likeliest (see train.PredictPooled).
	Pool bool
	// Families are the vendor families learned from a cross-validation of
	// the training captures (cv.json). When nil and SaveAs is set, the
	// families the saved model learned from its calibration folds score
	// the test captures instead; nil without SaveAs: no family output.
	Families [][]string
	// WorkDir holds the emulated WAN captures of the napt and vpn views.
	WorkDir string
	Bus     *bus.Conn
	Store   store.Store
	Log     *slog.Logger
}

// Session is one test capture and the device its packets voted for.
type Session struct {
	File      string  `json:"file"`
	True      string  `json:"true"`
	Predicted string  `json:"predicted"`
	Packets   int     `json:"packets"` // device packets scored
	Share     float64 `json:"share"`   // of them, the share predicted as Predicted
	// Family is Predicted's vendor family (Config.Families), or Predicted
	// itself outside any; Confidence the share of the packets predicted as
	// a member of it, what the model is sure of when it cannot tell the
	// members apart.
	Family     string  `json:"family,omitempty"`
	Confidence float64 `json:"confidence,omitempty"`
	// Unknown: the saved model's open-set rule calls the capture's device
	// unknown (only with SaveAs).
	Unknown bool `json:"unknown,omitempty"`
}

// OpenSet counts the test captures the saved model's open-set rule calls
// unknown: of devices it was trained on (each a false unknown) and of
// devices it never saw (each right). The rule was taken on the training
// captures alone. A capture's host is its device's packets as the dataset
// labels them (every packet to or from its MAC); predict gives a packet
// between two LAN hosts to its sender, so where devices talk to each
// other its hosts can score otherwise.
type OpenSet struct {
	Known        int `json:"known"`
	KnownUnknown int `json:"known_called_unknown"`
	New          int `json:"new"`
	NewUnknown   int `json:"new_called_unknown"`
}

// Result is the experiment's JSON summary.
type Result struct {
	Model  string `json:"model"`
	View   string `json:"view"`
	Kind   string `json:"kind"`
	Window int    `json:"window"`
	Epochs int    `json:"epochs,omitempty"`
	Seed   int64  `json:"seed"`
	// OverallAccuracy is per packet, over the packets of inventory devices.
	OverallAccuracy float64            `json:"overall_accuracy"`
	PerDevice       map[string]float64 `json:"per_device"`
	MacroF1         float64            `json:"macro_f1"`
	// SessionAccuracy is the share of test captures whose packets' majority
	// label is their device; SessionAccuracyTypes counts identical hardware
	// (evaluate.TypeOf) as one device.
	SessionAccuracy      float64 `json:"session_accuracy"`
	SessionAccuracyTypes float64 `json:"session_accuracy_types"`
	// SessionAccuracyFamilies counts a prediction in the truth's family as
	// right; only with Families, which are Config.Families or those the
	// saved model learned (both from the training captures alone).
	SessionAccuracyFamilies float64    `json:"session_accuracy_families,omitempty"`
	Families                [][]string `json:"families,omitempty"`
	// ServerFamilies are the training types that reach one vendor's servers
	// (evaluate.ServerFamilies; lan and napt views, whose observer sees the
	// servers), joined into Families. SessionAccuracyConfusionFamilies
	// scores the families of the model's confusions alone, without them.
	ServerFamilies                   [][]string `json:"server_families,omitempty"`
	SessionAccuracyConfusionFamilies float64    `json:"session_accuracy_confusion_families,omitempty"`
	// OpenSet is the saved model's open-set rule on the test captures;
	// nil without SaveAs.
	OpenSet  *OpenSet  `json:"open_set,omitempty"`
	Sessions []Session `json:"sessions"`
	// Unscored are test captures without a packet of their device in the
	// chosen view (nothing to vote with); they count as wrong above.
	Unscored      []string `json:"unscored,omitempty"`
	TrainWindows  int      `json:"train_windows"`
	TestWindows   int      `json:"test_windows"`
	TrainSessions int      `json:"train_sessions"`
	TestSessions  int      `json:"test_sessions"`
	TrainSeconds  float64  `json:"train_seconds"`
	Seconds       float64  `json:"seconds"`

	// Report is the full evaluation (confusion matrix, training curve) for
	// the HTML report; not part of the JSON summary.
	Report *evaluate.Report `json:"-"`
}

// JSON is the summary as written to --json.
func (r *Result) JSON() ([]byte, error) { return json.MarshalIndent(r, "", "  ") }

// Run builds both datasets, trains, evaluates and summarises.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	start := time.Now()
	if err := cfg.Spec.Check(); err != nil {
		return nil, err
	}
	trainC, err := campaign.FromDeviceDirs(cfg.TrainDir, "exp-train")
	if err != nil {
		return nil, fmt.Errorf("training captures: %w", err)
	}
	testC, err := campaign.FromDeviceDirs(cfg.TestDir, "exp-test")
	if err != nil {
		return nil, fmt.Errorf("test captures: %w", err)
	}
	// The test dataset labels with the training vocabulary, so that label
	// indices mean the same device on both sides; test-only devices come
	// after it (the model can never name them: their captures count as
	// misses, which is the truth).
	labels := build.LabelsOf(trainC)
	numClasses := len(labels) // the model's classes: the training devices
	for _, l := range build.LabelsOf(testC) {
		if !slices.Contains(labels, l) {
			labels = append(labels, l)
		}
	}
	version := fmt.Sprintf("%d", time.Now().UnixNano())
	trainM, err := cfg.buildDataset(ctx, trainC, "exp-train", version, labels)
	if err != nil {
		return nil, fmt.Errorf("build the training dataset: %w", err)
	}
	testM, err := cfg.buildDataset(ctx, testC, "exp-test", version, labels)
	if err != nil {
		return nil, fmt.Errorf("build the test dataset: %w", err)
	}
	trainW, err := dataset.Windows(ctx, cfg.Store, trainM, nil)
	if err != nil {
		return nil, err
	}
	testW, err := dataset.Windows(ctx, cfg.Store, testM, nil)
	if err != nil {
		return nil, err
	}
	if len(trainW) == 0 || len(testW) == 0 {
		return nil, fmt.Errorf("%d training and %d test windows: both folders need captures with packets of their devices in the %s view", len(trainW), len(testW), cfg.View)
	}
	// Training windows only carry training labels; test windows of
	// test-only devices keep theirs for scoring.
	cfg.Log.Info("datasets built", "train_windows", len(trainW), "test_windows", len(testW), "devices", numClasses)

	// The lan and napt views show the servers each device reaches, and
	// types that share a vendor's servers are one family beside those the
	// model confuses; the vpn view hides them.
	var serverFams [][]string
	if cfg.View == "lan" || cfg.View == "napt" {
		devs, err := realhome.DevicesOf(trainC, cfg.TrainDir)
		if err != nil {
			return nil, err
		}
		servers, err := realhome.Servers(ctx, devs)
		if err != nil {
			return nil, fmt.Errorf("training captures: %w", err)
		}
		serverFams = evaluate.ServerFamilies(servers)
		cfg.Log.Info("server families", "families", evaluate.FamilyList(serverFams))
	}

	res := &Result{Model: cfg.Spec.Name, View: cfg.View, Kind: cfg.Kind, Window: cfg.Window, Seed: cfg.Spec.Learn.Seed,
		TrainWindows: len(trainW), TestWindows: len(testW), TrainSessions: len(trainM.Groups), TestSessions: len(testM.Groups)}
	e := &train.Evaluation{
		Spec: cfg.Spec, Train: trainW, Test: testW, Labels: labels, NumClasses: numClasses,
		Report: evaluate.Report{Run: "experiment", Dataset: cfg.TrainDir + " -> " + cfg.TestDir,
			Split: fmt.Sprintf("trained on %s (%d captures), tested on %s (%d captures)", cfg.TrainDir, len(trainM.Groups), cfg.TestDir, len(testM.Groups))},
		// The test folder may hold devices the model never saw, so the
		// unknown-device threshold comes from the training captures alone.
		SaveAs: cfg.SaveAs, Calibration: train.CalibrateOnTrain, CalibrationFolds: cfg.CalibrationFolds,
		Meta: train.Meta{Window: cfg.Window, View: cfg.View, Kind: cfg.Kind, Dataset: cfg.TrainDir},
		Pool: cfg.Pool && cfg.Kind == schemas.KindInd, Store: cfg.Store, Log: cfg.Log,
		// One vote per test capture, whatever streams its windows came from.
		VoteBy:         func(w *schemas.Window, _ int) string { return w.Group },
		ServerFamilies: serverFams,
	}
	out, err := train.Evaluate(ctx, e)
	if err != nil {
		return nil, err
	}
	if cfg.Spec.Name != "rf" {
		res.Epochs = cfg.Spec.Learn.Epochs
	}
	res.TrainSeconds = out.Report.TrainSeconds
	res.Report = out.Report
	res.ServerFamilies = serverFams
	confusion := cfg.Families
	if cfg.Families != nil {
		res.Families = append([][]string{}, evaluate.MergeFamilies(cfg.Families, serverFams)...)
	} else {
		confusion, res.Families = out.ConfusionFamilies, out.Families
	}
	files := sessionFiles(testC, cfg.TestDir)
	res.summarize(files, res.Families, confusion)
	res.openSet(out.TestHosts, numClasses, files)
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// buildDataset runs the real pipeline (capture agents, labeler, windower,
// manifest) over one folder.
func (cfg *Config) buildDataset(ctx context.Context, c *campaign.Campaign, name, version string, labels []string) (*dataset.Manifest, error) {
	spec := window.Spec{Dataset: name, Version: version, Kind: cfg.Kind, Size: cfg.Window, Labels: labels, Views: []string{cfg.View}}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if cfg.View != "lan" {
		mode, err := gateway.ParseMode(cfg.View)
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(cfg.WorkDir, "emulated", name, version)
		if err := build.EmulateWAN(ctx, c, mode, gateway.Config{Cipher: cfg.Cipher}, dir); err != nil {
			return nil, err
		}
	}
	res, err := (&build.Build{Campaign: c, Spec: spec, Bus: cfg.Bus, Store: cfg.Store, Log: cfg.Log}).Run(ctx)
	if err != nil {
		return nil, err
	}
	return res.Manifest, nil
}

// sessionFiles maps each capture's group (home and session, whatever the
// tap) to its path relative to the folder, as the summary names it.
func sessionFiles(c *campaign.Campaign, dir string) map[string]string {
	out := map[string]string{}
	for _, h := range c.Homes {
		for _, t := range h.Taps {
			if t.Name != "lan" {
				continue
			}
			for _, f := range t.Files {
				rel, err := filepath.Rel(dir, f)
				if err != nil {
					rel = f
				}
				out[window.GroupOf(h.Name, campaign.SessionName(t.Name, f))] = rel
			}
		}
	}
	return out
}

// summarize fills the per-packet figures from the report and, per test
// capture, the device its packets voted for (the report's session votes,
// over the packets of an inventory device).
func (r *Result) summarize(files map[string]string, fams, confusionFams [][]string) {
	var families map[string]string
	if fams != nil {
		families = evaluate.FamilyOf(fams)
	}
	conf := r.Report.Confusion
	r.OverallAccuracy = conf.Accuracy()
	r.MacroF1 = conf.MacroF1()
	r.PerDevice = map[string]float64{}
	for _, pc := range conf.PerClass() {
		r.PerDevice[pc.Device] = pc.Accuracy
	}
	byGroup := map[string]evaluate.SessionVote{}
	for _, v := range r.Report.Sessions {
		byGroup[v.Group] = v
	}
	groups := make([]string, 0, len(files))
	for g := range files {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	var scored []evaluate.SessionVote
	for _, g := range groups {
		v, ok := byGroup[g]
		if !ok {
			r.Unscored = append(r.Unscored, files[g])
			continue
		}
		scored = append(scored, v)
		sess := Session{File: files[g], True: v.Truth, Predicted: v.Predicted, Packets: v.Packets, Share: v.Share}
		if families != nil {
			sess.Family, sess.Confidence = v.Family(families)
		}
		r.Sessions = append(r.Sessions, sess)
	}
	if n := len(groups); n > 0 {
		// Unscored captures count as wrong: scale the scored ones' shares.
		scale := float64(len(scored)) / float64(n)
		d, t := evaluate.SessionAccuracy(scored)
		r.SessionAccuracy, r.SessionAccuracyTypes = d*scale, t*scale
		if families != nil {
			r.SessionAccuracyFamilies = evaluate.FamilyAccuracy(scored, families) * scale
			if len(r.ServerFamilies) > 0 {
				r.SessionAccuracyConfusionFamilies = evaluate.FamilyAccuracy(scored, evaluate.FamilyOf(confusionFams)) * scale
			}
		}
	}
}

// openSet marks the sessions whose device the saved model's rule calls
// unknown (hosts, from train.Evaluate) and counts them; devices from
// numClasses on are those only the test captures hold; files name each
// session's capture.
func (r *Result) openSet(hosts []train.HostScore, numClasses int, files map[string]string) {
	if hosts == nil {
		return
	}
	r.OpenSet = &OpenSet{}
	unknown := map[string]bool{}
	for _, h := range hosts {
		if int(h.Device) < numClasses {
			r.OpenSet.Known++
			if h.Unknown {
				r.OpenSet.KnownUnknown++
			}
		} else {
			r.OpenSet.New++
			if h.Unknown {
				r.OpenSet.NewUnknown++
			}
		}
		if h.Unknown {
			unknown[files[h.Session]] = true
		}
	}
	for i, s := range r.Sessions {
		r.Sessions[i].Unknown = unknown[s.File]
	}
}

// Study is the window-size study of the paper's Figure 8: one folder of
// device captures, one dataset per window size, each cross-validated.
type Study struct {
	Dir      string
	View     string
	Cipher   gateway.Cipher
	Kind     string
	Spec     train.Spec
	Windows  []int
	Folds    int
	Parallel int
	Seed     uint64
	WorkDir  string
	Bus      *bus.Conn
	Store    store.Store
	Log      *slog.Logger
}

// StudyPoint is one window size's cross-validation.
type StudyPoint struct {
	Window int             `json:"window"`
	CV     *train.CVResult `json:"cv"`
}

// Run builds and cross-validates every window size and renders the curve.
func (s *Study) Run(ctx context.Context) ([]StudyPoint, []byte, error) {
	version := strconv.FormatInt(time.Now().UnixNano(), 10)
	var out []StudyPoint
	for _, n := range s.Windows {
		// A fresh campaign per size: building a WAN view adds its tap.
		c, err := campaign.FromDeviceDirs(s.Dir, "study")
		if err != nil {
			return nil, nil, err
		}
		cfg := &Config{View: s.View, Cipher: s.Cipher, Kind: s.Kind, Window: n, WorkDir: s.WorkDir, Bus: s.Bus, Store: s.Store, Log: s.Log}
		name := fmt.Sprintf("study-w%d", n)
		if _, err := cfg.buildDataset(ctx, c, name, version, build.LabelsOf(c)); err != nil {
			return nil, nil, fmt.Errorf("window %d: %w", n, err)
		}
		cv := &train.CrossValidation{Store: s.Store, Dataset: name, Version: version, RunName: name + "-" + version, Spec: s.Spec,
			Folds: s.Folds, Mode: train.CVGrouped, Seed: s.Seed, Parallel: s.Parallel, Log: s.Log}
		res, _, err := cv.Run(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("window %d: %w", n, err)
		}
		s.Log.Info("window size done", "window", n, "accuracy", fmt.Sprintf("%.3f", res.Accuracy.Mean),
			"session_accuracy_types", fmt.Sprintf("%.3f", res.SessionAccuracyTypes.Mean))
		out = append(out, StudyPoint{Window: n, CV: res})
	}
	page, err := s.html(out)
	return out, page, err
}

var studyPage = template.Must(template.New("study").Funcs(template.FuncMap{"pct": func(x float64) float64 { return 100 * x }}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>HomeMole window-size study</title>
<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:.2em .6em;text-align:right}</style></head><body>
<h1>Window-size study: {{.Model}} on {{.Dir}} ({{.View}} view)</h1>
<p>Grouped {{.Folds}}-fold cross-validation per window size: windows of one capture session never on both sides.
Accuracy is per packet over held-out packets of inventory devices; session accuracy is the share of held-out
captures whose packets' majority label is their device (device types: identical hardware counted as one).</p>
{{.Chart}}
<table><tr><th>window</th><th>accuracy</th><th>macro F1</th><th>session accuracy</th><th>device types</th><th>seconds</th></tr>
{{range .Points}}<tr><td>{{.Window}}</td><td>{{printf "%.1f ± %.1f %%" (pct .CV.Accuracy.Mean) (pct .CV.Accuracy.Std)}}</td>
<td>{{printf "%.3f" .CV.MacroF1.Mean}}</td><td>{{printf "%.1f %%" (pct .CV.SessionAccuracy.Mean)}}</td>
<td>{{printf "%.1f %%" (pct .CV.SessionAccuracyTypes.Mean)}}</td><td>{{printf "%.0f" .CV.Seconds}}</td></tr>{{end}}
</table></body></html>`))

func (s *Study) html(points []StudyPoint) ([]byte, error) {
	var xs []string
	acc := evaluate.Series{Name: "per-packet accuracy", Color: "#4a78c2"}
	sess := evaluate.Series{Name: "session accuracy (device types)", Color: "#c24a4a"}
	for _, p := range points {
		xs = append(xs, strconv.Itoa(p.Window))
		acc.Values = append(acc.Values, p.CV.Accuracy.Mean)
		sess.Values = append(sess.Values, p.CV.SessionAccuracyTypes.Mean)
	}
	var b bytes.Buffer
	err := studyPage.Execute(&b, map[string]any{
		"Model": s.Spec.Name, "Dir": s.Dir, "View": s.View, "Folds": s.Folds, "Points": points,
		"Chart": template.HTML(evaluate.LineChart("packets per window", xs, []evaluate.Series{acc, sess})),
	})
	return b.Bytes(), err
}

// BuildFromDir builds dataset name/version of one view, kind and window
// size from a folder of device folders (IoT Sentinel layout), through the
// same pipeline as the study: what a sweep trains on.
func BuildFromDir(ctx context.Context, dir, view string, cipher gateway.Cipher, kind string, window int, name, version, workDir string,
	b *bus.Conn, st store.Store, log *slog.Logger) (*dataset.Manifest, error) {
	// A campaign of its own per build: packets are deduplicated by subject,
	// which names the campaign, so a second build of the same captures
	// under one name would find its packets dropped as repeats.
	c, err := campaign.FromDeviceDirs(dir, name+"-"+version)
	if err != nil {
		return nil, err
	}
	cfg := &Config{View: view, Cipher: cipher, Kind: kind, Window: window, WorkDir: workDir, Bus: b, Store: st, Log: log}
	return cfg.buildDataset(ctx, c, name, version, build.LabelsOf(c))
}
