// Command detector is the online sequence-profile detector: it consumes a
// campaign's packet batches from the PACKETS stream (one tap per home, the
// observer's: wan by default), matches every SP of a model from
// `homemole sp train` against each home's stream, judges a CNN window
// every --step, and publishes each window's device types and counts as
// JSON (schemas.Seen) on hm.seen.<campaign>.<home>.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/detect"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
)

func main() {
	cli.Main(func(ctx context.Context, log *slog.Logger) error {
		fs := flag.NewFlagSet("detector", flag.ContinueOnError)
		modelPath := fs.String("model", "", "model file from `homemole sp train`")
		campaign := fs.String("campaign", "", "campaign name (the subjects' second token)")
		home := fs.String("home", "*", "home to watch, or * for all the campaign's homes")
		tap := fs.String("tap", "wan", "tap whose packets are judged: the view beyond the gateway (wan), or lan")
		natsURL := fs.String("nats", os.Getenv("HOMEMOLE_NATS_URL"), "NATS URL (env HOMEMOLE_NATS_URL)")
		step := fs.Int("step", 1, "bins between two reports per home (1: every bin of the model, 10 s by default)")
		auth := bus.AuthFromEnv()
		auth.RegisterFlags(fs)
		if err := cli.Parse(fs); err != nil {
			return err
		}
		if *modelPath == "" || *campaign == "" || *natsURL == "" {
			return cli.Usagef("detector needs --model FILE, --campaign NAME and --nats URL")
		}
		for what, v := range map[string]string{"--campaign": *campaign, "--tap": *tap} {
			if err := schemas.ValidateToken(what, v); err != nil {
				return cli.Usagef("%v", err)
			}
		}
		if *home != "*" {
			if err := schemas.ValidateToken("--home", *home); err != nil {
				return cli.Usagef("%v", err)
			}
		}
		m, err := detect.LoadFile(*modelPath)
		if err != nil {
			return err
		}
		defer m.Close()
		conn, err := bus.Connect(ctx, bus.Config{URL: *natsURL, Name: "detector", Replicas: bus.ReplicasFromEnv(), Auth: auth}, log)
		if err != nil {
			return err
		}
		defer conn.Close()
		log.Info("detector running", "campaign", *campaign, "home", *home, "tap", *tap, "device_types", len(m.Devices))
		return Run(ctx, conn, m, *campaign, *home, *tap, *step, log)
	})
}

// Run consumes until ctx ends. A batch is acked once its windows are
// published; the matching state lives in memory, so a restarted detector
// starts its homes afresh (a window's worth of traffic later it reports
// again), which is why detections go out on core NATS as a live feed.
func Run(ctx context.Context, conn *bus.Conn, m *detect.Model, campaign, home, tap string, step int, log *slog.Logger) error {
	o := &detect.Online{Model: m, Step: step, Lag: 1,
		Publish: func(_ context.Context, subject string, data []byte) error {
			return conn.NC.PublishMsg(&nats.Msg{Subject: subject, Data: data})
		}}
	cc := bus.ConsumerConfig{
		Stream:  schemas.StreamPackets,
		Durable: "detector-" + campaign + "-" + map[bool]string{true: "all", false: home}[home == "*"] + "-" + tap,
		Filter:  schemas.PacketSubject(campaign, home, tap),
		AckWait: time.Minute,
		// One batch at a time keeps each home's packets in order.
		MaxAckPending: 1,
	}
	return conn.Consume(ctx, cc, func(ctx context.Context, d *bus.Delivery) error {
		if err := o.Handle(ctx, d.Batch); err != nil {
			return err
		}
		return d.Ack()
	})
}
