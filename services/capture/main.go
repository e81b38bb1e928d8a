// Command capture is the capture agent of one home gateway: it reads the
// home's taps and publishes packet-metadata batches to NATS JetStream. It
// builds without cgo, for small arm64 gateways.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"

	"github.com/homemole/homemole/pipeline/agent"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/metrics"
	"github.com/homemole/homemole/services/internal/cli"
)

func main() {
	cli.Main(func(ctx context.Context, log *slog.Logger) error {
		return run(ctx, os.Args[1:], log, os.Stdout)
	})
}

// run is the agent given its command line, so a test runs it in-process.
// It takes the logger and output as plain values rather than the workers'
// runtime: the agent stays a small cgo-free binary for arm64 gateways,
// without the endpoints (and embedded servers) that runtime links.
func run(ctx context.Context, args []string, log *slog.Logger, out io.Writer) error {
	fs := flag.NewFlagSet("capture", flag.ContinueOnError)
	file := fs.String("campaign", "", "campaign file (YAML)")
	home := fs.String("home", "", "the home this agent captures, as named in the campaign")
	natsURL := fs.String("nats", os.Getenv("HOMEMOLE_NATS_URL"), "NATS URL (env HOMEMOLE_NATS_URL); `homemole serve` runs a local one")
	batch := fs.Int("batch", 4096, "most packets per published batch")
	batchBytes := fs.Int("batch-bytes", 64<<10, "most bytes per published batch (keep it under the server's max_payload)")
	window := fs.Int("window", 32, "most batches published and not yet acknowledged")
	spoolDir := fs.String("spool", os.Getenv("HOMEMOLE_SPOOL"), "folder for the spool and the progress files (env HOMEMOLE_SPOOL): while NATS is unreachable batches\n"+
		"wait there, and a restarted agent resumes each capture where the last one stopped. Empty: batches wait\n"+
		"in memory only, the agent fails at once if NATS is unreachable at start, and a restart publishes everything again")
	spoolMax := fs.String("spool-max", "256MiB", "most disk the spool may use (e.g. 64MiB, 2GiB); when it is full the agent stops reading until NATS answers")
	metricsAddr := fs.String("metrics-addr", metrics.Addr(), metrics.Flag)
	auth := bus.AuthFromEnv()
	auth.RegisterFlags(fs)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if *file == "" || *home == "" || *natsURL == "" {
		return cli.Usagef("capture needs --campaign FILE, --home NAME and --nats URL")
	}
	// The agent takes 0 for its default; on the command line a 0 is a
	// mistake, refused as a negative value is, not the default in
	// disguise.
	for _, f := range []struct {
		name string
		v    int
	}{{"batch", *batch}, {"batch-bytes", *batchBytes}, {"window", *window}} {
		if f.v < 1 {
			return cli.Usagef("--%s %d: want a positive number (leave the flag out for its default, %s)", f.name, f.v, fs.Lookup(f.name).DefValue)
		}
	}
	maxBytes, err := campaign.ParseBytes(*spoolMax)
	if err != nil {
		return cli.Usagef("--spool-max: %v", err)
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
	ag, err := agent.New(agent.Config{
		Campaign: c.Name, Home: h, BatchSize: *batch, BatchBytes: *batchBytes, Window: *window,
		SpoolDir: *spoolDir, SpoolMaxBytes: maxBytes, Log: log,
	})
	if err != nil {
		return cli.Usagef("%v", err)
	}
	m, err := metrics.Start(ctx, "capture", *metricsAddr, log)
	if err != nil {
		return err
	}
	stat := func(f func(agent.Stats) int) func() float64 {
		return func() float64 { return float64(f(ag.Stats())) }
	}
	if err := m.Report(metrics.Totals{
		PacketsIn:  stat(func(s agent.Stats) int { return s.Packets }),
		BatchesOut: stat(func(s agent.Stats) int { return s.Acked }),
		Errors:     stat(func(s agent.Stats) int { return s.DecodeErrors + s.ReadErrors }),
	}); err != nil {
		return err
	}
	// With a spool the agent can start before NATS does and fill the
	// spool meanwhile; without one, an unreachable server is an error now.
	spooling := *spoolDir != ""
	conn, err := bus.Connect(ctx, bus.Config{
		URL: *natsURL, Name: "capture-" + *home, RetryConnect: spooling, NoReconnectBuffer: spooling,
		Replicas: bus.ReplicasFromEnv(), Auth: auth, IDKey: auth.IDKey(),
	}, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	// Ready once running, connected or not: a spooling agent works
	// through an outage, and no Service routes to it.
	m.SetReady(func() error { return nil })
	// Interface and watch taps capture until the agent is stopped
	// (SIGTERM); the final batch of each live session is sent on the way
	// out, and that stop is the agent's success (exit 0). An agent of
	// capture files alone is a one-shot run: stopped before it published
	// them all, it fails (cli.Main: exit 130 or 143). A capture file not
	// read whole fails the run once the others are published, after the
	// summary (a watched folder's file is logged and counted, and the
	// agent watches on).
	inputs := ag.Inputs(true)
	live := slices.ContainsFunc(inputs, func(in agent.Input) bool { return in.Live || in.Watch })
	err = ag.Run(ctx, conn, inputs)
	switch {
	case err == nil, errors.As(err, new(agent.UnreadCaptures)):
	case live && ctx.Err() != nil && errors.Is(err, context.Canceled):
		log.Info("capture stopped", "home", *home, "reason", context.Cause(ctx))
		err = nil
	default:
		return err
	}
	st := ag.Stats()
	fmt.Fprintf(out, "home %s: %d captures, %d packets in %d batches (%d acknowledged, %d spooled during %d outages, %d packets resumed past); %d undecodable packets, %d frames of the link's own (%s), %d frames left out (%s), %d unreadable captures, %d times an interface went missing\n",
		*home, st.Files, st.Packets, st.Batches, st.Acked, st.Spooled, st.Outages, st.Skipped, st.DecodeErrors, st.NotPackets, features.NotPacketKinds, st.OtherViews, capture.OtherViewKinds, st.ReadErrors, st.InterfaceOutages)
	return err
}
