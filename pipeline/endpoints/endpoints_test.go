package endpoints

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestOpenStoreStartsNoNATS: a store-only command works with a NATS URL
// that nothing answers, starts no JetStream (no nats folder in its state)
// and still reads back what it wrote to the embedded S3.
func TestOpenStoreStartsNoNATS(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := Config{Home: t.TempDir(), NATSURL: "nats://127.0.0.1:1", S3Bucket: "homemole"}
	env, err := OpenStore(ctx, c, log)
	if err != nil {
		t.Fatalf("OpenStore with an unreachable NATS: %v", err)
	}
	if env.Bus != nil || !env.Embedded || env.S3Endpoint == "" {
		t.Errorf("env: bus %v, embedded %v, S3 %q; want no bus and an embedded S3", env.Bus, env.Embedded, env.S3Endpoint)
	}
	if _, err := env.Store.Put(ctx, "models/m/x.json", []byte(`{"a":1}`), "application/json"); err != nil {
		t.Fatal(err)
	}
	env.Close()
	if _, err := os.Stat(filepath.Join(c.Home, "nats")); !os.IsNotExist(err) {
		t.Errorf("a store-only open made %s (%v): JetStream was started", filepath.Join(c.Home, "nats"), err)
	}

	// The same state, opened again with the NATS server too, holds the
	// object: both modes share the buckets.
	c.NATSURL = ""
	full, err := Open(ctx, c, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	got, err := full.Store.Get(ctx, "models/m/x.json")
	if err != nil || !bytes.Equal(got, []byte(`{"a":1}`)) {
		t.Errorf("read back %q, %v", got, err)
	}
}
