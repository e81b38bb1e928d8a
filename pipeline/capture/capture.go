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
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

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

// readBufferSize is what one read from the file asks for: large enough
// that reading costs a few syscalls per capture, small enough to stay in the
// CPU's cache while the frames in it are decoded (256 KiB and 1 MiB measured
// up to a quarter slower) and that opening hundreds of small captures in a
// row does not churn memory. A block larger than this grows the buffer.
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

const formats = "want a pcap file (libpcap, micro- or nanosecond timestamps, either byte order) or a pcapng file, optionally compressed with gzip, zstd or lz4"

// OpenFile opens a pcap or pcapng file, telling them apart by their magic
// number; captures compressed with gzip, zstd or lz4 (as tcpdump's -z
// gzip, or a campaign's archive, leaves them) are decompressed on the fly.
func OpenFile(path string) (Source, error) {
	return OpenFileSide(path, SideLAN)
}

// OpenFileSide is OpenFile for a capture of the gateway's side: a capture
// on every interface of a gateway (tcpdump -i any) is read as that side's
// Ethernet frames, each once (SideWAN: its WAN side's); every other capture
// is read as it is.
func OpenFileSide(path string, side Side) (Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open capture: %w", err)
	}
	src, err := NewSideReader(f, path, side)
	if err != nil {
		f.Close()
		return nil, err
	}
	return src, nil
}

// FirstFrameTime is when the capture at path began, read as side: its
// first frame's timestamp; ok is false for a capture that cannot be read
// or holds no frame.
func FirstFrameTime(path string, side Side) (t time.Time, ok bool) {
	src, err := OpenFileSide(path, side)
	if err != nil {
		return time.Time{}, false
	}
	defer src.Close()
	fr, err := src.Next()
	if err != nil {
		return time.Time{}, false
	}
	return fr.CI.Timestamp, true
}

// FirstPacketTime is FirstFrameTime of the LAN side in ns since the epoch:
// a campaign.CaptureTime, which orders captures in time. ok is false too
// for a time ns cannot hold (features.TimestampNs), which would order the
// capture in another year.
func FirstPacketTime(path string) (ns int64, ok bool) {
	t, ok := FirstFrameTime(path, SideLAN)
	if !ok {
		return 0, false
	}
	ns, err := features.TimestampNs(t)
	return ns, err == nil
}

// NewReader reads a capture from r; name appears in errors. Close closes r
// when it is an io.Closer. A Linux cooked capture (`tcpdump -i any` on a
// gateway) is read as its LAN side's Ethernet frames, each once (see
// cookedView); CookedStatsOf says what was left out.
func NewReader(r io.Reader, name string) (Source, error) {
	return NewSideReader(r, name, SideLAN)
}

// NewSideReader is NewReader for a capture of the gateway's side (one of
// SideLAN and SideWAN): see OpenFileSide.
func NewSideReader(r io.Reader, name string, side Side) (Source, error) {
	if side != SideLAN && side != SideWAN {
		return nil, fmt.Errorf("capture %s: read as side %v: want the LAN or the WAN side", name, side)
	}
	in := input{r: r, name: name, buf: make([]byte, readBufferSize)}
	if c, ok := r.(io.Closer); ok {
		in.closers = append(in.closers, c)
	}
	magic, err := in.peekMagic()
	if err != nil {
		return nil, err
	}
	if c, ok := compressionOf(magic); ok {
		if c.open == nil {
			return nil, fmt.Errorf("%w: %s is compressed with %s, which is not read (its decoder takes as much memory as the file's header asks); decompress it first (%s), or compress it with gzip, zstd or lz4", ErrUnknownFormat, name, c.name, c.fix)
		}
		// The sniffed bytes are already in the buffer, which the
		// decompressed stream is about to reuse: the decompressor gets
		// its own copy.
		head := bytes.Clone(in.buf[in.start:in.end])
		zr, err := c.open(io.MultiReader(bytes.NewReader(head), r))
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			// gzip reads its header (10 bytes and the file's name) here.
			return nil, in.cutBeforeHeader()
		case err != nil:
			return nil, fmt.Errorf("capture %s: open %s stream: %w", name, c.name, err)
		}
		in.closers = append([]io.Closer{zr}, in.closers...)
		in.r, in.start, in.end, in.err = damagedStream{r: zr, name: name, c: c}, 0, 0, nil
		if magic, err = in.peekMagic(); err != nil {
			return nil, err
		}
	}
	switch magic {
	case magicPcapMicroLE, magicPcapMicroBE, magicPcapNanoLE, magicPcapNanoBE:
		r, err := newPcapReader(in)
		if err != nil || !isCooked(r.link) {
			return r, err
		}
		return newCookedView(r, side), nil
	case magicPcapng:
		// Any of a pcapng file's interfaces may be cooked.
		r, err := newNgReader(in)
		if err != nil {
			return nil, err
		}
		return newCookedView(r, side), nil
	case magicPcapModLE, magicPcapModBE:
		return nil, fmt.Errorf("%w: %s is in Kuznetsov's modified pcap format; convert it with `editcap -F pcap`", ErrUnknownFormat, name)
	}
	return nil, fmt.Errorf("%w: %s starts with % x; %s", ErrUnknownFormat, name, magic[:], formats)
}

// input is the byte stream under a reader. It hands out slices of its own
// buffer rather than copying into the caller's, so a packet's bytes are
// copied once, from the file into the buffer, and parsed where they lie.
// It counts the stream offset for errors.
type input struct {
	r          io.Reader
	buf        []byte
	start, end int   // buf[start:end] has been read and not yet taken
	err        error // r's last error, returned once the buffer runs dry
	name       string
	off        int64 // stream offset of buf[start]
	closers    []io.Closer
}

// maxEmptyReads bounds the reads in a row that return nothing and no
// error, so a misbehaving reader fails instead of spinning.
const maxEmptyReads = 100

// fill makes at least n bytes available unless the stream ends or fails
// first; it then returns r's error (io.EOF at the end).
func (in *input) fill(n int) error {
	switch {
	case n > len(in.buf):
		nb := make([]byte, n)
		in.end = copy(nb, in.buf[in.start:in.end])
		in.start, in.buf = 0, nb
	case in.start == in.end:
		// Starting over at the front makes the next read a full one.
		in.start, in.end = 0, 0
	case in.start+n > len(in.buf):
		in.end = copy(in.buf, in.buf[in.start:in.end])
		in.start = 0
	}
	for empty := 0; in.end-in.start < n && in.err == nil; {
		m, err := in.r.Read(in.buf[in.end:])
		in.end += m
		switch {
		case err != nil:
			in.err = err
		case m == 0:
			if empty++; empty == maxEmptyReads {
				in.err = io.ErrNoProgress
			}
		}
	}
	if in.end-in.start >= n {
		return nil
	}
	return in.err
}

// take consumes the next n bytes and returns them; they stay valid until
// the next call. Like io.ReadFull it returns io.EOF only when the stream
// had nothing left, io.ErrUnexpectedEOF when it ended part-way; then the
// offset is where it ended.
func (in *input) take(n int) ([]byte, error) {
	if in.end-in.start < n {
		if err := in.fill(n); err != nil {
			got := in.end - in.start
			in.off += int64(got)
			in.start = in.end
			if err == io.EOF && got > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	b := in.buf[in.start : in.start+n : in.start+n]
	in.start += n
	in.off += int64(n)
	return b, nil
}

// skip consumes n bytes without keeping them, so a block of any length can
// be passed over with the buffer as it is.
func (in *input) skip(n int64) error {
	for n > 0 {
		if in.start == in.end {
			if err := in.fill(1); err != nil {
				if err == io.EOF {
					return io.ErrUnexpectedEOF
				}
				return err
			}
		}
		k := int(min(n, int64(in.end-in.start)))
		in.start += k
		in.off += int64(k)
		n -= int64(k)
	}
	return nil
}

// peekMagic returns the first four bytes without consuming them.
func (in *input) peekMagic() ([4]byte, error) {
	var m [4]byte
	err := in.fill(4)
	b := in.buf[in.start:in.end]
	switch {
	case len(b) >= 4:
		copy(m[:], b)
		return m, nil
	case len(b) == 0 && err == io.EOF:
		return m, fmt.Errorf("%w: %s is empty; %s", ErrUnknownFormat, in.name, formats)
	case err == io.EOF:
		copy(m[:], b)
		if c, ok := compressionOf(m); ok && c.open != nil {
			// The whole magic number of a compression read (gzip's
			// two bytes): a compressed stream cut inside its header.
			return m, in.cutBeforeHeader()
		}
		return m, fmt.Errorf("%w: %s is only %d bytes long; %s", ErrUnknownFormat, in.name, len(b), formats)
	case errors.Is(err, io.ErrUnexpectedEOF):
		// A compressed stream cut short before its first whole block.
		return m, in.cutBeforeHeader()
	}
	return m, fmt.Errorf("capture %s: read file header: %w", in.name, err)
}

// cutBeforeHeader is the error for a compressed stream that ends before
// the capture's file header.
func (in *input) cutBeforeHeader() error {
	return fmt.Errorf("%w: %s ends before its file header: the compressed stream is cut short; nothing of it could be read (copy the file again if it was still being written)", ErrTruncated, in.name)
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
