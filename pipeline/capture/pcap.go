package capture

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/homemole/homemole/pipeline/features"
)

// pcapReader reads the libpcap format: a 24-byte file header, then per
// packet a 16-byte record header (seconds, sub-second units, captured
// length, wire length) and the captured bytes.
type pcapReader struct {
	in        input
	amsdu     amsduSplit
	nflog     nflogView
	order     binary.ByteOrder
	fracNanos int64 // nanoseconds per sub-second unit: 1000 or 1
	link      features.LinkType
	fcs       int    // bytes of frame check sequence after each frame
	n         uint64 // packets delivered
	err       error  // sticky: once the stream failed, it stays failed
}

func newPcapReader(in input) (*pcapReader, error) {
	h, err := in.take(24)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: the 24-byte pcap file header is cut short after %d bytes", ErrTruncated, in.name, in.off)
	}
	r := &pcapReader{in: in, fracNanos: 1000, order: binary.LittleEndian}
	switch [4]byte(h[:4]) {
	case magicPcapMicroBE:
		r.order = binary.BigEndian
	case magicPcapNanoLE:
		r.fracNanos = 1
	case magicPcapNanoBE:
		r.order, r.fracNanos = binary.BigEndian, 1
	}
	// libpcap itself accepts any 2.x; 2.4 is all that has been written for decades.
	if major := r.order.Uint16(h[4:6]); major != 2 {
		return nil, fmt.Errorf("%w: %s: pcap version %d.%d; only version 2 exists", ErrCorrupt, in.name, major, r.order.Uint16(h[6:8]))
	}
	// The upper bits of the link-type field carry FCS information, not the
	// type: the P bit (26) says that the FCS length is given, in 16-bit
	// words, by the top four bits.
	lt := r.order.Uint32(h[20:24])
	r.link = features.LinkType(lt & 0xffff)
	if lt&(1<<26) != 0 {
		r.fcs = int(lt>>28) * 2
	}
	return r, nil
}

func (r *pcapReader) Next() (Frame, error) {
	if r.err != nil {
		return Frame{}, r.err
	}
	if r.amsdu.pending() {
		r.n++
		return r.amsdu.pop(r.n - 1), nil
	}
	for {
		f, err := r.next()
		if err != nil {
			r.err = err
			return Frame{}, err
		}
		// A bridged frame an NFLOG log holds twice is given once, and
		// numbered as a capture without the second record would be.
		if _, _, repeat := r.nflog.unwrap(&f); !repeat {
			r.n++
			return r.amsdu.split(f), nil
		}
	}
}

func (r *pcapReader) next() (Frame, error) {
	at := r.in.off
	h, err := r.in.take(16)
	if err != nil {
		if err == io.EOF {
			return Frame{}, io.EOF
		}
		return Frame{}, r.in.truncated(r.n, err)
	}
	// Read out before the next take, which may move the buffer under h.
	sec := r.order.Uint32(h[0:4])
	frac := r.order.Uint32(h[4:8])
	capLen := r.order.Uint32(h[8:12])
	wireLen := r.order.Uint32(h[12:16])
	if capLen > maxFrameLen {
		return Frame{}, r.in.corrupt(r.n, at, "the record claims %d captured bytes, more than the %d a packet can have", capLen, maxFrameLen)
	}
	data, err := r.in.take(int(capLen))
	if err != nil {
		return Frame{}, r.in.truncated(r.n, err)
	}
	f := Frame{Data: data, LinkType: r.link, Offset: r.n}
	f.CI.Timestamp = time.Unix(int64(sec), int64(frac)*r.fracNanos).UTC()
	f.CI.CaptureLength = int(capLen)
	// Some writers leave the wire length zero or below the captured length;
	// the wire carried at least what was captured.
	f.CI.Length = int(max(wireLen, capLen))
	withoutFCS(&f, r.fcs)
	return f, nil
}

func (r *pcapReader) Close() error { return r.in.close() }

// withoutFCS takes the frame check sequence a capture says it kept off the
// end of a frame: what the sender sent ends before it, and the features
// (a frame's length) are of what was sent, as on every other capture.
func withoutFCS(f *Frame, fcs int) {
	if fcs == 0 || f.CI.Length < fcs {
		return
	}
	f.CI.Length -= fcs
	if f.CI.CaptureLength > f.CI.Length {
		f.CI.CaptureLength = f.CI.Length
		f.Data = f.Data[:f.CI.Length]
	}
}
