package bus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/schemas"
)

// deadLetterOne has a consumer of c dead-letter every batch on subject
// (its handler calls each Permanent) until the DLQ holds want of them,
// and returns them.
func deadLetterOne(t *testing.T, c *Conn, subject string, want int) []DeadLetter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(ctx, ConsumerConfig{Stream: schemas.StreamPackets, Durable: "refuses", Filter: subject}, func(context.Context, *Delivery) error {
			return Permanent(errors.New("home is not in the campaign"))
		})
	}()
	defer func() { cancel(); <-done }()
	for {
		dls, err := c.DeadLetters(ctx, subject)
		if err != nil {
			t.Fatal(err)
		}
		if len(dls) >= want {
			return dls
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d dead letters on %s, want %d", len(dls), subject, want)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// storedOn counts the messages of the PACKETS stream on subject.
func storedOn(t *testing.T, c *Conn, subject string) uint64 {
	t.Helper()
	s, err := c.JS.Stream(context.Background(), schemas.StreamPackets)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// TestSecurityReplayIDHijack: home-1 publishes, on its own subject, under
// the ids a replay of home-2's dead letters would use if they could be
// worked out (the DLQ's sequences are small and counted up). The
// operator's replay must still store home-2's batch: it used to be acked
// as a duplicate of home-1's message, and the dead letter removed all the
// same.
func TestSecurityReplayIDHijack(t *testing.T) {
	url := homeUsers(t, "home-1", "home-2")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	admin, err := Connect(ctx, Config{URL: url, Auth: Auth{User: "admin", Password: "admin-pw"}}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	home1, err := Connect(ctx, Config{URL: url, Auth: Auth{User: "home-1", Password: "home-1-pw"}}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer home1.Close()
	subj1, subj2 := schemas.PacketSubject("c", "home-1", "lan"), schemas.PacketSubject("c", "home-2", "lan")
	genuine := &schemas.Batch{Kind: schemas.KindPackets, Campaign: "c", Home: "home-2", Tap: "lan", Source: "c/home-2/lan/s.pcap", Session: "lan-s", Final: true,
		Packets: []schemas.Packet{{Offset: 0, TsNs: 1, FrameLen: 60}}}
	if err := admin.Publish(ctx, subj2, genuine); err != nil {
		t.Fatal(err)
	}
	dls := deadLetterOne(t, admin, subj2, 1)
	forged := []byte("home-1's")
	for n := range 10 {
		if _, err := home1.JS.PublishMsg(ctx, &nats.Msg{Subject: subj1, Data: forged}, jetstream.WithMsgID(MsgID(subj2, fmt.Sprintf("replay:%d", n), nil))); err != nil {
			t.Fatalf("home-1 publishing on its own subject: %v", err)
		}
	}
	n, err := admin.Replay(ctx, dls)
	if err != nil || n != 1 {
		t.Fatalf("replay: %d replayed, %v", n, err)
	}
	if got := storedOn(t, admin, subj2); got != 2 {
		t.Fatalf("%s holds %d messages after the replay, want 2 (the batch and its replay): home-2's batch was dropped as a duplicate of home-1's", subj2, got)
	}
	s, err := admin.JS.Stream(ctx, schemas.StreamPackets)
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.GetLastMsgForSubject(ctx, subj2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(last.Data, dls[0].data) {
		t.Fatalf("the replay stored other bytes than the dead letter's")
	}
	t.Logf("attack: home-1 publishes under replay ids 0-9 of home-2's subject | expected: home-2's dead letter replayed | observed: %d messages on %s", storedOn(t, admin, subj2), subj2)
}

// TestReplayKeepsDeadLetterOnForeignDuplicate: a replay the stream calls
// a duplicate of another message (here a home that learnt the replay id)
// fails, names the id and keeps the dead letter; the replay used to be
// taken as done and the dead letter removed.
func TestReplayKeepsDeadLetterOnForeignDuplicate(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	subj, other := schemas.PacketSubject("c", "home-2", "lan"), schemas.PacketSubject("c", "home-1", "lan")
	if err := c.Publish(ctx, subj, batch(0, 3)); err != nil {
		t.Fatal(err)
	}
	dls := deadLetterOne(t, c, subj, 1)
	if dls[0].header.Get(HeaderReplayID) == "" {
		t.Fatalf("dead letter without a replay nonce: %v", dls[0].header)
	}
	id := MsgID(subj, "replay:"+dls[0].replayID(), nil)
	if _, err := c.JS.PublishMsg(ctx, &nats.Msg{Subject: other, Data: []byte("forged")}, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Replay(ctx, dls)
	if err == nil || n != 0 || !strings.Contains(err.Error(), "duplicate") || !strings.Contains(err.Error(), id) {
		t.Fatalf("replay under a taken id: %d replayed, %v; want a failure naming the duplicate id %q", n, err, id)
	}
	if left, err := c.DeadLetters(ctx, ""); err != nil || len(left) != 1 {
		t.Fatalf("after the refused replay: %d dead letters, %v; want the dead letter kept", len(left), err)
	}
}

// TestReplayTwiceStoresOnce: replaying a dead letter again (the operator
// ran it twice, or removing it failed after its replay was stored)
// publishes nothing more and removes it; so does a dead letter kept before
// dead letters had replay nonces.
func TestReplayTwiceStoresOnce(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	subj := schemas.PacketSubject("c", "h", "lan")
	if err := c.Publish(ctx, subj, batch(0, 3)); err != nil {
		t.Fatal(err)
	}
	dls := deadLetterOne(t, c, subj, 1)
	legacy := dls[0]
	legacy.header = maps.Clone(legacy.header)
	legacy.header.Del(HeaderReplayID)
	if legacy.replayID() == dls[0].replayID() {
		t.Fatalf("legacy replay id %q: want one of its own", legacy.replayID())
	}
	for round := range 2 {
		if n, err := c.Replay(ctx, dls); n != 1 || err != nil {
			t.Fatalf("replay %d: %d replayed, %v", round, n, err)
		}
		if got := storedOn(t, c, subj); got != 2 {
			t.Fatalf("after replay %d %s holds %d messages, want 2", round, subj, got)
		}
	}
	for round := range 2 {
		if n, err := c.Replay(ctx, []DeadLetter{legacy}); n != 1 || err != nil {
			t.Fatalf("legacy replay %d: %d replayed, %v", round, n, err)
		}
		if got := storedOn(t, c, subj); got != 3 {
			t.Fatalf("after legacy replay %d %s holds %d messages, want 3", round, subj, got)
		}
	}
}
