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

	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/modelflag"
)

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
	folds := fs.Int("folds", 5, "number of folds (grouped, random)")
	mode := fs.String("mode", train.CVGrouped, "grouped, random, leave-one-home-out, or time (one fold: each home's earlier capture sessions by sequence number train, the later half is judged)")
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
			100*res.Family.Accuracy.Mean, 100*res.Family.Accuracy.Std, familyList(res.Family.Families))
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

func familyList(fams [][]string) string {
	var parts []string
	for _, f := range fams {
		parts = append(parts, evaluate.FamilyName(f)+" ("+strings.Join(f, ", ")+")")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}
