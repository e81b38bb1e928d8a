package bus

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/embedded"
	"github.com/homemole/homemole/schemas"
)

// syncBuffer is a log sink the watcher's goroutine may write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRetention: a worker with a retention sets MaxAge and MaxBytes on both
// streams, refusing new messages when full rather than dropping unread
// ones; a connection without one (a capture agent) leaves them; the worker
// warns before the bytes run out; and the warnings say which limit is near.
func TestRetention(t *testing.T) {
	ctx := context.Background()
	srv, err := embedded.Start(ctx, t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	var logs syncBuffer
	ret := Retention{MaxAge: 2 * time.Hour, MaxBytes: 64 << 10, CheckEvery: 50 * time.Millisecond}
	c, err := Connect(ctx, Config{URL: srv.NATSURL, Retention: ret}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	agent, err := Connect(ctx, Config{URL: srv.NATSURL}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agent.Close)
	for _, name := range []string{schemas.StreamPackets, schemas.StreamLabeled, StreamSeen} {
		s, err := c.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		if cfg.MaxAge != ret.MaxAge || cfg.MaxBytes != ret.MaxBytes || cfg.Discard != jetstream.DiscardNew {
			t.Errorf("stream %s: max age %s, max bytes %d, discard %v after a connection without retention: want %s, %d, new",
				name, cfg.MaxAge, cfg.MaxBytes, cfg.Discard, ret.MaxAge, ret.MaxBytes)
		}
	}
	subj := schemas.PacketSubject("c", "h", "lan")
	refused := false
	for off := uint64(0); off < 10000 && !refused; off += 100 {
		if err := agent.Publish(ctx, subj, batch(off, 100)); err != nil {
			if !strings.Contains(err.Error(), "maximum bytes") {
				t.Fatalf("publish to a full stream: %v", err)
			}
			refused = true
		}
	}
	if !refused {
		t.Fatal("the stream never refused a batch past its max bytes")
	}
	s, err := c.JS.Stream(ctx, schemas.StreamPackets)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Bytes > uint64(ret.MaxBytes) || info.State.FirstSeq != 1 {
		t.Errorf("full stream holds %d bytes from message %d: want at most %d, none dropped", info.State.Bytes, info.State.FirstSeq, ret.MaxBytes)
	}
	w := RetentionWarnings(info, 0.8, time.Now())
	if len(w) != 1 || !strings.Contains(w[0], "refuses new batches") {
		t.Errorf("warnings for a full stream: %q", w)
	}
	if w := RetentionWarnings(info, 0.8, info.State.FirstTime.Add(100*time.Minute)); len(w) != 2 || !strings.Contains(w[1], "removed whether read or not") {
		t.Errorf("warnings for a full stream whose oldest message is 100 min of 120 old: %q", w)
	}
	info.State.Bytes = 10
	if w := RetentionWarnings(info, 0.8, info.State.FirstTime); len(w) != 0 {
		t.Errorf("warnings for a nearly empty stream: %q", w)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "stream retention nearly reached") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning logged for a full stream; the log says:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
