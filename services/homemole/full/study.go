//go:build torch

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/experiment"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/sweep"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/modelflag"
)

func runStudy(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs, ep := newStoreFlags("study", "--from-dir DIR [--windows 20,40,100] [--view lan|napt|vpn] [--model rf|lstm|blstm] [--folds K] --out DIR",
		"The window-size study of the HomeMole paper's Figure 8: builds a dataset per window\n"+
			"size from a folder of device folders (IoT Sentinel layout), cross-validates the model\n"+
			"on each (grouped folds), and writes study.json and study.html (accuracy and session\n"+
			"accuracy over window sizes) to --out.")
	dir := fs.String("from-dir", "", "folder of device folders")
	windows := fs.String("windows", "20,40,100", "window sizes, comma-separated")
	view := viewFlags(fs)
	kind := fs.String("kind", schemas.KindInd, "ind or noise")
	folds := fs.Int("folds", 5, "folds per window size")
	parallel := fs.Int("parallel", 1, "folds trained at once")
	seed := fs.Uint64("seed", 1, "seed of the folds and the training")
	outDir := fs.String("out", "", "folder for study.json and study.html")
	spec := modelflag.Register(fs)
	if err := parseInMemory(fs, args, spec); err != nil {
		return err
	}
	if *dir == "" || *outDir == "" {
		return cli.Usagef("study needs --from-dir DIR and --out DIR")
	}
	if err := modelflag.UseDevice(log, spec.Learn.Device); err != nil {
		return err
	}
	var sizes []int
	for _, f := range strings.Split(*windows, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return cli.Usagef("--windows: %q is not a window size (packets, > 0)", f)
		}
		sizes = append(sizes, n)
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	env, err := endpoints.Open(ctx, *ep, "homemole-study", log)
	if err != nil {
		return err
	}
	defer env.Close()
	spec.Learn.Seed = int64(*seed)
	st := &experiment.Study{Dir: *dir, View: view.name, Cipher: view.cipher, Kind: *kind, Spec: *spec, Windows: sizes, Folds: *folds,
		Parallel: *parallel, Seed: *seed, WorkDir: ep.Home, Bus: env.Bus, Store: env.Store, Log: log}
	points, page, err := st.Run(ctx)
	if err != nil {
		return err
	}
	js, err := json.MarshalIndent(points, "", "  ")
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{"study.json": js, "study.html": page} {
		if err := os.WriteFile(filepath.Join(*outDir, name), data, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	fmt.Fprintf(out, "\n%s on %s (%s view), grouped %d-fold cross-validation per window size\n", spec.Name, *dir, view.name, *folds)
	fmt.Fprintf(out, "  %6s  %14s  %9s  %16s  %12s\n", "window", "accuracy", "macro F1", "session accuracy", "device types")
	for _, p := range points {
		fmt.Fprintf(out, "  %6d  %6.1f ± %4.1f %%  %9.3f  %14.1f %%  %10.1f %%\n", p.Window, 100*p.CV.Accuracy.Mean, 100*p.CV.Accuracy.Std,
			p.CV.MacroF1.Mean, 100*p.CV.SessionAccuracy.Mean, 100*p.CV.SessionAccuracyTypes.Mean)
	}
	fmt.Fprintf(out, "  report: %s\n", filepath.Join(*outDir, "study.html"))
	return nil
}

func runSweep(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs, ep := newStoreFlags("sweep", "--spec sweep.yaml (--out DIR [--parallel N] | --task-index I | --gather --out DIR | --emit-k8s DIR [--gpu])",
		"Runs a grid of experiments: every configuration of the spec (models x views x windows x\n"+
			"kinds x seeds x model flags) cross-validated, as (configuration, fold) tasks. Each\n"+
			"task's result is stored under sweeps/HASH/fold-F.json (HASH: the configuration's\n"+
			"hash), so a sweep run again, after a failure or a kill, runs only the tasks not done.\n"+
			"Writes DIR/sweep.json (per configuration: folds, mean and spread of per-packet\n"+
			"accuracy, macro F1, session and type accuracy, training time) and DIR/sweep.html.\n\n"+
			"A spec (YAML, strict: any other key is an error):\n"+
			"  from_dir: ../shared/data/iot-sentinel-dev   # or dataset: NAME (+ version: V)\n"+
			"  models: [rf, blstm]\n  views: [lan, napt]\n  windows: [20, 40, 100]\n  kinds: [ind]\n  seeds: [1]\n"+
			"  cv: {mode: grouped, folds: 5}\n  model_flags: {epochs: [5, 15], hidden: 64}   # homemole train's flags\n\n"+
			"On a cluster, --emit-k8s DIR writes a kustomize overlay with one Indexed Job whose\n"+
			"pod I runs --task-index I; --gather then writes sweep.json and sweep.html from the\n"+
			"stored results, and fails naming the tasks not done yet.")
	specFile := fs.String("spec", "", "sweep spec (YAML)")
	outDir := fs.String("out", "", "folder for sweep.json and sweep.html")
	parallel := fs.Int("parallel", 1, "tasks trained at once (they share the cores); with --emit-k8s, pods at once")
	taskIndex := fs.Int("task-index", -1, "run only this task, numbered from 0 (a Kubernetes Indexed Job's completion index), and write no summary")
	gather := fs.Bool("gather", false, "train nothing: write the summary from the stored results of a sweep whose tasks ran apart")
	emit := fs.String("emit-k8s", "", "write a kustomize overlay with one Indexed Job (one task per index) to this folder, and run nothing")
	gpu := fs.Bool("gpu", false, "with --emit-k8s: one NVIDIA GPU per pod and the CUDA image")
	cipher := fs.String("cipher", "aes-256-gcm", "VPN data channel the emulator uses for the vpn view: aes-256-gcm, aes-256-cbc or wireguard")
	var device string
	modelflag.Device(fs, &device)
	if err := parseRequired(fs, args, "sweep needs --spec FILE", specFile); err != nil {
		return err
	}
	raw, err := os.ReadFile(*specFile)
	if err != nil {
		return cli.Usagef("--spec: %v", err)
	}
	spec, err := sweep.Parse(bytes.NewReader(raw), *specFile)
	if err != nil {
		return cli.Usagef("%v", err)
	}
	specOf := func(model string, flags map[string]string) (train.Spec, error) {
		return modelSpec(model, flags, device)
	}
	// Every configuration's flags are checked before anything is built.
	if err := spec.CheckModelFlags(specOf); err != nil {
		return cli.Usagef("%s: %v", *specFile, err)
	}
	if *emit != "" {
		if err := sweep.EmitK8s(*emit, raw, spec, *gpu, *parallel); err != nil {
			return err
		}
		n, _ := spec.TaskCount()
		fmt.Fprintf(out, "wrote %s: one Indexed Job of %d tasks (%d configurations); kubectl apply -k %s\n", *emit, n, len(spec.Configurations()), *emit)
		return nil
	}
	if *taskIndex < 0 && *outDir == "" {
		return cli.Usagef("sweep needs --out DIR (or --task-index I, or --emit-k8s DIR)")
	}
	ciph, err := gateway.ParseCipher(*cipher)
	if err != nil {
		return cli.Usagef("--cipher: %v", err)
	}
	if err := modelflag.UseDevice(log, device); err != nil {
		return err
	}
	open := endpoints.OpenStore
	if spec.FromDir != "" && !*gather {
		// Datasets are built through the pipeline, NATS included.
		open = func(ctx context.Context, c endpoints.Config, log *slog.Logger) (*endpoints.Env, error) {
			return endpoints.Open(ctx, c, "homemole-sweep", log)
		}
	}
	env, err := open(ctx, *ep, log)
	if err != nil {
		return err
	}
	defer env.Close()
	sw := &sweep.Sweep{Spec: spec, SpecOf: specOf, Parallel: *parallel, Cipher: ciph, WorkDir: ep.Home, Bus: env.Bus, Store: env.Store, Log: log}
	if *taskIndex >= 0 {
		t, r, reused, err := sw.RunTask(ctx, *taskIndex)
		if err != nil {
			return fmt.Errorf("sweep task %d: %w", *taskIndex, err)
		}
		what := "ran"
		if reused {
			what = "already done"
		}
		fmt.Fprintf(out, "task %d (%s, fold %d of %d) %s: accuracy %.1f%%, macro F1 %.3f; stored at %s\n",
			*taskIndex, t.Config.Label(), t.Fold, t.Of, what, 100*r.Fold.Accuracy, r.Fold.MacroF1, t.Key())
		return nil
	}
	run := sw.Run
	if *gather {
		run = sw.Gather
	}
	res, err := run(ctx)
	if err != nil {
		return err
	}
	return writeSweep(out, *outDir, res)
}

// modelSpec reads a configuration's model flags with the flags homemole
// train has, so that a sweep's epochs: means what train's --epochs does.
func modelSpec(model string, flags map[string]string, device string) (train.Spec, error) {
	fs := flag.NewFlagSet("model_flags", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	spec := modelflag.Register(fs)
	keys := make([]string, 0, len(flags))
	for k := range flags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := []string{"--model=" + model}
	for _, k := range keys {
		if fs.Lookup(k) == nil {
			return train.Spec{}, fmt.Errorf("%s is not a model flag (see homemole train --help)", k)
		}
		args = append(args, "--"+k+"="+flags[k])
	}
	if err := fs.Parse(args); err != nil {
		return train.Spec{}, err
	}
	if spec.MaxMemory > 0 {
		return train.Spec{}, fmt.Errorf("max-memory: a sweep's folds read their training windows whole; drop it from model_flags")
	}
	spec.Learn.Device = device
	return *spec, nil
}

func writeSweep(out io.Writer, dir string, res *sweep.Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	page, err := res.HTML()
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{"sweep.json": append(js, '\n'), "sweep.html": page} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	fmt.Fprintf(out, "\n%d configurations, %d tasks trained now, %d found done\n", len(res.Configurations), res.Ran, res.Reused)
	fmt.Fprintf(out, "  %-44s %16s %14s %9s %9s %8s\n", "configuration", "accuracy %", "macro F1", "session %", "types %", "train s")
	for _, c := range res.Configurations {
		fmt.Fprintf(out, "  %-44s %7.1f ± %5.1f %6.3f ± %5.3f %9.1f %9.1f %8.1f\n", c.Label, 100*c.Mean.Accuracy, 100*c.Spread.Accuracy,
			c.Mean.MacroF1, c.Spread.MacroF1, 100*c.Mean.SessionAccuracy, 100*c.Mean.SessionAccuracyTypes, c.Mean.TrainSeconds)
	}
	for _, b := range res.Best() {
		fmt.Fprintf(out, "  best on the %s view: %s (accuracy %.1f %%)\n", b.Config.View, b.Label, 100*b.Mean.Accuracy)
	}
	fmt.Fprintf(out, "  report: %s\n", filepath.Join(dir, "sweep.html"))
	return nil
}
