package bus

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/internal/natstest"
	"github.com/homemole/homemole/schemas"
)

// TestSecretsNotLogged: passwords in URLs and credentials stay out of
// errors and logs.
func TestSecretsNotLogged(t *testing.T) {
	if got := redactURL("tls://agent:s3cret@10.0.0.1:4222, nats://10.0.0.2:4222"); strings.Contains(got, "s3cret") || !strings.Contains(got, "10.0.0.2") {
		t.Errorf("redacted URL %q", got)
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	log.Info("connecting", "auth", Auth{User: "agent", Password: "s3cret", CAFile: "/ca.pem"})
	_, err := Connect(context.Background(), Config{URL: "nats://agent:s3cret@127.0.0.1:1", Auth: Auth{User: "agent", Password: "s3cret"}}, log)
	if err == nil {
		t.Fatal("connected to nothing")
	}
	if strings.Contains(buf.String()+err.Error(), "s3cret") {
		t.Errorf("the password shows: log %q, error %q", buf.String(), err)
	}
}

// TestPasswordFile: a gateway's password comes from a file; one that
// cannot be read is an error naming the variable, not an anonymous login.
func TestPasswordFile(t *testing.T) {
	f := t.TempDir() + "/password"
	if err := os.WriteFile(f, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOMEMOLE_NATS_PASSWORD", "")
	t.Setenv("HOMEMOLE_NATS_PASSWORD_FILE", f)
	if a := AuthFromEnv(); a.Password != "s3cret" || a.fileErr != nil {
		t.Errorf("password %q, error %v", a.Password, a.fileErr)
	}
	t.Setenv("HOMEMOLE_NATS_PASSWORD_FILE", f+".missing")
	_, err := Connect(context.Background(), Config{URL: "tls://127.0.0.1:1", Auth: AuthFromEnv()}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "HOMEMOLE_NATS_PASSWORD_FILE") {
		t.Errorf("unreadable password file: %v", err)
	}
}

// TestRequireTLSFromEnv: HOMEMOLE_NATS_REQUIRE_TLS takes every spelling
// of true strconv.ParseBool knows, and refuses what it does not know
// naming the variable; it used to be off for anything but "true", so
// HOMEMOLE_NATS_REQUIRE_TLS=1 (or yes) sent the password over plain
// nats:// with only a warning. In neither case is a connection opened.
// --require-tls, when given, wins over the variable.
func TestRequireTLSFromEnv(t *testing.T) {
	addr, knocks := knockCounter(t)
	url := "nats://" + addr
	t.Setenv("HOMEMOLE_NATS_USER", "home-1")
	t.Setenv("HOMEMOLE_NATS_PASSWORD", "home-1-pw")
	connect := func(a Auth) error {
		_, err := Connect(context.Background(), Config{URL: url, Auth: a}, slog.New(slog.DiscardHandler))
		return err
	}
	for _, v := range []string{"true", "1", "TRUE", "t"} {
		t.Setenv(EnvRequireTLS, v)
		if a := AuthFromEnv(); !a.RequireTLS || a.EnvErr() != nil {
			t.Errorf("%s=%s: require TLS %v, %v", EnvRequireTLS, v, a.RequireTLS, a.EnvErr())
		}
		if err := connect(AuthFromEnv()); !errors.Is(err, ErrPlainCredentials) {
			t.Errorf("%s=%s, a password over %s: %v, want ErrPlainCredentials", EnvRequireTLS, v, url, err)
		}
	}
	for _, v := range []string{"yes", "on", "ture", " true"} {
		t.Setenv(EnvRequireTLS, v)
		if err := connect(AuthFromEnv()); err == nil || !strings.Contains(err.Error(), EnvRequireTLS+"=") || !strings.Contains(err.Error(), "want true or false") {
			t.Errorf("%s=%q: %v, want an error naming the variable and what it takes", EnvRequireTLS, v, err)
		}
		a := AuthFromEnv()
		fs := flag.NewFlagSet("labeler", flag.ContinueOnError)
		a.RegisterFlags(fs)
		if err := fs.Parse([]string{"--require-tls"}); err != nil {
			t.Fatal(err)
		}
		if err := connect(a); !errors.Is(err, ErrPlainCredentials) {
			t.Errorf("%s=%q with --require-tls: %v, want ErrPlainCredentials", EnvRequireTLS, v, err)
		}
	}
	for _, v := range []string{"false", "0", ""} {
		t.Setenv(EnvRequireTLS, v)
		if a := AuthFromEnv(); a.RequireTLS || a.EnvErr() != nil {
			t.Errorf("%s=%q: require TLS %v, %v", EnvRequireTLS, v, a.RequireTLS, a.EnvErr())
		}
	}
	time.Sleep(100 * time.Millisecond)
	if n := knocks.Load(); n != 0 {
		t.Errorf("%d connections were opened with TLS required", n)
	}
}

// TestReplicasFromEnv: HOMEMOLE_NATS_REPLICAS is a whole number 1 to 5,
// the replicas JetStream gives a stream; anything else is refused before
// connecting, naming the variable. It used to give R1 streams for anything
// but "3" (abc, 0, -1, 5), with the worker running as if all was well.
func TestReplicasFromEnv(t *testing.T) {
	url := natstest.Server(t)
	log := slog.New(slog.DiscardHandler)
	for _, v := range []string{"abc", "0", "-1", "6", "99999999999999999999", " 3", "3.0"} {
		t.Setenv(EnvReplicas, v)
		c, err := Connect(context.Background(), Config{URL: url, Replicas: ReplicasFromEnv()}, log)
		if err == nil {
			c.Close()
		}
		if err == nil || !strings.Contains(err.Error(), EnvReplicas+"=") || !strings.Contains(err.Error(), "1 to 5") {
			t.Errorf("%s=%q: %v, want an error naming the variable and what it takes", EnvReplicas, v, err)
		}
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(context.Background(), schemas.StreamPackets); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream %s after refused replicas: %v, want none declared", schemas.StreamPackets, err)
	}
	for _, v := range []string{"", "1"} {
		t.Setenv(EnvReplicas, v)
		c, err := Connect(context.Background(), Config{URL: url, Replicas: ReplicasFromEnv()}, log)
		if err != nil {
			t.Fatalf("%s=%q: %v", EnvReplicas, v, err)
		}
		c.Close()
		s, err := js.Stream(context.Background(), schemas.StreamPackets)
		if err != nil || s.CachedInfo().Config.Replicas != 1 {
			t.Errorf("%s=%q: stream %v, want R1", EnvReplicas, v, err)
		}
	}
}
