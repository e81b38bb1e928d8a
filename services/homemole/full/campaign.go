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
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/campaignstatus"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/services/internal/cli"
	"gopkg.in/yaml.v3"
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

// runDLQ lists, replays and discards the dead-letter stream: the messages consumers
// could never process (an unknown home or tap, a forged or undecodable
// batch), kept with why instead of dropped.
func runDLQ(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	return runSubcommand(ctx, log, out, args, sharedSubcommands(runDLQOn, "ls", "replay", "discard"),
		"dlq needs a subcommand: ls | replay | discard [--subject PATTERN] [--seq N]")
}

// runDLQOn is dlq ls, replay and discard: the same dead letters chosen by
// the same flags, listed, put back or removed.
func runDLQOn(ctx context.Context, log *slog.Logger, out io.Writer, sub string, args []string) error {
	fs, ep := newStoreFlags("dlq "+sub, "[--subject PATTERN] [--seq N] [--json]",
		"ls lists the dead letters: the messages consumers moved to the DLQ stream because\n"+
			"they can never succeed as they are, each with its original subject, the consumer\n"+
			"that gave up and why. replay puts them back on their original subjects, once the\n"+
			"cause is fixed (the home added to the labeler's campaign, the labeler restarted),\n"+
			"and removes them from the DLQ; replaying twice stores a message once. discard removes\n"+
			"them for good (a forged batch, once looked at); it needs --subject or --seq.")
	subject := fs.String("subject", "", "only dead letters whose original subject matches this pattern (hm.pkt.c.home-2.>)")
	seq := fs.Uint64("seq", 0, "only the dead letter of this DLQ sequence number")
	asJSON := fs.Bool("json", false, "ls: one JSON object per dead letter")
	if err := parse(fs, args); err != nil {
		return err
	}
	env, err := endpoints.Open(ctx, *ep, "homemole-dlq", log)
	if err != nil {
		return err
	}
	defer env.Close()
	letters, err := env.Bus.DeadLetters(ctx, *subject)
	if err != nil {
		return err
	}
	if *seq != 0 {
		var one []bus.DeadLetter
		for _, dl := range letters {
			if dl.Seq == *seq {
				one = append(one, dl)
			}
		}
		if len(one) == 0 {
			return fmt.Errorf("no dead letter %d (homemole dlq ls lists them)", *seq)
		}
		letters = one
	}
	if sub == "discard" {
		if *subject == "" && *seq == 0 {
			return cli.Usagef("dlq discard needs --subject PATTERN or --seq N: it removes dead letters for good")
		}
		n, err := env.Bus.Discard(ctx, letters)
		fmt.Fprintf(out, "discarded %d of %d dead letters\n", n, len(letters))
		return err
	}
	if sub == "replay" {
		n, err := env.Bus.Replay(ctx, letters)
		fmt.Fprintf(out, "replayed %d of %d dead letters\n", n, len(letters))
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		for _, dl := range letters {
			if err := enc.Encode(dl); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tFAILED AT\tSUBJECT\tCONSUMER\tBYTES\tREASON")
	for _, dl := range letters {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\n", dl.Seq, dl.FailedAt.Format("2006-01-02 15:04:05"), dl.Subject, dl.Consumer, dl.Bytes, dl.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "%d dead letters\n", len(letters))
	return nil
}

// writeCampaign writes c as a campaign file that campaign.Load reads back:
// tap files are written relative to the file's folder, as Load resolves them.
func writeCampaign(path string, c *campaign.Campaign) error {
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("write demo campaign: %w", err)
	}
	out := *c
	out.Homes = nil
	for _, h := range c.Homes {
		hc := *h
		hc.Taps = nil
		for _, t := range h.Taps {
			tc := t
			tc.Files = nil
			for _, f := range t.Files {
				abs, err := filepath.Abs(f)
				if err != nil {
					return fmt.Errorf("write demo campaign: %w", err)
				}
				rel, err := filepath.Rel(dir, abs)
				if err != nil {
					return fmt.Errorf("write demo campaign: %w", err)
				}
				tc.Files = append(tc.Files, rel)
			}
			hc.Taps = append(hc.Taps, tc)
		}
		out.Homes = append(out.Homes, &hc)
	}
	data, err := yaml.Marshal(&out)
	if err != nil {
		return fmt.Errorf("encode demo campaign: %w", err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("write demo campaign: %w", err)
	}
	return nil
}
