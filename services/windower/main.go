// Command windower is the windowing worker: it cuts a campaign's labeled
// packets into traffic windows and writes them as Arrow objects to S3 for
// one dataset version. `homemole dataset assemble` writes the manifest once
// every session is windowed.
package main

import (
	"context"
	"flag"
	"log/slog"
	"time"

	"github.com/homemole/homemole/pipeline/build"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/endpoints"
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
		if err := cli.Parse(fs); err != nil {
			return err
		}
		if *file == "" || spec.Dataset == "" || ep.NATSURL == "" || ep.S3 == "" {
			return cli.Usagef("windower needs --campaign FILE, --dataset NAME, --nats URL and --s3 HOST:PORT")
		}
		c, err := campaign.Load(*file)
		if err != nil {
			return err
		}
		spec.Labels = build.LabelsOf(c)
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
		w.OnPart = func(p window.Part) {
			log.Info("session windowed", "home", p.Home, "session", p.Session, "windows", p.Windows)
		}
		log.Info("windower running", "dataset", spec.Dataset+"/"+spec.Version, "kind", spec.Kind, "window", spec.Size)
		return env.Bus.Consume(ctx, bus.ConsumerConfig{
			Stream: schemas.StreamLabeled, Durable: "windower-" + spec.Dataset + "-" + spec.Version,
			Filter: schemas.LabeledSubject(c.Name, "*", "*"), MaxAckPending: 100000, AckWait: *ackWait,
		}, w.Handle)
	})
}
