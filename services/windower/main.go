// Command windower is the windowing worker: it cuts a campaign's labeled
// packets into traffic windows and writes them as Arrow objects to S3 for
// one dataset version. `homemole dataset assemble` writes the manifest once
// every session is windowed.
package main

import (
	"context"
	"flag"
	"sync/atomic"

	"github.com/homemole/homemole/pipeline/build"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/metrics"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/worker"
)

// A long-running worker: stopped by SIGTERM it shuts down and exits 0.
func main() { worker.Serve(run) }

func run(ctx context.Context, args []string, env worker.Env) error {
	fs := flag.NewFlagSet("windower", flag.ContinueOnError)
	sf := worker.RegisterStoreFlags(fs)
	file := fs.String("campaign", "", "campaign file (YAML): its inventories give the label vocabulary")
	spec := window.Spec{}
	spec.RegisterFlags(fs)
	ackWait := fs.Duration("ack-wait", window.DefaultAckWait, "how long the batches of an unfinished session stay with this worker unacknowledged; a dead worker's sessions go to another after it")
	var consumerBudget int64
	fs.Func("consumer-budget", "bytes of packets all sessions of this worker may hold (e.g. 384MiB, about 140 bytes a packet); past it, batches of new sessions wait. Unset: no budget", func(v string) error {
		n, err := campaign.ParseBytes(v)
		consumerBudget = n
		return err
	})
	idle := fs.Duration("idle-timeout", 0, "close a session that has received no batch for this long (its agent died): write what came, mark its part cut short; 0 takes each live home's live.idle_timeout from the campaign (default two rotations plus a minute) and waits for ever on homes of capture files, whose killed agents resume")
	var part bus.Partition
	part.RegisterFlags(fs)
	retention := bus.RetentionFlags(fs)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *file == "" || spec.Dataset == "" || !sf.Given() {
		return cli.Usagef("windower needs --campaign FILE, --dataset NAME, --nats URL and --s3 HOST:PORT")
	}
	if err := part.Validate(); err != nil {
		return cli.Usagef("%v", err)
	}
	c, err := campaign.Load(*file)
	if err != nil {
		return err
	}
	if err := c.ValidateInventories(); err != nil {
		return err
	}
	spec.Labels = build.LabelsOf(c)
	// Refused before anything starts, and before the spec is stored: a
	// stored spec would refuse the corrected command.
	if err := spec.Validate(); err != nil {
		return cli.Usagef("%v", err)
	}
	if sf.Endpoints.Retention, err = retention(c.Retention); err != nil {
		return cli.Usagef("%v", err)
	}
	rt, err := worker.Start(ctx, "windower", sf.MetricsAddr, env)
	if err != nil {
		return err
	}
	defer rt.Close()
	// Packets in are counted as delivered, packets out and windows once
	// their session's objects are stored.
	var in, out, windows atomic.Int64
	if err := rt.Metrics.Report(metrics.Totals{
		PacketsIn:      func() float64 { return float64(in.Load()) },
		PacketsOut:     func() float64 { return float64(out.Load()) },
		WindowsWritten: func() float64 { return float64(windows.Load()) },
	}); err != nil {
		return err
	}
	eps, err := rt.Open(ctx, sf.Endpoints)
	if err != nil {
		return err
	}
	w, err := window.New(spec, eps.Store, env.Log)
	if err != nil {
		return err
	}
	if err := window.SaveSpec(ctx, eps.Store, spec); err != nil {
		return err
	}
	w.IdleTimeout = *idle
	w.ConsumerBudget = consumerBudget
	if w.IdleTimeout == 0 {
		w.IdleTimeouts = campaign.IdleTimeouts(c)
	}
	go w.Sweeper(ctx)
	w.OnPart = func(p window.Part) {
		out.Add(int64(p.Packets))
		windows.Add(int64(p.Windows))
		env.Log.Info("session windowed", "home", p.Home, "session", p.Session, "windows", p.Windows)
	}
	env.Log.Info("windower running", "dataset", spec.Dataset+"/"+spec.Version, "kind", spec.Kind, "window", spec.Size)
	return rt.Consume(ctx, eps.Bus, worker.Consumer{
		Config: window.ConsumerConfig(spec, c.Name, *ackWait), Partition: part, Homes: c.HomeNames(),
		Subject: func(home string) string { return schemas.LabeledSubject(c.Name, home, "*") },
	}, func(ctx context.Context, d *bus.Delivery) error {
		in.Add(int64(len(d.Batch.Packets)))
		return w.Handle(ctx, d)
	})
}
