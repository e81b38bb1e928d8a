package embedded

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"strconv"
	"strings"

	"github.com/minio/crc64nvme"
)

// The aws-chunked payload encodings S3 clients use for uploads over plain
// HTTP (minio-go's default for every PUT and every multipart part):
//
//	signed:   HEX(size);chunk-signature=SIG\r\n DATA \r\n ... 0;chunk-signature=SIG\r\n [trailers] \r\n
//	unsigned: HEX(size)\r\n DATA \r\n ... 0\r\n [trailers] \r\n
//
// gofakes3 decodes the signed form of a single PUT but stores the framing
// of every multipart part as object content (objects over 16 MiB came back
// larger and different), and knows neither the trailer forms nor the
// signatures. chunkedReader decodes all of them and checks every chunk's
// signature and any trailing checksum before a byte is passed on.
const (
	streamingSigned          = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	streamingSignedTrailer   = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
	streamingUnsignedTrailer = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

	// maxChunk bounds one chunk: clients send 64 KiB (minio-go) to 1 MiB;
	// a larger size is a malformed or hostile stream.
	maxChunk = 16 << 20
	// maxChunkLine bounds a chunk header or trailer line.
	maxChunkLine = 4096
)

// isStreaming says whether a declared payload hash means aws-chunked.
func isStreaming(payloadHash string) bool {
	switch payloadHash {
	case streamingSigned, streamingSignedTrailer, streamingUnsignedTrailer:
		return true
	}
	return false
}

// chunkedReader yields the decoded payload of an aws-chunked body.
type chunkedReader struct {
	br       *bufio.Reader
	signer   *chunkSigner // nil for the unsigned form
	trailers bool         // a trailer block follows the last chunk
	declared int64        // X-Amz-Decoded-Content-Length
	total    int64
	buf      []byte
	pending  []byte
	checks   map[string]hash.Hash // x-amz-checksum-* named in X-Amz-Trailer
	err      error
}

func newChunkedReader(body io.Reader, payloadHash string, signer *chunkSigner, declared int64, trailerNames []string) (*chunkedReader, error) {
	c := &chunkedReader{br: bufio.NewReaderSize(body, 64<<10), declared: declared, checks: map[string]hash.Hash{}}
	switch payloadHash {
	case streamingSigned:
		c.signer = signer
	case streamingSignedTrailer:
		c.signer, c.trailers = signer, true
	case streamingUnsignedTrailer:
		c.trailers = true
	default:
		return nil, fmt.Errorf("payload %q is not aws-chunked", payloadHash)
	}
	for _, name := range trailerNames {
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "" {
			continue
		}
		h, err := checksumHash(name)
		if err != nil {
			return nil, err
		}
		c.checks[name] = h
	}
	return c, nil
}

func checksumHash(name string) (hash.Hash, error) {
	switch name {
	case "x-amz-checksum-crc32":
		return crc32.NewIEEE(), nil
	case "x-amz-checksum-crc32c":
		return crc32.New(crc32.MakeTable(crc32.Castagnoli)), nil
	case "x-amz-checksum-crc64nvme":
		return crc64nvme.New(), nil
	case "x-amz-checksum-sha1":
		return sha1.New(), nil
	case "x-amz-checksum-sha256":
		return sha256.New(), nil
	}
	return nil, fmt.Errorf("trailer %q is not a checksum the embedded S3 knows (crc32, crc32c, crc64nvme, sha1, sha256)", name)
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	for len(c.pending) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		c.err = c.nextChunk()
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

func (c *chunkedReader) line() (string, error) {
	var b []byte
	for {
		frag, err := c.br.ReadSlice('\n')
		b = append(b, frag...)
		if len(b) > maxChunkLine {
			return "", fmt.Errorf("aws-chunked line over %d bytes", maxChunkLine)
		}
		if err == nil {
			return strings.TrimRight(string(b), "\r\n"), nil
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return "", fmt.Errorf("aws-chunked body cut short: %w", err)
		}
	}
}

// nextChunk reads, checks and stages one chunk; io.EOF after the last.
func (c *chunkedReader) nextChunk() error {
	head, err := c.line()
	if err != nil {
		return err
	}
	sizeHex, ext, _ := strings.Cut(head, ";")
	size, err := strconv.ParseInt(sizeHex, 16, 64)
	if err != nil || size < 0 || size > maxChunk {
		return fmt.Errorf("aws-chunked chunk size %q: want hex under %d", sizeHex, maxChunk)
	}
	if c.total+size > c.declared {
		return fmt.Errorf("aws-chunked body holds more than its declared %d bytes", c.declared)
	}
	if cap(c.buf) < int(size) {
		c.buf = make([]byte, size)
	}
	data := c.buf[:size]
	if _, err := io.ReadFull(c.br, data); err != nil {
		return fmt.Errorf("aws-chunked body cut short in a %d-byte chunk: %w", size, io.ErrUnexpectedEOF)
	}
	if c.signer != nil {
		sig, ok := strings.CutPrefix(ext, "chunk-signature=")
		if !ok {
			return fmt.Errorf("aws-chunked chunk without chunk-signature")
		}
		if want := c.signer.next(sha256Hex(data)); sig != want {
			return errChunkSignature
		}
	}
	if size == 0 {
		return c.finish()
	}
	if crlf, err := c.line(); err != nil || crlf != "" {
		return fmt.Errorf("aws-chunked chunk not followed by CRLF")
	}
	for _, h := range c.checks {
		h.Write(data)
	}
	c.total += size
	c.pending = data
	return nil
}

// finish reads the trailer block, if any, and checks the whole payload.
func (c *chunkedReader) finish() error {
	if c.total != c.declared {
		return fmt.Errorf("aws-chunked body holds %d bytes, its X-Amz-Decoded-Content-Length says %d", c.total, c.declared)
	}
	var block bytes.Buffer
	got := map[string]string{}
	trailerSig := ""
	// A payload without trailers ends at its first empty line; an unsigned
	// trailer block after what it holds; a signed one after its signature.
	complete := func() bool { return !c.trailers || (c.signer == nil && len(got) > 0) || trailerSig != "" }
	for {
		l, err := c.line()
		if errors.Is(err, io.ErrUnexpectedEOF) && complete() {
			break // the body may end without its closing CRLF
		}
		if err != nil {
			return err
		}
		if l == "" {
			if complete() {
				break
			}
			continue
		}
		if !c.trailers {
			return fmt.Errorf("aws-chunked body has data after its last chunk")
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			return fmt.Errorf("aws-chunked trailer line %q is not name:value", l)
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "x-amz-trailer-signature" {
			trailerSig = strings.TrimSpace(value)
			continue
		}
		if len(got) >= 16 {
			return fmt.Errorf("aws-chunked body has more than 16 trailers")
		}
		block.WriteString(name + ":" + strings.TrimSpace(value) + "\n")
		got[name] = strings.TrimSpace(value)
	}
	if c.trailers && c.signer != nil {
		if want := c.signer.trailer(sha256Hex(block.Bytes())); trailerSig != want {
			return errChunkSignature
		}
	}
	for name, h := range c.checks {
		v, ok := got[name]
		if !ok {
			return fmt.Errorf("aws-chunked trailer %s was announced but not sent", name)
		}
		if want := base64.StdEncoding.EncodeToString(h.Sum(nil)); v != want {
			return fmt.Errorf("aws-chunked payload fails its %s: sent %s, computed %s", name, v, want)
		}
	}
	return io.EOF
}

// hashCheckReader passes a body through and fails at its end when the body
// does not hash to what the client signed (X-Amz-Content-Sha256 as hex).
type hashCheckReader struct {
	r    io.Reader
	h    hash.Hash
	want string
}

func (h *hashCheckReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	if err == io.EOF {
		if got := hex.EncodeToString(h.h.Sum(nil)); got != h.want {
			return n, fmt.Errorf("body hashes to %s, X-Amz-Content-Sha256 says %s", got, h.want)
		}
	}
	return n, err
}
