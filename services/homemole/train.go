//go:build torch

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/services/internal/cli"
)

// trainModelFlag adds --model naming one of the trainable models, checked
// as it is parsed.
func trainModelFlag(fs *flag.FlagSet) *string {
	model := "blstm"
	fs.Func("model", "rf, lstm or blstm (default blstm)", func(s string) error {
		if !slices.Contains(train.Models, s) {
			return fmt.Errorf("want one of %s", strings.Join(train.Models, ", "))
		}
		model = s
		return nil
	})
	return &model
}

// treesFlag is the Random Forest's size (rf only).
func treesFlag(fs *flag.FlagSet) *int {
	return fs.Int("trees", 100, "trees in the Random Forest (rf; paper: 100); the model file grows with them, about 0.5 MB a tree on the IoT Sentinel captures")
}

func modelFlags(fs *flag.FlagSet) *learn.Config {
	cfg := learnFlags(fs)
	fs.Func("model", "blstm (bidirectional, default) or lstm", func(s string) error {
		switch s {
		case "blstm":
			cfg.Bidirectional = true
		case "lstm":
			cfg.Bidirectional = false
		default:
			return fmt.Errorf("model %q: want blstm or lstm", s)
		}
		return nil
	})
	return cfg
}

// learnFlags registers the training schedule's flags.
func learnFlags(fs *flag.FlagSet) *learn.Config {
	cfg := learn.DefaultConfig()
	fs.IntVar(&cfg.Epochs, "epochs", cfg.Epochs, "training epochs (paper: 15)")
	fs.IntVar(&cfg.BatchSize, "batch", cfg.BatchSize, "windows per training batch")
	fs.Float64Var(&cfg.LR, "lr", cfg.LR, "Adam learning rate (paper: 0.001)")
	fs.IntVar(&cfg.LenEmbedDim, "len-embed", cfg.LenEmbedDim, "size of the exact-frame-length embedding added to the paper's inputs; 0 = the paper's inputs")
	fs.BoolVar(&cfg.HeaderFeatures, "header-features", cfg.HeaderFeatures, "add TTL, TCP window, options and payload length, TCP flags and transport to the paper's inputs")
	fs.BoolVar(&cfg.Balance, "balance", cfg.Balance, "weigh each device in the loss by its inverse share of the training packets")
	fs.Func("context", fmt.Sprintf("what each packet's output sees beside its own LSTM state: %s (the paper) or %s (which kinds of packet its device's stream in the capture session holds) (default %s)", learn.ContextNone, learn.ContextStream, cfg.Context), func(v string) error {
		if v != learn.ContextNone && v != learn.ContextStream {
			return fmt.Errorf("want %s or %s", learn.ContextNone, learn.ContextStream)
		}
		cfg.Context = v
		return nil
	})
	fs.IntVar(&cfg.Hidden, "hidden", cfg.Hidden, "LSTM hidden size per direction (paper: 64)")
	fs.Float64Var(&cfg.Dropout, "dropout", cfg.Dropout, "dropout on the LSTM outputs (paper: 0.5)")
	deviceFlag(fs, &cfg.Device)
	return &cfg
}

// deviceFlag registers --device, whose default comes from HOMEMOLE_DEVICE.
func deviceFlag(fs *flag.FlagSet, p *string) {
	*p = learn.DeviceAuto
	if v := os.Getenv("HOMEMOLE_DEVICE"); v != "" {
		*p = v
	}
	fs.Func("device", fmt.Sprintf("where libtorch trains and runs the model: %s, %s (or %s:N), or %s, the first GPU when libtorch sees one (env HOMEMOLE_DEVICE; default %s)",
		learn.DeviceCPU, learn.DeviceCUDA, learn.DeviceCUDA, learn.DeviceAuto, *p), func(s string) error {
		if err := learn.CheckDevice(s); err != nil {
			return err
		}
		*p = s
		return nil
	})
}

// useDevice resolves the device and logs where the command's libtorch
// work runs, before any of it starts: cuda on a machine where libtorch
// sees no GPU fails here, not after a dataset was read.
func useDevice(log *slog.Logger, name string) error {
	d, err := learn.ResolveDevice(name)
	if err != nil {
		return cli.Usagef("--device: %v", err)
	}
	log.Info("torch device", d.LogArgs()...)
	return nil
}

func runTrain(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	ep := endpoints.FromEnv()
	fs := newFlags("train", "--dataset NAME [--version V] [--model blstm|lstm] [--epochs N] [--run NAME]",
		"Trains the HomeMole model on a dataset version, holding out a share of the capture\n"+
			"sessions, labels every held-out packet and writes models/RUN/model.ckpt and\n"+
			"reports/RUN/report.{json,html}.")
	ep.Register(fs)
	name := fs.String("dataset", "", "dataset name")
	version := fs.String("version", "v1", "dataset version")
	run := fs.String("run", "", "run name (default: dataset-model-time)")
	seed := fs.Uint64("seed", 1, "seed of the split and the training")
	share := fs.Float64("test-share", 0.2, "share of capture sessions held out for evaluation")
	cfg := modelFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *name == "" {
		return cli.Usagef("train needs --dataset NAME")
	}
	if err := useDevice(log, cfg.Device); err != nil {
		return err
	}
	env, err := endpoints.OpenStore(ctx, ep, log)
	if err != nil {
		return err
	}
	defer env.Close()
	if *run == "" {
		*run = fmt.Sprintf("%s-%s-%s", *name, train.ModelName(*cfg), time.Now().UTC().Format("20060102T150405"))
	}
	cfg.Seed = int64(*seed)
	trained, err := trainAndReport(ctx, log, env, train.Job{Dataset: *name, Version: *version, RunName: *run, Model: *cfg, TestShare: *share, Seed: *seed}, filepath.Join(ep.Home, "reports"))
	if err != nil {
		return err
	}
	fmt.Fprint(out, "\n"+trained.Report.Summary())
	return nil
}

// epochLog is an epoch's training log line: loss, accuracy, throughput,
// and each step's time split into waiting for its batch (data) and the
// step itself (compute), so a device left idle by Go shows.
func epochLog(e learn.EpochStats, epochs int) []any {
	per := func(d time.Duration) string {
		return fmt.Sprintf("%.2f", d.Seconds()*1e3/float64(max(e.Steps, 1)))
	}
	return []any{"epoch", fmt.Sprintf("%d/%d", e.Epoch, epochs), "loss", fmt.Sprintf("%.4f", e.Loss),
		"train_accuracy", fmt.Sprintf("%.3f", e.Accuracy), "windows_per_s", fmt.Sprintf("%.0f", e.WindowsPerSec),
		"steps", e.Steps, "data_ms_per_step", per(e.DataWait), "compute_ms_per_step", per(e.Compute), "prepare_ms_per_step", per(e.Prepare)}
}

// trainAndReport runs a training job with terminal progress and copies the
// report next to the embedded state, where a browser can open it.
func trainAndReport(ctx context.Context, log *slog.Logger, env *endpoints.Env, job train.Job, localDir string) (*train.Outcome, error) {
	job.Store, job.Log = env.Store, log
	job.Progress = func(e learn.EpochStats) {
		log.Info("epoch", epochLog(e, job.Model.Epochs)...)
	}
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
