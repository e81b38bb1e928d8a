package label

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/homemole/homemole/pipeline/agent"
	"github.com/homemole/homemole/pipeline/budget"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/schemas"
)

// TestSecurityLabelerHoldBudget: a home with a live WAN tap sends LAN
// batches of a session whose WAN half never comes. The labeler must hold
// no more of them than twice the home's share of the byte budget (what a
// pair under way may take), and the other homes' pairs must still be
// labeled meanwhile.
func TestSecurityLabelerHoldBudget(t *testing.T) {
	const total, perHome = 8 << 20, 2 << 20
	conn, log := startBus(t)
	c := pairedCampaign(t, gateway.NAPT, 1, 2*time.Minute)
	paired := c.Homes[0]
	c.Homes = append(c.Homes, &campaign.Home{Name: "hog", Gateway: paired.Gateway, Inventory: paired.Inventory,
		Taps: []campaign.Tap{{Name: "lan", Interface: "br-lan"}, {Name: "wan", Interface: "eth0"}}})
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// About 12 MiB of decoded batches that never make a pair.
	var hogBytes int64
	for i := range 40 {
		b := &schemas.Batch{Kind: schemas.KindPackets, Campaign: c.Name, Home: "hog", Tap: "lan", Source: c.Name + "/hog/lan/br-lan@1",
			Session: "lan-live-1", FirstOffset: uint64(i * 2000)}
		for k := range 2000 {
			b.Packets = append(b.Packets, schemas.Packet{TsNs: 1.8e18 + int64(i*2000+k)*1e6, Offset: uint64(i*2000 + k), DPort: 443, SrcPort: 50000,
				Direction: schemas.DirOutbound, Transport: gateway.ProtoTCP, IPLen: 52,
				SrcIP: netip.MustParseAddr("192.168.1.10"), DstIP: netip.MustParseAddr("198.51.100.4")})
		}
		hogBytes += budget.BatchSize(b)
		if err := conn.Publish(ctx, schemas.PacketSubject(c.Name, "hog", "lan"), b); err != nil {
			t.Fatal(err)
		}
	}
	sent := map[string]int{}
	for _, h := range c.Homes[:2] {
		ag, err := agent.New(agent.Config{Campaign: c.Name, Home: h, BatchSize: 500, Log: log})
		if err != nil {
			t.Fatal(err)
		}
		if err := ag.RunFiles(ctx, conn); err != nil {
			t.Fatal(err)
		}
		sent[h.Name] = ag.Stats().Packets
	}

	l, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	if l.Budget, err = budget.New(total, perHome); err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(rctx, conn, "labeler", log) }()
	deadline := time.Now().Add(40 * time.Second)
	labeledAll := func() bool {
		st := l.Stats()
		return st["paired"].Packets == sent["paired"] && st["lanonly"].Packets == sent["lanonly"]
	}
	for !labeledAll() && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	hog, all := l.Budget.Held("hog")
	stop()
	<-done
	if !labeledAll() {
		t.Fatalf("the other homes were not all labeled beside the hog: sent %v, labeled %+v", sent, l.Stats())
	}
	// A pair under way may take up to twice the home's share.
	if hog > 2*perHome || all > total || hog == 0 {
		t.Errorf("the labeler holds %s of the hog's %s (%s in all); want at most twice the home's %s", mb(hog), mb(hogBytes), mb(all), mb(perHome))
	}
	t.Logf("attack: a home sends %s of a session pair that never completes | expected: held within twice its %s share, the other homes labeled | observed: the labeler held %s of it, %s in all; the other homes labeled", mb(hogBytes), mb(perHome), mb(hog), mb(all))
}

func mb(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// TestLabelerBudgetLetsPairsComplete: a home's agent publishes all its LAN
// sessions before its WAN sessions, so a home whose LAN capture is larger
// than its share of the hold budget fills the share with LAN halves. Their
// WAN halves must still be taken, so that the pairs complete, release the
// share and let the refused LAN batches in: every packet is labeled.
func TestLabelerBudgetLetsPairsComplete(t *testing.T) {
	conn, log := startBus(t)
	c := pairedCampaign(t, gateway.NAPT, 3, 2*time.Minute)
	c.Homes = c.Homes[:1]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ag, err := agent.New(agent.Config{Campaign: c.Name, Home: c.Homes[0], BatchSize: 500, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := ag.RunFiles(ctx, conn); err != nil {
		t.Fatal(err)
	}
	sent := ag.Stats().Packets
	// Six session halves of about sent/6 packets: a share of 1.6 halves
	// holds one LAN session and part of the next, not the LAN capture.
	perHome := int64(float64(sent) / 6 * float64(unsafe.Sizeof(schemas.Packet{})) * 1.6)
	l, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	if l.Budget, err = budget.New(64<<20, perHome); err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(rctx, conn, "labeler", log) }()
	deadline := time.Now().Add(40 * time.Second)
	for l.Stats()["paired"].Packets < sent && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	stop()
	<-done
	if got := l.Stats()["paired"].Packets; got != sent {
		t.Fatalf("%d of %d packets labeled under a per-home share of %s: the pairs stalled", got, sent, mb(perHome))
	}
	if own, all := l.Budget.Held("paired"); own != 0 || all != 0 {
		t.Errorf("%s still held for the home (%s in all) after every pair was labeled", mb(own), mb(all))
	}
}
