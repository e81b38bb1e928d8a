package capture

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
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
		f := &lz4Frame{r: r}
		return io.NopCloser(lz4Ended{lz4.NewReader(f), f}), nil
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

// lz4Ended is an lz4 stream that ends only where its frame does. The
// decoder (pierrec/lz4) takes a stream that stops where a field starts
// for its end: cut after its magic number, where a block ends, or between
// the end mark and the checksum after it, it returns io.EOF with the rest
// of the capture missing. Such a stream ends in io.ErrUnexpectedEOF here,
// so that it is said to be truncated.
type lz4Ended struct {
	zr *lz4.Reader
	f  *lz4Frame
}

func (l lz4Ended) Read(p []byte) (int, error) {
	n, err := l.zr.Read(p)
	if err == io.EOF && !l.f.done {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// lz4Frame follows an lz4 frame's fields as the decoder reads them (it
// reads no further than it needs): done once the frame has ended, its end
// mark and the content checksum its flags ask for read. The frame is
// magic(4) FLG(1) BD(1) [content size(8)] HC(1), blocks of size(4, little
// endian; the high bit: stored) data [block checksum(4)], an end mark of
// size 0, [content checksum(4)].
type lz4Frame struct {
	r    io.Reader
	head int // bytes of the frame header read, up to its length
	flg  byte
	// field collects a block size; skip is what is left of the block
	// (data and checksum) or of the content checksum.
	field  [4]byte
	fn     int
	skip   int64
	ending bool // the end mark read: skip is the content checksum
	done   bool
}

func (f *lz4Frame) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	f.follow(p[:n])
	return n, err
}

func (f *lz4Frame) follow(b []byte) {
	for len(b) > 0 && !f.done {
		switch {
		case f.head < f.headLen():
			if f.head == 4 {
				f.flg = b[0]
			}
			f.head++
			b = b[1:]
		case f.skip > 0:
			k := min(f.skip, int64(len(b)))
			f.skip -= k
			b = b[k:]
			f.done = f.ending && f.skip == 0
		default:
			k := copy(f.field[f.fn:], b)
			f.fn += k
			b = b[k:]
			if f.fn < 4 {
				continue
			}
			f.fn = 0
			size := int64(binary.LittleEndian.Uint32(f.field[:]) &^ (1 << 31))
			switch {
			case binary.LittleEndian.Uint32(f.field[:]) != 0:
				f.skip = size
				if f.flg&0x10 != 0 { // block checksums
					f.skip += 4
				}
			case f.flg&0x04 != 0: // the end mark, then the content checksum
				f.ending, f.skip = true, 4
			default:
				f.done = true
			}
		}
	}
}

// headLen is the length of the frame header: 15 with a content size, 7
// without; 7 while its flags are still unread.
func (f *lz4Frame) headLen() int {
	if f.head > 4 && f.flg&0x08 != 0 {
		return 15
	}
	return 7
}
