package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/workertest"
)

// TestAgentPublishesEveryPacketOnce runs the capture agent's main
// in-process against embedded JetStream over a generated home's capture
// files: PACKETS then holds every packet of the captures, and the agent
// run again with the same spool passes over the captures it finished
// instead of publishing them twice.
func TestAgentPublishesEveryPacketOnce(t *testing.T) {
	ctx, r := workertest.New(t, 2*time.Minute, 2, time.Minute)
	h := r.Campaign.Homes[0]
	want := 0
	for _, tap := range h.Taps {
		for _, f := range tap.Files {
			want += len(capturetest.Packets(t, f, features.HomeConfig{}))
		}
	}
	spool := t.TempDir()
	args := []string{"--campaign", r.CampaignFile, "--home", h.Name, "--nats", r.Servers.NATSURL, "--spool", spool}
	var out bytes.Buffer
	if err := run(ctx, args, r.Log, &out); err != nil {
		t.Fatalf("capture: %v", err)
	}
	first := out.String()
	if !strings.Contains(first, fmt.Sprintf("%d packets in", want)) {
		t.Errorf("first run printed %q; want %d packets", first, want)
	}

	var mu sync.Mutex
	published := 0
	rctx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	go func() {
		_ = r.Conn.Consume(rctx, bus.ConsumerConfig{Stream: schemas.StreamPackets, Durable: "test-reader", Filter: schemas.PacketSubject(r.Campaign.Name, h.Name, "*")},
			func(_ context.Context, d *bus.Delivery) error {
				mu.Lock()
				defer mu.Unlock()
				published += len(d.Batch.Packets)
				return nil
			})
	}()
	workertest.Eventually(ctx, t, time.Minute, "PACKETS does not hold every packet of the captures", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return published >= want
	})

	out.Reset()
	if err := run(ctx, args, r.Log, &out); err != nil {
		t.Fatalf("capture, run again: %v", err)
	}
	second := out.String()
	// Finished captures are passed over whole: nothing is read or sent again.
	if !strings.Contains(second, " 0 packets in 0 batches") {
		t.Errorf("second run printed %q; want 0 packets published", second)
	}
	time.Sleep(500 * time.Millisecond) // a republished batch would arrive now
	mu.Lock()
	defer mu.Unlock()
	if published != want {
		t.Errorf("PACKETS holds %d packets, the captures %d", published, want)
	}
	t.Logf("first run: %s second run: %s", first, second)
}

// TestAgentRefusesBadFlags: usage mistakes end the agent at once.
func TestAgentRefusesBadFlags(t *testing.T) {
	env := workertest.Env(t)
	for _, args := range [][]string{{}, {"--campaign", "x.yaml"}, {"--campaign", "x.yaml", "--home", "h", "--nats", "nats://h:4222", "--spool-max", "lots"}, {"stray"}} {
		err := run(context.Background(), args, env.Log, env.Out)
		if err == nil {
			t.Errorf("%q: ran", args)
			continue
		}
		t.Logf("%q: %v", args, err)
	}
	// 0 was taken for the default, silently, where a negative value was
	// refused: it is refused too, naming the flag.
	for _, f := range []string{"--batch", "--batch-bytes", "--window"} {
		for _, v := range []string{"0", "-1"} {
			err := run(context.Background(), []string{"--campaign", "x.yaml", "--home", "h", "--nats", "nats://h:4222", f, v}, env.Log, env.Out)
			if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), f+" "+v) {
				t.Errorf("%s %s: %v, want a usage error naming it", f, v, err)
			}
		}
	}
}

// TestAgentStoppedLive: an agent with a watch tap runs until it is
// stopped, and stopped it has done its work: it prints its figures and
// returns nil (exit 0), where it returned the cancellation, which a
// one-shot command's exit status (cli.Main) now makes 130 or 143.
func TestAgentStoppedLive(t *testing.T) {
	ctx, r := workertest.New(t, 2*time.Minute, 1, 30*time.Second)
	c := *r.Campaign
	h := *c.Homes[0]
	h.Taps = []campaign.Tap{{Name: "lan", Watch: t.TempDir()}}
	c.Homes = []*campaign.Home{&h}
	file := writeCampaign(t, &c)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	time.AfterFunc(2*time.Second, stop) // as SIGTERM cancels cli.Main's context
	var out bytes.Buffer
	if err := run(sctx, []string{"--campaign", file, "--home", h.Name, "--nats", r.Servers.NATSURL}, r.Log, &out); err != nil {
		t.Fatalf("a live agent stopped: %v, want nil", err)
	}
	if !strings.Contains(out.String(), "home "+h.Name+":") {
		t.Errorf("a live agent stopped printed %q, want its figures", out.String())
	}
}

// TestAgentFailsOnUnreadCapture: an agent one of whose capture files
// cannot be read publishes the others, prints its summary and returns an
// error naming the file, so that it exits non-zero. Before, it only logged
// the file and exited 0.
func TestAgentFailsOnUnreadCapture(t *testing.T) {
	ctx, r := workertest.New(t, 2*time.Minute, 1, time.Minute)
	c := *r.Campaign
	h := *c.Homes[0]
	missing := filepath.Join(t.TempDir(), "missing.pcap")
	h.Taps = slices.Clone(h.Taps)
	h.Taps[0].Files = append(slices.Clone(h.Taps[0].Files), missing)
	c.Homes = []*campaign.Home{&h}
	file := writeCampaign(t, &c)
	var out bytes.Buffer
	err := run(ctx, []string{"--campaign", file, "--home", h.Name, "--nats", r.Servers.NATSURL}, r.Log, &out)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("capture returned %v, want an error naming %s", err, missing)
	}
	if !strings.Contains(out.String(), "1 unreadable captures") {
		t.Errorf("printed %q, want the summary with the unreadable capture", out.String())
	}
}

// writeCampaign writes c as a campaign file in a temporary folder.
func writeCampaign(t *testing.T, c *campaign.Campaign) string {
	t.Helper()
	data, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "campaign.yaml")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}
