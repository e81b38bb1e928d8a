package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/campaignstatus"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/services/internal/cli"
)

// newWatcher is the campaign status watcher of serve's page and of
// campaign status: of every campaign on the PACKETS stream, or with a
// campaign file, of that campaign's homes and taps only.
func newWatcher(log *slog.Logger, file string) (*campaignstatus.Watcher, error) {
	w := &campaignstatus.Watcher{Log: log}
	if file == "" {
		return w, nil
	}
	c, err := campaign.Load(file)
	if err != nil {
		return nil, err
	}
	w.Campaign = c
	return w, nil
}

// runCampaign is `homemole campaign status`: how a running campaign is
// doing, per home and tap, read from the streams and the object store.
func runCampaign(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	if len(args) == 0 || args[0] != "status" {
		return cli.Usagef("campaign needs a subcommand: status [--campaign FILE] [--json]")
	}
	fs, ep := newStoreFlags("campaign status", "[--campaign FILE] [--json] [--interval D]",
		"Shows, per home and tap, the live sessions (newest batch of each PACKETS subject),\n"+
			"packets/s (two samples --interval apart), the consumers' lag, windows written (the\n"+
			"datasets' part records), the pairing rate (WAN labeled share over LAN labeled share in\n"+
			"the last 10 minutes of labeled batches), the devices seen (hm.seen, when a stream keeps\n"+
			"it) and the newest dead letter. Without --campaign, every campaign on the\n"+
			"PACKETS stream; with it, that campaign's homes and taps, also before their first batch.")
	file := fs.String("campaign", "", "campaign file: report its homes and taps only")
	asJSON := fs.Bool("json", false, "write the report as one JSON object")
	interval := fs.Duration("interval", 2*time.Second, "distance between the two samples the packet rates come from (0: one sample, no rates)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *interval < 0 {
		return cli.Usagef("campaign status: --interval %v is negative", *interval)
	}
	w, err := newWatcher(log, *file)
	if err != nil {
		return err
	}
	env, err := endpoints.Open(ctx, *ep, "homemole-campaign-status", log)
	if err != nil {
		return err
	}
	defer env.Close()
	w.JS, w.Store = env.Bus.JS, env.Store
	rep, err := w.Collect(ctx)
	if err != nil {
		return fmt.Errorf("campaign status: %w", err)
	}
	if *interval > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(*interval):
		}
		if rep, err = w.Collect(ctx); err != nil {
			return fmt.Errorf("campaign status: %w", err)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return campaignstatus.WriteText(out, rep)
}

// serveStatus serves the campaign status page on addr (loopback only)
// until ctx ends; it returns once the listener is up, with its URL.
func serveStatus(ctx context.Context, log *slog.Logger, addr string, w *campaignstatus.Watcher) (string, <-chan error, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, cli.Usagef("serve: --http %q: %v (want HOST:PORT, e.g. 127.0.0.1:8080)", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", nil, cli.Usagef("serve: --http %q: the status page listens on a loopback address only (127.0.0.1, ::1 or localhost); reach it from elsewhere through an SSH tunnel", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("serve: listen on %s for the status page: %w", addr, err)
	}
	srv := &http.Server{Handler: campaignstatus.Handler(w), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("status page did not stop cleanly", "err", err)
		}
	}()
	return "http://" + ln.Addr().String() + "/campaign", done, nil
}
