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
	"strconv"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/experiment"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/modelflag"
)

func runTrain(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs, ep := newStoreFlags("train", "--dataset NAME [--version V] [--model rf|lstm|blstm] [--epochs N] [--run NAME]",
		"Trains the HomeMole model on a dataset version, holding out a share of the capture\n"+
			"sessions, labels every held-out packet and writes models/RUN/model.ckpt and\n"+
			"reports/RUN/report.{json,html}.")
	name := fs.String("dataset", "", "dataset name")
	version := fs.String("version", "v1", "dataset version")
	run := fs.String("run", "", "run name (default: dataset-model-time)")
	seed := fs.Uint64("seed", 1, "seed of the split and the training")
	share := new(float64)
	modelflag.TestShare(fs, share)
	spec := modelflag.Register(fs)
	if err := parseRequired(fs, args, "train needs --dataset NAME", name); err != nil {
		return err
	}
	if err := modelflag.UseDevice(log, spec.Learn.Device); err != nil {
		return err
	}
	env, err := endpoints.OpenStore(ctx, *ep, log)
	if err != nil {
		return err
	}
	defer env.Close()
	if *run == "" {
		*run = fmt.Sprintf("%s-%s-%s", *name, spec.Name, time.Now().UTC().Format("20060102T150405"))
	}
	spec.Learn.Seed = int64(*seed)
	trained, err := trainAndReport(ctx, log, env, train.Job{Dataset: *name, Version: *version, RunName: *run, Spec: *spec, TestShare: *share, Seed: *seed}, filepath.Join(ep.Home, "reports"))
	if err != nil {
		return err
	}
	fmt.Fprint(out, "\n"+trained.Report.Summary())
	return nil
}

// trainAndReport runs a training job with terminal progress and copies the
// report next to the embedded state, where a browser can open it.
func trainAndReport(ctx context.Context, log *slog.Logger, env *endpoints.Env, job train.Job, localDir string) (*train.Outcome, error) {
	job.Store, job.Log = env.Store, log
	res, err := job.Run(ctx)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(localDir, job.RunName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("report folder: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.html"), res.HTML, 0o644); err != nil {
		return nil, fmt.Errorf("write report: %w", err)
	}
	js, err := res.Report.JSON()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), js, 0o644); err != nil {
		return nil, fmt.Errorf("write report: %w", err)
	}
	res.ReportHTML = filepath.Join(dir, "report.html")
	return res, nil
}

func runCV(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs, ep := newStoreFlags("cv", "--dataset NAME [--version V] [--model rf|lstm|blstm] [--folds K] [--mode grouped|random|leave-one-home-out|time] [--parallel N] [--fold I | --fold-index I | --gather]",
		"Cross-validates a model on a dataset version: k folds, each trained on the rest and\n"+
			"judged on its held-out windows; writes every fold's checkpoint and report and a\n"+
			"summary (mean and spread over folds, confusion matrix over all held-out packets) to\n"+
			"models/RUN/fold-I/ and reports/RUN/, and copies cv.html and cv.json under --home.\n\n"+
			"Modes: grouped (default) keeps each capture session in one fold, since neighbouring\n"+
			"windows share context; random deals windows as the paper does (it flatters);\n"+
			"leave-one-home-out holds out a home per fold.\n\n"+
			"On a cluster each fold runs in its own pod (a Kubernetes Indexed Job passes\n"+
			"--fold-index $(JOB_COMPLETION_INDEX)) under one --run name, writing no summary;\n"+
			"--gather then writes it from the folds' records, and fails until all are in.")
	name := fs.String("dataset", "", "dataset name")
	version := fs.String("version", "v1", "dataset version")
	folds := fs.Int("folds", 5, "number of folds (grouped, random); time: the later 1/N of each home's sessions is judged, so the model trains on as many as a grouped N-fold one")
	mode := fs.String("mode", train.CVGrouped, "grouped, random, leave-one-home-out, or time (one fold: each home's earlier capture sessions by sequence number train, the later 1/--folds is judged)")
	parallel := fs.Int("parallel", 1, "folds trained at once (they share the cores)")
	seed := fs.Uint64("seed", 1, "seed of the folds and the training")
	run := fs.String("run", "", "run name (default: dataset-model-cv-time; required with --fold, --fold-index and --gather)")
	only := fs.String("fold", "", "run only these folds, numbered from 1 and comma-separated (e.g. 2 or 1,4), and write no summary")
	foldIndex := fs.Int("fold-index", -1, "run only the fold numbered from 0 (a Kubernetes Indexed Job's completion index), and write no summary")
	gather := fs.Bool("gather", false, "train nothing: write the summary of a run whose folds ran apart")
	spec := modelflag.Register(fs)
	if err := parseInMemory(fs, args, spec); err != nil {
		return err
	}
	if *name == "" {
		return cli.Usagef("cv needs --dataset NAME")
	}
	if err := modelflag.UseDevice(log, spec.Learn.Device); err != nil {
		return err
	}
	if !slices.Contains(train.CVModes, *mode) {
		return cli.Usagef("--mode %q: want one of %s", *mode, strings.Join(train.CVModes, ", "))
	}
	folds1, err := parseFolds(*only, *foldIndex)
	if err != nil {
		return err
	}
	if (len(folds1) > 0 || *gather) && *run == "" {
		return cli.Usagef("--fold, --fold-index and --gather need --run NAME: the folds' pods and the gather meet under it")
	}
	if len(folds1) > 0 && *gather {
		return cli.Usagef("--gather trains nothing: give it without --fold and --fold-index")
	}
	if *run == "" {
		*run = fmt.Sprintf("%s-%s-cv-%s", *name, spec.Name, time.Now().UTC().Format("20060102T150405"))
	}
	env, err := endpoints.OpenStore(ctx, *ep, log)
	if err != nil {
		return err
	}
	defer env.Close()
	spec.Learn.Seed = int64(*seed)
	cv := &train.CrossValidation{Store: env.Store, Dataset: *name, Version: *version, RunName: *run, Spec: *spec,
		Folds: *folds, Mode: *mode, Seed: *seed, Parallel: *parallel, Only: folds1, Log: log}
	run1 := cv.Run
	if *gather {
		run1 = cv.Gather
	}
	res, html, err := run1(ctx)
	if err != nil {
		return err
	}
	if html == nil {
		for _, f := range res.Folds {
			fmt.Fprintf(out, "fold %d of run %s: %d held-out windows, accuracy %.1f%%, macro F1 %.3f; summary: homemole cv --gather --run %s\n",
				f.Fold, *run, f.TestWindows, 100*f.Accuracy, f.MacroF1, *run)
		}
		return nil
	}
	dir := filepath.Join(ep.Home, "reports", *run)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report folder: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cv.html"), html, 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cv.json"), js, 0o644); err != nil {
		return fmt.Errorf("write the summary: %w", err)
	}
	fmt.Fprintf(out, "\n%s, %s cross-validation over %d folds of %s (windows of %d), %.0f s\n", res.Model, res.Mode, len(res.Folds), res.Dataset, res.Window, res.Seconds)
	fmt.Fprintf(out, "  %-5s %8s %9s %9s %9s %8s\n", "fold", "windows", "accuracy", "macro F1", "sessions", "types")
	for _, f := range res.Folds {
		fmt.Fprintf(out, "  %-5d %8d %8.1f%% %9.3f %8.1f%% %7.1f%%\n", f.Fold, f.TestWindows, 100*f.Accuracy, f.MacroF1, 100*f.SessionAccuracy, 100*f.SessionAccuracyTypes)
	}
	fmt.Fprintf(out, "  %-5s %8s %5.1f±%.1f %5.3f±%.3f %5.1f±%.1f %5.1f±%.1f\n", "mean", "", 100*res.Accuracy.Mean, 100*res.Accuracy.Std, res.MacroF1.Mean, res.MacroF1.Std,
		100*res.SessionAccuracy.Mean, 100*res.SessionAccuracy.Std, 100*res.SessionAccuracyTypes.Mean, 100*res.SessionAccuracyTypes.Std)
	if res.MajorityTypes != res.SessionAccuracyTypes {
		fmt.Fprintf(out, "  device types with every session named by the majority of its packets' labels instead: %.1f±%.1f %%\n",
			100*res.MajorityTypes.Mean, 100*res.MajorityTypes.Std)
	}
	if res.Family != nil {
		fmt.Fprintf(out, "  family-level session accuracy %.1f±%.1f %% (each fold scored with the families of the other folds' confusions); families: %s\n",
			100*res.Family.Accuracy.Mean, 100*res.Family.Accuracy.Std, evaluate.FamilyList(res.Family.Families))
	}
	fmt.Fprintf(out, "  report: %s\n", filepath.Join(dir, "cv.html"))
	return nil
}

// parseInMemory parses the flags of a command that reads its training
// windows whole, refusing --max-memory (streamed training) by its name.
func parseInMemory(fs *flag.FlagSet, args []string, spec *train.Spec) error {
	if err := parse(fs, args); err != nil {
		return err
	}
	return modelflag.InMemory(spec, fs.Name())
}

// parseFolds reads --fold (numbered from 1) and --fold-index (from 0) into
// fold numbers from 1; neither given means every fold.
func parseFolds(list string, index int) ([]int, error) {
	if list != "" && index >= 0 {
		return nil, cli.Usagef("give --fold or --fold-index, not both")
	}
	if index >= 0 {
		return []int{index + 1}, nil
	}
	var out []int
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, cli.Usagef("--fold %q: want fold numbers from 1, comma-separated", list)
		}
		out = append(out, n)
	}
	return out, nil
}

func runExperiment(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	ep := endpoints.FromEnv()
	ep.Home = ""
	fs := newFlags("experiment", "--train DIR --test DIR | --split-by-time DIR [--view lan|napt|vpn] [--model rf|lstm|blstm] [--window N] [--epochs N] --json OUT",
		"Builds a dataset from each folder (laid out like the IoT Sentinel captures: one folder\n"+
			"per device with its captures and _iotdevice-mac.txt), trains the model on the first,\n"+
			"labels every packet of the second and writes a JSON summary: per-packet accuracy,\n"+
			"accuracy per device, and per test capture the device its packets voted for.\n"+
			"Packets of no inventory device (the phone doing the setup, the router) are\n"+
			"background: the model may see them, they are not scored.\n\n"+
			"Without --nats and --s3 it runs embedded servers in a fresh temporary --home that is\n"+
			"removed afterwards (kept with --keep).")
	ep.Register(fs)
	trainDir := fs.String("train", "", "folder of device folders to train on")
	testDir := fs.String("test", "", "folder of device folders to test on (the same devices, other captures)")
	byTime := fs.String("split-by-time", "", "instead of --train and --test: one folder of device folders, trained on each device's earlier captures and tested on its later half by capture sequence number (Setup-X-N-STA, by N; the split of cv --mode time --folds 2)")
	view := viewFlags(fs)
	kind := fs.String("kind", schemas.KindInd, "ind (windows of one device's packets) or noise (windows of the whole capture, background included)")
	win := fs.Int("window", 20, "packets per window (20: the best of 20, 40 and 100 in the window-size study, README)")
	jsonOut := fs.String("json", "", "file to write the JSON summary to")
	reportOut := fs.String("report", "", "file to write the HTML report to (default: beside --json, .html)")
	keep := fs.Bool("keep", false, "keep the temporary embedded state (datasets, emulated captures)")
	seed := fs.Int64("seed", 1, "seed of the training")
	save := fs.String("save", "", "store the trained model as models/RUN/ (for homemole predict; give --home to keep it)")
	calFolds := fs.Int("calibration-folds", train.CalibrationFolds, "with --save: models fitted to calibrate the unknown-device threshold, each on the training captures less one fold of each device's, so every training capture is scored once by a model that never saw it (2 or more; each is one more training run)")
	familiesFrom := fs.String("families", "", "cv.json of a cross-validation of the training captures: name each capture's vendor family and confidence, and score family-level accuracy")
	pool := fs.Bool("pool", false, "ind windows: label each window's packets with the class its packets jointly find likeliest (summed log-probabilities; lstm, blstm)")
	spec := modelflag.Register(fs)
	if err := parseInMemory(fs, args, spec); err != nil {
		return err
	}
	if *byTime != "" {
		if *trainDir != "" || *testDir != "" {
			return cli.Usagef("--split-by-time %s makes the training and test folders: give it without --train and --test", *byTime)
		}
		dir, err := os.MkdirTemp("", "homemole-time-split-")
		if err != nil {
			return fmt.Errorf("temporary folder of the time split: %w", err)
		}
		defer os.RemoveAll(dir)
		if *trainDir, *testDir, err = campaign.LinkTimeSplit(*byTime, dir, capture.FirstPacketTime); err != nil {
			return cli.Usagef("--split-by-time: %v", err)
		}
	}
	if *trainDir == "" || *testDir == "" || *jsonOut == "" {
		return cli.Usagef("experiment needs --train DIR and --test DIR (or --split-by-time DIR), and --json OUT")
	}
	if err := modelflag.UseDevice(log, spec.Learn.Device); err != nil {
		return err
	}
	if *kind != schemas.KindInd && *kind != schemas.KindNoise {
		return cli.Usagef("--kind %q: want ind or noise", *kind)
	}
	if *calFolds < 2 {
		return cli.Usagef("--calibration-folds %d: want 2 or more (each fold's model scores the training captures it never saw)", *calFolds)
	}
	for _, d := range []string{*trainDir, *testDir} {
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			return cli.Usagef("%s is not a folder of device folders", d)
		}
	}
	if ep.Home == "" {
		dir, err := os.MkdirTemp("", "homemole-experiment-")
		if err != nil {
			return fmt.Errorf("temporary state folder: %w", err)
		}
		ep.Home = dir
		if *keep {
			fmt.Fprintf(out, "embedded state kept in %s\n", dir)
		} else {
			defer os.RemoveAll(dir)
		}
	}
	env, err := endpoints.Open(ctx, ep, "homemole-experiment", log)
	if err != nil {
		return err
	}
	defer env.Close()
	spec.Learn.Seed = *seed
	var families [][]string
	if *familiesFrom != "" {
		if families, err = readFamilies(*familiesFrom); err != nil {
			return err
		}
	}
	res, err := experiment.Run(ctx, experiment.Config{Families: families,
		TrainDir: *trainDir, TestDir: *testDir, View: view.name, Cipher: view.cipher, Kind: *kind, Window: *win,
		Spec: *spec, Pool: *pool, SaveAs: *save, CalibrationFolds: *calFolds, WorkDir: ep.Home, Bus: env.Bus, Store: env.Store, Log: log,
	})
	if err != nil {
		return err
	}
	if err := writeReports(*jsonOut, reportOut, res.JSON, res.Report.HTML); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n%s on the %s view, windows of %d (%s): %d test captures in %.0f s\n", res.Model, res.View, res.Window, res.Kind, len(res.Sessions)+len(res.Unscored), res.Seconds)
	fmt.Fprintf(out, "  per-packet accuracy  %5.1f %%   macro F1 %.3f\n", 100*res.OverallAccuracy, res.MacroF1)
	fmt.Fprintf(out, "  session accuracy     %5.1f %%   (device types: %.1f %%)\n", 100*res.SessionAccuracy, 100*res.SessionAccuracyTypes)
	switch {
	case *familiesFrom != "":
		fmt.Fprintf(out, "  family accuracy      %5.1f %%   (families from %s)\n", 100*res.SessionAccuracyFamilies, *familiesFrom)
	case res.Families != nil:
		fmt.Fprintf(out, "  family accuracy      %5.1f %%   (families learned from the training captures' calibration folds: %s)\n", 100*res.SessionAccuracyFamilies, evaluate.FamilyList(res.Families))
	}
	if o := res.OpenSet; o != nil {
		fmt.Fprintf(out, "  open set             %d of %d test captures of trained devices called unknown; %d of %d of devices never trained (the saved model's rule on each capture's device packets)\n",
			o.KnownUnknown, o.Known, o.NewUnknown, o.New)
	}
	for _, s := range res.Sessions {
		if evaluate.TypeOf(s.True) != evaluate.TypeOf(s.Predicted) {
			fmt.Fprintf(out, "    miss: %-40s %s taken for %s (%.0f %% of %d packets)\n", s.File, s.True, s.Predicted, 100*s.Share, s.Packets)
		}
	}
	fmt.Fprintf(out, "  summary: %s\n  report:  %s\n", *jsonOut, *reportOut)
	return nil
}

// readFamilies reads the families a cross-validation learned (cv.json).
func readFamilies(path string) ([][]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--families: %w", err)
	}
	var cv train.CVResult
	if err := json.Unmarshal(data, &cv); err != nil {
		return nil, fmt.Errorf("--families %s: not a cv.json: %w", path, err)
	}
	if cv.Family == nil {
		return nil, fmt.Errorf("--families %s: the run learned no families (it needs two folds or more, and a homemole that scores families): run homemole cv on the training captures", path)
	}
	return cv.Family.Families, nil
}
