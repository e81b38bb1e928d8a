// Package store keeps datasets, checkpoints and reports in S3-compatible
// object storage (MinIO in a cluster, the embedded server on one machine),
// through minio-go in both cases.
package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Store is the seam every stage writes objects through.
type Store interface {
	Put(ctx context.Context, key string, data []byte, contentType string) (ObjectInfo, error)
	Get(ctx context.Context, key string) ([]byte, error)
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
	Delete(ctx context.Context, key string) error
	// Location renders a key the way a person finds it (s3://bucket/key).
	Location(key string) string
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
}

// ErrNotFound is returned by Get for a missing key.
var ErrNotFound = errors.New("object not found")

// S3Config says where the object store is. Credentials come from the
// environment or a Kubernetes Secret and are never logged.
type S3Config struct {
	Endpoint  string // host:port
	AccessKey string
	SecretKey string
	Bucket    string
	TLS       bool
	Region    string
}

const (
	fixUnreachable = "is the server up? set --s3 or HOMEMOLE_S3_ENDPOINT to its host:port (and HOMEMOLE_S3_TLS=true if it speaks https), or leave both empty for the embedded store"
	fixCredentials = "set HOMEMOLE_S3_ACCESS_KEY and HOMEMOLE_S3_SECRET_KEY to a key pair the server knows"
)

// CheckBucket refuses a bucket name S3 does not take, before any server is
// asked (which answers such a name as an unreachable server, or with an
// error that says nothing of --bucket): 3 to 63 lowercase letters, digits,
// '.' and '-', starting and ending with a letter or digit, no '..' (nor
// '.-' or '-.', which MinIO refuses), and not an IP address.
func CheckBucket(name string) error {
	var why string
	bad := strings.IndexFunc(name, func(r rune) bool {
		return !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '.' || r == '-')
	})
	alnum := func(b byte) bool { return 'a' <= b && b <= 'z' || '0' <= b && b <= '9' }
	switch {
	case bad >= 0:
		r, _ := utf8.DecodeRuneInString(name[bad:])
		why = fmt.Sprintf("%q is not a lowercase letter, digit, '.' or '-'", r)
	case len(name) < 3 || len(name) > 63:
		why = fmt.Sprintf("it has %d characters", len(name))
	case !alnum(name[0]) || !alnum(name[len(name)-1]):
		why = "it must start and end with a letter or digit"
	case strings.Contains(name, "..") || strings.Contains(name, ".-") || strings.Contains(name, "-."):
		why = "it has '..', '.-' or '-.'"
	case ipLike(name):
		why = "it is an IP address"
	default:
		return nil
	}
	return fmt.Errorf("S3 bucket %q: %s; bucket names are 3 to 63 lowercase letters, digits, '.' and '-', start and end with a letter or digit, and are no IP address (set --bucket or %s; the default is %q)",
		name, why, EnvBucket, DefaultBucket)
}

// ipLike reports whether a bucket name is four dot-separated numbers.
func ipLike(name string) bool {
	parts := strings.Split(name, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// EnvBucket and DefaultBucket are where the bucket's name comes from
// (besides --bucket) and what it is when none is given.
const (
	EnvBucket     = "HOMEMOLE_S3_BUCKET"
	DefaultBucket = "homemole"
)

// fixNotS3 is what to do about an endpoint that answers HTTP but not S3.
const fixNotS3 = "set --s3 or HOMEMOLE_S3_ENDPOINT to the host:port of an S3 API (MinIO's API port, not its console), HOMEMOLE_S3_TLS=true if it speaks https, or leave both empty for the embedded store"

// notS3 recognises an answer to op that did not come from an S3 server and
// says so, naming the endpoint and the fix; nil for anything else. minio-go
// gives a body it cannot read as an S3 error its HTTP status as the code
// ("501 Unsupported method") and the body, an HTML page perhaps, as the
// message; and a 404 without a readable body it takes for NoSuchBucket,
// which no S3 server answers to creating a bucket (creating says so).
func notS3(endpoint, op string, err error, creating bool) error {
	er := minio.ToErrorResponse(err)
	if er.StatusCode == 0 {
		return nil // no HTTP answer at all
	}
	msg := strings.TrimSpace(er.Message)
	lower := strings.ToLower(msg)
	html := strings.HasPrefix(lower, "<!doctype html") || strings.Contains(lower, "<html")
	status := er.Code != "" && er.Code[0] >= '0' && er.Code[0] <= '9'
	if !html && !status && !(creating && er.Code == minio.NoSuchBucket) {
		return nil
	}
	answer := fmt.Sprintf("HTTP %d %s", er.StatusCode, http.StatusText(er.StatusCode))
	if status {
		answer = "HTTP " + er.Code
	}
	switch {
	case html:
		answer += ", an HTML page"
		if a := strings.Index(lower, "<title>"); a >= 0 {
			if z := strings.Index(lower[a:], "</title>"); z >= 0 {
				answer += " titled " + strconv.Quote(cut(msg[a+len("<title>"):a+z], 80))
			}
		}
	case msg != "" && msg != er.Code && !(creating && er.Code == minio.NoSuchBucket):
		answer += ": " + cut(msg, 200)
	}
	return fmt.Errorf("%s answers HTTP but not as an S3 server: %s got %s (%s)", endpoint, op, answer, fixNotS3)
}

// cut shortens a body for an error message: its words on one line, at
// most n bytes.
func cut(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// S3 is a Store on an S3-compatible server.
type S3 struct {
	cli    *minio.Client
	bucket string
}

// OpenS3 connects and creates the bucket when it does not exist yet.
func OpenS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("S3 endpoint is empty: set --s3 or HOMEMOLE_S3_ENDPOINT, or leave both empty for the embedded store")
	}
	if err := CheckBucket(cfg.Bucket); err != nil {
		return nil, err
	}
	cli, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: cfg.TLS,
		Region: cfg.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("S3 client for %s: %w", cfg.Endpoint, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	ok, err := cli.BucketExists(cctx, cfg.Bucket)
	if err != nil {
		switch minio.ToErrorResponse(err).Code {
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied":
			return nil, fmt.Errorf("S3 at %s refused the credentials for bucket %s: %w (%s)", cfg.Endpoint, cfg.Bucket, err, fixCredentials)
		}
		if e := notS3(cfg.Endpoint, "looking up bucket "+cfg.Bucket, err, false); e != nil {
			return nil, e
		}
		return nil, fmt.Errorf("reach S3 at %s (bucket %s): %w (%s)", cfg.Endpoint, cfg.Bucket, err, fixUnreachable)
	}
	if !ok {
		if err := cli.MakeBucket(cctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil {
			if e := notS3(cfg.Endpoint, "creating bucket "+cfg.Bucket, err, true); e != nil {
				return nil, e
			}
			if minio.ToErrorResponse(err).Code == "InvalidBucketName" {
				// A server's own rules, stricter than CheckBucket's (the
				// embedded S3 wants every '.'-separated part 3 long).
				return nil, fmt.Errorf("S3 at %s refused the bucket name %q: %w (set --bucket or %s to another name)", cfg.Endpoint, cfg.Bucket, err, EnvBucket)
			}
			// Another worker may have created it in between.
			if ok2, err2 := cli.BucketExists(cctx, cfg.Bucket); err2 != nil || !ok2 {
				return nil, fmt.Errorf("create bucket %s on %s: %w", cfg.Bucket, cfg.Endpoint, err)
			}
		}
	}
	return &S3{cli: cli, bucket: cfg.Bucket}, nil
}

// Put writes an object whole; a retry with the same key and bytes rewrites
// the same object, which is what makes deterministic names crash-safe.
//
// What was stored is checked twice: the server checks the Content-MD5 of
// the object (or of each multipart part) as it receives it, and Put then
// asks for the stored object's size and recorded SHA-256 and compares them
// with what it sent. A server that stores anything else (the embedded S3
// once kept the aws-chunked framing of multipart parts) is an error naming
// the key, never a silently damaged model or dataset.
func (s *S3) Put(ctx context.Context, key string, data []byte, contentType string) (ObjectInfo, error) {
	if err := CheckKey(key); err != nil {
		return ObjectInfo{}, fmt.Errorf("put %s: %w", s.Location(key), err)
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	_, err := s.cli.PutObject(ctx, s.bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{
		ContentType:    contentType,
		UserMetadata:   map[string]string{sha256Meta: want},
		SendContentMd5: true,
	})
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("put %s: %w", s.Location(key), err)
	}
	st, err := s.cli.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("check %s after writing it: %w", s.Location(key), err)
	}
	if st.Size != int64(len(data)) || recordedSHA256(st) != want {
		return ObjectInfo{}, fmt.Errorf("put %s: the server stored %d bytes with SHA-256 %q, not the %d bytes with SHA-256 %s sent: %w",
			s.Location(key), st.Size, recordedSHA256(st), len(data), want, ErrCorrupt)
	}
	return ObjectInfo{Key: key, Size: int64(len(data)), SHA256: want}, nil
}

// sha256Meta is the user metadata (x-amz-meta-sha256) Put records beside
// every object and Get checks.
const sha256Meta = "sha256"

// ErrCorrupt is returned when an object's bytes do not hash to the SHA-256
// recorded beside it.
var ErrCorrupt = errors.New("object does not match its recorded SHA-256")

func recordedSHA256(o minio.ObjectInfo) string {
	for k, v := range o.UserMetadata {
		if strings.EqualFold(k, sha256Meta) || strings.EqualFold(k, "X-Amz-Meta-"+sha256Meta) {
			return v
		}
	}
	return o.Metadata.Get("X-Amz-Meta-" + sha256Meta)
}

// Get reads an object whole and checks it against the SHA-256 Put recorded
// beside it, so a model, an export or a window damaged at rest or in
// transit is an error naming its key. Objects written by other tools carry
// no such record and are returned as they are.
func (s *S3) Get(ctx context.Context, key string) ([]byte, error) {
	if err := CheckKey(key); err != nil {
		return nil, fmt.Errorf("get %s: %w", s.Location(key), err)
	}
	obj, err := s.cli.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", s.Location(key), err)
	}
	defer obj.Close()
	data, err := io.ReadAll(obj)
	if err != nil {
		var er minio.ErrorResponse
		if errors.As(err, &er) && er.Code == "NoSuchKey" {
			return nil, fmt.Errorf("get %s: %w", s.Location(key), ErrNotFound)
		}
		return nil, fmt.Errorf("get %s: %w", s.Location(key), err)
	}
	st, err := obj.Stat()
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", s.Location(key), err)
	}
	if want := recordedSHA256(st); want != "" {
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != want {
			return nil, fmt.Errorf("get %s: %d bytes hash to %s, recorded %s: %w (rewrite it: rebuild the dataset or retrain the model)",
				s.Location(key), len(data), got, want, ErrCorrupt)
		}
	}
	return data, nil
}

// List returns the objects under prefix, sorted by key.
func (s *S3) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, fmt.Errorf("list %s: %w", s.Location(prefix), err)
	}
	var out []ObjectInfo
	for o := range s.cli.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, fmt.Errorf("list %s: %w", s.Location(prefix), o.Err)
		}
		out = append(out, ObjectInfo{Key: o.Key, Size: o.Size})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete removes an object; removing a missing key is not an error.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return fmt.Errorf("delete %s: %w", s.Location(key), err)
	}
	if err := s.cli.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("delete %s: %w", s.Location(key), err)
	}
	return nil
}

// Location renders a key as s3://bucket/key.
func (s *S3) Location(key string) string { return "s3://" + s.bucket + "/" + key }
