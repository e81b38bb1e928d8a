package label

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/agent"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/schemas"
)

// restamped replays a capture as a live tap: its timestamps moved by shift
// (the same for a home's LAN and WAN capture, so the gateway's delays stay
// as they were), and its frames numbered as a live source numbers them.
type restamped struct {
	capture.Source
	shift time.Duration
}

func (r restamped) Next() (capture.Frame, error) {
	fr, err := r.Source.Next()
	fr.CI.Timestamp = fr.CI.Timestamp.Add(r.shift)
	return fr, err
}

// liveCampaign turns pairedCampaign's paired home into one with live taps
// on a short rotation, and returns the capture files behind each tap.
func liveCampaign(t *testing.T, rotation time.Duration) (*campaign.Campaign, map[string][]string) {
	c := pairedCampaign(t, gateway.NAPT, 1, 2*time.Minute)
	h := c.Homes[0]
	files := map[string][]string{}
	for i, tap := range h.Taps {
		files[tap.Name] = tap.Files
		h.Taps[i] = campaign.Tap{Name: tap.Name, Interface: "veth-" + tap.Name}
	}
	h.Live = campaign.Live{Rotation: rotation}
	c.Homes = c.Homes[:1]
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c, files
}

// TestLivePairsAcrossSlots: a home's LAN and WAN captures replayed as live
// taps on a 10 s rotation are cut into a dozen session pairs; the WAN
// packets the gateway forwarded near a slot edge land in the next WAN
// session while their LAN packets stay in the LAN session before, and the
// labeler still pairs every WAN packet, each labeled once.
func TestLivePairsAcrossSlots(t *testing.T) {
	conn, log := startBus(t)
	c, files := liveCampaign(t, 10*time.Second)
	h := c.Homes[0]
	first := firstStamp(t, files["lan"][0], h)
	// The replay runs far faster than the capture did: its timestamps lie
	// ahead of the clock, so sessions end by packets, not by the clock.
	shift := time.Until(time.Unix(0, first)) * -1
	shift += 2 * time.Second

	ag, err := agent.New(agent.Config{Campaign: c.Name, Home: h, BatchSize: 256, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	var inputs []agent.Input
	for _, tap := range []string{"lan", "wan"} {
		inputs = append(inputs, agent.Input{Tap: tap, Name: "veth-" + tap, Live: true, Open: func() (capture.Source, error) {
			src, err := capture.OpenFile(files[tap][0])
			return restamped{src, shift}, err
		}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := ag.Run(ctx, conn, inputs); err != nil {
		t.Fatal(err)
	}
	st := ag.Stats()
	if st.Sessions < 20 {
		t.Fatalf("the agent cut %d sessions from 2 minutes on a 10 s rotation: want a dozen per tap", st.Sessions)
	}

	l, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	lctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(lctx, conn, "labeler", log) }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if seen, _ := labeledPackets(t, conn); len(seen) >= st.Packets || time.Now().After(deadline) {
			break
		}
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	seen, _ := labeledPackets(t, conn)
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("packet %s labeled %d times", k, n)
		}
	}
	wan := l.Stats()[h.Name].PerTap[TapWAN]
	t.Logf("%d packets in %d sessions; WAN: %d packets, %d paired (%d with the LAN session before), %d unpaired; %d pairs held",
		st.Packets, st.Sessions, wan.Packets, wan.Paired, wan.PairedAcross, wan.Unpaired, l.Held())
	if len(seen) != st.Packets {
		t.Fatalf("%d packets labeled of %d published", len(seen), st.Packets)
	}
	if wan.Unpaired != 0 || wan.Paired != wan.Packets || l.Held() != 0 {
		t.Fatalf("WAN packets: %d of %d paired, %d unpaired, %d pairs still held: want every one paired and nothing held", wan.Paired, wan.Packets, wan.Unpaired, l.Held())
	}
	if wan.PairedAcross == 0 {
		t.Fatal("no WAN packet crossed a slot edge: the test does not exercise the grace margin")
	}
}

func firstStamp(t *testing.T, file string, h *campaign.Home) int64 {
	hc, err := features.HomeFromCampaign(h)
	if err != nil {
		t.Fatal(err)
	}
	var first int64
	errStop := errors.New("stop")
	_, err = capture.ReadFile(context.Background(), file, hc, func(p *schemas.Packet) error {
		first = p.TsNs
		return errStop
	})
	if err != nil && !errors.Is(err, errStop) && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return first
}

// publishRaw publishes packet batches of a session as an agent would, the
// packets taken from file from offset from on.
func publishLiveRaw(t *testing.T, conn *bus.Conn, c *campaign.Campaign, file, tap, session string, from, batches, per int, final bool) int {
	t.Helper()
	h := c.Homes[0]
	hc, err := features.HomeFromCampaign(h)
	if err != nil {
		t.Fatal(err)
	}
	var pkts []schemas.Packet
	_, err = capture.ReadFile(context.Background(), file, hc, func(p *schemas.Packet) error {
		if len(pkts) < from+batches*per {
			q := *p
			q.Offset = uint64(len(pkts))
			pkts = append(pkts, q)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < batches; i++ {
		lo := from + i*per
		b := &schemas.Batch{Kind: schemas.KindPackets, Campaign: c.Name, Home: h.Name, Tap: tap,
			Source: c.Name + "/" + h.Name + "/" + tap + "/" + session, Session: session, FirstOffset: uint64(lo),
			Packets: pkts[lo : lo+per], Final: final && i == batches-1}
		if err := conn.Publish(context.Background(), schemas.PacketSubject(c.Name, h.Name, tap), b); err != nil {
			t.Fatal(err)
		}
	}
	return batches * per
}

// TestIdleSessionsReleased: a live home's agent was killed mid-session, so
// its LAN session's final batch never comes and its WAN session never
// starts, and of another slot only the WAN side came. After the idle
// timeout the labeler publishes both as they are (the LAN view labeled,
// the WAN packets unpaired), counts them cut short and holds nothing; a
// batch of a released session that still comes goes out on its own.
func TestIdleSessionsReleased(t *testing.T) {
	conn, log := startBus(t)
	c, files := liveCampaign(t, 10*time.Second)
	h := c.Homes[0]
	lanOnly := publishLiveRaw(t, conn, c, files["lan"][0], "lan", "lan-20261204T100000_000Z", 0, 3, 50, false)
	wanOnly := publishLiveRaw(t, conn, c, files["wan"][0], "wan", "wan-20261204T100010_000Z", 0, 2, 50, false)

	l, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	l.IdleTimeout = time.Second
	ctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, conn, "labeler", log) }()
	waitLabeled := func(n int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			seen, _ := labeledPackets(t, conn)
			if len(seen) >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d packets labeled after %s, want %d; %d pairs held", len(seen), within, n, l.Held())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if seen, _ := labeledPackets(t, conn); len(seen) != 0 || l.Held() != 2 {
		t.Fatalf("before the idle timeout %d packets were labeled and %d pairs held: want none labeled, both held", len(seen), l.Held())
	}
	waitLabeled(lanOnly+wanOnly, 5*time.Second)
	if l.Held() != 0 {
		t.Fatalf("%d pairs still held after their idle timeout", l.Held())
	}
	st := l.Stats()[h.Name]
	// The WAN packets have no LAN session of their own; the few whose LAN
	// packets are in the tail of the LAN session before are paired there.
	wan := st.PerTap[TapWAN]
	if st.CutShort != 2 || st.PerTap[TapLAN].Packets != lanOnly || wan.Paired+wan.Unpaired != wanOnly || wan.Unpaired < wanOnly/2 || wan.Paired != wan.PairedAcross {
		t.Fatalf("stats %+v: want 2 sessions cut short, %d LAN packets labeled, %d WAN packets unpaired or paired with the LAN session before", st, lanOnly, wanOnly)
	}
	// The killed agent's last batch turns up after all (it sat in a
	// spool): it is published at once, not held for a partner.
	late := publishLiveRaw(t, conn, c, files["lan"][0], "lan", "lan-20261204T100000_000Z", 150, 1, 50, true)
	waitLabeled(lanOnly+wanOnly+late, 900*time.Millisecond)
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	seen, _ := labeledPackets(t, conn)
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("packet %s labeled %d times", k, n)
		}
	}
	if len(seen) != lanOnly+wanOnly+late {
		t.Fatalf("%d packets labeled, want %d", len(seen), lanOnly+wanOnly+late)
	}
}
