//go:build torch

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/homemole/homemole/pipeline/detect"
	"github.com/homemole/homemole/pipeline/detect/scene"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/openset"
	"github.com/homemole/homemole/pipeline/seqprofile"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/modelflag"
)

func runSP(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	return runSubcommand(ctx, log, out, args, map[string]runFunc{
		"train":        runSPTrain,
		"eval":         runSPEval,
		"show":         runSPShow,
		"interactions": runSPInteractions,
	}, "sp needs a subcommand: train --dir DIR --out MODEL | eval --dir DIR --json OUT | show --model MODEL | interactions [--generated-home N]")
}

const spAbout = "Learns Ma et al.'s sequence profiles (seeds/003) and their CNNs from a folder laid\n" +
	"out like ../shared/data/iot-sentinel-dev: one folder per device type holding its\n" +
	"captures and _iotdevice-mac.txt. Each device type's own packets (its MAC) are cut\n" +
	"into bursts at pauses of --burst-gap; the longest common subsequences of pairs of\n" +
	"bursts, fields that differ abstracted to Any, become sequence profiles (SPs), and\n" +
	"the --max-sps most important are kept. Everything else in the captures, and the\n" +
	"other device types, is background. Per device type a detector CNN learns to tell\n" +
	"background from background plus the type, and a counter CNN how many of the type\n" +
	"are there (1 to --max-count), from the SPs' match counts per --bin over --window."

// spTrainFlags registers what sp train and sp eval share.
func spTrainFlags(fs *flag.FlagSet) (*detect.Config, *time.Duration) {
	cfg := detect.DefaultConfig()
	window := new(time.Duration)
	*window = cfg.Window()
	fs.DurationVar(window, "window", *window, "CNN time window (the paper: 360s); a multiple of --bin")
	fs.DurationVar(&cfg.Match.Bin, "bin", cfg.Match.Bin, "time-array bin: matches are counted per bin")
	fs.DurationVar(&cfg.BurstGap, "burst-gap", cfg.BurstGap, "pause that ends a burst (the paper: 1s); also how long a started match waits for its next packet")
	fs.Float64Var(&cfg.Gen.Distance.Threshold, "d", cfg.Gen.Distance.Threshold, "distance threshold d of the LCS (eq. 4): packets closer than d match")
	fs.IntVar(&cfg.Gen.MaxProfiles, "max-sps", cfg.Gen.MaxProfiles, "SPs kept per device type (the paper: 10)")
	fs.IntVar(&cfg.Gen.MaxBursts, "max-bursts", cfg.Gen.MaxBursts, "bursts sampled per device type for the pairwise LCS (bounds the work to n(n-1)/2 pairs)")
	fs.IntVar(&cfg.Gen.MaxBurstLen, "max-burst-len", cfg.Gen.MaxBurstLen, "packets of a burst the LCS looks at (its opening)")
	fs.IntVar(&cfg.MaxCount, "max-count", cfg.MaxCount, "largest number of devices of one type the counter learns")
	fs.IntVar(&cfg.DetectorSamples, "detector-samples", cfg.DetectorSamples, "training windows per detector (half of them negatives)")
	fs.IntVar(&cfg.CounterSamples, "counter-samples", cfg.CounterSamples, "training windows per counter (packets superposed and matched)")
	fs.IntVar(&cfg.CNN.Epochs, "epochs", cfg.CNN.Epochs, "training epochs of each CNN")
	fs.IntVar(&cfg.Threads, "threads", 0, "libtorch threads (0: libtorch's default)")
	modelflag.Device(fs, &cfg.Device)
	fs.Func("seed", "seed of sampling and training (default 1)", func(s string) error {
		_, err := fmt.Sscan(s, &cfg.Seed)
		return err
	})
	return &cfg, window
}

func finishConfig(log *slog.Logger, cfg *detect.Config, window time.Duration) error {
	if err := modelflag.UseDevice(log, cfg.Device); err != nil {
		return err
	}
	if cfg.Match.Bin <= 0 || window%cfg.Match.Bin != 0 {
		return cli.Usagef("--window %v must be a multiple of --bin %v", window, cfg.Match.Bin)
	}
	cfg.WindowBins = int(window / cfg.Match.Bin)
	cfg.Match.MaxGap = cfg.BurstGap
	if err := cfg.Validate(); err != nil {
		return cli.Usagef("%v", err)
	}
	return nil
}

// splitHoldout keeps every k-th capture of each device type out (k <= 0:
// none), in name order; a type with fewer than k but at least two
// captures gives its last one, so that every type is judged.
func splitHoldout(devs []seqprofile.DeviceTraffic, k int) (train, test []seqprofile.DeviceTraffic) {
	for _, d := range devs {
		tr, te := seqprofile.DeviceTraffic{Device: d.Device}, seqprofile.DeviceTraffic{Device: d.Device}
		for i, s := range d.Sessions {
			last := i == len(d.Sessions)-1 && len(d.Sessions) >= 2 && len(d.Sessions) < k
			if k > 0 && (i%k == k-1 || last) {
				te.Sessions = append(te.Sessions, s)
			} else {
				tr.Sessions = append(tr.Sessions, s)
			}
		}
		train = append(train, tr)
		if len(te.Sessions) > 0 {
			test = append(test, te)
		}
	}
	return train, test
}

func runSPTrain(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("sp train", "--dir DIR --out MODEL [--holdout K] [--window 360s] [--d 8] ...", spAbout+"\n\n"+
		"The model file holds the SPs, the CNNs' weights and every setting; `homemole detect`\n"+
		"reads it. With --holdout K every K-th capture of each device type is left out (the\n"+
		"last one of a type with fewer than K), as `homemole sp eval` judges them. The 31\n"+
		"IoT Sentinel types take about 3 minutes of CPU (5 on a busy 2-core machine).")
	dir := fs.String("dir", "", "folder of device-type folders")
	outPath := fs.String("out", "", "model file to write")
	holdout := fs.Int("holdout", 0, "leave every K-th capture of each device type out (0: train on all)")
	crossing := fs.Bool("crossing", false, "learn only from packets that cross a home gateway (a public address at one end): what a detector beyond a NAPT sees")
	unknownHoldout := fs.Int("unknown-holdout", 0, "of the training captures, keep every K-th of each device type out of training and calibrate on them the rule that reports traffic of no known type as unknown (0: no rule)")
	cfg, window := spTrainFlags(fs)
	if err := parseRequired(fs, args, "sp train needs --dir DIR and --out MODEL", dir, outPath); err != nil {
		return err
	}
	if *unknownHoldout < 0 || *unknownHoldout == 1 {
		return cli.Usagef("--unknown-holdout %d: want 0 (no unknown-device rule) or K >= 2 (every K-th training capture calibrates it)", *unknownHoldout)
	}
	if err := finishConfig(log, cfg, *window); err != nil {
		return err
	}
	load := seqprofile.LoadDir
	if *crossing {
		load = seqprofile.LoadDirCrossing
	}
	devs, err := load(ctx, *dir)
	if err != nil {
		return err
	}
	train, _ := splitHoldout(devs, *holdout)
	var cal []seqprofile.DeviceTraffic
	if *unknownHoldout > 0 {
		train, cal = splitHoldout(train, *unknownHoldout)
	}
	// Saved below, once the unknown-device rule the file carries is calibrated.
	m, trainSecs, err := trainSaved(ctx, log, &scene.Corpus{Devices: train}, *cfg, "")
	if err != nil {
		return err
	}
	defer m.Close()
	if *unknownHoldout > 0 {
		var streams [][]seqprofile.Stamped
		for _, d := range cal {
			for _, s := range d.Sessions {
				streams = append(streams, s.Device)
			}
		}
		r, err := m.CalibrateUnknown(ctx, streams, openset.DefaultQuantile)
		if err != nil {
			return fmt.Errorf("sp train --unknown-holdout %d: %w", *unknownHoldout, err)
		}
		fmt.Fprintf(out, "unknown-device rule: explained share below %.3f over %d held-out windows of %d captures (false unknown %.3f there)\n", r.Threshold, r.Windows, r.Sessions, r.FalseUnknown)
	}
	if err := m.SaveFile(*outPath); err != nil {
		return err
	}
	fmt.Fprintf(out, "trained %d device types in %.0f s (%d SPs); model: %s\n", len(m.Devices), trainSecs, len(m.SPs()), *outPath)
	for _, s := range m.Skipped {
		fmt.Fprintf(out, "  skipped: %s\n", s)
	}
	return nil
}

func runSPEval(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("sp eval", "(--dir DIR | --generated) --json OUT [--report OUT.html] [--holdout 5] [--scenes 1000] [--out MODEL]", spAbout+"\n\n"+
		"Trains on all captures but every --holdout-th of each device type, then judges the\n"+
		"held-out ones: each scene is one --window into which 1 to 4 held-out captures of\n"+
		"different device types are superposed at random offsets (devices behind one\n"+
		"address, plus whatever else their captures hold). Per device type, a scene is a\n"+
		"positive when one of its captures is in it and a detection when its detector fires.\n"+
		"Writes precision, recall and F-score per device type as JSON and an HTML report.\n\n"+
		"--generated judges a generated home instead (count errors for 1 to 100 devices of a\n"+
		"type behind one NAT, and response times); it takes a few minutes.")
	dir := fs.String("dir", "", "folder of device-type folders")
	generated := fs.Bool("generated", false, "instead of --dir: a generated home (8 half-hour sessions) seen beyond an emulated NAPT gateway; train on 5 sessions, judge 0 to 100 devices of each type superposed on the other 3, with count errors and response times")
	jsonOut := fs.String("json", "", "file to write the JSON report to")
	reportOut := fs.String("report", "", "file to write the HTML report to (default: beside --json, .html)")
	holdout := fs.Int("holdout", 5, "judge every K-th capture of each device type (the last of a type with fewer), train on the rest (the seed's 8:2)")
	scenes := fs.Int("scenes", 1000, "scenes (windows) to judge")
	modelOut := fs.String("out", "", "also write the trained model here")
	cfg, window := spTrainFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if (*dir == "") == !*generated || *jsonOut == "" {
		return cli.Usagef("sp eval needs --dir DIR or --generated, and --json OUT")
	}
	if *holdout < 2 || *scenes < 1 {
		return cli.Usagef("--holdout %d, --scenes %d: want >= 2 and >= 1", *holdout, *scenes)
	}
	if err := finishConfig(log, cfg, *window); err != nil {
		return err
	}
	var r *scene.Report
	var err error
	if *generated {
		r, err = evalGenerated(ctx, log, *cfg, *modelOut)
	} else {
		r, err = evalCaptures(ctx, log, *cfg, *dir, *holdout, *scenes, *modelOut)
	}
	if err != nil {
		return err
	}
	if err := writeReports(*jsonOut, reportOut, r.JSON, r.HTML); err != nil {
		return err
	}
	fmt.Fprint(out, r.Text())
	fmt.Fprintf(out, "report: %s, %s\n", *jsonOut, *reportOut)
	return nil
}

func runSPShow(_ context.Context, _ *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("sp show", "--model MODEL", "Prints each device type's sequence profiles: N(S), V(S) and the packet\n"+
		"vectors, * for a field abstracted to Any.")
	path := fs.String("model", "", "model file from `homemole sp train`")
	if err := parseRequired(fs, args, "sp show needs --model MODEL", path); err != nil {
		return err
	}
	m, err := detect.LoadFile(*path)
	if err != nil {
		return err
	}
	defer m.Close()
	for _, d := range m.Devices {
		fmt.Fprintf(out, "%s\n", d.Name)
		for i, p := range d.Profiles {
			fmt.Fprintf(out, "  SP %d: %s\n", i+1, p.String())
		}
	}
	return nil
}

func evalCaptures(ctx context.Context, log *slog.Logger, cfg detect.Config, dir string, holdout, scenes int, modelOut string) (*scene.Report, error) {
	devs, err := seqprofile.LoadDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	train, test := splitHoldout(devs, holdout)
	m, trainSecs, err := trainSaved(ctx, log, &scene.Corpus{Devices: train}, cfg, modelOut)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	r, err := scene.EvaluateCaptures(ctx, m, test, scenes, cfg.Seed)
	if err != nil {
		return nil, err
	}
	r.Title = "Sequence profiles + CNN on " + filepath.Base(filepath.Clean(dir))
	r.Split = fmt.Sprintf("trained on all but every %d-th capture of each device type, judged on those (%d types)", holdout, len(m.Devices))
	r.TrainSeconds = trainSecs
	r.Notes = append(r.Notes, m.Skipped...)
	return r, nil
}

// trainSaved trains a detector on corpus and, when modelOut is set, saves
// it there; the seconds it returns are the training's alone, as reports
// state them.
func trainSaved(ctx context.Context, log *slog.Logger, corpus *scene.Corpus, cfg detect.Config, modelOut string) (*detect.Model, float64, error) {
	t0 := time.Now()
	m, err := detect.Train(ctx, corpus, cfg, log)
	if err != nil {
		return nil, 0, err
	}
	secs := time.Since(t0).Seconds()
	if modelOut != "" {
		if err := m.SaveFile(modelOut); err != nil {
			m.Close()
			return nil, 0, err
		}
	}
	return m, secs, nil
}

// generatedCounts are the numbers of devices of one type judged behind one NAT.
var generatedCounts = []int{1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 70, 100}

func evalGenerated(ctx context.Context, log *slog.Logger, cfg detect.Config, modelOut string) (*scene.Report, error) {
	dir, err := os.MkdirTemp("", "homemole-sp-eval-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	const sessions, trainN = 8, 5
	h, err := homegen.Generate(homegen.Config{Seed: cfg.Seed, Sessions: sessions, SessionDuration: 30 * time.Minute}, dir)
	if err != nil {
		return nil, err
	}
	hc, err := h.HomeConfig()
	if err != nil {
		return nil, err
	}
	ss, err := scene.LoadHomeNAPT(ctx, h.Files, h.Inventory, hc)
	if err != nil {
		return nil, err
	}
	m, trainSecs, err := trainSaved(ctx, log, scene.HomeCorpus(ss[:trainN]), cfg, modelOut)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	r, err := scene.EvaluateNAT(ctx, m, ss[trainN:], generatedCounts, cfg.Seed)
	if err != nil {
		return nil, err
	}
	if err := scene.ResponseTimes(ctx, m, ss[trainN:], 13*time.Minute, cfg.Seed, r); err != nil {
		return nil, err
	}
	r.Title = "Sequence profiles + CNN, generated home behind NAPT"
	r.Split = fmt.Sprintf("home seed %d; trained on sessions 1-%d, judged on sessions %d-%d; per type and window: 0 or n devices superposed", cfg.Seed, trainN, trainN+1, sessions)
	r.TrainSeconds = trainSecs
	return r, nil
}

// interactionReport is what sp interactions writes with --json.
type interactionReport struct {
	Device     string                      `json:"device"`
	Kind       string                      `json:"kind"`
	Train      int                         `json:"train_actions"`
	SP         string                      `json:"sp"`
	Score      seqprofile.InteractionScore `json:"score"`
	Precision  float64                     `json:"precision"`
	Recall     float64                     `json:"recall"`
	F1         float64                     `json:"f1"`
	Packets    int                         `json:"packets"`
	Sessions   int                         `json:"sessions"`
	SessionMin int                         `json:"session_minutes"`
}

// runSPInteractions is Ma et al.'s interaction detection (Section III-C) on
// a generated home, whose recorded switchings are the ground truth: the
// first share of the device's actions train the action's SP, the rest are
// to be found in the home's whole LAN stream, where every other match is a
// false alarm.
func runSPInteractions(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("sp interactions", "[--generated-home SESSIONS] [--session-minutes M] [--seed N] [--json OUT]",
		"Detects a user action from its sequence profile (Ma et al., Section III-C) in a home\n"+
			"generated by pipeline/homegen, whose smart plug is switched from its app at random times\n"+
			"(recorded as the ground truth). The bursts the first --train-share of the switchings start\n"+
			"are folded into the action's SP (seqprofile.InteractionProfile); the SP is then matched in\n"+
			"the home's whole LAN stream, every device's packets; a match within --tolerance of a\n"+
			"held-out switching finds it, any other match is a false alarm.")
	sessions := fs.Int("generated-home", 6, "sessions of the generated home")
	minutes := fs.Int("session-minutes", 40, "minutes per session")
	seed := fs.Uint64("seed", 5, "seed of the generated home")
	share := fs.Float64("train-share", 0.2, "share of the switchings, the earliest, that train the SP (the paper's 1:4 split)")
	tol := fs.Duration("tolerance", 2*time.Second, "how far a detection may be from a switching and find it")
	jsonOut := fs.String("json", "", "file to write the score to (optional)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *sessions < 1 || *minutes < 1 || !(*share > 0 && *share < 1) || *tol <= 0 {
		return cli.Usagef("sp interactions: want --generated-home and --session-minutes 1 or more, --train-share in (0, 1), --tolerance above 0")
	}
	h, cleanup, err := generateHome("sp interactions", *seed, *sessions, *minutes)
	if err != nil {
		return err
	}
	defer cleanup()
	const device = "smart-plug"
	var actions []int64
	for _, a := range h.Interactions {
		if a.Device == device && a.Kind == homegen.InteractionSwitch {
			actions = append(actions, a.At.UnixNano())
		}
	}
	slices.Sort(actions)
	nTrain := int(float64(len(actions)) * *share)
	if nTrain < 2 || nTrain == len(actions) {
		return cli.Usagef("sp interactions: %d switchings of the %s, %d of them to train: want 2 or more to train and 1 or more to find; give more or longer sessions", len(actions), device, nTrain)
	}
	var mac string
	for _, d := range h.Inventory {
		if d.Name == device {
			mac = d.MAC
		}
	}
	plug, err := schemas.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("sp interactions: the generated home's %s: %w", device, err)
	}
	var own []seqprofile.Stamped
	var streams [][]seqprofile.Stamped
	packets := 0
	for _, f := range h.Files {
		s, err := seqprofile.LoadSession(ctx, f, plug)
		if err != nil {
			return fmt.Errorf("sp interactions: %w", err)
		}
		own = append(own, s.Device...)
		all, err := seqprofile.LoadCapture(ctx, f)
		if err != nil {
			return fmt.Errorf("sp interactions: %w", err)
		}
		streams = append(streams, all)
		packets += len(all)
	}
	cfg := seqprofile.DefaultInteractionConfig()
	cfg.Tolerance = *tol
	sp, score, err := seqprofile.JudgeInteraction(own, actions[:nTrain], streams, actions[nTrain:], cfg)
	if err != nil {
		return fmt.Errorf("sp interactions: %w", err)
	}
	rep := interactionReport{Device: device, Kind: homegen.InteractionSwitch, Train: nTrain, SP: sp.String(), Score: score,
		Precision: score.Precision(), Recall: score.Recall(), F1: score.F1(), Packets: packets, Sessions: *sessions, SessionMin: *minutes}
	log.Info("interaction SP", "elements", len(sp.Elems), "from", nTrain)
	fmt.Fprintf(out, "%s %q: SP of %d elements from %d switchings: %s\n", device, homegen.InteractionSwitch, len(sp.Elems), nTrain, sp.String())
	fmt.Fprintf(out, "%d held-out switchings in %d packets of %d x %d min: found %d; %d detections, %d false alarms\n",
		score.Actions, packets, *sessions, *minutes, score.Found, score.Detections, score.FalseAlarms)
	fmt.Fprintf(out, "precision %.3f, recall %.3f, F1 %.3f\n", rep.Precision, rep.Recall, rep.F1)
	if *jsonOut != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return fmt.Errorf("sp interactions: %w", err)
		}
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("sp interactions: write --json: %w", err)
		}
	}
	return nil
}
