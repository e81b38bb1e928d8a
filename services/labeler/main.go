// Command labeler is the labeler worker: it labels a campaign's LAN packets
// from each home's inventory and republishes them to the LABELED stream.
// Replicas split the homes (--partition I --partitions N), each reading its
// homes in order through a durable consumer of its own.
package main

import (
	"context"
	"flag"
	"time"

	"github.com/homemole/homemole/pipeline/budget"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/label"
	"github.com/homemole/homemole/pipeline/metrics"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/worker"
)

// A long-running worker: stopped by SIGTERM it shuts down and exits 0.
func main() { worker.Serve(run) }

func run(ctx context.Context, args []string, env worker.Env) error {
	fs := flag.NewFlagSet("labeler", flag.ContinueOnError)
	file := fs.String("campaign", "", "campaign file (YAML) with the homes' inventories")
	nf := worker.RegisterNATSFlags(fs)
	ackWait := fs.Duration("ack-wait", 10*time.Minute, "how long the batches this worker holds unacknowledged (a session pair waiting for its other tap) stay with it; a dead worker's batches go to its replacement after it")
	holdMiB := fs.Int64("hold-mib", label.DefaultHoldBytes>>20, "MiB of decoded batches this worker may hold unacknowledged while session pairs wait for their other tap; past it batches are refused and come back later")
	holdHomeMiB := fs.Int64("hold-mib-per-home", label.DefaultHoldBytesPerHome>>20, "MiB of --hold-mib one home's new session pairs may take; a pair under way may take twice it, so its longest session pair must fit in that")
	idle := fs.Duration("idle-timeout", 0, "release a session pair that has received no batch for this long (its agent died): publish what came, count it cut short; 0 takes each live home's live.idle_timeout from the campaign (default two rotations plus a minute) and waits for ever on homes of capture files, whose killed agents resume")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *file == "" || nf.URL == "" {
		return cli.Usagef("labeler needs --campaign FILE and --nats URL")
	}
	if err := nf.Partition.Validate(); err != nil {
		return cli.Usagef("%v", err)
	}
	c, err := campaign.Load(*file)
	if err != nil {
		return err
	}
	// The inventory is what labels a home's packets: a home without one
	// would pass every packet through unlabeled.
	if err := c.ValidateInventories(); err != nil {
		return err
	}
	l, err := label.New(c)
	if err != nil {
		return err
	}
	l.AckWait = *ackWait
	if l.Budget, err = budget.New(*holdMiB<<20, *holdHomeMiB<<20); err != nil {
		return cli.Usagef("--hold-mib %d, --hold-mib-per-home %d: %v", *holdMiB, *holdHomeMiB, err)
	}
	l.IdleTimeout = *idle
	rt, conn, err := nf.Start(ctx, "labeler", env, c)
	if err != nil {
		return err
	}
	defer rt.Close()
	if err := rt.Metrics.Report(labelerTotals(l)); err != nil {
		return err
	}
	env.Log.Info("labeler running", "campaign", c.Name, "homes", len(c.Homes))
	// l.Run's consume loop, with failed batches counted.
	go l.Sweeper(ctx, conn, env.Log)
	return rt.Consume(ctx, conn, worker.Consumer{
		Config: l.ConsumerConfig("labeler-" + c.Name), Partition: nf.Partition, Homes: c.HomeNames(),
		Subject: func(home string) string { return schemas.PacketSubject(c.Name, home, "*") },
	}, func(ctx context.Context, d *bus.Delivery) error {
		return l.Handle(ctx, conn, d, env.Log)
	})
}

// labelerTotals reads the labeler's own per-home counts at scrape time.
func labelerTotals(l *label.Labeler) metrics.Totals {
	sum := func(f func(label.Stats) int) func() float64 {
		return func() float64 {
			n := 0
			for _, s := range l.Stats() {
				n += f(s)
			}
			return float64(n)
		}
	}
	return metrics.Totals{
		PacketsIn:  sum(func(s label.Stats) int { return s.Packets }),
		PacketsOut: sum(func(s label.Stats) int { return s.Labeled + s.Unlabeled }),
		PairingRate: func() float64 {
			var paired, all int
			for _, s := range l.Stats() {
				for _, t := range s.PerTap {
					paired, all = paired+t.Paired, all+t.Paired+t.Unpaired
				}
			}
			if all == 0 {
				return 0
			}
			return float64(paired) / float64(all)
		},
	}
}
