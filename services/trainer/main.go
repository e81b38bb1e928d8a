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
	"sync/atomic"

	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/pipeline/metrics"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/modelflag"
)

func main() {
	cli.Main(func(ctx context.Context, log *slog.Logger) error {
		ep := endpoints.FromEnv()
		fs := flag.NewFlagSet("trainer", flag.ContinueOnError)
		ep.Register(fs)
		var job train.Job
		fs.StringVar(&job.Dataset, "dataset", "", "dataset name")
		fs.StringVar(&job.Version, "version", "v1", "dataset version")
		fs.StringVar(&job.RunName, "run", "", "run name: checkpoint and report go under models/RUN and reports/RUN")
		fs.Uint64Var(&job.Seed, "seed", 1, "seed of the split and the training")
		fs.Float64Var(&job.TestShare, "test-share", 0.2, "share of capture sessions held out for evaluation")
		spec := modelflag.Register(fs)
		metricsAddr := fs.String("metrics-addr", metrics.Addr(), metrics.Flag)
		if err := cli.Parse(fs); err != nil {
			return err
		}
		if err := modelflag.UseDevice(log, spec.Learn.Device); err != nil {
			return err
		}
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
		spec.Learn.Seed = int64(job.Seed)
		job.Spec = *spec
		m.SetReady(func() error { return nil })
		job.Progress = func(learn.EpochStats) { epochs.Add(1) }
		out, err := job.Run(ctx)
		if err != nil {
			return err
		}
		fmt.Print(out.Report.Summary())
		fmt.Printf("checkpoint %s\nreport %s\n", env.Store.Location(out.Checkpoint), env.Store.Location(out.ReportHTML))
		return nil
	})
}
