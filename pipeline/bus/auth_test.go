package bus

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"

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
