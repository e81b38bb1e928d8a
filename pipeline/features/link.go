package features

import (
	"encoding/binary"
	"fmt"

	"github.com/homemole/homemole/schemas"
)

// EtherTypes the link walk produces. A link that names its payload another
// way (a PPP protocol number, a BSD address family, an IP version nibble)
// is mapped onto them, so everything after the link layer reads one number.
const (
	EtherTypeIPv4 uint16 = 0x0800
	EtherTypeIPv6 uint16 = 0x86dd
	// EtherTypeNotIP stands for a payload the link names without an
	// EtherType and that is not IP (a PPP control protocol, a BSD
	// address family other than INET/INET6).
	EtherTypeNotIP uint16 = 0
	// EtherTypeARP is not IP, but its sender protocol address says which
	// IPv4 address sent it (Packet.ARPSender).
	EtherTypeARP uint16 = 0x0806

	etherTypeDot1Q      uint16 = 0x8100
	etherTypeQinQ       uint16 = 0x88a8
	etherTypeQinQLegacy uint16 = 0x9100 // pre-802.1ad QinQ outer tag some switches still emit
	etherTypePPPoEDisc  uint16 = 0x8863
	etherTypePPPoESess  uint16 = 0x8864
)

// Link is what a frame's link layer says about the packet it carries.
type Link struct {
	// SrcMAC and DstMAC are the Ethernet addresses (the inner frame's for
	// PPI); zero for links without them (raw IP, PPP, loopback, SLL).
	SrcMAC, DstMAC schemas.MAC
	// EtherType names the payload: EtherTypeIPv4, EtherTypeIPv6 or anything
	// else for a payload that is not IP. VLAN tags and PPPoE session
	// headers have been walked past.
	EtherType uint16
	// Offset is where the payload starts in the frame.
	Offset int

	// wifi holds what an 802.11 frame says beyond the addresses (dot11).
	wifi wifiFrame
	// wire is the length on the mirrored wire of a frame a mirror's
	// packet carries, 0 for a frame read as captured. unwired is how many
	// bytes at the frame's start the capture added and no wire carried (a
	// pflog header): FrameLen leaves them out, as a capture on the
	// interface would. int32s, as the Link is copied per packet.
	wire, unwired int32
}

// IsIP tells whether the payload is an IPv4 or IPv6 packet.
func (l Link) IsIP() bool { return l.EtherType == EtherTypeIPv4 || l.EtherType == EtherTypeIPv6 }

// ParseLink walks the link-layer headers of a frame of the given link type
// down to the network packet. It reads only the bytes it is given, never
// allocates on success, and bounds every chain it follows (VLAN tags, PPI
// encapsulation), so a crafted frame costs a handful of header reads.
// Errors wrap ErrUnsupportedLinkType or ErrMalformed, or ErrNotPacket for
// a frame of the link's own (an 802.11 beacon, a TZSP keepalive).
//
// A mirror's packet (TZSP, VXLAN, GRE or ERSPAN; see mirror.go) is read as
// the frame it carries, one level deep: the Link is the inner frame's, its
// Offset in data.
func ParseLink(lt LinkType, data []byte) (Link, error) {
	l, _, err := parseLinkMirrored(lt, data)
	return l, err
}

// parseLinkMirrored is ParseLink, and for the first fragment of a mirror's
// packet the key that names the packet (mirrorFragKey), 0 otherwise.
func parseLinkMirrored(lt LinkType, data []byte) (l Link, frag uint64, err error) {
	l, err = parseLink(lt, data, 0)
	if err != nil || !mayCarry(l.EtherType, data[l.Offset:]) {
		return l, 0, err
	}
	return parseMirrored(l, data)
}

// mayCarry says whether an IP packet could be a mirror's: UDP to TZSP's or
// VXLAN's port, GRE, or an IPv6 fragment. Every other packet (a home's
// TCP, its DNS and NTP) is passed over here, before a mirror's headers are
// looked for: the protocol first, the port of UDP packets alone after.
func mayCarry(etherType uint16, b []byte) bool {
	at := 9 // the protocol: IPv4's, or IPv6's next header
	if etherType == EtherTypeIPv6 {
		at = 6
	}
	return len(b) > at && (b[at] == 17 || b[at] == 47 || b[at] == 44) && mirrorProto(etherType, b)
}

// mirrorProto is mayCarry past the protocol: GRE and IPv6 fragments may
// be a mirror's, UDP when it is to TZSP's or VXLAN's port.
func mirrorProto(etherType uint16, b []byte) bool {
	var proto byte
	var at int
	switch {
	case etherType == EtherTypeIPv4 && len(b) >= 20:
		proto, at = b[9], int(b[0]&0xf)*4
	case etherType == EtherTypeIPv6 && len(b) >= 40:
		proto, at = b[6], 40
	default:
		return false
	}
	if proto != 17 {
		return true
	}
	if len(b) < at+4 {
		return false
	}
	p := uint16(b[at+2])<<8 | uint16(b[at+3])
	return p == TZSPPort || p == VXLANPort
}

// parseMirrored reads the frame a mirror's packet l carries, or returns l
// when it is none (see mirror.go); frag names a fragmented packet.
func parseMirrored(l Link, data []byte) (inner Link, frag uint64, err error) {
	m, ok, err := FindMirrored(l.EtherType, data, l.Offset)
	if !ok {
		return l, 0, nil
	}
	if err != nil {
		return l, 0, err
	}
	inner, err = parseLink(m.LinkType, data[m.At:m.End], m.At)
	if err != nil {
		return inner, 0, fmt.Errorf("the frame a %s packet carries: %w", m.Via, err)
	}
	wire := m.Wire
	if wire == 0 {
		// A GRE packet's first fragment: the frame is as long as its
		// headers and the IP packet its header says.
		wire = inner.Offset - m.At + ipTotalLen(inner.EtherType, data[inner.Offset:])
	}
	inner.wire = int32(wire)
	if m.Fragmented {
		frag = m.FragKey
	}
	return inner, frag, nil
}

func parseLink(lt LinkType, data []byte, base int) (Link, error) {
	l := Link{Offset: base}
	switch lt {
	case LinkTypeEthernet:
		const ethLen = 14
		if err := needHeader(lt, ethLen, data); err != nil {
			return l, err
		}
		l.DstMAC, l.SrcMAC = schemas.MAC(data[0:6]), schemas.MAC(data[6:12])
		return l.ether(binary.BigEndian.Uint16(data[12:14]), data, ethLen)
	case LinkTypeLinuxSLL:
		// The address field's stated length is not trusted: 16 bytes always.
		return l.etherAt(lt, data, 16, 14)
	case LinkTypeLinuxSLL2:
		// protocol(2) reserved(2) ifindex(4) hatype(2) pkttype(1) addrlen(1) addr(8)
		return l.etherAt(lt, data, 20, 0)
	case LinkTypeRaw, LinkTypeRawDLT, LinkTypeRawOpenBSD:
		if len(data) == 0 {
			return l, fmt.Errorf("%w: empty raw IP frame", ErrMalformed)
		}
		switch data[0] >> 4 {
		case 4:
			l.EtherType = EtherTypeIPv4
			return l, nil
		case 6:
			l.EtherType = EtherTypeIPv6
			return l, nil
		}
		// On OpenBSD DLT 12 is DLT_LOOP; its 4-byte family header starts
		// with a zero nibble in either byte order, so it cannot be taken
		// for an IP packet.
		if lt == LinkTypeRawDLT && len(data) >= 4 && data[0]>>4 == 0 {
			if _, ok := bsdFamily(data); ok {
				return parseLink(LinkTypeLoop, data, base)
			}
		}
		return l, fmt.Errorf("%w: raw IP frame with IP version %d", ErrMalformed, data[0]>>4)
	case LinkTypeIPv4:
		l.EtherType = EtherTypeIPv4
		return l, nil
	case LinkTypeIPv6:
		l.EtherType = EtherTypeIPv6
		return l, nil
	case LinkTypeNull, LinkTypeLoop:
		const famLen = 4
		if err := needHeader(lt, famLen, data); err != nil {
			return l, err
		}
		fam, ok := bsdFamily(data)
		if !ok {
			return l, fmt.Errorf("%w: %s address family %#08x is not a family in either byte order", ErrMalformed, lt, binary.BigEndian.Uint32(data))
		}
		l.EtherType, l.Offset = familyEtherType(fam), base+famLen
		return l, nil
	case LinkTypePPP:
		// RFC 1662 HDLC-like framing keeps the address and control bytes;
		// without them the frame starts at the protocol field.
		off := 0
		if len(data) >= 2 && data[0] == 0xff && data[1] == 0x03 {
			off = 2
		}
		et, n, err := pppProtocol(data[off:])
		if err != nil {
			return l, err
		}
		l.EtherType, l.Offset = et, base+off+n
		return l, nil
	case LinkTypeCiscoHDLC:
		// address (0x0f unicast, 0x8f broadcast), control, then an EtherType.
		return l.etherAt(lt, data, 4, 2)
	case LinkTypeIEEE80211:
		return dot11(data, base, 0, 0, false)
	case LinkTypeRadiotap:
		return radiotap(data, base)
	case LinkTypePrism, LinkTypeAVS:
		return monitorHeader(lt, data, base)
	case LinkTypePPI:
		// version(1) flags(1) header length(2, LE) inner link type(4, LE),
		// then the radio fields, which say nothing about direction or size.
		const ppiMin = 8
		if err := needHeader(lt, ppiMin, data); err != nil {
			return l, err
		}
		hdr := int(binary.LittleEndian.Uint16(data[2:4]))
		inner := binary.LittleEndian.Uint32(data[4:8])
		if inner == uint32(LinkTypeIEEE80211) && data[0] == 0 && hdr >= ppiMin && hdr <= len(data) {
			fcs, err := ppiFCS(data[ppiMin:hdr])
			if err != nil {
				return l, err
			}
			return dot11(data[hdr:], base+hdr, hdr+fcs, fcs, false)
		}
		switch {
		case data[0] != 0:
			return l, fmt.Errorf("%w: PPI version %d; only version 0 exists", ErrMalformed, data[0])
		case hdr < ppiMin || hdr > len(data):
			return l, fmt.Errorf("%w: PPI header length %d with %d bytes captured", ErrMalformed, hdr, len(data))
		case inner > 0xffff || !pinnable(LinkType(inner)):
			return l, fmt.Errorf("%w: PPI carrying link type %d: only Ethernet, IP or 802.11 inside PPI is read",
				ErrUnsupportedLinkType, inner)
		}
		return parseLink(LinkType(inner), data[hdr:], base+hdr)
	case LinkTypePKTAP:
		h, err := ParsePKTAP(data)
		if err != nil {
			return l, err
		}
		return parseLink(h.LinkType, data[h.Len:], base+h.Len)
	case LinkTypeNFLOG:
		h, err := ParseNFLOG(data)
		if err != nil {
			return l, err
		}
		l.EtherType, l.Offset = h.EtherType, base+h.At
		return l, nil
	case LinkTypePFLOG:
		h, err := ParsePFLOG(data)
		if err != nil {
			return l, err
		}
		l.EtherType, l.Offset, l.unwired = familyEtherType(uint32(h.Family)), base+h.Len, int32(h.Len)
		return l, nil
	}
	return l, fmt.Errorf("%w %d: want Ethernet (1), raw IP (12, 14, 101, 228, 229), BSD loopback (0, 108), PPP (9), Cisco HDLC (104), 802.11 (105, radiotap 127, Prism 119, AVS 163), Linux SLL (113), SLL2 (276), PPI (192), Apple PKTAP (258), Linux NFLOG (239) or pflog (117)",
		ErrUnsupportedLinkType, uint16(lt))
}

// PKTAP is what an Apple PKTAP header (xnu's struct pktap_header) says of
// the packet behind it. Its fields are in the capturing host's byte order,
// little-endian on every Mac since 2006.
type PKTAP struct {
	// Len is the header's length: the packet starts at data[Len:].
	Len int
	// LinkType is the packet's link type (the header's DLT: Ethernet for
	// Ethernet and Wi-Fi interfaces, BSD loopback for lo0 and utun).
	LinkType LinkType
	// IfName is the interface the packet crossed (en0, bridge100, utun3),
	// a slice of the header.
	IfName []byte
	// Out says the host sent the packet; otherwise it came in.
	Out bool
}

// PKTAP header layout: length(4) type of what follows(4) DLT(4)
// interface name(24) flags(4), then the protocol family, the process and
// more, which the view does not need.
const (
	pktapMinLen     = 40
	pktapTypePacket = 1 // PTH_TYPE_PACKET: a packet follows
	pktapFlagOut    = 0x2
)

// ParsePKTAP reads a PKTAP header. A record that carries no packet (a
// drop report) is ErrNotPacket; a header that contradicts itself, or a
// packet of a link type PKTAP cannot carry, is an error too.
func ParsePKTAP(data []byte) (PKTAP, error) {
	var h PKTAP
	if err := needHeader(LinkTypePKTAP, pktapMinLen, data); err != nil {
		return h, err
	}
	n := binary.LittleEndian.Uint32(data[0:4])
	if n < pktapMinLen || n > uint32(len(data)) {
		return h, fmt.Errorf("%w: Apple PKTAP header length %d with %d bytes captured", ErrMalformed, n, len(data))
	}
	if t := binary.LittleEndian.Uint32(data[4:8]); t != pktapTypePacket {
		return h, fmt.Errorf("%w: Apple PKTAP record of type %d, which carries no packet", ErrNotPacket, t)
	}
	dlt := binary.LittleEndian.Uint32(data[8:12])
	if dlt > 0xffff || !pinnable(LinkType(dlt)) || LinkType(dlt) == LinkTypeLinuxSLL || LinkType(dlt) == LinkTypeLinuxSLL2 {
		return h, fmt.Errorf("%w: Apple PKTAP carrying link type %d: only Ethernet, BSD loopback, PPP or IP inside PKTAP is read", ErrUnsupportedLinkType, dlt)
	}
	name := data[12:36]
	for i, b := range name {
		if b == 0 {
			name = name[:i]
			break
		}
	}
	h.Len, h.LinkType, h.IfName = int(n), LinkType(dlt), name
	h.Out = binary.LittleEndian.Uint32(data[36:40])&pktapFlagOut != 0
	return h, nil
}

// needHeader refuses a frame shorter than the n-byte header its link type
// lt starts it with.
func needHeader(lt LinkType, n int, data []byte) error {
	if len(data) < n {
		return fmt.Errorf("%w: %s header needs %d bytes, frame has %d", ErrMalformed, lt, n, len(data))
	}
	return nil
}

// etherAt reads a link header of a fixed n bytes whose big-endian
// EtherType stands at data[at:at+2].
func (l Link) etherAt(lt LinkType, data []byte, n, at int) (Link, error) {
	if err := needHeader(lt, n, data); err != nil {
		return l, err
	}
	return l.ether(binary.BigEndian.Uint16(data[at:at+2]), data, n)
}

// pinnable: the link types PPI may wrap. PPI inside PPI is refused so the
// recursion stops after one level; PPI carries its own radio fields, not
// another monitoring header.
func pinnable(t LinkType) bool {
	return t != LinkTypePPI && t != LinkTypeRadiotap && t != LinkTypePrism && t != LinkTypeAVS && t != LinkTypePKTAP && t != LinkTypeNFLOG && t != LinkTypePFLOG && knownLinkType(t)
}

func knownLinkType(t LinkType) bool {
	switch t {
	case LinkTypeEthernet, LinkTypeRaw, LinkTypeRawDLT, LinkTypeRawOpenBSD, LinkTypeIPv4, LinkTypeIPv6,
		LinkTypeLinuxSLL, LinkTypeLinuxSLL2, LinkTypeNull, LinkTypeLoop, LinkTypePPP, LinkTypeCiscoHDLC, LinkTypePPI,
		LinkTypeIEEE80211, LinkTypeRadiotap, LinkTypePrism, LinkTypeAVS, LinkTypePKTAP, LinkTypeNFLOG, LinkTypePFLOG:
		return true
	}
	return false
}

// ether follows an EtherType from data[off:]: through up to maxVLANTags
// 802.1Q/802.1ad tags and a PPPoE session header (an ISP's VLAN then PPPoE
// is the usual stack on a DSL uplink).
func (l Link) ether(et uint16, data []byte, off int) (Link, error) {
	for tags := 0; et == etherTypeDot1Q || et == etherTypeQinQ || et == etherTypeQinQLegacy; tags++ {
		if tags == maxVLANTags {
			return l, fmt.Errorf("%w: more than %d stacked VLAN tags", ErrMalformed, maxVLANTags)
		}
		if len(data) < off+4 {
			return l, fmt.Errorf("%w: 802.1Q tag cut short at byte %d of %d", ErrMalformed, off, len(data))
		}
		et, off = binary.BigEndian.Uint16(data[off+2:off+4]), off+4
	}
	if et == etherTypePPPoESess {
		// version/type(1) code(1) session(2) length(2), then PPP.
		const pppoeLen = 6
		if len(data) < off+pppoeLen {
			return l, fmt.Errorf("%w: PPPoE session header cut short at byte %d of %d", ErrMalformed, off, len(data))
		}
		if data[off] != 0x11 || data[off+1] != 0 {
			return l, fmt.Errorf("%w: PPPoE session header with version/type %#02x code %#02x, want 0x11 and 0", ErrMalformed, data[off], data[off+1])
		}
		off += pppoeLen
		var n int
		var err error
		if et, n, err = pppProtocol(data[off:]); err != nil {
			return l, err
		}
		off += n
	}
	l.EtherType, l.Offset = et, l.Offset+off
	return l, nil
}

// pppProtocol reads a PPP protocol field (one byte when compressed: its low
// bit is set) and maps it to an EtherType.
func pppProtocol(b []byte) (uint16, int, error) {
	if len(b) == 0 {
		return 0, 0, fmt.Errorf("%w: PPP frame without a protocol field", ErrMalformed)
	}
	proto, n := uint16(b[0]), 1
	if b[0]&1 == 0 {
		if len(b) < 2 {
			return 0, 0, fmt.Errorf("%w: PPP protocol field cut short", ErrMalformed)
		}
		proto, n = binary.BigEndian.Uint16(b[0:2]), 2
	}
	switch proto {
	case 0x0021:
		return EtherTypeIPv4, n, nil
	case 0x0057:
		return EtherTypeIPv6, n, nil
	}
	// LCP, IPCP, CHAP and the like: the link talking to itself.
	return EtherTypeNotIP, n, nil
}

// bsdFamily reads the 4-byte address family of a BSD loopback header. It
// is in the writer's byte order (DLT_NULL) or, by the spec, big-endian
// (DLT_LOOP), though writers get LOOP wrong too; a family is a small number,
// so whichever order leaves the upper half zero is the one used.
func bsdFamily(b []byte) (uint32, bool) {
	if v := binary.LittleEndian.Uint32(b); v != 0 && v <= 0xffff {
		return v, true
	}
	if v := binary.BigEndian.Uint32(b); v != 0 && v <= 0xffff {
		return v, true
	}
	return 0, false
}

// familyEtherType maps a BSD address family to an EtherType. AF_INET is 2
// everywhere; AF_INET6 differs by the system that wrote the capture.
func familyEtherType(fam uint32) uint16 {
	switch fam {
	case 2:
		return EtherTypeIPv4
	case 10, // Linux
		23, // Windows (Npcap loopback)
		24, // NetBSD, OpenBSD, BSD/OS
		28, // FreeBSD, DragonFly BSD
		30: // Darwin (macOS utun)
		return EtherTypeIPv6
	}
	return EtherTypeNotIP
}
