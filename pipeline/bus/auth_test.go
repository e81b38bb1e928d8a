package bus

import (
	"bytes"
	"context"
	"log/slog"
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
