package embedded

import (
	"crypto/sha256"
	"encoding/xml"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// s3Gate stands in front of gofakes3, which checks no signature, answers
// any web page's cross-origin request with Access-Control-Allow-Origin: *,
// maps keys with ".." segments outside its bucket, and stores the framing
// of aws-chunked multipart parts as content. The gate:
//   - refuses every request that is not signed (SigV4) with this run's keys,
//     so neither a local user without the credentials file nor a web page
//     can read or delete a dataset;
//   - refuses every request that carries an Origin header: no browser has
//     a reason to talk to it;
//   - refuses keys that are not plain relative paths;
//   - decodes aws-chunked payloads (checking each chunk's signature and any
//     trailing checksum) and checks declared payload hashes, so gofakes3
//     only ever sees, and stores, the bytes the client meant;
//   - runs multipart uploads itself (multipart.go).
//
// Decoding here, rather than making the client send unchunked bodies,
// keeps the embedded mode on the exact upload paths minio-go takes against
// a real MinIO (single put, multipart, unknown length), and gives the
// checks a place to live; replacing gofakes3 would have taken all its
// bucket and listing semantics along for no gain.
type s3Gate struct {
	next                 http.Handler
	uploads              *uploads
	accessKey, secretKey string
	now                  func() time.Time
	log                  *slog.Logger
}

func (g *s3Gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := g.admit(r); err != nil {
		g.log.Warn("embedded S3 refused a request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "code", err.code, "why", err.message)
		writeS3Error(w, r, err)
		return
	}
	if g.uploads.serve(w, r) {
		return
	}
	g.next.ServeHTTP(w, r)
}

// admit checks the request and rewrites an aws-chunked body into the
// plain payload it carries.
func (g *s3Gate) admit(r *http.Request) *s3Error {
	if r.Header.Get("Origin") != "" || r.Method == http.MethodOptions {
		return denied("AccessDenied", "cross-origin requests are refused: the embedded S3 serves HomeMole's own processes, never a web page")
	}
	if err := checkPath(r.URL.Path); err != nil {
		return err
	}
	s, err := parseSigV4(r, g.now())
	if err != nil {
		return err
	}
	if s.accessKey != g.accessKey {
		return denied("InvalidAccessKeyId", "access key %q is not this run's", s.accessKey)
	}
	if err := verifySigV4(r, s, g.secretKey); err != nil {
		return err
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	switch {
	case isStreaming(payload):
		declared, perr := strconv.ParseInt(r.Header.Get("X-Amz-Decoded-Content-Length"), 10, 64)
		if perr != nil || declared < 0 {
			return &s3Error{status: http.StatusLengthRequired, code: "MissingContentLength", message: "an aws-chunked upload needs X-Amz-Decoded-Content-Length"}
		}
		var names []string
		for _, v := range r.Header.Values("X-Amz-Trailer") {
			names = append(names, strings.Split(v, ",")...)
		}
		cr, cerr := newChunkedReader(r.Body, payload, newChunkSigner(s, g.secretKey), declared, names)
		if cerr != nil {
			return &s3Error{status: http.StatusNotImplemented, code: "NotImplemented", message: cerr.Error()}
		}
		r.Body = readCloser{cr, r.Body}
		r.ContentLength = declared
		r.Header.Set("Content-Length", strconv.FormatInt(declared, 10))
		r.Header.Set("X-Amz-Content-Sha256", unsignedPayload)
		r.Header.Del("X-Amz-Decoded-Content-Length")
		r.Header.Del("X-Amz-Trailer")
		r.Header.Del("Content-Encoding") // aws-chunked is framing, not a property of the object
	case payload == unsignedPayload:
	case len(payload) == 64 && strings.Trim(payload, "0123456789abcdef") == "":
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = readCloser{&hashCheckReader{r: r.Body, h: sha256.New(), want: payload}, r.Body}
		}
	default:
		return denied("AccessDenied", "X-Amz-Content-Sha256 %q is neither a SHA-256, UNSIGNED-PAYLOAD nor an aws-chunked mode", payload)
	}
	return nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// checkPath refuses bucket or key segments that are empty, "." or "..",
// and backslashes or NULs: the backend maps keys to files, and such a key
// would name another object, another bucket or nothing S3 would name.
func checkPath(p string) *s3Error {
	if strings.ContainsAny(p, "\\\x00") {
		return &s3Error{status: http.StatusBadRequest, code: "InvalidArgument", message: "object key holds a backslash or NUL"}
	}
	rest := strings.TrimPrefix(p, "/")
	if rest == "" {
		return nil // the service: list buckets
	}
	bucket, key, _ := strings.Cut(rest, "/")
	if bucket == "." || bucket == ".." {
		return &s3Error{status: http.StatusBadRequest, code: "InvalidBucketName", message: "bucket name " + bucket}
	}
	if key == "" {
		return nil
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return &s3Error{status: http.StatusBadRequest, code: "InvalidArgument", message: "object key " + strconv.Quote(key) + " has an empty, \".\" or \"..\" segment"}
		}
	}
	return nil
}

func writeS3Error(w http.ResponseWriter, r *http.Request, e *s3Error) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(e.status)
	if r.Method == http.MethodHead {
		return
	}
	body, _ := xml.Marshal(struct {
		XMLName  xml.Name `xml:"Error"`
		Code     string
		Message  string
		Resource string
	}{Code: e.code, Message: e.message, Resource: r.URL.Path})
	_, _ = w.Write(append([]byte(xml.Header), body...))
}
