// Command windower is the windowing worker: it cuts a campaign's labeled
// packets into traffic windows and writes them as Arrow objects to S3 for
// one dataset version. `homemole dataset assemble` writes the manifest once
// every session is windowed.
package main

import (
	"context"
	"flag"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/homemole/homemole/pipeline/build"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/metrics"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
)

func main() {
	cli.Main(func(ctx context.Context, log *slog.Logger) error {
		ep := endpoints.FromEnv()
		fs := flag.NewFlagSet("windower", flag.ContinueOnError)
		ep.Register(fs)
		file := fs.String("campaign", "", "campaign file (YAML): its inventories give the label vocabulary")
		spec := window.Spec{}
		spec.RegisterFlags(fs)
		ackWait := fs.Duration("ack-wait", 10*time.Minute, "how long the batches of an unfinished session stay with this worker unacknowledged; a dead worker's sessions go to another after it")
		metricsAddr := fs.String("metrics-addr", metrics.Addr(), metrics.Flag)
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
		if err := cli.Parse(fs); err != nil {
			return err
		}
		if *file == "" || spec.Dataset == "" || ep.NATSURL == "" || ep.S3 == "" {
			return cli.Usagef("windower needs --campaign FILE, --dataset NAME, --nats URL and --s3 HOST:PORT")
		}
		if err := part.Validate(); err != nil {
			return cli.Usagef("%v", err)
		}
		c, err := campaign.Load(*file)
		if err != nil {
			return err
		}
		spec.Labels = build.LabelsOf(c)
		m, err := metrics.Start(ctx, "windower", *metricsAddr, log)
		if err != nil {
			return err
		}
		// Packets in are counted as delivered, packets out and windows once
		// their session's objects are stored.
		var in, out, windows atomic.Int64
		if err := m.Report(metrics.Totals{
			PacketsIn:      func() float64 { return float64(in.Load()) },
			PacketsOut:     func() float64 { return float64(out.Load()) },
			WindowsWritten: func() float64 { return float64(windows.Load()) },
		}); err != nil {
			return err
		}
		if ep.Retention, err = retention(c.Retention); err != nil {
			return cli.Usagef("%v", err)
		}
		env, err := endpoints.Open(ctx, ep, "windower", log)
		if err != nil {
			return err
		}
		defer env.Close()
		if err := window.SaveSpec(ctx, env.Store, spec); err != nil {
			return err
		}
		w, err := window.New(spec, env.Store, log)
		if err != nil {
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
			log.Info("session windowed", "home", p.Home, "session", p.Session, "windows", p.Windows)
		}
		log.Info("windower running", "dataset", spec.Dataset+"/"+spec.Version, "kind", spec.Kind, "window", spec.Size, "partition", part.Index, "partitions", part.Count)
		// Partitioned, this replica reads only its homes (every session of a
		// home comes to one replica), under a durable of its own.
		var homes []string
		for _, h := range c.Homes {
			homes = append(homes, h.Name)
		}
		cc := part.Apply(bus.ConsumerConfig{
			Stream: schemas.StreamLabeled, Durable: "windower-" + spec.Dataset + "-" + spec.Version,
			Filter: schemas.LabeledSubject(c.Name, "*", "*"), MaxAckPending: 100000, AckWait: *ackWait,
		}, homes, func(home string) string { return schemas.LabeledSubject(c.Name, home, "*") })
		durable := cc.Durable
		if err := m.WatchConsumer(env.Bus.JS, schemas.StreamLabeled, durable); err != nil {
			return err
		}
		m.SetReady(metrics.NATSReady(env.Bus.NC))
		return env.Bus.Consume(ctx, cc, func(ctx context.Context, d *bus.Delivery) error {
			in.Add(int64(len(d.Batch.Packets)))
			return m.Fail(w.Handle(ctx, d))
		})
	})
}
