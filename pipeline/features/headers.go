package features

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The IP and transport headers are read here rather than by gopacket's
// layers: that package's initialisers fill tables for every protocol it
// knows, 17 to 30 ms of a process's start on the VMs we run on, which a
// command that decodes one small capture (homemole features) would pay
// for four headers. The checks are gopacket v1.1.19's, so that a frame
// gopacket refused is refused here too and one it read gives the same
// record: TestDecodeMatchesGopacket and FuzzDecode compare both decoders
// frame by frame (decode_gopacket_test.go keeps the gopacket one).

// IP protocol numbers the decoder tells apart.
const (
	protoIPv6HopByHop    = 0
	protoTCP             = 6
	protoUDP             = 17
	protoIPv6Routing     = 43
	protoIPv6Fragment    = 44
	protoAH              = 51
	protoIPv6Destination = 60
)

var errShortHeader = errors.New("not all header bytes captured")

// A frame the capture cut (its captured length below its length on the
// wire: a snap length, tcpdump -s 68 say) may end inside a header. The
// readers are told so (cut) and then read what was captured, as tshark
// does: a field the capture holds is read, one it does not stays zero, a
// header's payload is empty, and the header's length fields are still
// held to each other. A frame not cut that ends inside a header is
// malformed: its own lengths say it holds bytes it does not.

// needBytes refuses a header shorter than its fixed part, n bytes. (The
// error is built out of line, so that the check inlines.)
func needBytes(b []byte, n int) error {
	if len(b) >= n {
		return nil
	}
	return shortHeader(len(b), n)
}

func shortHeader(have, need int) error {
	return fmt.Errorf("%d bytes, less than the %d of a header", have, need)
}

// ipv4Header is what the decoder reads of an IPv4 header. payload is the
// captured part of the payload the total length states.
type ipv4Header struct {
	ihl, ttl, proto      uint8
	length, id, fragOffs uint16
	src, dst             []byte
	payload              []byte
}

func parseIPv4(b []byte, h *ipv4Header, cut bool) error {
	if err := needBytes(b, 20); err != nil {
		return err
	}
	h.ihl = b[0] & 0x0f
	h.length = binary.BigEndian.Uint16(b[2:4])
	h.id = binary.BigEndian.Uint16(b[4:6])
	h.fragOffs = binary.BigEndian.Uint16(b[6:8]) & 0x1fff
	h.ttl, h.proto = b[8], b[9]
	h.src, h.dst = b[12:16], b[16:20]
	if h.length == 0 {
		// Captured before segmentation offload filled it in (seen on
		// Windows hosts): the frame holds the packet.
		h.length = uint16(len(b))
	}
	hdr := int(h.ihl) * 4
	switch {
	case h.length < 20:
		return fmt.Errorf("total length %d, less than 20", h.length)
	case h.ihl < 5:
		return fmt.Errorf("header length %d words, less than 5", h.ihl)
	case hdr > int(h.length):
		return fmt.Errorf("header length %d bytes beyond the total length %d", hdr, h.length)
	}
	if len(b) > int(h.length) {
		b = b[:h.length]
	} else if hdr > len(b) {
		if !cut {
			return errShortHeader
		}
		// The capture ends in the options: the addresses are read, the
		// transport header is not captured.
		h.payload = b[len(b):]
		return walkOptions(b[20:], 3, true)
	}
	h.payload = b[hdr:]
	if hdr == 20 {
		return nil // most headers: no options, and no call
	}
	return walkOptions(b[20:hdr], 3, false)
}

// walkOptions checks an IPv4 or TCP header's options: each but End (0),
// which ends them, and NOP (1) states its length, at least minLen and
// within the header. cut says the capture ends inside the options (opts
// is what it holds of them): an option that runs past the end is not
// captured whole, and not an error.
func walkOptions(opts []byte, minLen int, cut bool) error {
	for len(opts) > 0 {
		switch opts[0] {
		case 0:
			return nil
		case 1:
			opts = opts[1:]
		default:
			if len(opts) < 2 {
				if cut {
					return nil
				}
				return fmt.Errorf("option %d has no length byte", opts[0])
			}
			n := int(opts[1])
			if n < minLen {
				return fmt.Errorf("option %d of length %d, at least %d needed", opts[0], n, minLen)
			}
			if n > len(opts) {
				if cut {
					return nil
				}
				return fmt.Errorf("option %d of %d bytes beyond the header", opts[0], n)
			}
			opts = opts[n:]
		}
	}
	return nil
}

// ipv6Header is what the decoder reads of an IPv6 header and its
// hop-by-hop options header, which the fixed header's reader takes as its
// own. payload follows the hop-by-hop header, bounded by the payload
// length (a jumbogram's by the jumbo length); hbhLen is that header's
// length and hbhNext what follows it, 0 without one or when a cut frame
// holds less than its first two bytes (the decoder's walk then finds it
// not captured). jumboLen is a
// jumbogram's payload length (always over 65535), 0 for any other packet.
type ipv6Header struct {
	length         uint16
	next, hopLimit uint8
	src, dst       []byte
	payload        []byte
	hbhLen         int
	hbhNext        uint8
	jumboLen       uint32
}

func parseIPv6(b []byte, h *ipv6Header, cut bool) error {
	if err := needBytes(b, 40); err != nil {
		return err
	}
	h.length = binary.BigEndian.Uint16(b[4:6])
	h.next, h.hopLimit = b[6], b[7]
	h.src, h.dst = b[8:24], b[24:40]
	h.payload = b[40:]
	h.hbhLen, h.hbhNext, h.jumboLen = 0, 0, 0
	if h.next == protoIPv6HopByHop && (len(h.payload) >= 2 || !cut) {
		n, err := ipv6ExtLen(h.payload, cut)
		if err != nil {
			return err
		}
		h.hbhLen, h.hbhNext = n, h.payload[0]
		jumbo, err := jumboLength(h.payload, n, cut)
		if err != nil {
			return err
		}
		switch {
		case jumbo > 0 && h.length == 0:
			// RFC 2675: the jumbo length counts the hop-by-hop header.
			h.jumboLen = jumbo
			h.payload = h.payload[:min(int(jumbo), len(h.payload))][min(n, len(h.payload)):]
			return nil
		case jumbo > 0:
			return errors.New("jumbo length with a payload length of its own")
		case h.length == 0:
			return errors.New("payload length 0 without a jumbo option")
		}
		h.payload = h.payload[min(n, len(h.payload)):]
	}
	if h.length == 0 {
		return fmt.Errorf("payload length 0, and next header %d is not hop-by-hop", h.next)
	}
	// Bounded as gopacket bounds it: by the payload length, from after
	// the hop-by-hop header (which that length counts), so a few bytes
	// of link padding may remain; the transport reader clips them.
	h.payload = h.payload[:min(int(h.length), len(h.payload))]
	return nil
}

// ipv6ExtLen is the length of the IPv6 extension header at the start of b
// (hop-by-hop, routing, destination options and those encoded alike). Of
// a cut frame b may hold less than that, but its first two bytes.
func ipv6ExtLen(b []byte, cut bool) (int, error) {
	if len(b) < 2 {
		return 0, fmt.Errorf("extension header: %d bytes, less than 2", len(b))
	}
	n := int(b[1])*8 + 8
	if len(b) < n && !cut {
		return 0, fmt.Errorf("extension header of %d bytes, %d captured", n, len(b))
	}
	return n, nil
}

// ahLen is the length of the IPsec authentication header at the start of
// b (RFC 4302: next header, its length in 4-octet units less 2, then at
// least the SPI and sequence number), which IPv4 and IPv6 put between the
// IP header and the transport's. The checks are gopacket's. Of a cut
// frame b may hold less than the header, but its first two bytes.
func ahLen(b []byte, cut bool) (int, error) {
	const fixed = 12
	if len(b) < fixed && !(cut && len(b) >= 2) {
		return 0, fmt.Errorf("authentication header: %d bytes, less than %d", len(b), fixed)
	}
	n := (int(b[1]) + 2) * 4
	switch {
	case n < fixed:
		return 0, fmt.Errorf("authentication header of %d bytes, less than its %d fixed ones", n, fixed)
	case len(b) < n && !cut:
		return 0, fmt.Errorf("authentication header of %d bytes, %d captured", n, len(b))
	}
	return n, nil
}

// jumboLength walks the options of the hop-by-hop header b (n bytes) and
// returns the jumbo payload length, 0 without a jumbo option. As in
// gopacket, an option may run past the header's stated end as long as it
// is captured. Of a cut frame, the walk ends where the capture does.
func jumboLength(b []byte, n int, cut bool) (uint32, error) {
	var jumbo []byte // the first jumbo option's data; non-nil once found
	if cut {
		n = min(n, len(b))
	}
	for off := 2; off < n; {
		rest := b[off:]
		if len(rest) < 2 {
			if cut {
				break
			}
			return 0, errors.New("hop-by-hop option: fewer than 2 bytes")
		}
		if rest[0] == 0 { // Pad1
			off++
			continue
		}
		l := int(rest[1]) + 2
		if len(rest) < l {
			if cut {
				break
			}
			return 0, fmt.Errorf("hop-by-hop option %d of %d bytes, %d captured", rest[0], l, len(rest))
		}
		if rest[0] == 0xc2 && jumbo == nil {
			jumbo = rest[2:l]
		}
		off += l
	}
	if jumbo == nil {
		return 0, nil
	}
	if len(jumbo) != 4 {
		return 0, fmt.Errorf("jumbo option of %d bytes, 4 needed", len(jumbo))
	}
	l := binary.BigEndian.Uint32(jumbo)
	if l <= 0xffff {
		return 0, fmt.Errorf("jumbo length %d, not over 65535", l)
	}
	return l, nil
}

// tcpHeader is what the decoder reads of a TCP header; payload is what was
// captured after it. flags are the nine flag bits, FIN in bit 0 up to NS
// (the low bit of byte 12) in bit 8. have is the number of the header's
// bytes captured, all of them but in a cut frame: there a field it does
// not hold whole is zero, the data offset too (not captured), and the
// ports are read when have is at least 4.
type tcpHeader struct {
	srcPort, dstPort uint16
	seq, ack         uint32
	dataOffset       uint8
	flags            uint16
	window           uint16
	payload          []byte
	have             int
}

func parseTCP(b []byte, h *tcpHeader, cut bool) error {
	if cut && len(b) < 20 {
		return parseTCPCut(b, h)
	}
	if err := needBytes(b, 20); err != nil {
		return err
	}
	h.srcPort = binary.BigEndian.Uint16(b[0:2])
	h.dstPort = binary.BigEndian.Uint16(b[2:4])
	h.seq = binary.BigEndian.Uint32(b[4:8])
	h.ack = binary.BigEndian.Uint32(b[8:12])
	h.dataOffset = b[12] >> 4
	h.flags = uint16(b[13]) | uint16(b[12]&1)<<8
	h.window = binary.BigEndian.Uint16(b[14:16])
	if h.dataOffset < 5 {
		return fmt.Errorf("data offset %d words, less than 5", h.dataOffset)
	}
	hdr := int(h.dataOffset) * 4
	if hdr > len(b) {
		if !cut {
			return errShortHeader
		}
		// The capture ends in the options.
		h.have, h.payload = len(b), b[len(b):]
		return walkOptions(b[20:], 2, true)
	}
	h.have, h.payload = hdr, b[hdr:]
	if hdr == 20 {
		return nil
	}
	return walkOptions(b[20:hdr], 2, false)
}

// parseTCPCut reads the fields of a TCP header the capture cut inside its
// fixed 20 bytes.
func parseTCPCut(b []byte, h *tcpHeader) error {
	*h = tcpHeader{have: len(b), payload: b[len(b):]}
	if len(b) >= 4 {
		h.srcPort = binary.BigEndian.Uint16(b[0:2])
		h.dstPort = binary.BigEndian.Uint16(b[2:4])
	}
	if len(b) >= 8 {
		h.seq = binary.BigEndian.Uint32(b[4:8])
	}
	if len(b) >= 12 {
		h.ack = binary.BigEndian.Uint32(b[8:12])
	}
	if len(b) >= 14 {
		h.dataOffset = b[12] >> 4
		h.flags = uint16(b[13]) | uint16(b[12]&1)<<8
		if h.dataOffset < 5 {
			return fmt.Errorf("data offset %d words, less than 5", h.dataOffset)
		}
	}
	if len(b) >= 16 {
		h.window = binary.BigEndian.Uint16(b[14:16])
	}
	return nil
}

// udpHeader is what the decoder reads of a UDP header; payload is what
// was captured of the length it states (all of it for length 0, a
// jumbogram's). have is the number of the header's bytes captured: of a
// cut frame it may be under 8, and the ports are read when it is at least
// 4 (zero otherwise).
type udpHeader struct {
	srcPort, dstPort uint16
	payload          []byte
	have             int
}

func parseUDP(b []byte, h *udpHeader, cut bool) error {
	if cut && len(b) < 8 {
		*h = udpHeader{have: len(b), payload: b[len(b):]}
		if len(b) >= 4 {
			h.srcPort = binary.BigEndian.Uint16(b[0:2])
			h.dstPort = binary.BigEndian.Uint16(b[2:4])
		}
		if len(b) >= 6 {
			if l := int(binary.BigEndian.Uint16(b[4:6])); l > 0 && l < 8 {
				return fmt.Errorf("length %d, less than its own 8 bytes", l)
			}
		}
		return nil
	}
	if err := needBytes(b, 8); err != nil {
		return err
	}
	h.have = 8
	h.srcPort = binary.BigEndian.Uint16(b[0:2])
	h.dstPort = binary.BigEndian.Uint16(b[2:4])
	switch l := int(binary.BigEndian.Uint16(b[4:6])); {
	case l >= 8:
		h.payload = b[8:min(l, len(b))]
	case l == 0:
		h.payload = b[8:]
	default:
		return fmt.Errorf("length %d, less than its own 8 bytes", l)
	}
	return nil
}
