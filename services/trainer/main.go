// Command trainer is the trainer and evaluator worker: it trains one model on
// one dataset version (CUDA when libtorch sees a GPU, CPU otherwise) and
// writes the checkpoint and the report to S3.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"

	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/pipeline/metrics"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/services/internal/cli"
)

func main() {
	cli.Main(func(ctx context.Context, log *slog.Logger) error {
		ep := endpoints.FromEnv()
		fs := flag.NewFlagSet("trainer", flag.ContinueOnError)
		ep.Register(fs)
		job := train.Job{Model: learn.DefaultConfig()}
		fs.StringVar(&job.Dataset, "dataset", "", "dataset name")
		fs.StringVar(&job.Version, "version", "v1", "dataset version")
		fs.StringVar(&job.RunName, "run", "", "run name: checkpoint and report go under models/RUN and reports/RUN")
		fs.BoolVar(&job.Model.Bidirectional, "bidirectional", true, "BLSTM (true) or LSTM (false)")
		fs.IntVar(&job.Model.Epochs, "epochs", job.Model.Epochs, "training epochs")
		fs.IntVar(&job.Model.LenEmbedDim, "len-embed", job.Model.LenEmbedDim, "exact-frame-length embedding size; 0 = the paper's model exactly")
		fs.Uint64Var(&job.Seed, "seed", 1, "seed of the split and the training")
		job.Model.Device = learn.DeviceAuto
		if v := os.Getenv("HOMEMOLE_DEVICE"); v != "" {
			job.Model.Device = v
		}
		fs.StringVar(&job.Model.Device, "device", job.Model.Device, "cpu, cuda, cuda:N, or auto: the first GPU when libtorch sees one (env HOMEMOLE_DEVICE)")
		fs.IntVar(&job.Model.BatchSize, "batch", job.Model.BatchSize, "windows per training batch")
		metricsAddr := fs.String("metrics-addr", metrics.Addr(), metrics.Flag)
		if err := cli.Parse(fs); err != nil {
			return err
		}
		dev, err := learn.ResolveDevice(job.Model.Device)
		if err != nil {
			return cli.Usagef("--device: %v", err)
		}
		log.Info("torch device", dev.LogArgs()...)
		if job.Dataset == "" || job.RunName == "" || ep.NATSURL == "" || ep.S3 == "" {
			return cli.Usagef("trainer needs --dataset NAME, --run NAME, --nats URL and --s3 HOST:PORT")
		}
		// They become object keys (models/RUN, datasets/NAME/VERSION).
		if err := errors.Join(dataset.CheckNames(job.Dataset, job.Version), train.CheckRunName(job.RunName)); err != nil {
			return cli.Usagef("%v", err)
		}
		m, err := metrics.Start(ctx, "trainer", *metricsAddr, log)
		if err != nil {
			return err
		}
		var epochs atomic.Int64
		if err := m.Report(metrics.Totals{Epochs: func() float64 { return float64(epochs.Load()) }}); err != nil {
			return err
		}
		env, err := endpoints.Open(ctx, ep, "trainer", log)
		if err != nil {
			return err
		}
		defer env.Close()
		job.Store, job.Log = env.Store, log
		job.Model.Seed = int64(job.Seed)
		m.SetReady(func() error { return nil })
		job.Progress = func(e learn.EpochStats) {
			epochs.Add(1)
			log.Info("epoch", "epoch", e.Epoch, "loss", e.Loss, "train_accuracy", e.Accuracy, "windows_per_s", e.WindowsPerSec,
				"steps", e.Steps, "data_wait", e.DataWait, "compute", e.Compute, "prepare", e.Prepare)
		}
		out, err := job.Run(ctx)
		if err != nil {
			return err
		}
		fmt.Print(out.Report.Summary())
		fmt.Printf("checkpoint %s\nreport %s\n", env.Store.Location(out.Checkpoint), env.Store.Location(out.ReportHTML))
		return nil
	})
}
