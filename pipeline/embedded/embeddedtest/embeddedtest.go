// Package embeddedtest gives a test the real servers the pipeline runs on
// (embedded JetStream and S3 in the test's temp folder) and a client of
// each, all closed when the test ends: the one way tests start them.
package embeddedtest

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/embedded"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
)

// Bucket is the bucket the store of Start writes to.
const Bucket = "homemole"

// Log is the logger tests give servers and workers: warnings and errors on
// stderr, beside the test's own lines; a healthy run's info lines would
// bury them.
func Log() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// Context is a test's context: it ends after within, or with the test.
func Context(tb testing.TB, within time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(tb.Context(), within)
	tb.Cleanup(cancel)
	return ctx
}

// Start starts the servers with their state in a temp folder of tb, and
// connects to both.
func Start(ctx context.Context, tb testing.TB, log *slog.Logger) (*embedded.Servers, *bus.Conn, store.Store) {
	tb.Helper()
	srv, err := embedded.Start(ctx, tb.TempDir(), log)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Close)
	conn, err := bus.Connect(ctx, bus.Config{URL: srv.NATSURL, Name: tb.Name()}, log)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(conn.Close)
	st, err := store.OpenS3(ctx, S3(srv))
	if err != nil {
		tb.Fatal(err)
	}
	return srv, conn, st
}

// S3 is how a client reaches the servers' S3 bucket.
func S3(srv *embedded.Servers) store.S3Config {
	return store.S3Config{Endpoint: srv.S3Endpoint, AccessKey: srv.S3AccessKey, SecretKey: srv.S3SecretKey, Bucket: Bucket}
}

// PublishAll publishes batches as a capture agent does, each under the
// subject subject gives it and its message id, without waiting between
// them, then waits for every ack; it returns how many packets they hold.
func PublishAll(tb testing.TB, conn *bus.Conn, subject func(*schemas.Batch) string, batches []*schemas.Batch) int {
	tb.Helper()
	if err := conn.PublishAll(context.Background(), subject, batches); err != nil {
		tb.Fatal(err)
	}
	total := 0
	for _, bt := range batches {
		total += len(bt.Packets)
	}
	return total
}

// EachBatch hands every message of stream to fn with its decoded batch, in
// stream order; a message that is not a batch fails the test.
func EachBatch(tb testing.TB, conn *bus.Conn, stream string, fn func(m *jetstream.RawStreamMsg, b *schemas.Batch)) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := conn.JS.Stream(ctx, stream)
	if err != nil {
		tb.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatalf("stream %s: %v", stream, err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			tb.Fatalf("%s message %d: %v", stream, seq, err)
		}
		b, err := schemas.DecodeBatch(m.Data)
		if err != nil {
			tb.Fatalf("%s message %d: %v", stream, seq, err)
		}
		fn(m, b)
	}
}

// Batches is every batch stream holds, in stream order.
func Batches(tb testing.TB, conn *bus.Conn, stream string) []*schemas.Batch {
	tb.Helper()
	var out []*schemas.Batch
	EachBatch(tb, conn, stream, func(_ *jetstream.RawStreamMsg, b *schemas.Batch) { out = append(out, b) })
	return out
}
