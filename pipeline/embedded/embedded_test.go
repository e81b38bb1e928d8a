package embedded_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homemole/homemole/pipeline/embedded"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/nats-io/nats.go"
)

func start(t *testing.T) (*embedded.Servers, string) {
	t.Helper()
	dir := t.TempDir()
	srv, err := embedded.Start(context.Background(), dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv, dir
}

// client is minio-go on the embedded S3 with this run's keys; rt, when
// set, sees every request on its way out.
func client(t *testing.T, srv *embedded.Servers, opts minio.Options, rt func(*http.Request)) *minio.Client {
	t.Helper()
	if opts.Creds == nil {
		opts.Creds = credentials.NewStaticV4(srv.S3AccessKey, srv.S3SecretKey, "")
	}
	if rt != nil {
		opts.Transport = roundTripper(func(r *http.Request) (*http.Response, error) {
			rt(r)
			return http.DefaultTransport.RoundTrip(r)
		})
	}
	c, err := minio.New(srv.S3Endpoint, &opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if ok, _ := c.BucketExists(ctx, "homemole"); !ok && rt == nil {
		if err := c.MakeBucket(ctx, "homemole", minio.MakeBucketOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func put(t *testing.T, c *minio.Client, key string, data []byte) {
	t.Helper()
	if _, err := c.PutObject(context.Background(), "homemole", key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
}

func get(c *minio.Client, key string) ([]byte, error) {
	obj, err := c.GetObject(context.Background(), "homemole", key, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	return io.ReadAll(obj)
}

// TestSecurityS3Unsigned: a request without this run's signature (a local
// user, a web page) can neither list, read nor delete.
func TestSecurityS3Unsigned(t *testing.T) {
	srv, _ := start(t)
	c := client(t, srv, minio.Options{}, nil)
	put(t, c, "datasets/d/v1/manifest.json", []byte(`{"windows":1}`))
	base := "http://" + srv.S3Endpoint + "/homemole"
	refused := 0
	for _, tc := range []struct{ method, url string }{
		{http.MethodGet, base + "/"},
		{http.MethodGet, base + "/datasets/d/v1/manifest.json"},
		{http.MethodDelete, base + "/datasets/d/v1/manifest.json"},
		{http.MethodPut, base + "/datasets/d/v1/manifest.json"},
	} {
		req, _ := http.NewRequest(tc.method, tc.url, strings.NewReader("forged"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || bytes.Contains(body, []byte("windows")) || bytes.Contains(body, []byte("<Key>")) {
			t.Errorf("unsigned %s %s: %d %s, want 403", tc.method, tc.url, resp.StatusCode, body)
		} else {
			refused++
		}
	}
	got, err := get(c, "datasets/d/v1/manifest.json")
	if err != nil || string(got) != `{"windows":1}` {
		t.Errorf("after the unsigned requests the object reads %q, %v", got, err)
	}
	t.Logf("attack: unsigned list, read, overwrite and delete on the embedded S3 | expected: 403, the object intact | observed: %d of 4 refused with 403, object intact: %v", refused, err == nil && string(got) == `{"windows":1}`)
}

// TestSecurityS3Origin: a browser's cross-origin request is refused even
// when signed, and no answer invites a page to read it.
func TestSecurityS3Origin(t *testing.T) {
	srv, _ := start(t)
	put(t, client(t, srv, minio.Options{}, nil), "models/m/model.json", []byte("{}"))
	withOrigin := client(t, srv, minio.Options{}, func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") })
	refused, cors := 0, 0
	if _, err := get(withOrigin, "models/m/model.json"); err == nil || minio.ToErrorResponse(err).StatusCode != http.StatusForbidden {
		t.Errorf("signed GET with an Origin: %v, want 403", err)
	} else {
		refused++
	}
	for _, method := range []string{http.MethodGet, http.MethodOptions} {
		req, _ := http.NewRequest(method, "http://"+srv.S3Endpoint+"/homemole/", nil)
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Access-Control-Request-Method", "GET")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			cors++
		}
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("%s with Origin: %d, Access-Control-Allow-Origin %q; want 403 and none", method, resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
		} else {
			refused++
		}
	}
	t.Logf("attack: a web page's cross-origin requests (signed GET, GET, preflight) to the embedded S3 | expected: 403, no Access-Control-Allow-Origin | observed: %d of 3 refused with 403, %d answers allowed an origin", refused, cors)
}

// TestSecurityS3Keys: each run draws new keys; the keys of another run,
// and the fixed keys earlier versions printed, are refused.
func TestSecurityS3Keys(t *testing.T) {
	srv, dir := start(t)
	other, _ := start(t)
	if srv.S3SecretKey == other.S3SecretKey || srv.NATSPassword == other.NATSPassword || len(srv.S3SecretKey) < 32 {
		t.Fatalf("keys are not drawn per run: %q %q", srv.S3SecretKey, other.S3SecretKey)
	}
	ctx := context.Background()
	refused := 0
	for _, keys := range [][2]string{{srv.S3AccessKey, other.S3SecretKey}, {"homemole", "homemole-embedded"}, {other.S3AccessKey, other.S3SecretKey}} {
		_, err := store.OpenS3(ctx, store.S3Config{Endpoint: srv.S3Endpoint, AccessKey: keys[0], SecretKey: keys[1], Bucket: "homemole"})
		if err == nil || !strings.Contains(err.Error(), "refused the credentials") {
			t.Errorf("keys %s/%s...: %v, want refused", keys[0], keys[1][:4], err)
		} else {
			refused++
		}
	}
	t.Logf("attack: the embedded S3 with another run's keys and with the fixed keys earlier versions printed | expected: refused | observed: %d of 3 key pairs refused; credentials file mode 0600", refused)
	fi, err := os.Stat(filepath.Join(dir, embedded.CredentialsFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v, mode %v; want 0600", err, fi)
	}
	b, _ := os.ReadFile(srv.Credentials)
	if !strings.Contains(string(b), "HOMEMOLE_S3_SECRET_KEY="+srv.S3SecretKey+"\n") || !strings.Contains(string(b), "HOMEMOLE_NATS_URL="+srv.NATSURL+"\n") {
		t.Errorf("credentials file holds %q", b)
	}
	srv.Close()
	if _, err := os.Stat(srv.Credentials); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("credentials file left behind after Close: %v", err)
	}
}

// TestSecurityNATSLogin: the embedded NATS refuses a connection without
// this run's login.
func TestSecurityNATSLogin(t *testing.T) {
	srv, _ := start(t)
	bare := "nats://" + srv.NATSURL[strings.LastIndex(srv.NATSURL, "@")+1:]
	if nc, err := nats.Connect(bare, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatalf("connected to %s without a login", bare)
	}
	if nc, err := nats.Connect(bare, nats.UserInfo(srv.NATSUser, "wrong"), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("connected with a wrong password")
	}
	nc, err := nats.Connect(srv.NATSURL)
	if err != nil {
		t.Fatalf("this run's URL: %v", err)
	}
	nc.Close()
	t.Logf("attack: connect to the embedded NATS without this run's login, or with a wrong password | expected: refused | observed: both refused, this run's URL connects")
}

// TestSecurityS3Traversal: keys that climb out of the bucket (the backend
// maps keys to files) are refused, and nothing lands beside the buckets.
func TestSecurityS3Traversal(t *testing.T) {
	srv, dir := start(t)
	c := client(t, srv, minio.Options{}, nil)
	keys := []string{"../escaped", "datasets/../../escaped", "a/./b", "a//b", `a\b`}
	refused := 0
	for _, key := range keys {
		if _, err := c.PutObject(context.Background(), "homemole", key, strings.NewReader("x"), 1, minio.PutObjectOptions{}); err == nil {
			t.Errorf("key %q accepted", key)
		} else {
			refused++
		}
	}
	var found []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), "escaped") {
			found = append(found, p)
		}
		return nil
	})
	if len(found) > 0 {
		t.Errorf("objects written outside the bucket: %v", found)
	}
	t.Logf("attack: signed PUTs to the embedded S3 with keys that climb out of the bucket | expected: refused, nothing written | observed: %d of %d refused, %d files outside", refused, len(keys), len(found))
}

// TestChunkTampered flips one payload byte after minio-go signed the
// chunks: the upload fails and no object is stored, not even a part of it.
func TestChunkTampered(t *testing.T) {
	srv, _ := start(t)
	client(t, srv, minio.Options{}, nil) // makes the bucket
	flip := func(r *http.Request) {
		if r.Method == http.MethodPut && r.Body != nil {
			r.Body = &flipper{ReadCloser: r.Body, at: 70 << 10}
		}
	}
	c := client(t, srv, minio.Options{MaxRetries: 1}, flip)
	data := bytes.Repeat([]byte("0123456789abcdef"), 20<<10) // 320 KiB: five chunks
	_, err := c.PutObject(context.Background(), "homemole", "models/tampered", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
	if err == nil {
		t.Fatal("a tampered chunk was accepted")
	}
	if got, err := get(client(t, srv, minio.Options{}, nil), "models/tampered"); err == nil {
		t.Errorf("the tampered upload left %d bytes stored", len(got))
	}
}

type flipper struct {
	io.ReadCloser
	at, n int
}

func (f *flipper) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if f.at >= f.n && f.at < f.n+n {
		p[f.at-f.n] ^= 0x40
	}
	f.n += n
	return n, err
}

// TestTrailerUploads: the aws-chunked forms with trailing checksums
// (signed and unsigned), which minio-go sends when trailing headers are
// enabled, come back byte for byte, in one PUT and in parts.
func TestTrailerUploads(t *testing.T) {
	srv, _ := start(t)
	data := make([]byte, 17<<20+3)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	for _, disableSHA := range []bool{false, true} {
		c := client(t, srv, minio.Options{TrailingHeaders: true}, nil)
		for _, size := range []int{0, 1000, len(data)} {
			key := fmt.Sprintf("trailer/unsigned-%v-%d", disableSHA, size)
			_, err := c.PutObject(context.Background(), "homemole", key, bytes.NewReader(data[:size]), int64(size),
				minio.PutObjectOptions{DisableContentSha256: disableSHA, Checksum: minio.ChecksumCRC32C})
			if err != nil {
				t.Fatalf("unsigned=%v size %d: %v", disableSHA, size, err)
			}
			got, err := get(c, key)
			if err != nil || !bytes.Equal(got, data[:size]) {
				t.Errorf("unsigned=%v size %d: %d bytes back, %v", disableSHA, size, len(got), err)
			}
		}
	}
}
