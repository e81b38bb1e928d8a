package capture

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/features"
)

// pcapng block types this reader acts on; every other block is skipped.
const (
	ngSectionHeader  = 0x0a0d0d0a
	ngInterfaceDesc  = 1
	ngObsoletePacket = 2
	ngSimplePacket   = 3
	ngEnhancedPacket = 6
	ngByteOrderMagic = 0x1a2b3c4d
)

// Interface description options read here.
const (
	ngOptEnd      = 0
	ngOptName     = 2
	ngOptTSResol  = 9
	ngOptFCSLen   = 13
	ngOptTSOffset = 14
)

// maxNgMetaBlock bounds the section header and interface description blocks
// this reader loads into memory (they hold only options). Blocks it skips are
// never loaded and need no bound.
const maxNgMetaBlock = 1 << 20

// ngInterface is what a packet needs from its interface description.
type ngInterface struct {
	link     features.LinkType
	snapLen  uint32
	units    uint64 // timestamp units per second
	offsetS  int64  // if_tsoffset, seconds added to every timestamp
	fcs      int    // if_fcslen: bytes of frame check sequence after each frame
	resolErr string // set when if_tsresol names a resolution this reader cannot convert
	name     string // if_name, as the capturing host named it ("eth0", "br-lan")
	loopback bool   // named as a loopback is (loopbackName)
}

// maxNgIfName bounds the if_name kept: an interface's name is short, and a
// hostile file's is not kept whole.
const maxNgIfName = 64

// ngReader reads pcapng: a sequence of sections, each a section header block
// followed by interface descriptions and packet blocks. Every packet carries
// the link type of its own interface, so files mixing link types (an
// Ethernet tap and a raw-IP tunnel interface, say) are read whole.
type ngReader struct {
	in     input
	amsdu  amsduSplit
	nflog  nflogView
	order  binary.ByteOrder
	ifaces []ngInterface
	// section counts the section headers read: interface numbers restart
	// with each section, so that an interface is named by both.
	section uint32
	head    [12]byte
	body    []byte // the body of the block just read, in the input's buffer
	n       uint64 // packets delivered
	err     error  // sticky
}

func newNgReader(in input) (*ngReader, error) {
	r := &ngReader{in: in, order: binary.LittleEndian}
	// The first block is the section header: it sets the byte order.
	if err := r.block(); err != nil {
		if err == io.EOF {
			err = fmt.Errorf("%w: %s: the pcapng section header block is cut short", ErrTruncated, in.name)
		}
		return nil, err
	}
	return r, nil
}

func (r *ngReader) Next() (Frame, error) {
	if r.err != nil {
		return Frame{}, r.err
	}
	if r.amsdu.pending() {
		r.n++
		return r.amsdu.pop(r.n - 1), nil
	}
	for {
		f, ok, err := r.packet()
		if err != nil {
			r.err = err
			return Frame{}, err
		}
		if ok {
			r.n++
			return r.amsdu.split(f), nil
		}
	}
}

func (r *ngReader) Close() error { return r.in.close() }

// block reads one block and, for a packet block, leaves its body in
// r.body. It returns io.EOF only at a clean block boundary.
func (r *ngReader) block() error {
	_, _, err := r.readBlock()
	return err
}

// packet reads the next block; ok reports whether it was a packet.
func (r *ngReader) packet() (Frame, bool, error) {
	typ, at, err := r.readBlock()
	if err != nil {
		return Frame{}, false, err
	}
	switch typ {
	case ngEnhancedPacket, ngObsoletePacket, ngSimplePacket:
		f, err := r.parsePacket(typ, at)
		if err != nil {
			return f, false, err
		}
		// A bridged frame an NFLOG log holds twice is given once.
		_, _, repeat := r.nflog.unwrap(&f)
		return f, !repeat, nil
	}
	return Frame{}, false, nil
}

// readBlock reads a block's type and length, then takes the bodies of the
// blocks it parses into r.body and skips the others. It returns the block
// type and the offset where the block starts.
func (r *ngReader) readBlock() (uint32, int64, error) {
	at := r.in.off
	head, err := r.in.take(8)
	if err != nil {
		if err == io.EOF {
			return 0, at, io.EOF
		}
		return 0, at, r.in.truncated(r.n, err)
	}
	copy(r.head[:8], head)
	// The section header's type reads the same in both byte orders; its
	// byte-order magic, right after the length, decides how to read the rest.
	if binary.LittleEndian.Uint32(r.head[:4]) == ngSectionHeader {
		magic, err := r.in.take(4)
		if err != nil {
			return 0, at, r.in.truncated(r.n, err)
		}
		copy(r.head[8:12], magic)
		switch {
		case binary.LittleEndian.Uint32(r.head[8:12]) == ngByteOrderMagic:
			r.order = binary.LittleEndian
		case binary.BigEndian.Uint32(r.head[8:12]) == ngByteOrderMagic:
			r.order = binary.BigEndian
		default:
			return 0, at, r.in.corrupt(r.n, at, "section header with byte-order magic % x", r.head[8:12])
		}
	}
	typ := r.order.Uint32(r.head[:4])
	total := r.order.Uint32(r.head[4:8])
	if total < 12 || total%4 != 0 {
		return 0, at, r.in.corrupt(r.n, at, "block of type %#x with length %d (want a multiple of 4, at least 12)", typ, total)
	}
	// What is left of the block after the bytes already read, before the
	// trailing copy of the length.
	read := int64(8)
	if typ == ngSectionHeader {
		read = 12
	}
	body := int64(total) - read - 4
	if body < 0 {
		return 0, at, r.in.corrupt(r.n, at, "section header block of length %d", total)
	}

	switch typ {
	case ngSectionHeader, ngInterfaceDesc:
		if body > maxNgMetaBlock {
			return 0, at, r.in.corrupt(r.n, at, "block of type %#x claims %d bytes", typ, total)
		}
	case ngEnhancedPacket, ngObsoletePacket, ngSimplePacket:
		if body > maxFrameLen+maxNgMetaBlock {
			return 0, at, r.in.corrupt(r.n, at, "packet block claims %d bytes, more than a packet can have", total)
		}
	default:
		if err := r.in.skip(body); err != nil {
			return 0, at, r.in.truncated(r.n, err)
		}
		t, err := r.in.take(4)
		if err != nil {
			return 0, at, r.in.truncated(r.n, err)
		}
		return typ, at, r.trailer(typ, total, at, t)
	}
	// Body and trailer in one take: a second take could move the buffer
	// under the body.
	b, err := r.in.take(int(body) + 4)
	if err != nil {
		return 0, at, r.in.truncated(r.n, err)
	}
	if err := r.trailer(typ, total, at, b[body:]); err != nil {
		return 0, at, err
	}
	r.body = b[:body:body]
	switch typ {
	case ngSectionHeader:
		return typ, at, r.parseSection(at)
	case ngInterfaceDesc:
		return typ, at, r.parseInterface(at)
	}
	return typ, at, nil
}

// trailer checks t, the copy of the block length that ends every block; a
// mismatch means the reader has lost the block boundaries.
func (r *ngReader) trailer(typ, total uint32, at int64, t []byte) error {
	if got := r.order.Uint32(t); got != total {
		return r.in.corrupt(r.n, at, "block of type %#x starts with length %d but ends with %d", typ, total, got)
	}
	return nil
}

func (r *ngReader) parseSection(at int64) error {
	b := r.body
	if len(b) < 12 {
		return r.in.corrupt(r.n, at, "section header block of %d bytes", len(b)+16)
	}
	if major, minor := r.order.Uint16(b[0:2]), r.order.Uint16(b[2:4]); major != 1 {
		return r.in.corrupt(r.n, at, "pcapng version %d.%d; this reader reads version 1", major, minor)
	}
	// Interface numbers restart with every section.
	r.ifaces = r.ifaces[:0]
	r.section++
	return nil
}

func (r *ngReader) parseInterface(at int64) error {
	b := r.body
	if len(b) < 8 {
		return r.in.corrupt(r.n, at, "interface description block of %d bytes", len(b)+12)
	}
	ifc := ngInterface{
		link:    features.LinkType(r.order.Uint16(b[0:2])),
		snapLen: r.order.Uint32(b[4:8]),
		units:   1_000_000,
	}
	for opts := b[8:]; len(opts) >= 4; {
		code, n := r.order.Uint16(opts[0:2]), int(r.order.Uint16(opts[2:4]))
		if code == ngOptEnd {
			break
		}
		padded := (n + 3) &^ 3
		if 4+padded > len(opts) {
			return r.in.corrupt(r.n, at, "interface option %d of %d bytes overruns its block", code, n)
		}
		v := opts[4 : 4+n]
		switch {
		case code == ngOptTSResol && n >= 1:
			exp := v[0] & 0x7f
			if v[0]&0x80 != 0 {
				if exp > 63 {
					ifc.resolErr = fmt.Sprintf("timestamp resolution 2^-%d", exp)
				}
				ifc.units = 1 << (exp & 63)
			} else {
				if exp > 19 {
					ifc.resolErr = fmt.Sprintf("timestamp resolution 10^-%d", exp)
					exp = 0
				}
				ifc.units = 1
				for range exp {
					ifc.units *= 10
				}
			}
		case code == ngOptName:
			ifc.name = strings.ToValidUTF8(string(v[:min(n, maxNgIfName)]), "?")
			ifc.loopback = loopbackName(ifc.name)
		case code == ngOptFCSLen && n >= 1:
			ifc.fcs = int(v[0])
		case code == ngOptTSOffset && n >= 8:
			ifc.offsetS = int64(r.order.Uint64(v[:8]))
		}
		opts = opts[4+padded:]
	}
	r.ifaces = append(r.ifaces, ifc)
	return nil
}

func (r *ngReader) parsePacket(typ uint32, at int64) (Frame, error) {
	b := r.body
	f := Frame{Offset: r.n}
	var ifID uint32
	var ts uint64
	var capLen, wireLen uint32
	var data []byte
	switch typ {
	case ngEnhancedPacket, ngObsoletePacket:
		if len(b) < 20 {
			return f, r.in.corrupt(r.n, at, "packet block of %d bytes, too short for its header", len(b)+12)
		}
		if typ == ngEnhancedPacket {
			ifID = r.order.Uint32(b[0:4])
		} else {
			ifID = uint32(r.order.Uint16(b[0:2]))
		}
		ts = uint64(r.order.Uint32(b[4:8]))<<32 | uint64(r.order.Uint32(b[8:12]))
		capLen, wireLen = r.order.Uint32(b[12:16]), r.order.Uint32(b[16:20])
		if int64(capLen) > int64(len(b)-20) {
			return f, r.in.corrupt(r.n, at, "packet block claims %d captured bytes but holds %d", capLen, len(b)-20)
		}
		data = b[20 : 20+capLen]
	case ngSimplePacket:
		// No interface number and no timestamp: the packet belongs to the
		// first interface, and its data runs to the end of the block, cut at
		// the interface's snap length.
		if len(b) < 4 {
			return f, r.in.corrupt(r.n, at, "simple packet block of %d bytes", len(b)+12)
		}
		wireLen = r.order.Uint32(b[0:4])
		data = b[4:]
		capLen = uint32(min(int64(wireLen), int64(len(data))))
		if len(r.ifaces) > 0 && r.ifaces[0].snapLen != 0 {
			capLen = min(capLen, r.ifaces[0].snapLen)
		}
		data = data[:capLen]
	}
	if int(ifID) >= len(r.ifaces) {
		return f, r.in.corrupt(r.n, at, "packet on interface %d but the section describes %d interfaces", ifID, len(r.ifaces))
	}
	ifc := &r.ifaces[ifID]
	if ifc.resolErr != "" {
		return f, r.in.corrupt(r.n, at, "interface %d has %s, finer than this reader converts", ifID, ifc.resolErr)
	}
	if capLen > maxFrameLen {
		return f, r.in.corrupt(r.n, at, "packet claims %d captured bytes, more than the %d a packet can have", capLen, maxFrameLen)
	}
	f.Data = data
	f.LinkType = ifc.link
	f.CI.InterfaceIndex = int(ifID)
	f.CI.CaptureLength = int(capLen)
	f.CI.Length = int(max(wireLen, capLen))
	if typ == ngSimplePacket {
		f.CI.Timestamp = time.Unix(0, 0).UTC()
	} else {
		f.CI.Timestamp = ifc.time(ts)
	}
	withoutFCS(&f, ifc.fcs)
	return f, nil
}

// time converts a timestamp in the interface's units to wall time.
func (ifc *ngInterface) time(ts uint64) time.Time {
	sec, frac := ts/ifc.units, ts%ifc.units
	// frac*1e9/units without overflow: units can be up to 2^63.
	hi, lo := bits.Mul64(frac, 1e9)
	ns, _ := bits.Div64(hi, lo, ifc.units)
	return time.Unix(int64(sec)+ifc.offsetS, int64(ns)).UTC()
}
