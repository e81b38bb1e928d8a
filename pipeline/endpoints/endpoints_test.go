package endpoints

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
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

// TestSettingsFromEnv: HOMEMOLE_S3_TLS takes every spelling of true
// strconv.ParseBool knows: HOMEMOLE_S3_TLS=1 speaks TLS to the endpoint
// (the first byte it receives opens a TLS handshake), where it used to
// send plain http for anything but "true". A value that is no boolean
// (yes), like HOMEMOLE_NATS_REQUIRE_TLS=yes or HOMEMOLE_NATS_REPLICAS=abc,
// is an error naming the variable before any server starts, embedded ones
// included; --s3-tls, when given, wins over the variable.
func TestSettingsFromEnv(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	first := make(chan byte, 16)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			b := make([]byte, 1)
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(conn, b); err == nil {
				first <- b[0]
			}
			conn.Close()
		}
	}()
	t.Setenv("HOMEMOLE_HOME", t.TempDir())
	t.Setenv("HOMEMOLE_NATS_URL", "")
	t.Setenv("HOMEMOLE_S3_ENDPOINT", ln.Addr().String())
	t.Setenv("HOMEMOLE_S3_ACCESS_KEY", "a")
	t.Setenv("HOMEMOLE_S3_SECRET_KEY", "b")
	t.Setenv(EnvS3TLS, "1")
	c := FromEnv()
	if !c.S3TLS || c.S3Err() != nil {
		t.Errorf("%s=1: TLS %v, %v", EnvS3TLS, c.S3TLS, c.S3Err())
	}
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := OpenStore(octx, c, log); err == nil {
		t.Fatal("opened a store on a listener that closes every connection")
	}
	select {
	case b := <-first:
		if b != 0x16 { // a TLS handshake record
			t.Errorf("%s=1: the endpoint's first byte is %q, want a TLS handshake (0x16)", EnvS3TLS, b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("nothing reached the endpoint")
	}

	for _, bad := range []struct{ name, value string }{{EnvS3TLS, "yes"}, {EnvS3TLS, "on"}, {bus.EnvRequireTLS, "yes"}, {bus.EnvReplicas, "abc"}} {
		t.Run(bad.name+"="+bad.value, func(t *testing.T) {
			t.Setenv(bad.name, bad.value)
			t.Setenv("HOMEMOLE_S3_ENDPOINT", "")
			c := FromEnv()
			env, err := Open(ctx, c, "test", log)
			if err == nil {
				env.Close()
			}
			if err == nil || !strings.Contains(err.Error(), bad.name+"=") {
				t.Errorf("Open: %v, want an error naming %s", err, bad.name)
			}
			if _, err := os.Stat(filepath.Join(c.Home, "nats")); !os.IsNotExist(err) {
				t.Errorf("the embedded server started (%v)", err)
			}
			if bad.name != EnvS3TLS {
				return
			}
			if env, err := OpenStore(ctx, c, log); err == nil || !strings.Contains(err.Error(), bad.name+"=") {
				if err == nil {
					env.Close()
				}
				t.Errorf("OpenStore: %v, want an error naming %s", err, bad.name)
			}
			fs := flag.NewFlagSet("trainer", flag.ContinueOnError)
			c.Register(fs)
			if err := fs.Parse([]string{"--s3-tls=false"}); err != nil {
				t.Fatal(err)
			}
			if c.S3TLS || c.S3Err() != nil {
				t.Errorf("--s3-tls=false over %s=%s: TLS %v, %v", bad.name, bad.value, c.S3TLS, c.S3Err())
			}
		})
	}
}
