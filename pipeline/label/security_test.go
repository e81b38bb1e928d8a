package label

import (
	"context"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/schemas"
)

// securityCampaign has the given homes, each with a live LAN tap and one
// device of its own.
func securityCampaign(t *testing.T, homes ...string) *campaign.Campaign {
	t.Helper()
	c := &campaign.Campaign{Name: "c"}
	for i, h := range homes {
		c.Homes = append(c.Homes, &campaign.Home{
			Name: h, Gateway: campaign.Gateway{Mode: "napt"},
			Taps:      []campaign.Tap{{Name: TapLAN, Interface: "eth0"}},
			Inventory: []campaign.Device{{MAC: "02:00:5e:10:00:0" + string(rune('1'+i)), Name: h + "-plug", Category: "iot"}},
		})
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// homeBatch is a packet batch of home's LAN session, packets sent by its
// plug (MAC ...:0N for the Nth home of securityCampaign).
func homeBatch(home string, offset uint64, final bool, session string) *schemas.Batch {
	b := &schemas.Batch{Kind: schemas.KindPackets, Campaign: "c", Home: home, Tap: TapLAN,
		Source: "c/" + home + "/lan/session-01.pcap", Session: session, FirstOffset: offset, Final: final}
	mac, _ := schemas.ParseMAC("02:00:5e:10:00:0" + home[len(home)-1:])
	for i := range 10 {
		b.Packets = append(b.Packets, schemas.Packet{Offset: offset + uint64(i), TsNs: int64(offset+uint64(i)) * 1e6, DPort: 443, FrameLen: 90, SrcMAC: mac})
	}
	return b
}

// publishRaw publishes a batch the way an agent could, whatever it claims.
func publishRaw(t *testing.T, conn *bus.Conn, subject string, b *schemas.Batch) {
	t.Helper()
	if err := conn.Publish(context.Background(), subject, b); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// runLabeler runs a labeler of c under durable until the returned stop.
func runLabeler(t *testing.T, conn *bus.Conn, log *slog.Logger, c *campaign.Campaign) (stop func()) {
	t.Helper()
	l, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, conn, "labeler", log) }()
	return func() {
		cancel()
		if err := <-done; err != nil && err != context.Canceled {
			t.Errorf("labeler: %v", err)
		}
	}
}

func deadLetters(t *testing.T, conn *bus.Conn) []bus.DeadLetter {
	t.Helper()
	dls, err := conn.DeadLetters(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return dls
}

// TestSecurityForgedBatchRefused (finding 1): home-1's agent, which may
// publish only on home-1's subjects, sends a batch claiming to be home-2's
// with a session that climbs out of the dataset. The labeler must not label
// it with home-2's inventory: it goes to the dead-letter stream as forged.
func TestSecurityForgedBatchRefused(t *testing.T) {
	conn, log := startBus(t)
	c := securityCampaign(t, "home-1", "home-2")
	stop := runLabeler(t, conn, log, c)
	defer stop()
	forged := homeBatch("home-2", 0, true, "../../../../victim/v1/lan/home-2/lan-session-01")
	publishRaw(t, conn, schemas.PacketSubject("c", "home-1", "lan"), forged)
	// A genuine batch of home-1 after it: once it is labeled, the forged
	// one before it has been dealt with.
	publishRaw(t, conn, schemas.PacketSubject("c", "home-1", "lan"), homeBatch("home-1", 0, true, "lan-session-01"))
	waitFor(t, "home-1's genuine batch to be labeled", func() bool { _, n := labeledPackets(t, conn); return n >= 1 })
	seen, msgs := labeledPackets(t, conn)
	for k := range seen {
		if strings.Contains(k, "home-2") {
			t.Errorf("the forged batch was labeled as home-2's: %s", k)
		}
	}
	if msgs != 1 {
		t.Errorf("LABELED holds %d batches, want home-1's genuine one only", msgs)
	}
	dls := deadLetters(t, conn)
	if len(dls) != 1 || dls[0].Subject != schemas.PacketSubject("c", "home-1", "lan") || !strings.Contains(dls[0].Reason, "does not match its subject") {
		t.Fatalf("dead letters %+v, want the forged batch, refused as not matching its subject", dls)
	}
	t.Logf("attack: home-1 publishes a batch claiming home-2 | expected: refused, dead-lettered | observed: LABELED %d batch (home-1's), DLQ reason %q", msgs, dls[0].Reason)
	// Looked at, a forgery is discarded for good.
	if n, err := conn.Discard(context.Background(), dls); err != nil || n != 1 {
		t.Errorf("discard: %d, %v", n, err)
	}
	if left := deadLetters(t, conn); len(left) != 0 {
		t.Errorf("%d dead letters left after the discard", len(left))
	}
}

// TestSecurityDeadLetterReplay (finding 9): a home missing from an older
// labeler's campaign is kept in the dead-letter stream, with why, instead of
// being dropped; once the labeler knows the home, a replay labels it, and
// a second replay changes nothing.
func TestSecurityDeadLetterReplay(t *testing.T) {
	conn, log := startBus(t)
	stop := runLabeler(t, conn, log, securityCampaign(t, "home-1"))
	subj2 := schemas.PacketSubject("c", "home-2", "lan")
	for off := uint64(0); off < 30; off += 10 {
		publishRaw(t, conn, subj2, homeBatch("home-2", off, off == 20, "lan-session-01"))
	}
	waitFor(t, "home-2's batches in the DLQ", func() bool { return len(deadLetters(t, conn)) == 3 })
	stop()
	dls := deadLetters(t, conn)
	for _, dl := range dls {
		if dl.Subject != subj2 || dl.Consumer != "labeler" || !strings.Contains(dl.Reason, `home "home-2" is not in campaign c`) {
			t.Errorf("dead letter %+v: want home-2's subject, the labeler and the unknown home as reason", dl)
		}
	}
	if _, n := labeledPackets(t, conn); n != 0 {
		t.Fatalf("LABELED holds %d batches before the campaign knows home-2", n)
	}

	// The campaign is fixed, the labeler restarted, the dead letters replayed.
	stop = runLabeler(t, conn, log, securityCampaign(t, "home-1", "home-2"))
	defer stop()
	// The same list twice, as two operators replaying at once would.
	letters := deadLetters(t, conn)
	for range 2 {
		n, err := conn.Replay(context.Background(), letters)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("replayed %d dead letters", n)
	}
	waitFor(t, "home-2 labeled", func() bool { seen, _ := labeledPackets(t, conn); return len(seen) == 30 })
	time.Sleep(time.Second) // room for a duplicate, if there were one
	seen, msgs := labeledPackets(t, conn)
	for k, n := range seen {
		if n != 1 {
			t.Errorf("packet %s labeled %d times", k, n)
		}
	}
	if msgs != 3 || len(seen) != 30 {
		t.Errorf("LABELED holds %d batches, %d packets; want 3 and 30", msgs, len(seen))
	}
	if left := deadLetters(t, conn); len(left) != 0 {
		t.Errorf("%d dead letters left after the replay", len(left))
	}
	t.Logf("attack: home missing from the labeler's campaign | expected: dead-lettered, replayed once fixed, labeled once | observed: %d dead letters, then %d packets labeled in %d batches, %d left in the DLQ", len(dls), len(seen), msgs, len(deadLetters(t, conn)))
}

// TestSecurityUnknownTapDeadLettered (finding 9): a tap named anything but
// lan or wan can never be labeled; its batches are kept with why.
func TestSecurityUnknownTapDeadLettered(t *testing.T) {
	conn, log := startBus(t)
	stop := runLabeler(t, conn, log, securityCampaign(t, "home-1"))
	defer stop()
	b := homeBatch("home-1", 0, true, "dmz-session-01")
	b.Tap, b.Source = "dmz", "c/home-1/dmz/session-01.pcap"
	publishRaw(t, conn, schemas.PacketSubject("c", "home-1", "dmz"), b)
	waitFor(t, "the dmz batch in the DLQ", func() bool { return len(deadLetters(t, conn)) == 1 })
	dl := deadLetters(t, conn)[0]
	if !strings.Contains(dl.Reason, `tap "dmz"`) {
		t.Errorf("dead letter reason %q: want the tap named", dl.Reason)
	}
	if _, n := labeledPackets(t, conn); n != 0 {
		t.Errorf("LABELED holds %d batches", n)
	}
	t.Logf("attack: a batch of a tap named neither lan nor wan | expected: kept in the DLQ with why | observed: %d dead letter, reason %q", len(deadLetters(t, conn)), dl.Reason)
}

// TestSecurityOffsetsThatRunBack: a home whose LAN session waits for its
// WAN session sends a batch whose one packet's offset wraps to 2^64 - 1
// (an offset delta of -1). Chaining that session's batches by their
// offsets would go round in a circle, holding the lock every home's
// batches wait for. It is refused as it is decoded and dead-lettered, and
// the next home's batch is labeled.
func TestSecurityOffsetsThatRunBack(t *testing.T) {
	conn, log := startBus(t)
	c := securityCampaign(t, "home-1", "home-2")
	c.Homes[0].Taps = append(c.Homes[0].Taps, campaign.Tap{Name: TapWAN, Interface: "eth1"})
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	stop := runLabeler(t, conn, log, c)
	defer stop()
	looping := homeBatch("home-1", 0, false, "lan-session-01")
	looping.Packets = looping.Packets[:1]
	looping.Packets[0].Offset = math.MaxUint64
	publishRaw(t, conn, schemas.PacketSubject("c", "home-1", "lan"), looping)
	publishRaw(t, conn, schemas.PacketSubject("c", "home-2", "lan"), homeBatch("home-2", 0, true, "lan-session-01"))
	waitFor(t, "home-2's batch to be labeled", func() bool { _, n := labeledPackets(t, conn); return n == 1 })
	waitFor(t, "the looping batch in the DLQ", func() bool { return len(deadLetters(t, conn)) == 1 })
	dl := deadLetters(t, conn)[0]
	if dl.Subject != schemas.PacketSubject("c", "home-1", "lan") || !strings.Contains(dl.Reason, "offsets must rise") {
		t.Errorf("dead letter on %s, reason %q: want home-1's batch, refused for its offsets", dl.Subject, dl.Reason)
	}
	t.Logf("attack: a batch whose offsets wrap back | expected: dead-lettered, other homes labeled | observed: home-2 labeled, DLQ reason %q", dl.Reason)
}
