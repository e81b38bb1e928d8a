package label

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/agent"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/homegen/homegentest"
	"github.com/homemole/homemole/schemas"
)

func startBus(tb testing.TB) (*bus.Conn, *slog.Logger) {
	tb.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	_, conn, _ := embeddedtest.Start(context.Background(), tb, log)
	return conn, log
}

// pairedCampaign is a generated home with a LAN tap and the WAN tap its
// gateway would have had, plus a second home with a LAN tap only.
func pairedCampaign(tb testing.TB, mode gateway.Mode, sessions int, dur time.Duration) *campaign.Campaign {
	tb.Helper()
	dir := tb.TempDir()
	g, hc := homegentest.Generate(tb, homegen.Config{Seed: 5, Sessions: sessions, SessionDuration: dur}, filepath.Join(dir, "lan"))
	var wanFiles []string
	if err := os.MkdirAll(filepath.Join(dir, "wan"), 0o755); err != nil {
		tb.Fatal(err)
	}
	gcfg := gateway.DefaultConfig()
	gcfg.Mode = mode
	for _, f := range g.Files {
		wanPath := filepath.Join(dir, "wan", filepath.Base(f))
		if _, err := gateway.EmulateFile(context.Background(), f, wanPath, wanPath+".truth.csv", hc, gcfg); err != nil {
			tb.Fatal(err)
		}
		wanFiles = append(wanFiles, wanPath)
	}
	gw := campaign.Gateway{Mode: string(mode), MAC: g.GatewayMAC, LANNets: []string{g.LANNet}}
	c := &campaign.Campaign{Name: "c", Homes: []*campaign.Home{
		{Name: "paired", Gateway: gw, Taps: []campaign.Tap{{Name: "lan", Files: g.Files}, {Name: "wan", Files: wanFiles}}, Inventory: g.Inventory},
		{Name: "lanonly", Gateway: gw, Taps: []campaign.Tap{{Name: "lan", Files: g.Files}}, Inventory: g.Inventory},
	}}
	c.Defaults()
	if err := c.Validate(); err != nil {
		tb.Fatal(err)
	}
	return c
}

// labeledPackets reads the LABELED stream and counts each (source, offset).
func labeledPackets(t *testing.T, conn *bus.Conn) (map[string]int, int) {
	t.Helper()
	seen, msgs := map[string]int{}, 0
	embeddedtest.EachBatch(t, conn, schemas.StreamLabeled, func(_ *jetstream.RawStreamMsg, b *schemas.Batch) {
		msgs++
		for _, p := range b.Packets {
			if !p.SrcIP.IsValid() && p.SrcPort == 0 && p.SrcMAC.IsZero() && p.IPID == 0 {
				seen[fmt.Sprintf("%s/%s@%d", b.View, b.Source, p.Offset)]++
			} else {
				t.Fatalf("batch %s carries addresses past the labeler: %+v", b.MsgID(), p)
			}
		}
	})
	return seen, msgs
}

// TestLabelerRestartPublishesOnce cancels a labeler in the middle of the
// streams, with session pairs held, and restarts it: every packet of both
// taps must end up in LABELED exactly once.
func TestLabelerRestartPublishesOnce(t *testing.T) {
	conn, log := startBus(t)
	c := pairedCampaign(t, gateway.NAPT, 2, 3*time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	total, batches, pairedBatches := 0, 0, 0
	for _, h := range c.Homes {
		ag, err := agent.New(agent.Config{Campaign: c.Name, Home: h, BatchSize: 500, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		if err := ag.RunFiles(ctx, conn); err != nil {
			t.Fatal(err)
		}
		total += ag.Stats().Packets
		batches += ag.Stats().Batches
		if h.Name == "paired" {
			pairedBatches = ag.Stats().Batches
		}
	}

	run := func(stopAfter int64) (*Labeler, error) {
		l, err := New(c)
		if err != nil {
			t.Fatal(err)
		}
		l.AckWait = time.Second
		rctx, stop := context.WithCancel(ctx)
		defer stop()
		var handled atomic.Int64
		cc := l.ConsumerConfig("labeler")
		err = conn.Consume(rctx, cc, func(hctx context.Context, d *bus.Delivery) error {
			err := l.Handle(hctx, conn, d, log)
			if handled.Add(1) == stopAfter {
				stop()
			}
			return err
		})
		return l, err
	}
	// The first labeler is stopped after three quarters of the paired
	// home's batches (its LAN sessions come first, then its WAN sessions),
	// with whatever it fetched meanwhile: some batches are published, some
	// held unacked, some not yet seen.
	if _, err := run(int64(pairedBatches * 3 / 4)); err != context.Canceled {
		t.Fatalf("first run: %v", err)
	}
	if _, msgs := labeledPackets(t, conn); msgs == 0 || msgs >= batches {
		t.Fatalf("the first labeler published %d of %d batches: the test wants it stopped mid-stream", msgs, batches)
	} else {
		t.Logf("first labeler stopped after publishing %d of %d batches", msgs, batches)
	}
	done := make(chan *Labeler, 1)
	rctx, stop := context.WithCancel(ctx)
	l2, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	l2.AckWait = time.Second
	go func() {
		l2.Run(rctx, conn, "labeler", log)
		done <- l2
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		seen, _ := labeledPackets(t, conn)
		if len(seen) >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Leave the restarted labeler time to republish what it would
	// duplicate, if it did.
	time.Sleep(1500 * time.Millisecond)
	stop()
	<-done
	seen, msgs := labeledPackets(t, conn)
	dup := 0
	for _, n := range seen {
		if n != 1 {
			dup++
		}
	}
	t.Logf("%d packets in %d input batches; LABELED holds %d messages, %d distinct packets, %d more than once", total, batches, msgs, len(seen), dup)
	if len(seen) != total || dup != 0 {
		t.Errorf("LABELED holds %d distinct packets (%d more than once), the agents published %d", len(seen), dup, total)
	}
	if msgs != batches {
		t.Errorf("LABELED holds %d messages for %d input batches", msgs, batches)
	}
}
