package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/homemole/homemole/pipeline/embedded"
	"github.com/minio/minio-go/v7"
)

// roundTripSizes straddle minio-go's switch from one PUT to a multipart
// upload (16 MiB parts), where the embedded S3 once stored each part's
// aws-chunked framing as content.
var roundTripSizes = []int{0, 1, 5 << 20, 16<<20 - 1, 16<<20 + 1, 64 << 20, 200 << 20}

// checkRoundTrip puts random objects of every size through each upload
// path minio-go takes (Store.Put with the length known; a stream of unknown
// length, which minio-go sends as a multipart upload of buffered parts)
// and reads each back byte for byte, through Store.Get and through a plain
// GetObject that checks nothing on its own.
func checkRoundTrip(t *testing.T, s *S3) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the round trip moves about 1 GiB")
	}
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(12, 0))
	for _, size := range roundTripSizes {
		data := make([]byte, size)
		for i := 0; i+8 <= size; i += 8 {
			v := rng.Uint64()
			for j := range 8 {
				data[i+j] = byte(v >> (8 * j))
			}
		}
		for i := size &^ 7; i < size; i++ {
			data[i] = byte(rng.Uint32())
		}
		known := fmt.Sprintf("roundtrip/known-%d", size)
		info, err := s.Put(ctx, known, data, "")
		if err != nil {
			t.Fatalf("put %d bytes: %v", size, err)
		}
		if info.Size != int64(size) {
			t.Errorf("put %d bytes: info says %d", size, info.Size)
		}
		unknown := fmt.Sprintf("roundtrip/unknown-%d", size)
		// PartSize keeps minio-go from buffering a 537 MiB part for a
		// stream of unknown length; the path is the same.
		if _, err := s.cli.PutObject(ctx, s.bucket, unknown, io.MultiReader(bytes.NewReader(data)), -1, minio.PutObjectOptions{PartSize: 16 << 20}); err != nil {
			t.Fatalf("put %d bytes of unknown length: %v", size, err)
		}
		for _, key := range []string{known, unknown} {
			got, err := s.Get(ctx, key)
			if err != nil {
				t.Fatalf("get %s: %v", key, err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("%s: %d bytes came back instead of the %d put, or different ones", key, len(got), size)
			}
			obj, err := s.cli.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			raw, err := io.ReadAll(obj)
			obj.Close()
			if err != nil || !bytes.Equal(raw, data) {
				t.Errorf("%s read plainly: %d bytes instead of %d (%v)", key, len(raw), size, err)
			}
			if err := s.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestRoundTripSizes(t *testing.T) { checkRoundTrip(t, open(t)) }

// TestGetRefusesDamage damages a stored object on the embedded server's
// disk: Get must say so, naming the key, instead of returning the bytes.
func TestGetRefusesDamage(t *testing.T) {
	dir := t.TempDir()
	srv, err := embedded.Start(context.Background(), dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	ctx := context.Background()
	s, err := OpenS3(ctx, S3Config{Endpoint: srv.S3Endpoint, AccessKey: srv.S3AccessKey, SecretKey: srv.S3SecretKey, Bucket: "homemole"})
	if err != nil {
		t.Fatal(err)
	}
	key := "models/run-1/model.ckpt"
	if _, err := s.Put(ctx, key, bytes.Repeat([]byte("weights"), 1000), ""); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "s3", "buckets", "homemole", filepath.FromSlash(key))
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the embedded S3 keeps objects as files: %v", err)
	}
	b[100] ^= 1
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = s.Get(ctx, key)
	if !errors.Is(err, ErrCorrupt) || !bytes.Contains([]byte(err.Error()), []byte(s.Location(key))) {
		t.Fatalf("damaged object: got %v, want ErrCorrupt naming %s", err, s.Location(key))
	}
}
