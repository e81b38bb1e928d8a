// Package features is where a captured frame becomes HomeMole's packet record
// (schemas.Packet): the HomeMole vector <dport, protocol bits, direction,
// frame length, interval> and the header fields of Ma et al.'s sequence
// profiles. It reads headers only; payload bytes are looked at just far enough
// to pick the application bit (see appBit).
package features

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/gopacket"

	"github.com/homemole/homemole/schemas"
)

// LinkType is a pcap/pcapng link-layer header type (LINKTYPE_*). It is 16
// bits wide, as in both file formats: gopacket v1.1.19's layers.LinkType is a
// uint8 and cannot name Linux SLL2 (276). A layers.LinkType converts to it
// without loss: LinkType(layers.LinkTypeEthernet).
type LinkType uint16

// The link types Decode reads.
const (
	// LinkTypeNull is BSD loopback: a 4-byte address family in the byte
	// order of the machine that wrote it (macOS utun and lo0 captures).
	LinkTypeNull     LinkType = 0
	LinkTypeEthernet LinkType = 1
	// LinkTypePPP is PPP, with or without RFC 1662 address and control bytes.
	LinkTypePPP LinkType = 9
	// LinkTypeRawDLT and LinkTypeRawOpenBSD are raw IP as DLT_RAW numbers
	// it (12 on most systems, 14 on OpenBSD), which some writers put in
	// files instead of 101. On OpenBSD 12 is DLT_LOOP; ParseLink tells the
	// two apart by the first byte.
	LinkTypeRawDLT     LinkType = 12
	LinkTypeRawOpenBSD LinkType = 14
	// LinkTypeRaw is raw IP, the version taken from the first nibble.
	LinkTypeRaw LinkType = 101
	// LinkTypeCiscoHDLC is Cisco HDLC: address, control, EtherType.
	LinkTypeCiscoHDLC LinkType = 104
	// LinkTypeIEEE80211 is 802.11 frames without a radio header (what some
	// drivers write, and airdecap-ng -l of a decrypted capture).
	LinkTypeIEEE80211 LinkType = 105
	// LinkTypeLoop is OpenBSD loopback: LinkTypeNull with the family
	// meant to be big-endian.
	LinkTypeLoop LinkType = 108
	// LinkTypeLinuxSLL is Linux "cooked" capture v1 (tcpdump -i any).
	LinkTypeLinuxSLL LinkType = 113
	// LinkTypePFLOG is the BSDs' pf log (tcpdump -i pflog0 on OpenBSD,
	// FreeBSD, pfSense, OPNsense): each packet a pf rule logged, behind a
	// header naming the rule, the interface and the direction, without
	// its link header.
	LinkTypePFLOG LinkType = 117
	// LinkTypePrism is 802.11 behind a Prism monitoring header, or behind
	// an AVS one that some drivers write under this number.
	LinkTypePrism LinkType = 119
	// LinkTypeRadiotap is 802.11 frames behind a radiotap header: a Wi-Fi
	// interface in monitor mode on Linux, macOS or the BSDs.
	LinkTypeRadiotap LinkType = 127
	// LinkTypeAVS is 802.11 behind an AVS (wlancap) monitoring header.
	LinkTypeAVS LinkType = 163
	// LinkTypePPI is the Per-Packet Information header in front of another
	// link type (Ethernet, IP or 802.11 are read).
	LinkTypePPI LinkType = 192
	// LinkTypeIPv4 and LinkTypeIPv6 are raw IP with the version fixed by the
	// link type.
	LinkTypeIPv4 LinkType = 228
	LinkTypeIPv6 LinkType = 229
	// LinkTypeNFLOG is Linux NFLOG: the packets an iptables or nftables
	// rule logs to an NFLOG group (tcpdump -i nflog:N), each a network
	// packet behind netlink attributes, without its link header.
	LinkTypeNFLOG LinkType = 239
	// LinkTypePKTAP is Apple's PKTAP: a header naming the interface, the
	// direction and the process, then the packet in its interface's own
	// link type (macOS tcpdump -i pktap, which captures every interface).
	LinkTypePKTAP LinkType = 258
	// LinkTypeLinuxSLL2 is Linux cooked capture v2 (tcpdump -i any on
	// libpcap >= 1.10).
	LinkTypeLinuxSLL2 LinkType = 276
)

func (t LinkType) String() string {
	switch t {
	case LinkTypeNull:
		return "BSD loopback"
	case LinkTypeEthernet:
		return "Ethernet"
	case LinkTypePPP:
		return "PPP"
	case LinkTypeRaw, LinkTypeRawDLT, LinkTypeRawOpenBSD:
		return fmt.Sprintf("raw IP (%d)", uint16(t))
	case LinkTypeCiscoHDLC:
		return "Cisco HDLC"
	case LinkTypeIEEE80211:
		return "802.11"
	case LinkTypeRadiotap:
		return "802.11 radiotap"
	case LinkTypePrism:
		return "802.11 Prism"
	case LinkTypeAVS:
		return "802.11 AVS"
	case LinkTypeLoop:
		return "OpenBSD loopback"
	case LinkTypeLinuxSLL:
		return "Linux SLL"
	case LinkTypePFLOG:
		return "pflog"
	case LinkTypePPI:
		return "PPI"
	case LinkTypeIPv4:
		return "raw IPv4"
	case LinkTypeIPv6:
		return "raw IPv6"
	case LinkTypeLinuxSLL2:
		return "Linux SLL2"
	case LinkTypePKTAP:
		return "Apple PKTAP"
	case LinkTypeNFLOG:
		return "Linux NFLOG"
	}
	return fmt.Sprintf("link type %d", uint16(t))
}

// Errors a caller can count by kind. Every error Decode returns wraps one of them.
var (
	// ErrUnsupportedLinkType: the frame's link type is not one Decode reads.
	ErrUnsupportedLinkType = errors.New("unsupported link type")
	// ErrMalformed: a header is truncated or contradicts itself.
	ErrMalformed = errors.New("malformed frame")
	// ErrNotPacket: the frame is the link's own, no packet a host sent: a
	// Wi-Fi capture's management, control and null frames, and a
	// retransmission of a frame already read, a remote sniffer's TZSP
	// keepalive, the later fragments of a mirror's packets. Callers count these apart:
	// in a monitor-mode capture they are most frames, and none is lost.
	ErrNotPacket = errors.New("frame carries no packet")
)

// NotPacketKinds names the frames ErrNotPacket stands for, in the counts
// the commands print.
const NotPacketKinds = "802.11 management, control and null frames, retransmissions, TZSP keepalives and the later fragments of mirrored frames"

const (
	// QinQ stacks two tags; more than a few means a loop of garbage, not a network.
	maxVLANTags = 4
	// Real stacks use two or three extension headers; the bound keeps a
	// crafted chain from costing more than a few header reads.
	maxIPv6ExtHeaders = 8
)

// Decoder decodes the frames of one tap stream. It keeps its header
// readers between calls so that decoding a frame does not allocate, and the
// previous frame's timestamp for IntervalNs. Not safe for concurrent use:
// create one per stream.
//
// The record describes the outermost IP header and its transport header
// only: the decoder does not walk into tunnels (IPv4 in IPv4), and it reads
// an IPv4 first fragment's transport header. IPv6's extension headers and
// an IPsec authentication header (IPv4's or IPv6's) lie between the two
// and are walked past. The link layer is walked by
// ParseLink, the IP and transport headers by headers.go's readers.
type Decoder struct {
	home HomeConfig

	ip4 ipv4Header
	ip6 ipv6Header
	tcp tcpHeader
	udp udpHeader
	// cut says the frame being decoded was cut by the capture (its
	// captured length below its length on the wire): its headers are
	// read as far as they were captured (see headers.go).
	cut bool

	clock   streamClock
	retries retransmits
	mirror  mirrorRest
}

// NewDecoder returns a Decoder for one tap stream of the given home.
func NewDecoder(home HomeConfig) *Decoder {
	return &Decoder{home: home.clone()}
}

// Decode fills p from one frame. linkType is the frame's link type, ci its
// capture info (FrameLen is ci.Length, the length on the wire; for 802.11
// the length of the Ethernet frame an access point bridges it to, see
// dot11) and offset its index in the capture source. Every field of p is
// overwritten.
//
// A frame the capture cut short (ci.Length above len(data): a snap length)
// is read as far as it was captured, as tshark reads it: a header it ends
// in gives the fields it holds, the ports when the first 4 bytes of TCP or
// UDP are there, and the rest stay zero (no port: schemas.NoPort). The
// frame's own length fields still have to agree.
//
// A frame Decode cannot read (unsupported link type, impossible or truncated
// headers, a timestamp TsNs cannot hold: see TimestampNs) yields an error
// wrapping ErrUnsupportedLinkType or ErrMalformed,
// and a frame of the link's own one wrapping ErrNotPacket; the caller is
// expected to count and skip it. Such a frame does not advance
// the stream's clock, so IntervalNs of the next frame is the gap to the last
// frame that was decoded, i.e. to the previous record the stream publishes.
func (d *Decoder) Decode(linkType LinkType, data []byte, ci gopacket.CaptureInfo, offset uint64, p *schemas.Packet) error {
	startRecord(p, data, ci, offset)
	if _, err := TimestampNs(ci.Timestamp); err != nil && !ci.Timestamp.IsZero() {
		// (A frame given no time at all, the zero time.Time, is a
		// caller's that has none to give, and is read as it was.)
		return fmt.Errorf("decode packet %d (%s): %w", offset, linkType, err)
	}
	d.cut = ci.Length > len(data)
	if err := d.link(linkType, data, p); err != nil {
		return fmt.Errorf("decode packet %d (%s): %w", offset, linkType, err)
	}
	d.clock.tick(p)
	return nil
}

// startRecord overwrites p with a frame's record before any header is
// read: its time, place and length. The wire length cannot be shorter
// than what was captured; some writers leave it zero.
func startRecord(p *schemas.Packet, data []byte, ci gopacket.CaptureInfo, offset uint64) {
	*p = schemas.Packet{TsNs: ci.Timestamp.UnixNano(), Offset: offset, DPort: schemas.NoPort, SrcPort: schemas.NoPort,
		Direction: schemas.DirLocal, FrameLen: uint32(max(ci.Length, len(data)))}
}

// The instants a record's TsNs, nanoseconds since 1970 in an int64, holds:
// 1677-09-21 to 2262-04-11.
var (
	firstTsNs = time.Unix(0, math.MinInt64)
	lastTsNs  = time.Unix(0, math.MaxInt64)
)

// TimestampNs is t in nanoseconds since 1970, as a record's TsNs holds it,
// or an error wrapping ErrMalformed for an instant outside the years an
// int64 of nanoseconds spans, which time.Time.UnixNano would wrap to
// another year without a word. Such a timestamp is a capture read in the
// wrong unit: a writer that wrote nanoseconds and said microseconds (a
// pcapng interface without its if_tsresol option) gives a year past
// 50000.
func TimestampNs(t time.Time) (int64, error) {
	if t.Before(firstTsNs) || t.After(lastTsNs) {
		return 0, fmt.Errorf("%w: timestamp %s lies outside 1677-2262, the years nanoseconds since 1970 hold in 64 bits: "+
			"the capture's timestamps are likely read in the wrong unit (a pcapng interface that records nanoseconds needs the option if_tsresol 9; a pcap file's magic number says microseconds or nanoseconds)",
			ErrMalformed, t.UTC().Format(time.RFC3339))
	}
	return t.UnixNano(), nil
}

// streamClock is the time of a stream's last decoded frame.
type streamClock struct {
	prevTsNs int64
	havePrev bool
}

// tick sets p's gap to the last decoded frame and makes p the last.
// Out-of-order timestamps (merged interfaces, clock steps) give a zero gap
// rather than a negative one: the models read intervals as durations.
func (c *streamClock) tick(p *schemas.Packet) {
	if c.havePrev && p.TsNs > c.prevTsNs {
		p.IntervalNs = p.TsNs - c.prevTsNs
	}
	c.prevTsNs, c.havePrev = p.TsNs, true
}

func malformed(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrMalformed, what, err)
}

func (d *Decoder) link(linkType LinkType, data []byte, p *schemas.Packet) error {
	// ParseLink, spelled out: a Link is large enough that a call that
	// returns it costs a copy per packet.
	l, err := parseLink(linkType, data, 0)
	if err != nil {
		return err
	}
	var frag uint64
	if mayCarry(l.EtherType, data[l.Offset:]) {
		if l, frag, err = parseMirrored(l, data); err != nil {
			return err
		}
	}
	if err := d.mirror.take(&l, frag, data); err != nil {
		return err
	}
	if err := d.retries.take(&l, p); err != nil {
		return err
	}
	return d.network(l.EtherType, data[l.Offset:], p)
}

func (d *Decoder) network(etherType uint16, payload []byte, p *schemas.Packet) error {
	switch etherType {
	case EtherTypeIPv4:
		return d.ipv4(payload, p)
	case EtherTypeIPv6:
		return d.ipv6(payload, p)
	}
	// ARP, EAPOL, LLC and the like are not routed, so they never cross the
	// gateway: Direction stays DirLocal whatever the MACs say.
	p.ProtoBits = schemas.ProtoOther
	if etherType == EtherTypeARP {
		p.ARPSender = arpSender(payload)
	}
	return nil
}

// arpSender is the sender protocol address of an ARP message for IPv4
// (RFC 826: hardware type, protocol type, the two address lengths, the
// operation, then the sender's and the target's hardware and protocol
// addresses), zero for any other ARP and for one too short to hold its
// addresses. A malformed ARP is not an error: nothing else of the frame
// is read, and the frame is kept.
func arpSender(b []byte) [4]byte {
	const fixed = 8
	if len(b) < fixed || binary.BigEndian.Uint16(b[2:4]) != EtherTypeIPv4 || b[5] != 4 {
		return [4]byte{}
	}
	hw := int(b[4])
	if len(b) < fixed+2*hw+2*4 {
		return [4]byte{}
	}
	return [4]byte(b[fixed+hw : fixed+hw+4])
}

func (d *Decoder) ipv4(b []byte, p *schemas.Packet) error {
	// A v6 header read as v4 would decode into nonsense instead of failing.
	if len(b) > 0 && b[0]>>4 != 4 {
		return fmt.Errorf("%w: IPv4 header carries IP version %d", ErrMalformed, b[0]>>4)
	}
	ip := &d.ip4
	if err := parseIPv4(b, ip, d.cut); err != nil {
		return malformed("IPv4 header", err)
	}
	p.ProtoBits = schemas.ProtoIP
	p.TTL = ip.ttl
	p.IPLen = ip.length
	p.Transport = ip.proto
	src, dst := addr4(ip.src), addr4(ip.dst)
	p.Direction = d.home.direction(src, dst, p.SrcMAC, p.DstMAC)
	p.IPID, p.SrcIP, p.DstIP = ip.id, src, dst

	wire := int(ip.length) - int(ip.ihl)*4
	if ip.fragOffs != 0 {
		// A later fragment has no transport header: no port, and no
		// application bit because nothing in it can be classified.
		p.ProtoBits |= transportBit(ip.proto)
		p.PayloadLen = uint32(wire)
		return nil
	}
	next, payload := ip.proto, ip.payload
	// IPsec's authentication header signs the packet and hides nothing:
	// the transport header follows it, as tshark reads it.
	for n := 0; next == protoAH; n++ {
		if n == maxIPv6ExtHeaders {
			return fmt.Errorf("%w: more than %d authentication headers", ErrMalformed, maxIPv6ExtHeaders)
		}
		if d.cut && len(payload) < 2 {
			break // not captured: the record's transport is AH
		}
		l, err := ahLen(payload, d.cut)
		if err != nil {
			return malformed("IPv4 authentication header", err)
		}
		next, payload, wire = payload[0], payload[min(l, len(payload)):], wire-l
	}
	if wire < 0 {
		return fmt.Errorf("%w: authentication headers longer than the IPv4 payload (%d bytes)", ErrMalformed, int(ip.length)-int(ip.ihl)*4)
	}
	p.Transport = next
	return d.transport(next, payload, wire, p)
}

func (d *Decoder) ipv6(b []byte, p *schemas.Packet) error {
	if len(b) > 0 && b[0]>>4 != 6 {
		return fmt.Errorf("%w: IPv6 header carries IP version %d", ErrMalformed, b[0]>>4)
	}
	ip := &d.ip6
	if err := parseIPv6(b, ip, d.cut); err != nil {
		return malformed("IPv6 header", err)
	}
	p.ProtoBits = schemas.ProtoIP
	p.TTL = ip.hopLimit
	length := int(ip.length)
	if ip.jumboLen > 0 {
		length = int(ip.jumboLen)
	}
	p.IPLen = uint16(min(length+40, 0xffff))
	p.SrcIP, p.DstIP = addr16(ip.src), addr16(ip.dst)
	p.Direction = d.home.direction(p.SrcIP, p.DstIP, p.SrcMAC, p.DstMAC)

	next, payload, extLen := ip.next, ip.payload, 0
	if ip.next == protoIPv6HopByHop && ip.hbhLen > 0 {
		next, extLen = ip.hbhNext, ip.hbhLen
	}
chain:
	for n := 0; ; n++ {
		if n == maxIPv6ExtHeaders {
			return fmt.Errorf("%w: more than %d IPv6 extension headers", ErrMalformed, maxIPv6ExtHeaders)
		}
		switch next {
		case protoIPv6HopByHop, protoIPv6Routing, protoIPv6Destination,
			135, 139, 140, // mobility, HIP, shim6: same length encoding
			protoAH: // its own length encoding (4-octet units), and no more hidden behind it
			if d.cut && len(payload) < 2 {
				// Not captured: what follows is unknown, and the
				// record's transport is this header.
				break chain
			}
			extHeader, what := ipv6ExtLen, "IPv6 extension header"
			if next == protoAH {
				extHeader, what = ahLen, "IPv6 authentication header"
			}
			l, err := extHeader(payload, d.cut)
			if err != nil {
				return malformed(what, err)
			}
			next, payload, extLen = payload[0], payload[min(l, len(payload)):], extLen+l
			continue
		case protoIPv6Fragment:
			const fragLen = 8
			if d.cut && len(payload) < 4 {
				break chain // its offset not captured
			}
			if len(payload) < fragLen && !d.cut {
				return fmt.Errorf("%w: IPv6 fragment header needs %d bytes, %d left", ErrMalformed, fragLen, len(payload))
			}
			next = payload[0]
			later := binary.BigEndian.Uint16(payload[2:4])>>3 != 0
			payload, extLen = payload[min(fragLen, len(payload)):], extLen+fragLen
			if later {
				p.Transport = next
				p.ProtoBits |= transportBit(next)
				p.PayloadLen = uint32(max(length-extLen, 0))
				return nil
			}
			continue
		}
		break
	}
	p.Transport = next
	wire := length - extLen
	if wire < 0 {
		return fmt.Errorf("%w: IPv6 extension headers (%d bytes) longer than the payload length %d", ErrMalformed, extLen, length)
	}
	return d.transport(next, payload, wire, p)
}

// transport reads the transport header. b is the captured IP payload, wire
// the IP payload length the IP header states; PayloadLen comes from wire so
// that it stays right when the snap length cut the payload short.
func (d *Decoder) transport(proto uint8, b []byte, wire int, p *schemas.Packet) error {
	switch proto {
	case protoTCP:
		p.ProtoBits |= schemas.ProtoTCP
		t := &d.tcp
		if err := parseTCP(b, t, d.cut); err != nil {
			return malformed("TCP header", err)
		}
		if t.dataOffset == 0 {
			// A cut frame that ends before the data offset: the
			// header's length, and so the payload's, is not captured.
			if t.have >= 4 {
				p.DPort, p.SrcPort = int32(t.dstPort), int32(t.srcPort)
			}
			p.TCPSeq, p.TCPAck = t.seq, t.ack
			return nil
		}
		hdr := int(t.dataOffset) * 4
		n := wire - hdr
		if n < 0 {
			return fmt.Errorf("%w: TCP header (%d bytes) longer than the IP payload (%d bytes)", ErrMalformed, hdr, wire)
		}
		p.DPort, p.SrcPort = int32(t.dstPort), int32(t.srcPort)
		p.TCPSeq, p.TCPAck = t.seq, t.ack
		p.TCPFlags = t.flags
		p.TCPWindow = t.window
		p.TCPOptionsLen = uint8(hdr - 20)
		p.PayloadLen = uint32(n)
		if n > 0 {
			p.ProtoBits |= appBit(true, t.srcPort, t.dstPort, clip(t.payload, n))
		}
	case protoUDP:
		p.ProtoBits |= schemas.ProtoUDP
		u := &d.udp
		if err := parseUDP(b, u, d.cut); err != nil {
			return malformed("UDP header", err)
		}
		n := wire - 8
		if n < 0 {
			return fmt.Errorf("%w: UDP header longer than the IP payload (%d bytes)", ErrMalformed, wire)
		}
		p.PayloadLen = uint32(n)
		if u.have < 4 {
			return nil // a cut frame that ends before the ports
		}
		p.DPort, p.SrcPort = int32(u.dstPort), int32(u.srcPort)
		if n > 0 {
			p.ProtoBits |= appBit(false, u.srcPort, u.dstPort, clip(u.payload, n))
		}
		switch {
		case u.srcPort == dhcpClientPort && u.dstPort == dhcpServerPort:
			p.DHCP = dhcpClient(clip(u.payload, n))
		case u.srcPort == dhcp6ClientPort && u.dstPort == dhcp6ServerPort:
			p.DHCP = dhcp6Client(clip(u.payload, n))
		}
	default:
		p.PayloadLen = uint32(wire)
		if wire > 0 {
			p.ProtoBits |= schemas.ProtoOther
		}
	}
	return nil
}

// clip drops bytes beyond the stated payload (link-layer padding that a
// header chain with an odd length field left in the slice).
func clip(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

func transportBit(proto uint8) uint8 {
	switch proto {
	case protoTCP:
		return schemas.ProtoTCP
	case protoUDP:
		return schemas.ProtoUDP
	}
	return 0
}
