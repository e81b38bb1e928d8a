package store

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMinIO runs the store against a real MinIO server when the environment
// names one (tools/minio starts one and sets these variables).
func TestMinIO(t *testing.T) {
	endpoint := os.Getenv("HOMEMOLE_TEST_MINIO")
	if endpoint == "" {
		t.Skip("no MinIO to test against: set HOMEMOLE_TEST_MINIO (host:port) and HOMEMOLE_TEST_MINIO_ACCESS_KEY/HOMEMOLE_TEST_MINIO_SECRET_KEY, or run `go tool task test:minio`, which builds and starts one")
	}
	tls := strings.HasPrefix(endpoint, "https://")
	endpoint = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(endpoint, "https://"), "http://"), "/")
	cfg := S3Config{Endpoint: endpoint, TLS: tls,
		AccessKey: os.Getenv("HOMEMOLE_TEST_MINIO_ACCESS_KEY"), SecretKey: os.Getenv("HOMEMOLE_TEST_MINIO_SECRET_KEY"),
		// A bucket of its own, which OpenS3 must create.
		Bucket: "hm-store-" + strings.ReplaceAll(time.Now().UTC().Format("150405.000000"), ".", "-")}
	ctx := context.Background()
	s, err := OpenS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkPutGetList(t, s)
	checkRoundTrip(t, s)
	// Opening it again finds the bucket there, objects and all.
	again, err := OpenS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if objs, err := again.List(ctx, "datasets/"); err != nil || len(objs) != 1 {
		t.Errorf("reopened bucket lists %+v %v", objs, err)
	}

	bad := cfg
	bad.SecretKey += "-wrong"
	_, err = OpenS3(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), endpoint) || !strings.Contains(err.Error(), "refused the credentials") || !strings.Contains(err.Error(), "HOMEMOLE_S3_SECRET_KEY") {
		t.Errorf("wrong secret key: got %v, want an error naming the endpoint and the keys to fix", err)
	}
}
