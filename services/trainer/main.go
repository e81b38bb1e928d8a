// Command trainer is the trainer and evaluator worker: it trains one model
// (rf, lstm or blstm; CUDA when libtorch sees a GPU, CPU otherwise) on one
// dataset version, judges it on held-out capture sessions and writes the
// checkpoint and the report to S3, through the same evaluation and the
// same model flags as homemole train.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sync/atomic"

	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/pipeline/metrics"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/modelflag"
	"github.com/homemole/homemole/services/internal/worker"
)

// A one-shot job: interrupted, it exits 130 or 143, never 0.
func main() { worker.Main(run) }

func run(ctx context.Context, args []string, env worker.Env) error {
	fs := flag.NewFlagSet("trainer", flag.ContinueOnError)
	sf := worker.RegisterStoreFlags(fs)
	var job train.Job
	fs.StringVar(&job.Dataset, "dataset", "", "dataset name")
	fs.StringVar(&job.Version, "version", "v1", "dataset version")
	fs.StringVar(&job.RunName, "run", "", "run name: checkpoint and report go under models/RUN and reports/RUN")
	fs.Uint64Var(&job.Seed, "seed", 1, "seed of the split and the training")
	modelflag.TestShare(fs, &job.TestShare)
	spec := modelflag.Register(fs)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if job.Dataset == "" || job.RunName == "" || !sf.Given() {
		return cli.Usagef("trainer needs --dataset NAME, --run NAME, --nats URL and --s3 HOST:PORT")
	}
	// They become object keys (models/RUN, datasets/NAME/VERSION).
	if err := errors.Join(dataset.CheckNames(job.Dataset, job.Version), train.CheckRunName(job.RunName)); err != nil {
		return cli.Usagef("%v", err)
	}
	if err := modelflag.UseDevice(env.Log, spec.Learn.Device); err != nil {
		return err
	}
	rt, err := worker.Start(ctx, "trainer", sf.MetricsAddr, env)
	if err != nil {
		return err
	}
	defer rt.Close()
	var epochs atomic.Int64
	if err := rt.Metrics.Report(metrics.Totals{Epochs: func() float64 { return float64(epochs.Load()) }}); err != nil {
		return err
	}
	eps, err := rt.Open(ctx, sf.Endpoints)
	if err != nil {
		return err
	}
	// A job, not a consumer: ready once connected, until it ends.
	rt.Metrics.SetReady(func() error { return nil })
	spec.Learn.Seed = int64(job.Seed)
	job.Spec, job.Store, job.Log = *spec, eps.Store, env.Log
	job.Progress = func(learn.EpochStats) { epochs.Add(1) }
	out, err := job.Run(ctx)
	if err != nil {
		return err
	}
	fmt.Fprint(env.Out, out.Report.Summary())
	fmt.Fprintf(env.Out, "checkpoint %s\nreport %s\n", eps.Store.Location(out.Checkpoint), eps.Store.Location(out.ReportHTML))
	return nil
}
