// Command capture is the capture agent of one home gateway: it reads the
// home's taps and publishes packet-metadata batches to NATS JetStream. It
// builds without cgo, for small arm64 gateways.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/homemole/homemole/pipeline/agent"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/services/internal/cli"
)

func main() {
	cli.Main(func(ctx context.Context, log *slog.Logger) error {
		fs := flag.NewFlagSet("capture", flag.ContinueOnError)
		file := fs.String("campaign", "", "campaign file (YAML)")
		home := fs.String("home", "", "the home this agent captures, as named in the campaign")
		natsURL := fs.String("nats", os.Getenv("HOMEMOLE_NATS_URL"), "NATS URL (env HOMEMOLE_NATS_URL); `homemole serve` runs a local one")
		batch := fs.Int("batch", 512, "packets per published batch")
		if err := cli.Parse(fs); err != nil {
			return err
		}
		if *file == "" || *home == "" || *natsURL == "" {
			return cli.Usagef("capture needs --campaign FILE, --home NAME and --nats URL")
		}
		c, err := campaign.Load(*file)
		if err != nil {
			return err
		}
		var h *campaign.Home
		for _, x := range c.Homes {
			if x.Name == *home {
				h = x
			}
		}
		if h == nil {
			return cli.Usagef("home %q is not in %s", *home, *file)
		}
		conn, err := bus.Connect(ctx, bus.Config{URL: *natsURL, Name: "capture-" + *home}, log)
		if err != nil {
			return err
		}
		defer conn.Close()
		ag, err := agent.New(agent.Config{Campaign: c.Name, Home: h, BatchSize: *batch, Log: log})
		if err != nil {
			return err
		}
		if err := ag.RunFiles(ctx, conn.NewAsyncPublisher(64)); err != nil {
			return err
		}
		st := ag.Stats()
		fmt.Printf("home %s: %d captures, %d packets in %d batches; %d undecodable packets, %d unreadable captures\n",
			*home, st.Files, st.Packets, st.Batches, st.DecodeErrors, st.ReadErrors)
		return nil
	})
}
