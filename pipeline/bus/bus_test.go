package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/embedded"
	"github.com/homemole/homemole/schemas"
)

func connect(t *testing.T) *Conn {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	srv, err := embedded.Start(context.Background(), t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	c, err := Connect(context.Background(), Config{URL: srv.NATSURL}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func batch(offset uint64, n int) *schemas.Batch {
	b := &schemas.Batch{Kind: schemas.KindPackets, Campaign: "c", Home: "h", Tap: "lan", Source: "c/h/lan/x.pcap", Session: "lan-x", FirstOffset: offset}
	for i := 0; i < n; i++ {
		b.Packets = append(b.Packets, schemas.Packet{Offset: offset + uint64(i), TsNs: int64(i), DPort: 53, FrameLen: 80})
	}
	return b
}

func TestPublishDeduplicatesRetries(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	subj := schemas.PacketSubject("c", "h", "lan")
	var batches []*schemas.Batch
	for round := 0; round < 2; round++ { // the second round is a restarted agent
		for off := uint64(0); off < 100; off += 10 {
			batches = append(batches, batch(off, 10))
		}
	}
	if err := c.PublishAll(ctx, func(*schemas.Batch) string { return subj }, batches); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, subj, batch(0, 10)); err != nil {
		t.Fatal(err)
	}
	s, err := c.JS.Stream(ctx, schemas.StreamPackets)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().State.Msgs; got != 10 {
		t.Fatalf("stream holds %d messages, want 10", got)
	}
}

func TestConsumeTerminatesMalformedAndRetriesFailures(t *testing.T) {
	c := connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	subj := schemas.PacketSubject("c", "h", "lan")
	// A malformed message, a good one, one that fails once, one that fails for good.
	if _, err := c.JS.Publish(ctx, subj, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	for _, off := range []uint64{0, 10, 20} {
		if err := c.Publish(ctx, subj, batch(off, 10)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[uint64]int{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Consume(ctx, ConsumerConfig{Stream: schemas.StreamPackets, Durable: "t", Filter: subj}, func(_ context.Context, d *Delivery) error {
			mu.Lock()
			seen[d.Batch.FirstOffset]++
			n := seen[d.Batch.FirstOffset]
			finished := seen[0] >= 1 && seen[10] >= 2 && seen[20] >= 1
			mu.Unlock()
			if finished {
				defer cancel()
			}
			switch {
			case d.Batch.FirstOffset == 10 && n == 1:
				return errors.New("store unreachable")
			case d.Batch.FirstOffset == 20:
				return Permanent(errors.New("unknown home"))
			}
			return d.Ack()
		})
	}()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if seen[0] != 1 || seen[10] != 2 || seen[20] != 1 {
		t.Fatalf("deliveries %v: want the good batch once, the retried one twice, the permanent failure once", seen)
	}
	// Acks are fire-and-forget: give the server a moment to count them.
	var pendingAcks, pending uint64
	for range 50 {
		info, err := c.JS.Consumer(context.Background(), schemas.StreamPackets, "t")
		if err != nil {
			t.Fatal(err)
		}
		ci := info.CachedInfo()
		pendingAcks, pending = uint64(ci.NumAckPending), ci.NumPending
		if pendingAcks == 0 && pending == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("consumer left %d pending acks and %d pending messages", pendingAcks, pending)
}

func TestConnectUnreachable(t *testing.T) {
	_, err := Connect(context.Background(), Config{URL: "nats://127.0.0.1:1"}, slog.New(slog.DiscardHandler))
	if err == nil || !errors.Is(err, nats.ErrNoServers) {
		t.Fatalf("got %v, want a clear no-servers error", err)
	}
	for _, want := range []string{"nats://127.0.0.1:1", "is the server running", "HOMEMOLE_NATS_URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// TestConnectRetry: a spooling publisher's connection starts without a
// server, fails publishes at once while there is none, and has the streams
// once a server comes up.
func TestConnectRetry(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	log := slog.New(slog.DiscardHandler)
	c, err := Connect(context.Background(), Config{URL: fmt.Sprintf("nats://bus-test:bus-test-password@127.0.0.1:%d", port), RetryConnect: true, NoReconnectBuffer: true, ReconnectWait: 50 * time.Millisecond}, log)
	if err != nil {
		t.Fatalf("RetryConnect should not fail without a server: %v", err)
	}
	defer c.Close()
	data, _ := batch(0, 1).AppendBinary(nil)
	if _, err := c.PublishAsync("hm.pkt.c.h.lan", "id", data); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Fatalf("publish without a server: %v", err)
	}
	srv, err := embedded.Start(context.Background(), t.TempDir(), log, embedded.NATSPort(port), embedded.Login("bus-test", "bus-test-password"))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		if _, err := c.JS.Stream(ctx, schemas.StreamPackets); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("streams not declared after the server started: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	f, err := c.PublishAsync(schemas.PacketSubject("c", "h", "lan"), "id", data)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.Ok():
	case err := <-f.Err():
		t.Fatal(err)
	case <-ctx.Done():
		t.Fatal("no ack")
	}
}

// TestTransientErrors: what a cluster says while its nodes meet or elect
// (no peers to place a stream on, unavailable, a timeout) is retried by a
// consumer's start; a refusal (a user who may not declare streams, a bad
// stream config) is not.
func TestTransientErrors(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("declare stream DLQ: %w", &jetstream.APIError{Code: 400, ErrorCode: errCodeNoPeers, Description: "no suitable peers for placement"}), true},
		{&jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"}, true},
		{fmt.Errorf("declare: %w", nats.ErrTimeout), true},
		{fmt.Errorf("declare: %w", context.DeadlineExceeded), true},
		{&jetstream.APIError{Code: 403, ErrorCode: 10039, Description: "jetstream not enabled for account"}, false},
		{&jetstream.APIError{Code: 400, ErrorCode: 10052, Description: "stream configuration invalid"}, false},
		{errors.New("permissions violation"), false},
	} {
		if got := transient(c.err); got != c.want {
			t.Errorf("transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// consumeUntil runs a consumer of cc until handle has acked the batch at
// offset want, or fails the test after limit. It returns how often each
// offset was delivered.
func consumeUntil(t *testing.T, c *Conn, cc ConsumerConfig, want uint64, limit time.Duration, handle func(*Delivery, int) error) map[uint64]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	seen := map[uint64]int{}
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(ctx, cc, func(_ context.Context, d *Delivery) error {
			seen[d.Batch.FirstOffset]++
			if err := handle(d, seen[d.Batch.FirstOffset]); err != nil {
				return err
			}
			if d.Batch.FirstOffset == want {
				cancel()
			}
			return nil
		})
	}()
	<-done
	if seen[want] == 0 {
		t.Fatalf("the batch at offset %d was not delivered within %v (deliveries %v): the consumer is stuck", want, limit, seen)
	}
	return seen
}

// TestConsumeDeadLettersNewerVersion: a message stamped with a batch
// version newer than the worker's, however small, goes to the dead letters
// to be replayed after an upgrade; nak'ed, it held the consumer's only ack
// slot (the detector allows one) and every later batch waited for ever.
func TestConsumeDeadLettersNewerVersion(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	subj := schemas.PacketSubject("c", "h", "lan")
	newer := []byte{'H', 'M', 'B', schemas.BatchVersion + 1, 'P', 0}
	if _, err := c.JS.Publish(ctx, subj, newer); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, subj, batch(10, 10)); err != nil {
		t.Fatal(err)
	}
	cc := ConsumerConfig{Stream: schemas.StreamPackets, Durable: "newer", Filter: subj, MaxAckPending: 1}
	consumeUntil(t, c, cc, 10, 15*time.Second, func(d *Delivery, _ int) error { return d.Ack() })
	dls, err := c.DeadLetters(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || !strings.Contains(dls[0].Reason, "version") || !strings.Contains(dls[0].Reason, "replay") || dls[0].Bytes != len(newer) {
		t.Fatalf("dead letters %+v: want the newer batch, kept to be replayed", dls)
	}
}

// TestConsumeGivesUpOnRetryableFailure: a batch whose handler keeps
// failing with a retryable error (a windower's session that never starts
// at offset 0) is retried, with a growing delay, for RetryFor and then
// dead-lettered; retried for ever, it held the consumer's ack slot and the
// batches behind it never came.
func TestConsumeGivesUpOnRetryableFailure(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	subj := schemas.PacketSubject("c", "h", "lan")
	for _, off := range []uint64{0, 10} {
		if err := c.Publish(ctx, subj, batch(off, 10)); err != nil {
			t.Fatal(err)
		}
	}
	cc := ConsumerConfig{Stream: schemas.StreamPackets, Durable: "giveup", Filter: subj, MaxAckPending: 1, RetryFor: 2 * time.Second}
	seen := consumeUntil(t, c, cc, 10, 20*time.Second, func(d *Delivery, _ int) error {
		if d.Batch.FirstOffset == 0 {
			return errors.New("waiting for an earlier batch")
		}
		return d.Ack()
	})
	if seen[0] < 2 {
		t.Errorf("the failing batch was delivered %d times: want it retried before giving up", seen[0])
	}
	dls, err := c.DeadLetters(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || !strings.Contains(dls[0].Reason, "gave up") || !strings.Contains(dls[0].Reason, "waiting for an earlier batch") {
		t.Fatalf("dead letters %+v: want the failing batch, with why", dls)
	}
	// Replayed once the cause is gone, it comes to the same consumer again.
	if n, err := c.Replay(ctx, dls); n != 1 || err != nil {
		t.Fatalf("replay: %d, %v", n, err)
	}
	consumeUntil(t, c, cc, 0, 10*time.Second, func(d *Delivery, _ int) error { return d.Ack() })
}
