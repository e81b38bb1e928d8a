package embedded

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"testing"
	"time"
)

// unsignedTrailerBody frames data the way minio-go frames an unsigned
// upload with a trailing CRC32C.
func unsignedTrailerBody(data []byte, chunk int, crc string) []byte {
	var b bytes.Buffer
	for len(data) > 0 {
		n := min(chunk, len(data))
		fmt.Fprintf(&b, "%x\r\n", n)
		b.Write(data[:n])
		b.WriteString("\r\n")
		data = data[n:]
	}
	b.WriteString("0\r\n")
	b.WriteString("x-amz-checksum-crc32c:" + crc + "\n\r\n\r\n")
	return b.Bytes()
}

func crc32c(data []byte) string {
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	h.Write(data)
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func TestChunkedTrailerChecksum(t *testing.T) {
	data := []byte(strings.Repeat("heartbeat ", 1000))
	decode := func(body []byte, declared int) ([]byte, error) {
		r, err := newChunkedReader(bytes.NewReader(body), streamingUnsignedTrailer, nil, int64(declared), []string{"x-amz-checksum-crc32c"})
		if err != nil {
			return nil, err
		}
		return io.ReadAll(r)
	}
	got, err := decode(unsignedTrailerBody(data, 4096, crc32c(data)), len(data))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("valid body: %d bytes, %v", len(got), err)
	}
	bad := unsignedTrailerBody(data, 4096, crc32c(data))
	bad[10] ^= 1 // inside the first chunk's data
	if _, err := decode(bad, len(data)); err == nil || !strings.Contains(err.Error(), "crc32c") {
		t.Errorf("damaged data: %v, want a checksum error", err)
	}
	if _, err := decode(unsignedTrailerBody(data, 4096, crc32c(data)), len(data)+1); err == nil {
		t.Error("a body shorter than its declared length was accepted")
	}
	if _, err := decode(unsignedTrailerBody(data, 4096, crc32c(data))[:5000], len(data)); err == nil {
		t.Error("a cut body was accepted")
	}
}

// FuzzChunked: any body, in any of the three framings, decodes or fails
// with an error; it never panics, and never yields more than it declared.
func FuzzChunked(f *testing.F) {
	data := []byte("window of packets")
	f.Add(unsignedTrailerBody(data, 5, crc32c(data)), uint8(2), int64(len(data)))
	f.Add([]byte("11;chunk-signature=00\r\nwindow of packets\r\n0;chunk-signature=00\r\n\r\n"), uint8(0), int64(17))
	f.Add([]byte("ffffffffff\r\n"), uint8(2), int64(10))
	signer := &chunkSigner{key: []byte("k"), date: time.Unix(0, 0).UTC().Format(amzDateFormat), scope: "19700101/us-east-1/s3/aws4_request", prev: "seed"}
	modes := []string{streamingSigned, streamingSignedTrailer, streamingUnsignedTrailer}
	f.Fuzz(func(t *testing.T, body []byte, mode uint8, declared int64) {
		if declared < 0 || declared > 1<<20 {
			return
		}
		s := *signer
		r, err := newChunkedReader(bytes.NewReader(body), modes[int(mode)%len(modes)], &s, declared, []string{"x-amz-checksum-crc32c"})
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(r)
		if int64(len(out)) > declared {
			t.Fatalf("decoded %d bytes of a body declared as %d", len(out), declared)
		}
	})
}
