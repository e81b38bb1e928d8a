package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/embedded"
)

func open(t *testing.T) *S3 {
	t.Helper()
	srv, err := embedded.Start(context.Background(), t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	s, err := OpenS3(context.Background(), S3Config{Endpoint: srv.S3Endpoint, AccessKey: srv.S3AccessKey, SecretKey: srv.S3SecretKey, Bucket: "homemole"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPutGetList(t *testing.T) { checkPutGetList(t, open(t)) }

// checkPutGetList is what every S3 server the store runs on must do alike.
func checkPutGetList(t *testing.T, s *S3) {
	t.Helper()
	ctx := context.Background()
	big := bytes.Repeat([]byte("window"), 2<<20) // 12 MiB: more than one multipart part
	info, err := s.Put(ctx, "datasets/d/v1/a.arrow", big, "")
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(len(big)) || len(info.SHA256) != 64 {
		t.Errorf("info %+v", info)
	}
	if _, err := s.Put(ctx, "datasets/d/v1/b.arrow", []byte("b"), ""); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "datasets/d/v1/a.arrow")
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("get: %v (%d bytes)", err, len(got))
	}
	objs, err := s.List(ctx, "datasets/d/")
	if err != nil || len(objs) != 2 || objs[0].Key != "datasets/d/v1/a.arrow" || objs[1].Size != 1 {
		t.Fatalf("list %+v %v", objs, err)
	}
	if _, err := s.Get(ctx, "datasets/nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), s.Location("datasets/nope")) {
		t.Errorf("missing key: %v", err)
	}
	if err := s.Delete(ctx, "datasets/d/v1/b.arrow"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "datasets/d/v1/b.arrow"); err != nil {
		t.Errorf("deleting a missing key: %v", err)
	}
	if objs, err := s.List(ctx, "datasets/d/"); err != nil || len(objs) != 1 {
		t.Errorf("list after delete %+v %v", objs, err)
	}
}

func TestUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := OpenS3(ctx, S3Config{Endpoint: "127.0.0.1:1", AccessKey: "a", SecretKey: "b", Bucket: "homemole"})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") || !strings.Contains(err.Error(), "is the server up") || !strings.Contains(err.Error(), "HOMEMOLE_S3_ENDPOINT") {
		t.Fatalf("got %v, want an error naming the endpoint and the fix", err)
	}
	if _, err := OpenS3(ctx, S3Config{Bucket: "homemole"}); err == nil {
		t.Fatal("empty endpoint accepted")
	}
	if _, err := OpenS3(ctx, S3Config{Endpoint: "x:1", Bucket: "hm"}); err == nil {
		t.Fatal("two-letter bucket accepted")
	}
}

// TestBucketNames: a bucket name S3 does not take is refused before the
// server is asked, naming --bucket and HOMEMOLE_S3_BUCKET and the rule it
// breaks. It used to be reported as an unreachable server ("reach S3 at
// ...: Bucket name cannot contain path separators (is the server up?")
// or as the server's bare "Bucket name contains invalid characters".
// Names at the rules' edges are taken by the embedded S3; one it refuses
// by a rule of its own (x.hm1: every part 3 long) is refused naming them
// too.
func TestBucketNames(t *testing.T) {
	srv, err := embedded.Start(context.Background(), t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := S3Config{Endpoint: srv.S3Endpoint, AccessKey: srv.S3AccessKey, SecretKey: srv.S3SecretKey}
	for _, bad := range []string{"x/y", "has space", strings.Repeat("a", 64), "192.168.1.1", "Bad_Bucket", "homeMole", "hm", "-homemole", "homemole.", "home..mole", "home.-mole", "hôme"} {
		cfg.Bucket = bad
		_, err := OpenS3(ctx, cfg)
		if err == nil || !strings.Contains(err.Error(), "--bucket") || !strings.Contains(err.Error(), "HOMEMOLE_S3_BUCKET") || strings.Contains(err.Error(), "is the server up") {
			t.Errorf("bucket %q: %v, want an error naming --bucket and HOMEMOLE_S3_BUCKET", bad, err)
		}
	}
	cfg.Bucket = "x.hm1"
	if _, err := OpenS3(ctx, cfg); err == nil || !strings.Contains(err.Error(), "--bucket") || !strings.Contains(err.Error(), "HOMEMOLE_S3_BUCKET") {
		t.Errorf("bucket %q: %v, want an error naming --bucket and HOMEMOLE_S3_BUCKET", cfg.Bucket, err)
	}
	for _, good := range []string{"hm1", strings.Repeat("a", 63), "home.mole-1", "192.168.100.1a1"} {
		cfg.Bucket = good
		if _, err := OpenS3(ctx, cfg); err != nil {
			t.Errorf("bucket %q: %v", good, err)
		}
	}
}

// TestNotS3: an endpoint that answers HTTP but is no S3 server (a web
// server that answers PUT with a 501 HTML page, as python's http.server
// does; one that answers 404 to everything) is said to be no S3 server,
// naming --s3 and HOMEMOLE_S3_ENDPOINT, in an error of a line, not the
// whole page. It used to be "create bucket homemole on ...: <!DOCTYPE
// HTML> ..." (the page) or "The specified bucket does not exist.", with no
// fix.
func TestNotS3(t *testing.T) {
	page := "<!DOCTYPE HTML>\n<html lang=\"en\">\n<head><title>Error response</title></head>\n<body>" + strings.Repeat("<p>padding</p>\n", 200) + "<p>END OF PAGE</p></body></html>\n"
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html;charset=utf-8")
		w.WriteHeader(http.StatusNotImplemented)
		io.WriteString(w, page)
	}))
	defer web.Close()
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, srv := range []*httptest.Server{web, notFound} {
		endpoint := strings.TrimPrefix(srv.URL, "http://")
		_, err := OpenS3(ctx, S3Config{Endpoint: endpoint, AccessKey: "a", SecretKey: "b", Bucket: "homemole"})
		if err == nil || !strings.Contains(err.Error(), "not as an S3 server") || !strings.Contains(err.Error(), endpoint) ||
			!strings.Contains(err.Error(), "HOMEMOLE_S3_ENDPOINT") || strings.Contains(err.Error(), "END OF PAGE") || strings.Contains(err.Error(), "\n") || len(err.Error()) > 600 {
			t.Errorf("%s: %v\nwant one line saying it is no S3 server, naming it and the fix", endpoint, err)
		}
	}
}
