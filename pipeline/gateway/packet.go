package gateway

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/homemole/homemole/pipeline/features"
)

// IP protocol numbers the emulator and the pairing treat specially.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// Header is what survives or is rewritten when a packet crosses a gateway:
// the fields the emulator translates and the pairing matches on.
type Header struct {
	// IPStart is where the IP header begins in the frame.
	IPStart int
	V6      bool
	// Len is the IP packet's length on the wire (IPv4 total length, IPv6
	// 40 + payload length), not what the capture kept.
	Len      int
	HdrLen   int // IP header length incl. IPv6 extension headers skipped
	Proto    uint8
	TTL      uint8
	ID       uint16 // IPv4 identification; 0 for IPv6
	Src, Dst netip.Addr
	// Later is a non-first fragment: no transport header.
	Later bool
	// HasPorts: SrcPort/DstPort are TCP or UDP ports, or for ICMP echo
	// (and timestamp) the identifier in both, as NAPT treats it.
	HasPorts         bool
	SrcPort, DstPort uint16
	Seq, Ack         uint32 // TCP
	Flags            uint8  // TCP flags byte (FIN..CWR)
	ICMPType         uint8
	ICMPCode         uint8
	ICMPSeq          uint16 // ICMP echo sequence number
	// L4 is the transport header's offset from IPStart; valid when the
	// packet is not a later fragment.
	L4 int
}

// ipStart finds the IP packet in a frame of the given link type and returns
// its offset, or an error when the frame carries no IP.
func ipStart(lt features.LinkType, data []byte) (int, error) {
	l, err := features.ParseLink(lt, data)
	if err != nil {
		return 0, err
	}
	if !l.IsIP() {
		return 0, fmt.Errorf("%s frame carries EtherType %#04x, not IP", lt, l.EtherType)
	}
	return l.Offset, nil
}

// ParseHeader reads the IP and transport header of a frame. It fails on
// frames that carry no IP packet or whose headers are cut short.
func ParseHeader(lt features.LinkType, data []byte) (Header, error) {
	var h Header
	off, err := ipStart(lt, data)
	if err != nil {
		return h, err
	}
	h.IPStart = off
	b := data[off:]
	if len(b) < 1 {
		return h, fmt.Errorf("no IP header")
	}
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return h, fmt.Errorf("IPv4 header cut at %d bytes", len(b))
		}
		ihl := int(b[0]&0xf) * 4
		if ihl < 20 || len(b) < ihl {
			return h, fmt.Errorf("IPv4 header length %d with %d bytes captured", ihl, len(b))
		}
		h.HdrLen, h.L4 = ihl, ihl
		h.Len = int(binary.BigEndian.Uint16(b[2:4]))
		h.ID = binary.BigEndian.Uint16(b[4:6])
		h.Later = binary.BigEndian.Uint16(b[6:8])&0x1fff != 0
		h.TTL, h.Proto = b[8], b[9]
		h.Src, h.Dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
	case 6:
		if len(b) < 40 {
			return h, fmt.Errorf("IPv6 header cut at %d bytes", len(b))
		}
		h.V6 = true
		h.Len = 40 + int(binary.BigEndian.Uint16(b[4:6]))
		h.TTL = b[7]
		h.Src, h.Dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		next, l4 := b[6], 40
	ext:
		for n := 0; n < 8; n++ {
			switch next {
			case 0, 43, 60, 135, 139, 140:
				if len(b) < l4+2 {
					return h, fmt.Errorf("IPv6 extension header cut short")
				}
				next, l4 = b[l4], l4+8+int(b[l4+1])*8
				continue
			case 44:
				if len(b) < l4+8 {
					return h, fmt.Errorf("IPv6 fragment header cut short")
				}
				h.Later = binary.BigEndian.Uint16(b[l4+2:l4+4])>>3 != 0
				next, l4 = b[l4], l4+8
				continue
			}
			break ext
		}
		if l4 > len(b) {
			return h, fmt.Errorf("IPv6 extension headers end at byte %d of %d captured", l4, len(b))
		}
		h.Proto, h.L4, h.HdrLen = next, l4, l4
	default:
		return h, fmt.Errorf("IP version %d", b[0]>>4)
	}
	if h.Later {
		return h, nil
	}
	t := b[min(h.L4, len(b)):]
	switch h.Proto {
	case ProtoTCP:
		if len(t) < 20 {
			return h, fmt.Errorf("TCP header cut at %d bytes", len(t))
		}
		h.HasPorts = true
		h.SrcPort, h.DstPort = binary.BigEndian.Uint16(t[0:2]), binary.BigEndian.Uint16(t[2:4])
		h.Seq, h.Ack = binary.BigEndian.Uint32(t[4:8]), binary.BigEndian.Uint32(t[8:12])
		h.Flags = t[13]
	case ProtoUDP:
		if len(t) < 8 {
			return h, fmt.Errorf("UDP header cut at %d bytes", len(t))
		}
		h.HasPorts = true
		h.SrcPort, h.DstPort = binary.BigEndian.Uint16(t[0:2]), binary.BigEndian.Uint16(t[2:4])
	case ProtoICMP, ProtoICMPv6:
		if len(t) < 8 {
			// Too short to carry an identifier: translated by address only.
			return h, nil
		}
		h.ICMPType, h.ICMPCode = t[0], t[1]
		if icmpHasID(h.Proto, h.ICMPType) {
			h.HasPorts = true
			id := binary.BigEndian.Uint16(t[4:6])
			h.SrcPort, h.DstPort = id, id
			h.ICMPSeq = binary.BigEndian.Uint16(t[6:8])
		}
	}
	return h, nil
}

// icmpHasID: echo and timestamp messages carry the identifier NAPT
// translates in place of a port (RFC 5508); errors do not.
func icmpHasID(proto, typ uint8) bool {
	if proto == ProtoICMP {
		return typ == 0 || typ == 8 || typ == 13 || typ == 14
	}
	return typ == 128 || typ == 129
}

// checksum is the Internet checksum of b, folded and complemented.
func checksum(b []byte, initial uint32) uint16 {
	sum := initial
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// adjust updates a checksum for a 16-bit word changing from old to new
// (RFC 1624, eqn. 3). Incremental update keeps a transport checksum right
// even when the capture's snap length cut the payload it covers, and it is
// what Linux's NAT does.
func adjust(sum, old, new uint16) uint16 {
	s := uint32(^sum) + uint32(^old) + uint32(new)
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// adjustBytes applies adjust over equal-length, even-length byte runs.
func adjustBytes(sum uint16, old, new []byte) uint16 {
	for i := 0; i+1 < len(old); i += 2 {
		sum = adjust(sum, binary.BigEndian.Uint16(old[i:]), binary.BigEndian.Uint16(new[i:]))
	}
	return sum
}
