package bus

import (
	"bytes"
	"context"
	"flag"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/embedded"
	"github.com/homemole/homemole/pipeline/internal/natstest"
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

// TestRetentionMaxAgeChecked: a stream max age from --stream-max-age or
// HOMEMOLE_STREAM_MAX_AGE is held to the campaign's rule for
// retention.max_age (at least 1h) and refused naming the flag or the
// variable. It used to reach JetStream, which refused it as "max age can
// not be negative" or "duplicates window can not be larger then max age"
// while declaring the streams, with a fix about JetStream permissions;
// and --stream-max-age -1h without --stream-max-bytes was silently
// ignored. 1h, the shortest accepted, is one the server takes.
func TestRetentionMaxAgeChecked(t *testing.T) {
	resolve := func(c campaign.Retention, args ...string) (Retention, error) {
		fs := flag.NewFlagSet("labeler", flag.ContinueOnError)
		ret := RetentionFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return ret(c)
	}
	for _, args := range [][]string{
		{"--stream-max-age", "-1h", "--stream-max-bytes", "1GiB"},
		{"--stream-max-age", "-1h"},
		{"--stream-max-age", "1ns", "--stream-max-bytes", "1GiB"},
		{"--stream-max-age", "100ms"},
		{"--stream-max-age", "59m"},
	} {
		if r, err := resolve(campaign.Retention{MaxAge: 720 * time.Hour}, args...); err == nil || !strings.Contains(err.Error(), "--stream-max-age") || !strings.Contains(err.Error(), "at least 1h") {
			t.Errorf("%q: retention %+v, %v; want an error naming --stream-max-age and what it takes", args, r, err)
		}
	}
	for _, v := range []string{"1ms", "-1h", "30m", "1 h"} {
		t.Run(EnvStreamMaxAge+"="+v, func(t *testing.T) {
			t.Setenv(EnvStreamMaxAge, v)
			if r, err := resolve(campaign.Retention{}); err == nil || !strings.Contains(err.Error(), EnvStreamMaxAge+"=") || !strings.Contains(err.Error(), "at least 1h") {
				t.Errorf("retention %+v, %v; want an error naming %s and what it takes", r, err, EnvStreamMaxAge)
			}
		})
	}
	if _, err := resolve(campaign.Retention{MaxAge: time.Minute}); err == nil || !strings.Contains(err.Error(), "retention.max_age") {
		t.Errorf("campaign retention.max_age 1m: %v, want the campaign's error", err)
	}
	t.Setenv(EnvStreamMaxAge, "0")
	if r, err := resolve(campaign.Retention{MaxAge: 720 * time.Hour, MaxBytes: "1GiB"}); err != nil || r.MaxAge != 0 || r.MaxBytes != 1<<30 {
		t.Errorf("%s=0 over a campaign's 720h: %+v, %v; want no age limit", EnvStreamMaxAge, r, err)
	}
	t.Setenv(EnvStreamMaxAge, "2h")
	r, err := resolve(campaign.Retention{MaxAge: 720 * time.Hour}, "--stream-max-age", "1h", "--stream-max-bytes", "1GiB")
	if err != nil || r.MaxAge != time.Hour {
		t.Fatalf("--stream-max-age 1h over %s=2h: %+v, %v", EnvStreamMaxAge, r, err)
	}
	c, err := Connect(context.Background(), Config{URL: natstest.Server(t), Retention: r}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("a 1h max age: %v", err)
	}
	c.Close()
}
