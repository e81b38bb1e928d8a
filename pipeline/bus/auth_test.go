package bus

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
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
