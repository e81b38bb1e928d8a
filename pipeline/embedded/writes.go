package embedded

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/johannesboyne/gofakes3"
)

// uploads runs the embedded server's writes (PUT and multipart uploads)
// in place of gofakes3's, which
//   - create the object's file before reading the body, so an upload that
//     fails half way (a bad chunk signature, a killed client) leaves a
//     truncated object that reads back without an error;
//   - keep every multipart part in memory until the upload completes (a
//     200 MiB model held twice);
//   - refuse the empty part a client sends for an empty stream of unknown
//     length.
//
// A body is staged as a file beside the buckets, checked whole (length,
// Content-MD5; the gate has checked signatures and hashes as it streamed),
// and only then handed to the same backend, so reads and listings stay
// gofakes3's.
type uploads struct {
	dir     string
	backend gofakes3.Backend

	mu   sync.Mutex
	open map[string]*upload
}

type upload struct {
	bucket, key string
	meta        map[string]string
	parts       map[int]stagedPart
}

type stagedPart struct {
	size int64
	etag string // hex MD5, unquoted
}

func newUploads(dir string, backend gofakes3.Backend) (*uploads, error) {
	// Uploads do not survive a restart (clients restart them), so what a
	// killed server left is removed.
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("clear embedded S3 uploads %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create embedded S3 uploads folder %s: %w", dir, err)
	}
	return &uploads{dir: dir, backend: backend, open: map[string]*upload{}}, nil
}

// serve handles r when it is a multipart request and says whether it was.
func (u *uploads) serve(w http.ResponseWriter, r *http.Request) bool {
	q := r.URL.Query()
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	var err *s3Error
	switch {
	case key == "":
		return false // bucket-level requests (listing uploads) stay gofakes3's
	case r.Method == http.MethodPut && !q.Has("uploadId") && len(q) == 0:
		if r.Header.Get("X-Amz-Copy-Source") != "" {
			return false // server-side copy: no body to stage
		}
		err = u.put(w, r, bucket, key)
	case r.Method == http.MethodPost && q.Has("uploads"):
		err = u.initiate(w, r, bucket, key)
	case r.Method == http.MethodPut && q.Has("uploadId") && q.Has("partNumber"):
		err = u.part(w, r, bucket, key, q.Get("uploadId"), q.Get("partNumber"))
	case r.Method == http.MethodPost && q.Has("uploadId"):
		err = u.complete(w, r, bucket, key, q.Get("uploadId"))
	case r.Method == http.MethodDelete && q.Has("uploadId"):
		err = u.abort(w, bucket, key, q.Get("uploadId"))
	case q.Has("uploadId"):
		err = &s3Error{status: http.StatusNotImplemented, code: "NotImplemented", message: "listing the parts of an upload is not served by the embedded S3"}
	default:
		return false
	}
	if err != nil {
		writeS3Error(w, r, err)
	}
	return true
}

func (u *uploads) lookup(bucket, key, id string) (*upload, *s3Error) {
	up := u.open[id]
	if up == nil || up.bucket != bucket || up.key != key {
		return nil, &s3Error{status: http.StatusNotFound, code: "NoSuchUpload", message: "no upload " + id + " for " + bucket + "/" + key}
	}
	return up, nil
}

func (u *uploads) initiate(w http.ResponseWriter, r *http.Request, bucket, key string) *s3Error {
	if ok, err := u.backend.BucketExists(bucket); err != nil || !ok {
		return &s3Error{status: http.StatusNotFound, code: "NoSuchBucket", message: "bucket " + bucket}
	}
	meta := objectMeta(r.Header)
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return &s3Error{status: http.StatusInternalServerError, code: "InternalError", message: err.Error()}
	}
	id := hex.EncodeToString(b)
	if err := os.Mkdir(filepath.Join(u.dir, id), 0o700); err != nil {
		return &s3Error{status: http.StatusInternalServerError, code: "InternalError", message: err.Error()}
	}
	u.mu.Lock()
	u.open[id] = &upload{bucket: bucket, key: key, meta: meta, parts: map[int]stagedPart{}}
	u.mu.Unlock()
	return writeXML(w, struct {
		XMLName  xml.Name `xml:"InitiateMultipartUploadResult"`
		Bucket   string
		Key      string
		UploadId string
	}{Bucket: bucket, Key: key, UploadId: id})
}

func (u *uploads) part(w http.ResponseWriter, r *http.Request, bucket, key, id, number string) *s3Error {
	n, perr := strconv.Atoi(number)
	if perr != nil || n < 1 || n > 10000 {
		return &s3Error{status: http.StatusBadRequest, code: "InvalidArgument", message: "part number " + number + " is not 1..10000"}
	}
	if r.Header.Get("X-Amz-Copy-Source") != "" {
		return &s3Error{status: http.StatusNotImplemented, code: "NotImplemented", message: "copying a part is not served by the embedded S3"}
	}
	u.mu.Lock()
	_, err := u.lookup(bucket, key, id)
	u.mu.Unlock()
	if err != nil {
		return err
	}
	// Staged under a name of its own and renamed into place, so a part
	// sent twice (a client's retry) never mixes two bodies.
	tmp, size, sum, err := u.stage(r, filepath.Join(u.dir, id))
	if err != nil {
		return err
	}
	if rerr := os.Rename(tmp, filepath.Join(u.dir, id, strconv.Itoa(n))); rerr != nil {
		os.Remove(tmp)
		return &s3Error{status: http.StatusInternalServerError, code: "InternalError", message: rerr.Error()}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	up, err := u.lookup(bucket, key, id)
	if err != nil {
		return err // aborted meanwhile
	}
	up.parts[n] = stagedPart{size: size, etag: hex.EncodeToString(sum)}
	w.Header().Set("ETag", `"`+hex.EncodeToString(sum)+`"`)
	return nil
}

// put stores a whole object once its body has arrived and checked out.
func (u *uploads) put(w http.ResponseWriter, r *http.Request, bucket, key string) *s3Error {
	if ok, err := u.backend.BucketExists(bucket); err != nil || !ok {
		return &s3Error{status: http.StatusNotFound, code: "NoSuchBucket", message: "bucket " + bucket}
	}
	tmp, size, sum, err := u.stage(r, u.dir)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	f, ferr := os.Open(tmp)
	if ferr != nil {
		return &s3Error{status: http.StatusInternalServerError, code: "InternalError", message: ferr.Error()}
	}
	defer f.Close()
	if _, perr := u.backend.PutObject(bucket, key, objectMeta(r.Header), f, size, nil); perr != nil {
		return &s3Error{status: http.StatusInternalServerError, code: "InternalError", message: "store object: " + perr.Error()}
	}
	w.Header().Set("ETag", `"`+hex.EncodeToString(sum)+`"`)
	return nil
}

// stage copies a request body into a new file in dir and checks its
// length and Content-MD5; it returns the file's path, size and MD5.
func (u *uploads) stage(r *http.Request, dir string) (string, int64, []byte, *s3Error) {
	f, ferr := os.CreateTemp(dir, "body-*")
	if ferr != nil {
		return "", 0, nil, &s3Error{status: http.StatusInternalServerError, code: "InternalError", message: ferr.Error()}
	}
	h := md5.New()
	var body io.Reader = http.NoBody
	if r.Body != nil {
		body = r.Body
	}
	size, cerr := io.Copy(io.MultiWriter(f, h), body)
	if cerr == nil {
		cerr = f.Close()
	} else {
		f.Close()
	}
	fail := func(code, msg string) (string, int64, []byte, *s3Error) {
		os.Remove(f.Name())
		return "", 0, nil, &s3Error{status: http.StatusBadRequest, code: code, message: msg}
	}
	if cerr != nil {
		return fail("IncompleteBody", cerr.Error())
	}
	if r.ContentLength >= 0 && size != r.ContentLength {
		return fail("IncompleteBody", fmt.Sprintf("%d bytes received, %d declared", size, r.ContentLength))
	}
	sum := h.Sum(nil)
	if want := r.Header.Get("Content-Md5"); want != "" && want != base64.StdEncoding.EncodeToString(sum) {
		return fail("BadDigest", "the body does not match its Content-MD5")
	}
	return f.Name(), size, sum, nil
}

// objectMeta is what an object keeps of its upload's headers, as gofakes3
// keeps it for the objects it writes itself.
func objectMeta(h http.Header) map[string]string {
	meta := map[string]string{"Last-Modified": time.Now().UTC().Format(http.TimeFormat)}
	for k, v := range h {
		if strings.HasPrefix(k, "X-Amz-Meta-") || k == "Content-Type" || k == "Content-Disposition" {
			meta[k] = v[0]
		}
	}
	return meta
}

func (u *uploads) complete(w http.ResponseWriter, r *http.Request, bucket, key, id string) *s3Error {
	var req struct {
		Parts []struct {
			PartNumber int
			ETag       string
		} `xml:"Part"`
	}
	if err := xml.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&req); err != nil {
		return &s3Error{status: http.StatusBadRequest, code: "MalformedXML", message: err.Error()}
	}
	u.mu.Lock()
	up, err := u.lookup(bucket, key, id)
	if err == nil {
		delete(u.open, id) // nothing else may touch it while it completes
	}
	u.mu.Unlock()
	if err != nil {
		return err
	}
	defer os.RemoveAll(filepath.Join(u.dir, id))
	if len(req.Parts) == 0 {
		return &s3Error{status: http.StatusBadRequest, code: "MalformedXML", message: "a completed upload names no part"}
	}
	var (
		readers []io.Reader
		size    int64
		etags   []byte
	)
	for i, p := range req.Parts {
		sp, ok := up.parts[p.PartNumber]
		if !ok || strings.Trim(p.ETag, `"`) != sp.etag {
			return &s3Error{status: http.StatusBadRequest, code: "InvalidPart", message: fmt.Sprintf("part %d with ETag %s was not uploaded", p.PartNumber, p.ETag)}
		}
		if i > 0 && p.PartNumber <= req.Parts[i-1].PartNumber {
			return &s3Error{status: http.StatusBadRequest, code: "InvalidPartOrder", message: "parts must be listed in ascending order"}
		}
		f, ferr := os.Open(filepath.Join(u.dir, id, strconv.Itoa(p.PartNumber)))
		if ferr != nil {
			return &s3Error{status: http.StatusInternalServerError, code: "InternalError", message: ferr.Error()}
		}
		defer f.Close()
		readers = append(readers, f)
		size += sp.size
		raw, _ := hex.DecodeString(sp.etag)
		etags = append(etags, raw...)
	}
	if _, perr := u.backend.PutObject(bucket, key, up.meta, io.MultiReader(readers...), size, nil); perr != nil {
		return &s3Error{status: http.StatusInternalServerError, code: "InternalError", message: "store completed upload: " + perr.Error()}
	}
	sum := md5.Sum(etags)
	return writeXML(w, struct {
		XMLName  xml.Name `xml:"CompleteMultipartUploadResult"`
		Location string
		Bucket   string
		Key      string
		ETag     string
	}{Location: "http://" + r.Host + "/" + bucket + "/" + key, Bucket: bucket, Key: key, ETag: fmt.Sprintf(`"%s-%d"`, hex.EncodeToString(sum[:]), len(req.Parts))})
}

func (u *uploads) abort(w http.ResponseWriter, bucket, key, id string) *s3Error {
	u.mu.Lock()
	_, err := u.lookup(bucket, key, id)
	if err == nil {
		delete(u.open, id)
	}
	u.mu.Unlock()
	if err != nil {
		return err
	}
	os.RemoveAll(filepath.Join(u.dir, id))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func writeXML(w http.ResponseWriter, v any) *s3Error {
	body, err := xml.Marshal(v)
	if err != nil {
		return &s3Error{status: http.StatusInternalServerError, code: "InternalError", message: err.Error()}
	}
	w.Header().Set("Content-Type", "application/xml")
	_, _ = w.Write(append([]byte(xml.Header), body...))
	return nil
}
