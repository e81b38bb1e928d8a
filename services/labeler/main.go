// Command labeler is the labeler worker: it labels a campaign's LAN packets
// from each home's inventory and republishes them to the LABELED stream.
// Replicas share one durable consumer, so adding one adds throughput.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/label"
	"github.com/homemole/homemole/services/internal/cli"
)

func main() {
	cli.Main(func(ctx context.Context, log *slog.Logger) error {
		fs := flag.NewFlagSet("labeler", flag.ContinueOnError)
		file := fs.String("campaign", "", "campaign file (YAML) with the homes' inventories")
		natsURL := fs.String("nats", os.Getenv("HOMEMOLE_NATS_URL"), "NATS URL (env HOMEMOLE_NATS_URL)")
		if err := cli.Parse(fs); err != nil {
			return err
		}
		if *file == "" || *natsURL == "" {
			return cli.Usagef("labeler needs --campaign FILE and --nats URL")
		}
		c, err := campaign.Load(*file)
		if err != nil {
			return err
		}
		l, err := label.New(c)
		if err != nil {
			return err
		}
		conn, err := bus.Connect(ctx, bus.Config{URL: *natsURL, Name: "labeler"}, log)
		if err != nil {
			return err
		}
		defer conn.Close()
		log.Info("labeler running", "campaign", c.Name, "homes", len(c.Homes))
		return l.Run(ctx, conn, "labeler-"+c.Name, log)
	})
}
