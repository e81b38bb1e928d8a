package capture

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// compression is a compressed stream's format, told by its magic number.
type compression struct {
	name  string
	magic []byte
	// open decompresses a stream as it is read; nil for a format that is
	// refused. fix is the command that decompresses a file by hand: what a
	// refused file, or a damaged one, is told to do.
	open func(io.Reader) (io.ReadCloser, error)
	fix  string
}

// zstdMaxWindow bounds the window a zstd stream may ask for: zstd --long
// asks 128 MiB, every level without it 8 MiB or less. A stream that asks
// more is refused rather than costing what a hostile header says.
const zstdMaxWindow = 128 << 20

var compressions = []compression{
	{name: "gzip", magic: []byte{0x1f, 0x8b}, fix: "gzip -dc FILE > out.pcap", open: func(r io.Reader) (io.ReadCloser, error) { return gzip.NewReader(r) }},
	{name: "zstd", magic: []byte{0x28, 0xb5, 0x2f, 0xfd}, fix: "zstd -dc FILE > out.pcap", open: func(r io.Reader) (io.ReadCloser, error) {
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	}},
	{name: "lz4", magic: []byte{0x04, 0x22, 0x4d, 0x18}, fix: "lz4 -dc FILE > out.pcap", open: func(r io.Reader) (io.ReadCloser, error) {
		return io.NopCloser(lz4.NewReader(r)), nil
	}},
	// xz's and bzip2's decoders size their memory from the stream's own
	// header, up to gigabytes: a campaign reading captures it did not
	// write refuses them and says how to decompress.
	{name: "xz", magic: []byte{0xfd, '7', 'z', 'X'}, fix: "xz -dk FILE"},
	{name: "bzip2", magic: []byte{'B', 'Z', 'h'}, fix: "bunzip2 -k FILE"},
}

// compressionOf is the compression a stream starting with magic is in.
func compressionOf(magic [4]byte) (compression, bool) {
	for _, c := range compressions {
		if bytes.HasPrefix(magic[:], c.magic) {
			return c, true
		}
	}
	return compression{}, false
}

// damagedStream reads a decompressed stream, and says that the file is
// damaged where its decompressor fails (a checksum, a block header): an
// ErrCorrupt naming the file, rather than the decompressor's own words
// alone. The end of the stream, where it is cut short too, stays the
// reader's to tell.
type damagedStream struct {
	r    io.Reader
	name string
	c    compression
}

func (d damagedStream) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		err = fmt.Errorf("%w: %s: its %s stream is damaged (%v); the packets before the damage were read, decompress it by hand (%s) to see how much more can be saved", ErrCorrupt, d.name, d.c.name, err, d.c.fix)
	}
	return n, err
}
