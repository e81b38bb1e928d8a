package features

import (
	"encoding/binary"
	"fmt"
)

// A remote sniffer streams what it captures to a collector over UDP:
// MikroTik RouterOS's packet sniffer (/tool sniffer, streaming-enabled) and
// its firewall's sniff-tzsp action, and some access points and sensors,
// send each frame they see in a TZSP datagram, by convention to UDP port
// 37008. A capture on the collector then holds the sniffer's datagrams,
// all from one host to another, not the home's frames. ParseLink reads
// such a datagram as the frame it carries: its MACs, its packet, and its
// length on the home's wire (FrameLen), so a capture streamed from a
// MikroTik gateway reads as a capture on the gateway's own interface.
//
// A frame of up to 1,514 bytes inside TZSP, UDP and IPv4 makes a datagram
// above a 1,500-byte MTU, which the sniffer sends in two fragments. The
// first holds every header the decoder reads; the Decoder leaves the rest
// out as the link's own (ErrNotPacket), remembering the datagrams it read
// (tzspRest).

// TZSPPort is the UDP port TZSP is sent to: a datagram to another port is
// read as the UDP datagram it is.
const TZSPPort = 37008

// TZSP header: version(1) type(1) encapsulation(2), then tagged fields,
// each a tag byte and (but for padding and the end tag) a length byte and
// its value, up to the end tag; the frame follows.
const (
	tzspHdrLen      = 4
	tzspVersion     = 1
	tzspTypeRX      = 0 // a frame the sniffer received
	tzspTypeTX      = 1 // a frame the sniffer sent
	tzspTagPadding  = 0
	tzspTagEnd      = 1
	tzspMaxTagBytes = 256 // sniffers send a handful of tags; a longer list is garbage
)

// TZSP places the frame a TZSP datagram carries.
type TZSP struct {
	// At and End bound the frame in the outer frame's bytes.
	At, End int
	// Wire is the frame's length as the sniffer captured it, from the
	// UDP length: the outer capture may have cut the datagram short.
	Wire int
	// LinkType is the frame's link type: Ethernet, or 802.11 bare or
	// behind a Prism or AVS header.
	LinkType LinkType
	// Fragmented says the datagram was sent in IP fragments, of which
	// this is the first; FragKey names the datagram (tzspFragKey).
	Fragmented bool
	FragKey    uint64
}

// tzspLinkType maps TZSP's encapsulation numbers to link types.
func tzspLinkType(encap uint16) (LinkType, bool) {
	switch encap {
	case 1:
		return LinkTypeEthernet, true
	case 18:
		return LinkTypeIEEE80211, true
	case 119:
		return LinkTypePrism, true
	case 127:
		return LinkTypeAVS, true
	}
	return 0, false
}

// FindTZSP looks for a TZSP datagram in the IP packet of etherType that
// starts at data[ip:]. ok is false for any packet that is not a first (or
// only) piece of a UDP datagram to TZSPPort starting with TZSP's version:
// it is read as it is. A TZSP datagram that carries no frame (a keepalive,
// a sniffer's configuration) is ErrNotPacket; one whose tags run past the
// capture, or whose frame is of a kind not read, an error too.
func FindTZSP(etherType uint16, data []byte, ip int) (t TZSP, ok bool, err error) {
	b := data[ip:]
	var udpAt, ipEnd int
	switch etherType {
	case EtherTypeIPv4:
		if len(b) < 20 || b[0]>>4 != 4 || b[9] != 17 {
			return t, false, nil
		}
		ihl := int(b[0]&0xf) * 4
		frag := binary.BigEndian.Uint16(b[6:8])
		if ihl < 20 || frag&0x1fff != 0 {
			return t, false, nil
		}
		udpAt, ipEnd = ihl, int(binary.BigEndian.Uint16(b[2:4]))
		if frag&0x2000 != 0 {
			t.Fragmented = true
			t.FragKey = tzspFragKey(b[12:20], uint32(binary.BigEndian.Uint16(b[4:6])))
		}
	case EtherTypeIPv6:
		if len(b) < 40 || b[0]>>4 != 6 {
			return t, false, nil
		}
		udpAt, ipEnd = 40, 40+int(binary.BigEndian.Uint16(b[4:6]))
		switch b[6] {
		case 17:
		case 44: // a fragment header: next(1) reserved(1) offset and M(2) id(4)
			if len(b) < 48 || b[40] != 17 || binary.BigEndian.Uint16(b[42:44])&^7 != 0 {
				return t, false, nil
			}
			udpAt = 48
			if b[43]&1 != 0 {
				t.Fragmented = true
				t.FragKey = tzspFragKey(b[8:40], binary.BigEndian.Uint32(b[44:48]))
			}
		default:
			return t, false, nil
		}
	default:
		return t, false, nil
	}
	u := udpAt + 8
	if len(b) < u+tzspHdrLen || binary.BigEndian.Uint16(b[udpAt+2:]) != TZSPPort || b[u] != tzspVersion {
		return t, false, nil
	}
	if typ := b[u+1]; typ != tzspTypeRX && typ != tzspTypeTX {
		return t, true, fmt.Errorf("%w: TZSP datagram of type %d (a keepalive or a sniffer's configuration), which carries no frame", ErrNotPacket, typ)
	}
	encap := binary.BigEndian.Uint16(b[u+2:])
	lt, known := tzspLinkType(encap)
	if !known {
		return t, true, fmt.Errorf("%w: TZSP carrying encapsulation %d: only Ethernet (1) and 802.11 (18, Prism 119, AVS 127) are read", ErrUnsupportedLinkType, encap)
	}
	// The captured bytes of the datagram end where the IP packet says,
	// or where the capture does (a snap length, a fragment).
	end := len(b)
	if ipEnd > udpAt && ipEnd < end {
		end = ipEnd
	}
	at := u + tzspHdrLen
	for tags := at; ; {
		if at >= end || at-tags > tzspMaxTagBytes {
			return t, true, fmt.Errorf("%w: TZSP tags run to byte %d without an end tag", ErrMalformed, at)
		}
		tag := b[at]
		if tag == tzspTagEnd {
			at++
			break
		}
		if tag == tzspTagPadding {
			at++
			continue
		}
		if at+2 > end {
			return t, true, fmt.Errorf("%w: TZSP tag %d cut short", ErrMalformed, tag)
		}
		at += 2 + int(b[at+1])
	}
	udpLen := int(binary.BigEndian.Uint16(b[udpAt+4:]))
	if udpLen < at-udpAt || at > end {
		return t, true, fmt.Errorf("%w: TZSP datagram of UDP length %d ends before its frame at byte %d", ErrMalformed, udpLen, at-udpAt)
	}
	t.At, t.End, t.Wire, t.LinkType = ip+at, ip+end, udpLen-(at-udpAt), lt
	return t, true, nil
}

// tzspFragKey names one fragmented datagram: its addresses and IP ID.
func tzspFragKey(addrs []byte, id uint32) uint64 {
	// FNV-1a: the key only has to tell a few datagrams in flight apart.
	h := uint64(14695981039346656037)
	for _, c := range addrs {
		h = (h ^ uint64(c)) * 1099511628211
	}
	for i := range 4 {
		h = (h ^ uint64(byte(id>>(8*i)))) * 1099511628211
	}
	return h
}

// tzspRest remembers the fragmented TZSP datagrams a stream's decoder
// read, so that their later fragments, which hold the rest of a frame
// whose headers were read, are left out rather than read as the
// sniffer's own packets. A few slots: a sniffer's fragments follow
// their first within microseconds.
type tzspRest struct {
	keys [16]uint64
	next int
}

// take remembers the datagram of a frame l read from a fragmented TZSP
// datagram, or says the frame in data, read as l, is a later fragment of
// one remembered (ErrNotPacket).
func (r *tzspRest) take(l Link, data []byte) error {
	if l.tzspFrag != 0 {
		r.keys[r.next] = l.tzspFrag
		r.next = (r.next + 1) % len(r.keys)
		return nil
	}
	if l.wire == 0 && r.later(l.EtherType, data, l.Offset) {
		return fmt.Errorf("%w: a later IP fragment of a TZSP datagram, the rest of a frame already read", ErrNotPacket)
	}
	return nil
}

// later says whether the IP packet at data[ip:] is a later fragment of a
// datagram take remembered.
func (r *tzspRest) later(etherType uint16, data []byte, ip int) bool {
	b := data[ip:]
	var key uint64
	switch {
	case etherType == EtherTypeIPv4 && len(b) >= 20 && b[0]>>4 == 4:
		if binary.BigEndian.Uint16(b[6:8])&0x1fff == 0 {
			return false
		}
		key = tzspFragKey(b[12:20], uint32(binary.BigEndian.Uint16(b[4:6])))
	case etherType == EtherTypeIPv6 && len(b) >= 48 && b[0]>>4 == 6 && b[6] == 44:
		if binary.BigEndian.Uint16(b[42:44])&^7 == 0 {
			return false
		}
		key = tzspFragKey(b[8:40], binary.BigEndian.Uint32(b[44:48]))
	default:
		return false
	}
	for _, k := range r.keys {
		if k == key && k != 0 {
			return true
		}
	}
	return false
}
