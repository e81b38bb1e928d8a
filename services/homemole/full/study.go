//go:build torch

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/experiment"
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
