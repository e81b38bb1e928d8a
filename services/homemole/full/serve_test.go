package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/store"
)

// TestSecurityServe runs `homemole serve` as a user would and talks to its
// S3 endpoint three ways: with the keys it printed (allowed), unsigned, and
// as a web page would, with an Origin header (both 403).
func TestSecurityServe(t *testing.T) {
	home := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, quiet(), pw, []string{"--home", home})
		pw.Close()
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	env := map[string]string{}
	sc := bufio.NewScanner(pr)
	for len(env) < 4 && sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(k, "HOMEMOLE_") {
			env[k] = v
		}
	}
	go io.Copy(io.Discard, pr)
	if len(env) < 4 {
		t.Fatalf("serve printed %v, want the NATS URL, the S3 endpoint and its two keys", env)
	}
	fi, err := os.Stat(filepath.Join(home, "credentials.env"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v (mode %v), want mode 0600", err, fi)
	}
	octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
	defer ocancel()
	st, err := store.OpenS3(octx, store.S3Config{Endpoint: env["HOMEMOLE_S3_ENDPOINT"], AccessKey: env["HOMEMOLE_S3_ACCESS_KEY"], SecretKey: env["HOMEMOLE_S3_SECRET_KEY"], Bucket: "homemole"})
	if err != nil {
		t.Fatalf("the printed keys: %v", err)
	}
	if _, err := st.Put(octx, "datasets/d/v1/manifest.json", []byte("{}"), ""); err != nil {
		t.Fatal(err)
	}
	refused := 0
	for name, origin := range map[string]string{"unsigned": "", "cross-origin": "https://evil.example"} {
		for _, method := range []string{http.MethodGet, http.MethodDelete} {
			req, _ := http.NewRequest(method, "http://"+env["HOMEMOLE_S3_ENDPOINT"]+"/homemole/datasets/d/v1/manifest.json", nil)
			if origin != "" {
				req.Header.Set("Origin", origin)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s %s: %d, want 403", name, method, resp.StatusCode)
			} else {
				refused++
			}
		}
	}
	got, err := st.Get(octx, "datasets/d/v1/manifest.json")
	if err != nil || string(got) != "{}" {
		t.Errorf("the object after the refused requests: %q %v", got, err)
	}
	t.Logf("attack: unsigned and Origin-bearing GET and DELETE to homemole serve's S3 | expected: 403, the dataset intact | observed: %d of 4 refused with 403, dataset intact: %v", refused, err == nil && string(got) == "{}")
}
