package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/workertest"
)

// TestLabelerLabelsEveryPacket runs the labeler's main in-process against
// embedded JetStream, publishes a generated home through a capture agent,
// and reads LABELED back: every packet comes out once, on the lan view,
// and the inventory's devices are named.
func TestLabelerLabelsEveryPacket(t *testing.T) {
	ctx, r := workertest.New(t, 2*time.Minute, 2, 2*time.Minute)
	published := r.Publish(ctx, t)
	stop := workertest.Start(ctx, t, run, r.Log, "--campaign", r.CampaignFile, "--nats", r.Servers.NATSURL)

	var mu sync.Mutex
	labeled, named := 0, map[string]int{}
	views := map[string]bool{}
	rctx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	go func() {
		_ = r.Conn.Consume(rctx, bus.ConsumerConfig{Stream: schemas.StreamLabeled, Durable: "test-reader", Filter: schemas.LabeledSubject("wt", "*", "*")},
			func(_ context.Context, d *bus.Delivery) error {
				mu.Lock()
				defer mu.Unlock()
				labeled += len(d.Batch.Packets)
				views[d.Batch.View] = true
				for _, l := range d.Batch.Labels {
					if l >= 0 && int(l) < len(d.Batch.Devices) {
						named[d.Batch.Devices[l].Name]++
					}
				}
				return nil
			})
	}()
	workertest.Eventually(ctx, t, time.Minute, "the labeler did not label every published packet", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return labeled >= published
	})
	if err := stop(); err != nil {
		t.Fatalf("labeler: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if labeled != published {
		t.Errorf("%d packets labeled, %d published", labeled, published)
	}
	if len(views) != 1 || !views["lan"] {
		t.Errorf("views %v, want lan only (the home has no WAN tap)", views)
	}
	for _, d := range r.Home.Inventory {
		if d.Category == campaign.CategoryIoT && named[d.Name] == 0 {
			t.Errorf("no packet labeled %s (labels: %v)", d.Name, named)
		}
	}
	t.Logf("%d packets published and labeled; per device %v", published, named)
}

// TestLabelerRefusesBadFlags: a worker's usage mistakes end it at once,
// naming what is missing.
func TestLabelerRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{{}, {"--campaign", "x.yaml"}, {"--campaign", "x.yaml", "--nats", "nats://h:4222", "--partition", "3", "--partitions", "2"}, {"stray"}} {
		err := run(context.Background(), args, workertest.Env(t))
		if err == nil {
			t.Errorf("%q: ran", args)
			continue
		}
		t.Logf("%q: %v", args, err)
	}
}

// TestLabelerRefusesHomeWithoutInventory: the inventory gives the labels,
// so a campaign home without one is refused before the labeler connects,
// naming the file, the home and what to add.
func TestLabelerRefusesHomeWithoutInventory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	yaml := "name: c\nhomes:\n  - name: home-1\n    gateway: {mode: napt}\n    taps:\n      - {name: lan, interface: eth0}\n"
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"--campaign", file, "--nats", "nats://127.0.0.1:1"}, workertest.Env(t))
	if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "home-1 has no inventory") {
		t.Fatalf("labeler with a home without inventory: %v, want an error naming %s, home-1 and its inventory", err, file)
	}
}
