// Package workertest runs a worker in-process against real servers: an
// embedded JetStream server and an embedded S3 server in the test's temp
// folder, a generated home published by a real capture agent, and the
// worker's own run function given its command line.
package workertest

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/homemole/homemole/pipeline/agent"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/embedded"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/services/internal/worker"
)

// Rig is one test's servers and generated home.
type Rig struct {
	Servers *embedded.Servers
	Conn    *bus.Conn // the test's own connection, to feed and read back
	Store   store.Store
	// Campaign is the generated home's campaign, written to CampaignFile.
	Campaign     *campaign.Campaign
	CampaignFile string
	Home         *homegen.Home
	Log          *slog.Logger
}

// New starts the servers and generates a home of the given sessions; the
// context it returns ends after within, or with the test. The S3 keys go
// into the environment, where a worker in a pod finds them.
func New(t *testing.T, within time.Duration, sessions int, length time.Duration) (context.Context, *Rig) {
	t.Helper()
	ctx := embeddedtest.Context(t, within)
	dir := t.TempDir()
	r := &Rig{Log: embeddedtest.Log()}
	r.Servers, r.Conn, r.Store = embeddedtest.Start(ctx, t, r.Log)
	t.Setenv("HOMEMOLE_S3_ACCESS_KEY", r.Servers.S3AccessKey)
	t.Setenv("HOMEMOLE_S3_SECRET_KEY", r.Servers.S3SecretKey)
	t.Setenv("HOMEMOLE_METRICS_ADDR", "")
	var err error
	if r.Home, err = homegen.Generate(homegen.Config{Seed: 3, Sessions: sessions, SessionDuration: length}, filepath.Join(dir, "captures")); err != nil {
		t.Fatal(err)
	}
	r.Campaign = r.Home.Campaign("wt", "home-1")
	data, err := yaml.Marshal(r.Campaign)
	if err != nil {
		t.Fatal(err)
	}
	r.CampaignFile = filepath.Join(dir, "campaign.yaml")
	if err := os.WriteFile(r.CampaignFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return ctx, r
}

// Publish runs a capture agent per home over its files: the PACKETS
// stream then holds every packet. It returns how many.
func (r *Rig) Publish(ctx context.Context, t *testing.T) int {
	t.Helper()
	n := 0
	for _, h := range r.Campaign.Homes {
		ag, err := agent.New(agent.Config{Campaign: r.Campaign.Name, Home: h, Log: r.Log})
		if err != nil {
			t.Fatal(err)
		}
		if err := ag.RunFiles(ctx, r.Conn); err != nil {
			t.Fatal(err)
		}
		n += ag.Stats().Packets
	}
	return n
}

// Start runs the worker with args until the returned stop is called; stop
// cancels it, waits for it to return and gives its error (nil when it
// stopped because it was told to).
func Start(ctx context.Context, t *testing.T, run worker.Run, log *slog.Logger, args ...string) (stop func() error) {
	t.Helper()
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(wctx, args, worker.Env{Log: log, Out: os.Stderr}) }()
	var err error
	stopped := false
	stop = func() error {
		if !stopped {
			cancel()
			err = <-done
			stopped = true
			if wctx.Err() != nil && ctx.Err() == nil && isCanceled(err) {
				err = nil
			}
		}
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func isCanceled(err error) bool { return err == nil || errors.Is(err, context.Canceled) }

// Eventually polls cond every 100 ms until it holds or the deadline passes.
func Eventually(ctx context.Context, t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Env is a worker environment that logs to the test's stderr.
func Env(t *testing.T) worker.Env {
	return worker.Env{Log: embeddedtest.Log(), Out: os.Stderr}
}
