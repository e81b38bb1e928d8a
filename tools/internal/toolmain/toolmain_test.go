package toolmain

import (
	"bytes"
	"context"
	"slices"
	"testing"
)

func TestSplit(t *testing.T) {
	if got := Split(" rf, blstm,,lstm "); !slices.Equal(got, []string{"rf", "blstm", "lstm"}) {
		t.Fatalf("Split = %q", got)
	}
	if got := Split(""); got != nil {
		t.Fatalf("Split of nothing = %q, want none", got)
	}
}

func TestLogger(t *testing.T) {
	var b bytes.Buffer
	Logger(&b, false).Info("worker started")
	if b.Len() != 0 {
		t.Fatalf("quiet logger wrote %q", b.String())
	}
	Logger(&b, true).Info("worker started")
	if !bytes.Contains(b.Bytes(), []byte("worker started")) {
		t.Fatalf("verbose logger wrote %q", b.String())
	}
}

// TestEmbedded: the run's servers live under its folder, whatever the
// environment points at.
func TestEmbedded(t *testing.T) {
	t.Setenv("HOMEMOLE_NATS_URL", "nats://127.0.0.1:1")
	t.Setenv("HOMEMOLE_S3_ENDPOINT", "127.0.0.1:1")
	dir := t.TempDir()
	env, err := Embedded(context.Background(), dir, "toolmain-test", Logger(&bytes.Buffer{}, false))
	if err != nil {
		t.Fatalf("embedded servers under %s: %v", dir, err)
	}
	defer env.Close()
	if _, err := env.Store.Put(context.Background(), "probe", []byte("x"), "text/plain"); err != nil {
		t.Fatalf("the embedded store does not take an object: %v", err)
	}
}
