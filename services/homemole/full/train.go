//go:build torch

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/train"
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
	share := fs.Float64("test-share", 0.2, "share of capture sessions held out for evaluation")
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
