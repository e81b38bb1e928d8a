package features

import (
	"encoding/binary"
	"fmt"
)

// A capture is not always taken where the frames cross. A remote sniffer
// or a switch mirrors what it sees to a collector, each frame inside a
// packet of its own, and the collector's capture holds those packets, all
// from one host to another, not the home's frames:
//
//   - TZSP, to UDP port 37008: MikroTik RouterOS's packet sniffer (/tool
//     sniffer, streaming-enabled) and its firewall's sniff-tzsp action,
//     some access points and sensors. The port lies in Linux's range of
//     ephemeral ports, so a home device's DNS or STUN answer may be sent
//     to it: a datagram is taken for TZSP only when its first four bytes
//     are a TZSP header (version 1, a type and an encapsulation TZSP
//     defines), which such an answer's are not;
//   - VXLAN, to UDP port 4789: cloud traffic mirroring (AWS VPC Traffic
//     Mirroring), Open vSwitch and Linux mirror ports;
//   - GRE: Linux's gretap (tc mirred to a gretap device, Open vSwitch)
//     with transparent Ethernet bridging (0x6558), and the switches' and
//     routers' ERSPAN, types I and II (0x88be) and III (0x22eb).
//
// ParseLink reads such a packet as the frame it carries (FindMirrored): its
// MACs, its packet, and its length on the mirrored wire (FrameLen), so a
// collector's capture reads as a capture on the mirrored interface.
//
// A full-size frame inside TZSP or VXLAN, UDP and IPv4 makes a datagram
// above a 1,500-byte MTU, which is sent in two fragments (GRE mirrors too,
// where the path does not carry jumbo frames). The first holds every
// header the decoder reads; the Decoder leaves the rest out as the link's
// own (ErrNotPacket), remembering the packets it read (mirrorRest).

// The UDP ports mirrors are sent to: a datagram to another port is read as
// the datagram it is.
const (
	TZSPPort  = 37008
	VXLANPort = 4789
)

// TZSP header: version(1) type(1) encapsulation(2), then tagged fields,
// each a tag byte and (but for padding and the end tag) a length byte and
// its value, up to the end tag; the frame follows.
const (
	tzspHdrLen      = 4
	tzspVersion     = 1
	tzspTypeRX      = 0 // a frame the sniffer received
	tzspTypeTX      = 1 // a frame the sniffer sent
	tzspTypeConfig  = 3
	tzspTypePort    = 5 // a port opener; 4 between is a keepalive
	tzspTagPadding  = 0
	tzspTagEnd      = 1
	tzspMaxTagBytes = 256 // sniffers send a handful of tags; a longer list is garbage
)

// Mirrored places the frame a mirror's packet carries.
type Mirrored struct {
	// Via names the mirror's protocol: TZSP, VXLAN, GRE or ERSPAN.
	Via string
	// At and End bound the frame in the outer frame's bytes.
	At, End int
	// Wire is the frame's length as the mirror saw it, from the outer
	// packet's lengths (the capture may have cut it short); 0 where they
	// do not say, a GRE packet's first fragment (the caller takes it from
	// the frame's own IP header).
	Wire int
	// LinkType is the frame's link type: Ethernet, or for TZSP 802.11
	// bare or behind a Prism or AVS header.
	LinkType LinkType
	// Fragmented says the packet was sent in IP fragments, of which this
	// is the first; FragKey names the packet (mirrorFragKey).
	Fragmented bool
	FragKey    uint64
}

// tzspEncap says whether encap is an encapsulation TZSP defines: those
// tzspLinkType reads, Token Ring (2), SLIP (3), PPP (4), FDDI (5) and raw
// (7).
func tzspEncap(encap uint16) bool {
	switch encap {
	case 1, 2, 3, 4, 5, 7, 18, 119, 127:
		return true
	}
	return false
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

// FindMirrored looks for a mirrored frame in the IP packet of etherType
// that starts at data[ip:]. ok is false for any packet that is not a first
// (or only) piece of a mirror's packet: it is read as it is. A mirror's
// packet that carries no frame (a TZSP keepalive) is ErrNotPacket; one
// whose headers run past the capture, or whose frame is of a kind not
// read, an error too.
func FindMirrored(etherType uint16, data []byte, ip int) (m Mirrored, ok bool, err error) {
	b := data[ip:]
	var proto byte
	var l4, ipEnd int
	switch etherType {
	case EtherTypeIPv4:
		if len(b) < 20 || b[0]>>4 != 4 {
			return m, false, nil
		}
		ihl := int(b[0]&0xf) * 4
		if ihl < 20 {
			return m, false, nil
		}
		proto, l4, ipEnd = b[9], ihl, int(binary.BigEndian.Uint16(b[2:4]))
	case EtherTypeIPv6:
		if len(b) < 40 || b[0]>>4 != 6 {
			return m, false, nil
		}
		proto, l4, ipEnd = b[6], 40, 40+int(binary.BigEndian.Uint16(b[4:6]))
		if proto == 44 && len(b) >= 48 {
			proto, l4 = b[40], 48
		}
	default:
		return m, false, nil
	}
	key, later, more := ipFragment(etherType, b)
	if later {
		return m, false, nil
	}
	m.Fragmented = more
	if more {
		m.FragKey = key
	}
	// The captured bytes of the packet end where its IP header says, or
	// where the capture does (a snap length, a fragment).
	end := len(b)
	if ipEnd > l4 && ipEnd < end {
		end = ipEnd
	}
	switch proto {
	case 17:
		if len(b) < l4+8 {
			return m, false, nil
		}
		udpLen := int(binary.BigEndian.Uint16(b[l4+4:]))
		switch binary.BigEndian.Uint16(b[l4+2:]) {
		case TZSPPort:
			ok, err = m.tzsp(b, l4+8, end)
		case VXLANPort:
			ok, err = m.vxlan(b, l4+8, end)
		}
		if ok && err == nil {
			if udpLen < m.At-l4 {
				return m, true, fmt.Errorf("%w: %s datagram of UDP length %d ends before its frame at byte %d", ErrMalformed, m.Via, udpLen, m.At-l4)
			}
			m.Wire = udpLen - (m.At - l4)
		}
	case 47:
		ok, err = m.gre(b, l4, end)
		if ok && err == nil && !m.Fragmented && ipEnd > m.At {
			// As long as the IP packet says, which a snap length may
			// have cut.
			m.Wire = ipEnd - m.At
		}
	}
	if !ok || err != nil {
		return m, ok, err
	}
	if m.At > end {
		return m, true, fmt.Errorf("%w: %s packet of %d bytes ends before its frame at byte %d", ErrMalformed, m.Via, end, m.At)
	}
	m.At, m.End = ip+m.At, ip+end
	return m, true, nil
}

// tzsp reads a TZSP header at b[at:end]; ok is false for a datagram whose
// first four bytes are no TZSP header (another version, a type or an
// encapsulation TZSP does not define), which is read as the datagram it
// is: a STUN Binding success (0x0101, then a length of 12 or more) or a
// DNS answer (the QR bit sets the encapsulation's top bit) to a device
// that took 37008 for its port.
func (m *Mirrored) tzsp(b []byte, at, end int) (ok bool, err error) {
	if end < at+tzspHdrLen || b[at] != tzspVersion {
		return false, nil
	}
	typ, encap := b[at+1], binary.BigEndian.Uint16(b[at+2:])
	switch {
	case typ == tzspTypeRX || typ == tzspTypeTX:
		if !tzspEncap(encap) {
			return false, nil
		}
	case typ >= tzspTypeConfig && typ <= tzspTypePort:
		// Carrying no frame, it need not name an encapsulation.
		if encap != 0 && !tzspEncap(encap) {
			return false, nil
		}
		m.Via = "TZSP"
		return true, fmt.Errorf("%w: TZSP datagram of type %d (a keepalive or a sniffer's configuration), which carries no frame", ErrNotPacket, typ)
	default:
		return false, nil
	}
	m.Via = "TZSP"
	lt, known := tzspLinkType(encap)
	if !known {
		return true, fmt.Errorf("%w: TZSP carrying encapsulation %d: only Ethernet (1) and 802.11 (18, Prism 119, AVS 127) are read", ErrUnsupportedLinkType, encap)
	}
	at += tzspHdrLen
	for tags := at; ; {
		if at >= end || at-tags > tzspMaxTagBytes {
			return true, fmt.Errorf("%w: TZSP tags run to byte %d without an end tag", ErrMalformed, at)
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
			return true, fmt.Errorf("%w: TZSP tag %d cut short", ErrMalformed, tag)
		}
		at += 2 + int(b[at+1])
	}
	m.At, m.LinkType = at, lt
	return true, nil
}

// vxlan reads a VXLAN header at b[at:end]: flags(1) reserved(3) VNI(3)
// reserved(1), then an Ethernet frame. ok is false without the I flag, or
// with VXLAN-GPE's P flag (its payload need not be Ethernet).
func (m *Mirrored) vxlan(b []byte, at, end int) (ok bool, err error) {
	if end < at+8 || b[at]&0x08 == 0 || b[at]&0x04 != 0 {
		return false, nil
	}
	m.Via, m.At, m.LinkType = "VXLAN", at+8, LinkTypeEthernet
	return true, nil
}

// GRE protocol types that carry a mirrored Ethernet frame.
const (
	greTEB       = 0x6558 // transparent Ethernet bridging (gretap)
	greERSPAN    = 0x88be // ERSPAN type I (no sequence number) and II
	greERSPANIII = 0x22eb
)

// gre reads a GRE header at b[at:end] (RFC 2784 with RFC 2890's key and
// sequence number): flags and version(2) protocol(2), a checksum and
// reserved word, a key, a sequence number, each when its flag says; then
// for ERSPAN II its 8-byte header, for ERSPAN III its 12 bytes and an
// optional 8-byte platform subheader. ok is false for GRE carrying
// anything else (a tunnel's IP packets), read as the packet it is.
func (m *Mirrored) gre(b []byte, at, end int) (ok bool, err error) {
	if end < at+4 {
		return false, nil
	}
	flags, proto := binary.BigEndian.Uint16(b[at:]), binary.BigEndian.Uint16(b[at+2:])
	if flags&7 != 0 || flags&0x4000 != 0 { // another version, or source routing
		return false, nil
	}
	if proto != greTEB && proto != greERSPAN && proto != greERSPANIII {
		return false, nil
	}
	at += 4
	for _, bit := range []uint16{0x8000, 0x2000, 0x1000} { // checksum, key, sequence number
		if flags&bit != 0 {
			at += 4
		}
	}
	m.Via, m.LinkType = "GRE", LinkTypeEthernet
	switch {
	case proto == greERSPAN && flags&0x1000 != 0:
		m.Via = "ERSPAN"
		if end < at+8 || b[at]>>4 != 1 {
			return true, fmt.Errorf("%w: ERSPAN type II header cut short or of version %d", ErrMalformed, ver(b, at, end))
		}
		at += 8
	case proto == greERSPAN:
		m.Via = "ERSPAN" // type I: the frame right after GRE's header
	case proto == greERSPANIII:
		m.Via = "ERSPAN"
		if end < at+12 || b[at]>>4 != 2 {
			return true, fmt.Errorf("%w: ERSPAN type III header cut short or of version %d", ErrMalformed, ver(b, at, end))
		}
		if b[at+11]&1 != 0 { // O: a platform-specific subheader follows
			at += 8
		}
		at += 12
	}
	m.At = at
	return true, nil
}

// ver is the version nibble of an ERSPAN header at b[at], -1 past end.
func ver(b []byte, at, end int) int {
	if at >= end {
		return -1
	}
	return int(b[at] >> 4)
}

// ipFragment says where the IP packet b lies in its datagram: later, past
// its first fragment; more, with fragments after it; key names the
// datagram (mirrorFragKey) when it is a fragment. Of IPv6 it reads a
// fragment header right after the fixed header.
func ipFragment(etherType uint16, b []byte) (key uint64, later, more bool) {
	switch {
	case etherType == EtherTypeIPv4 && len(b) >= 20 && b[0]>>4 == 4:
		frag := binary.BigEndian.Uint16(b[6:8])
		later, more = frag&0x1fff != 0, frag&0x2000 != 0
		if later || more {
			key = mirrorFragKey(b[12:20], uint32(binary.BigEndian.Uint16(b[4:6])))
		}
	case etherType == EtherTypeIPv6 && len(b) >= 48 && b[0]>>4 == 6 && b[6] == 44:
		// next(1) reserved(1) offset and M(2) id(4)
		later, more = binary.BigEndian.Uint16(b[42:44])&^7 != 0, b[43]&1 != 0
		key = mirrorFragKey(b[8:40], binary.BigEndian.Uint32(b[44:48]))
	}
	return key, later, more
}

// mirrorFragKey names one fragmented packet: its addresses and IP ID.
func mirrorFragKey(addrs []byte, id uint32) uint64 {
	// FNV-1a: the key only has to tell a few packets in flight apart.
	h := uint64(14695981039346656037)
	for _, c := range addrs {
		h = (h ^ uint64(c)) * 1099511628211
	}
	for i := range 4 {
		h = (h ^ uint64(byte(id>>(8*i)))) * 1099511628211
	}
	return h
}

// ipTotalLen is the length an IP packet's header gives it, 0 when it
// gives none that can be read.
func ipTotalLen(etherType uint16, b []byte) int {
	switch {
	case etherType == EtherTypeIPv4 && len(b) >= 4:
		return int(binary.BigEndian.Uint16(b[2:4]))
	case etherType == EtherTypeIPv6 && len(b) >= 6:
		if n := int(binary.BigEndian.Uint16(b[4:6])); n > 0 {
			return 40 + n
		}
	}
	return 0
}

// mirrorRest remembers the fragmented mirror packets a stream's decoder
// read, so that their later fragments, which hold the rest of a frame
// whose headers were read, are left out rather than read as the mirror's
// own packets. A few slots: a mirror's fragments follow their first
// within microseconds.
type mirrorRest struct {
	keys [16]uint64
	next int
	any  bool // a key was taken: until then no fragment is looked at
}

// take remembers frag, the key of the fragmented mirror's packet a frame
// l was read from, or says the frame in data, read as l, is a later
// fragment of one remembered (ErrNotPacket).
func (r *mirrorRest) take(l *Link, frag uint64, data []byte) error {
	if frag == 0 && (!r.any || l.wire != 0) {
		return nil // the path of every capture that holds no mirror's fragments
	}
	return r.takeSlow(l, frag, data)
}

func (r *mirrorRest) takeSlow(l *Link, frag uint64, data []byte) error {
	if frag != 0 {
		r.keys[r.next] = frag
		r.next = (r.next + 1) % len(r.keys)
		r.any = true
		return nil
	}
	if r.later(l.EtherType, data, l.Offset) {
		return fmt.Errorf("%w: a later IP fragment of a mirror's packet, the rest of a frame already read", ErrNotPacket)
	}
	return nil
}

// later says whether the IP packet at data[ip:] is a later fragment of a
// packet take remembered.
func (r *mirrorRest) later(etherType uint16, data []byte, ip int) bool {
	key, later, _ := ipFragment(etherType, data[ip:])
	if !later {
		return false
	}
	for _, k := range r.keys {
		if k == key && k != 0 {
			return true
		}
	}
	return false
}
