package experiment

import (
	"bytes"
	"context"
	"fmt"
	"html/template"
	"log/slog"
	"strconv"
	"time"

	"github.com/homemole/homemole/pipeline/build"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/train"
)

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
