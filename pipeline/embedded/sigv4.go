package embedded

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"
)

// AWS Signature Version 4, as the embedded S3 checks it. Only what S3
// clients send is handled: the Authorization header (no presigned URLs, no
// signature version 2), the service "s3", any region the client names.

const (
	sigV4Algorithm  = "AWS4-HMAC-SHA256"
	amzDateFormat   = "20060102T150405Z"
	emptySHA256Hex  = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	maxRequestSkew  = 15 * time.Minute
	unsignedPayload = "UNSIGNED-PAYLOAD"
)

// sigV4 is a parsed Authorization header.
type sigV4 struct {
	accessKey     string
	date          string // yyyymmdd, from the credential scope
	region        string
	service       string
	signedHeaders []string
	signature     string
	amzDate       time.Time
}

func (s sigV4) scope() string {
	return s.date + "/" + s.region + "/" + s.service + "/aws4_request"
}

// s3Error is a refusal in S3's own vocabulary, so clients map it as they
// map a real server's (minio-go turns SignatureDoesNotMatch and
// AccessDenied into credential errors).
type s3Error struct {
	status  int
	code    string
	message string
}

func (e *s3Error) Error() string { return e.code + ": " + e.message }

func denied(code, format string, args ...any) *s3Error {
	return &s3Error{status: http.StatusForbidden, code: code, message: fmt.Sprintf(format, args...)}
}

// parseSigV4 reads the Authorization and X-Amz-Date headers.
func parseSigV4(r *http.Request, now time.Time) (sigV4, *s3Error) {
	var s sigV4
	auth := r.Header.Get("Authorization")
	if auth == "" {
		if r.URL.Query().Get("X-Amz-Signature") != "" {
			return s, denied("AccessDenied", "presigned URLs are not served by the embedded S3; sign requests with the Authorization header")
		}
		return s, denied("AccessDenied", "unsigned request refused: the embedded S3 serves only clients that sign with its per-run keys (see HOMEMOLE_S3_ACCESS_KEY in the state folder's credentials file)")
	}
	alg, rest, ok := strings.Cut(auth, " ")
	if !ok || alg != sigV4Algorithm {
		return s, denied("AccessDenied", "authorization %q refused: only AWS Signature Version 4 (AWS4-HMAC-SHA256) is accepted", alg)
	}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			f := strings.Split(v, "/")
			if len(f) != 5 || f[4] != "aws4_request" {
				return s, denied("AuthorizationHeaderMalformed", "credential %q is not KEY/DATE/REGION/SERVICE/aws4_request", v)
			}
			s.accessKey, s.date, s.region, s.service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			s.signedHeaders = strings.Split(v, ";")
		case "Signature":
			s.signature = v
		}
	}
	if s.accessKey == "" || s.signature == "" || len(s.signedHeaders) == 0 {
		return s, denied("AuthorizationHeaderMalformed", "the Authorization header lacks Credential, SignedHeaders or Signature")
	}
	if s.service != "s3" {
		return s, denied("AuthorizationHeaderMalformed", "credential scope names service %q, want s3", s.service)
	}
	if !sort.StringsAreSorted(s.signedHeaders) || !slices.Contains(s.signedHeaders, "host") {
		return s, denied("AuthorizationHeaderMalformed", "SignedHeaders must be sorted and include host")
	}
	t, err := time.Parse(amzDateFormat, r.Header.Get("X-Amz-Date"))
	if err != nil {
		return s, denied("AccessDenied", "X-Amz-Date %q is missing or malformed", r.Header.Get("X-Amz-Date"))
	}
	if t.Format("20060102") != s.date {
		return s, denied("SignatureDoesNotMatch", "X-Amz-Date %s is not on the credential scope's date %s", t.Format(amzDateFormat), s.date)
	}
	if d := now.Sub(t); d > maxRequestSkew || d < -maxRequestSkew {
		return s, denied("RequestTimeTooSkewed", "request signed at %s, %s from the server's clock", t.Format(time.RFC3339), d.Round(time.Second))
	}
	s.amzDate = t
	return s, nil
}

// signingKey derives the request's key from the secret.
func signingKey(secret string, s sigV4) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), s.date)
	k = hmacSHA256(k, s.region)
	k = hmacSHA256(k, s.service)
	return hmacSHA256(k, "aws4_request")
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// canonicalRequest is the request as SigV4 hashes it: the payload hash is
// what the client declared in X-Amz-Content-Sha256.
func canonicalRequest(r *http.Request, s sigV4, payloadHash string) string {
	var hb strings.Builder
	for _, name := range s.signedHeaders {
		var v string
		switch name {
		case "host":
			v = r.Host
		case "content-length":
			// net/http moves a request's length out of its headers.
			v = r.Header.Get("Content-Length")
			if v == "" && r.ContentLength >= 0 {
				v = fmt.Sprint(r.ContentLength)
			}
		default:
			vals := r.Header.Values(name)
			for i := range vals {
				vals[i] = trimAll(vals[i])
			}
			v = strings.Join(vals, ",")
		}
		hb.WriteString(name + ":" + v + "\n")
	}
	return strings.Join([]string{
		r.Method,
		uriEncode(r.URL.Path, false),
		strings.ReplaceAll(r.URL.Query().Encode(), "+", "%20"),
		hb.String(),
		strings.Join(s.signedHeaders, ";"),
		payloadHash,
	}, "\n")
}

// trimAll collapses runs of spaces as SigV4's canonical headers do.
func trimAll(v string) string { return strings.Join(strings.Fields(v), " ") }

// uriEncode percent-encodes all but SigV4's unreserved characters; the
// path keeps its slashes.
func uriEncode(s string, encodeSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			b.WriteByte(c)
		case c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	return b.String()
}

// verifySigV4 checks the request's seed signature against the secret.
func verifySigV4(r *http.Request, s sigV4, secret string) *s3Error {
	payloadHash := r.Header.Get("X-Amz-Content-Sha256")
	if payloadHash == "" {
		return denied("AccessDenied", "X-Amz-Content-Sha256 is missing")
	}
	if !slices.Contains(s.signedHeaders, "x-amz-content-sha256") || !slices.Contains(s.signedHeaders, "x-amz-date") {
		return denied("AccessDenied", "SignedHeaders must include x-amz-content-sha256 and x-amz-date")
	}
	sts := strings.Join([]string{sigV4Algorithm, s.amzDate.Format(amzDateFormat), s.scope(), sha256Hex([]byte(canonicalRequest(r, s, payloadHash)))}, "\n")
	want := hex.EncodeToString(hmacSHA256(signingKey(secret, s), sts))
	if !hmac.Equal([]byte(want), []byte(s.signature)) {
		return denied("SignatureDoesNotMatch", "the request signature does not match the embedded S3's keys for this run")
	}
	return nil
}

// chunkSigner computes the signature chain of a streaming (aws-chunked)
// payload: each chunk signs its data and the previous signature.
type chunkSigner struct {
	key   []byte
	date  string
	scope string
	prev  string
}

func newChunkSigner(s sigV4, secret string) *chunkSigner {
	return &chunkSigner{key: signingKey(secret, s), date: s.amzDate.Format(amzDateFormat), scope: s.scope(), prev: s.signature}
}

// next returns the signature a chunk with this data hash must carry, and
// advances the chain.
func (c *chunkSigner) next(dataSHA256Hex string) string {
	sts := strings.Join([]string{"AWS4-HMAC-SHA256-PAYLOAD", c.date, c.scope, c.prev, emptySHA256Hex, dataSHA256Hex}, "\n")
	c.prev = hex.EncodeToString(hmacSHA256(c.key, sts))
	return c.prev
}

// trailer returns the signature of a trailer block (its lines, each ending
// in "\n") and advances the chain.
func (c *chunkSigner) trailer(trailerSHA256Hex string) string {
	sts := strings.Join([]string{"AWS4-HMAC-SHA256-TRAILER", c.date, c.scope, c.prev, trailerSHA256Hex}, "\n")
	c.prev = hex.EncodeToString(hmacSHA256(c.key, sts))
	return c.prev
}

var errChunkSignature = errors.New("chunk signature does not match")
