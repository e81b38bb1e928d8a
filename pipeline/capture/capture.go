// Package capture reads packets from capture files (pcap and pcapng) and
// hands them to the feature decoder.
//
// The readers are this package's own rather than gopacket's pcapgo: pcapgo
// v1.1.19 allocates whatever packet length a file claims (a corrupt length
// field costs gigabytes), panics on some malformed pcapng options and
// timestamp resolutions, truncates link types above 255 to a byte, and
// reports neither byte offsets nor packet indexes in its errors. pcapgo's
// writers are still what the tests use to produce files.
package capture

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/google/gopacket"

	"github.com/homemole/homemole/pipeline/features"
)

// Frame is one captured packet.
type Frame struct {
	// Data is the captured bytes. It belongs to the Source and is valid only
	// until the next call to Next.
	Data []byte
	// CI carries the timestamp, the captured and wire lengths and, for
	// pcapng, the interface index.
	CI gopacket.CaptureInfo
	// LinkType is the link type of the frame's interface: a pcapng file may
	// mix interfaces of different link types.
	LinkType features.LinkType
	// Offset is the packet's index in the source, from 0.
	Offset uint64
}

// Source yields frames until io.EOF. A Source is not safe for concurrent use.
type Source interface {
	Next() (Frame, error)
	Close() error
}

// Errors wrapped by what the readers return, for callers that react by kind.
var (
	// ErrUnknownFormat: the input is empty or neither pcap nor pcapng.
	ErrUnknownFormat = errors.New("not a pcap or pcapng capture")
	// ErrTruncated: the input ends inside a packet or block; every packet
	// before that point was delivered.
	ErrTruncated = errors.New("capture truncated")
	// ErrCorrupt: a record or block header is impossible; every packet before
	// it was delivered.
	ErrCorrupt = errors.New("capture corrupt")
)

// maxFrameLen bounds the captured length of one packet (libpcap's maximum
// snap length) so that a corrupt length field is an error, not an allocation
// of gigabytes.
const maxFrameLen = 256 << 10

// readBufferSize keeps reads to a few syscalls per capture while opening
// hundreds of small captures in a row does not churn memory.
const readBufferSize = 64 << 10

// File signatures, as the first four bytes appear in the file.
var (
	magicPcapMicroLE = [4]byte{0xd4, 0xc3, 0xb2, 0xa1}
	magicPcapMicroBE = [4]byte{0xa1, 0xb2, 0xc3, 0xd4}
	magicPcapNanoLE  = [4]byte{0x4d, 0x3c, 0xb2, 0xa1}
	magicPcapNanoBE  = [4]byte{0xa1, 0xb2, 0x3c, 0x4d}
	magicPcapModLE   = [4]byte{0x34, 0xcd, 0xb2, 0xa1}
	magicPcapModBE   = [4]byte{0xa1, 0xb2, 0xcd, 0x34}
	magicPcapng      = [4]byte{0x0a, 0x0d, 0x0d, 0x0a}
)

const formats = "want a pcap file (libpcap, micro- or nanosecond timestamps, either byte order) or a pcapng file, optionally gzip-compressed"

// OpenFile opens a pcap or pcapng file, telling them apart by their magic
// number; gzip-compressed captures are decompressed on the fly.
func OpenFile(path string) (Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open capture: %w", err)
	}
	src, err := NewReader(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return src, nil
}

// NewReader reads a capture from r; name appears in errors. Close closes r
// when it is an io.Closer.
func NewReader(r io.Reader, name string) (Source, error) {
	closers := []io.Closer{}
	if c, ok := r.(io.Closer); ok {
		closers = append(closers, c)
	}
	br := bufio.NewReaderSize(r, readBufferSize)
	magic, err := peekMagic(br, name)
	if err != nil {
		return nil, err
	}
	if magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("capture %s: open gzip stream: %w", name, err)
		}
		closers = append([]io.Closer{zr}, closers...)
		br = bufio.NewReaderSize(zr, readBufferSize)
		if magic, err = peekMagic(br, name); err != nil {
			return nil, err
		}
	}
	in := input{r: br, name: name, closers: closers}
	switch magic {
	case magicPcapMicroLE, magicPcapMicroBE, magicPcapNanoLE, magicPcapNanoBE:
		return newPcapReader(in)
	case magicPcapng:
		return newNgReader(in)
	case magicPcapModLE, magicPcapModBE:
		return nil, fmt.Errorf("%w: %s is in Kuznetsov's modified pcap format; convert it with `editcap -F pcap`", ErrUnknownFormat, name)
	}
	return nil, fmt.Errorf("%w: %s starts with % x; %s", ErrUnknownFormat, name, magic[:], formats)
}

func peekMagic(br *bufio.Reader, name string) ([4]byte, error) {
	var m [4]byte
	b, err := br.Peek(4)
	switch {
	case len(b) == 0 && (err == nil || err == io.EOF):
		return m, fmt.Errorf("%w: %s is empty; %s", ErrUnknownFormat, name, formats)
	case len(b) < 4 && err == io.EOF:
		return m, fmt.Errorf("%w: %s is only %d bytes long; %s", ErrUnknownFormat, name, len(b), formats)
	case err != nil:
		return m, fmt.Errorf("capture %s: read file header: %w", name, err)
	}
	copy(m[:], b)
	return m, nil
}

// input is the byte stream under a reader, counting the offset for errors.
type input struct {
	r       *bufio.Reader
	name    string
	off     int64
	closers []io.Closer
}

// full reads exactly len(b) bytes. It returns io.EOF only when nothing at
// all was left, io.ErrUnexpectedEOF when the input ended part-way.
func (in *input) full(b []byte) error {
	n, err := io.ReadFull(in.r, b)
	in.off += int64(n)
	return err
}

func (in *input) discard(n int64) error {
	for n > 0 {
		step := int(min(n, 1<<30))
		d, err := in.r.Discard(step)
		in.off += int64(d)
		n -= int64(d)
		if err != nil {
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

func (in *input) close() error {
	var errs []error
	for _, c := range in.closers {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	in.closers = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close capture %s: %w", in.name, err)
	}
	return nil
}

// truncated builds the error for input that ends after n complete packets.
func (in *input) truncated(n uint64, err error) error {
	if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("capture %s: read packet %d at byte offset %d: %w", in.name, n, in.off, err)
	}
	return fmt.Errorf("%w: %s ends at byte offset %d in the middle of a record: the capture is truncated after packet %d; the packets before it were read, the rest is missing (copy the file again if it was still being written)",
		ErrTruncated, in.name, in.off, n)
}

// corrupt builds the error for an impossible header of packet index n
// starting at byte offset at.
func (in *input) corrupt(n uint64, at int64, format string, args ...any) error {
	return fmt.Errorf("%w: %s: packet %d at byte offset %d: %s; the %d packets before it were read, nothing after it can be trusted",
		ErrCorrupt, in.name, n, at, fmt.Sprintf(format, args...), n)
}

// grow returns buf resized to n bytes, reusing its storage when it can.
func grow(buf []byte, n int) []byte {
	if cap(buf) < n {
		return make([]byte, n, max(n, 2048))
	}
	return buf[:n]
}
