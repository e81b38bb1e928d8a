// Package schemas holds the contracts between HomeMole's workers: the packet
// record that capture agents publish, the labeled record that labelers
// publish, the subjects both travel on, and the Arrow schema of traffic
// windows. Every wire format here is versioned; FORMAT.md describes it byte by byte.
package schemas

import (
	"fmt"
	"net/netip"
)

// Protocol bits of the HomeMole packet vector, in the seed's order
// "IP TCP UDP TLS HTTP DNS other": the leftmost character of the 7-character
// string is the IP bit. A UDP DNS request is 1010010, NTP is 1010001.
const (
	ProtoIP uint8 = 1 << (6 - iota)
	ProtoTCP
	ProtoUDP
	ProtoTLS
	ProtoHTTP
	ProtoDNS
	ProtoOther
)

// ProtoBitsString renders protocol bits as the seed's 7-character string.
func ProtoBitsString(bits uint8) string {
	var b [7]byte
	for i := 0; i < 7; i++ {
		if bits&(1<<(6-i)) != 0 {
			b[i] = '1'
		} else {
			b[i] = '0'
		}
	}
	return string(b[:])
}

// Direction of a packet relative to the home, decided from the home's
// configuration (LAN prefixes, gateway MAC), never guessed.
const (
	DirInbound  int8 = 0
	DirOutbound int8 = 1
	// DirLocal marks traffic that stays inside the home or whose direction the
	// configuration cannot decide (ARP, LAN-to-LAN, no configuration given).
	DirLocal int8 = -1
)

// NoPort is the DPort of a packet without a transport port (ARP, ICMP, fragments).
const NoPort int32 = -1

// Packet is one captured packet's metadata. Addresses appear only as MACs and
// only on the LAN tap: the labeler needs them and strips them before anything
// is written to a dataset.
type Packet struct {
	TsNs   int64  // capture timestamp, ns since the Unix epoch
	Offset uint64 // index of the packet within its capture source, from 0

	// HomeMole vector.
	DPort      int32  // destination port, NoPort when there is none
	ProtoBits  uint8  // see ProtoIP..ProtoOther
	Direction  int8   // DirInbound, DirOutbound or DirLocal
	FrameLen   uint32 // bytes on the wire (original length, not the snap length)
	IntervalNs int64  // gap to the previous packet of the same tap stream, 0 for the first

	// Sequence-profile vector (Ma et al.). Zero where the header does not exist.
	TTL           uint8  // IPv4 TTL or IPv6 hop limit
	IPLen         uint16 // IPv4 total length or IPv6 payload length + 40
	Transport     uint8  // IP protocol number (6 TCP, 17 UDP, ...), 0 without IP
	TCPFlags      uint16 // the nine TCP flag bits, FIN = bit 0
	TCPWindow     uint16
	TCPOptionsLen uint8  // bytes of TCP options
	PayloadLen    uint32 // transport payload bytes (TCP or UDP), IP payload otherwise

	SrcMAC, DstMAC MAC // LAN tap only; zero elsewhere and after labeling

	// What the labeler needs to follow a packet through the gateway and
	// nothing else may see: NAPT keeps the IP ID, the remote end and the
	// TCP sequence space but rewrites the LAN port, and a tunnel's outer IP
	// ID shows the order it sent packets in. Packet batches only (wire
	// version 2); the labeler zeroes them, as it does the MACs.
	SrcPort        int32  // source port, NoPort when there is none
	IPID           uint16 // IPv4 identification, 0 for IPv6
	TCPSeq, TCPAck uint32
	// ARPSender is the sender protocol address of an ARP message for
	// IPv4 (batch version 5; zero in older batches, for every other frame
	// and where ARP names none: a probe's 0.0.0.0). ARP frames carry no
	// IP header, so SrcIP stays zero for them; but the address is the one
	// the sender claims (mostly one it holds), which names a device behind
	// a repeater that translates MACs, whose ARP goes out under the
	// repeater's MAC. It sits here, in the padding before SrcIP, so that
	// a Packet stays 184 bytes (TestPacketSize).
	ARPSender    [4]byte
	SrcIP, DstIP netip.Addr // the zero Addr without IP
	// Tunnel is the OpenVPN-over-TCP framing of a WAN segment, which only
	// its payload shows (batch version 3; zero in older batches and for
	// every other packet).
	Tunnel TunnelRecords
	// DHCP is what a DHCP client's message tells of the stack that sent
	// it (batch version 4; zero in older batches and for every other
	// packet): on a LAN tap, the oldest and plainest device fingerprint.
	DHCP DHCPClient
}

// ARPSenderAddr is ARPSender as an address, invalid where it is zero.
func (p *Packet) ARPSenderAddr() netip.Addr {
	if p.ARPSender == [4]byte{} {
		return netip.Addr{}
	}
	return netip.AddrFrom4(p.ARPSender)
}

// DHCPClient is the fingerprint of a DHCPv4 client message (DISCOVER,
// REQUEST, INFORM: a BOOTREQUEST from port 68 to 67) or a DHCPv6 one
// (from port 546 to 547: its option request option, vendor class and the
// first label of its client FQDN), each option as the 32-bit FNV-1a hash
// of its bytes, 0 where the message lacks it (a hash of 0 is written as
// 1). The parameter request list and the vendor class
// are the firmware's; the host name is the model's once any trailing
// per-unit suffix is cut (features.NormalizeHostName): "ESP_07AEFB" and
// "Lightify-7B5F6B" are every unit's "ESP" and "Lightify", "DCH-S150" stays.
// Hashes, not the strings, so a record stays small and a host name leaves
// the agent only as a number.
type DHCPClient struct {
	Params uint32 // option 55, parameter request list (DHCPv6: option 6)
	Vendor uint32 // option 60, vendor class identifier (DHCPv6: option 16)
	Name   uint32 // option 12, host name, normalized (DHCPv6: option 39's first label)
	// Requested is the IPv4 address a DHCPv4 client asks for (option 50)
	// or renews (ciaddr): the address it will send from, which names it
	// where its MAC does not (behind a repeater that translates MACs) and
	// its request comes from 0.0.0.0. Zero where it names none. Four
	// bytes, not a netip.Addr's 24: every record carries the field.
	Requested [4]byte
}

// RequestedAddr is Requested as an address, invalid where it is zero.
func (d DHCPClient) RequestedAddr() netip.Addr {
	if d.Requested == [4]byte{} {
		return netip.Addr{}
	}
	return netip.AddrFrom4(d.Requested)
}

// IsZero says the packet carried no DHCP client fingerprint.
func (d DHCPClient) IsZero() bool { return d == DHCPClient{} }

// TunnelRecords is what a capture agent, which sees payloads, tells the
// labeler about one TCP segment of an OpenVPN tunnel over TCP: where the
// records of the stream (a 2-byte length, then the packet) begin and end
// in it. The pairing needs the records; a payload-free record cannot show
// them, since a segment may start in the middle of one.
type TunnelRecords struct {
	// Known: the agent follows the segment's stream from a record
	// boundary and this segment continues it without a hole.
	Known bool
	// Continues: the segment's first payload byte belongs to a record
	// that began in an earlier segment.
	Continues bool
	// Starts counts the records whose length field begins in the segment.
	Starts uint16
	// Ends are the records that end in the segment, in stream order.
	Ends []RecordEnd
}

// RecordEnd is one record of a tunnel over TCP, told where it ends.
type RecordEnd struct {
	Size uint16 // the packet's length, without the length field
	// Data: a data-channel packet (P_DATA_V1 or V2), not control.
	Data bool
}

// MaxRecordEnds bounds TunnelRecords.Ends: an agent that finds more records
// ending in one segment (a coalesced giant segment of tiny records) stops
// following that stream rather than write records of unbounded length.
const MaxRecordEnds = 128

// StripAddresses zeroes every field that names a host or a flow, so that a
// record may leave the labeler.
func (p *Packet) StripAddresses() {
	p.SrcMAC, p.DstMAC = MAC{}, MAC{}
	p.SrcPort, p.IPID, p.TCPSeq, p.TCPAck = 0, 0, 0, 0
	p.SrcIP, p.DstIP = netip.Addr{}, netip.Addr{}
	p.Tunnel = TunnelRecords{}
	p.DHCP = DHCPClient{}
	p.ARPSender = [4]byte{}
}

// MAC is a 48-bit hardware address kept as a value so records stay allocation-free.
type MAC [6]byte

func (m MAC) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// IsZero reports whether no address was recorded.
func (m MAC) IsZero() bool { return m == MAC{} }

// EUI64 is m's modified EUI-64 interface identifier (RFC 4291 appendix A:
// ff:fe in its middle, the universal/local bit inverted), the last 8 bytes
// of the IPv6 addresses a host builds from its MAC: link-local ones, and
// global ones by stateless autoconfiguration on many embedded stacks.
func (m MAC) EUI64() [8]byte {
	return [8]byte{m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]}
}

// MACOfEUI64 is the MAC an interface identifier (an IPv6 address's last 8
// bytes) was built from by EUI64, false when id is no modified EUI-64.
func MACOfEUI64(id []byte) (MAC, bool) {
	if len(id) != 8 || id[3] != 0xff || id[4] != 0xfe {
		return MAC{}, false
	}
	return MAC{id[0] ^ 0x02, id[1], id[2], id[5], id[6], id[7]}, true
}

// ParseMAC reads "aa:bb:cc:dd:ee:ff" (or with '-'), case-insensitive.
func ParseMAC(s string) (MAC, error) {
	var m MAC
	if len(s) != 17 {
		return m, fmt.Errorf("MAC %q: want 6 hex bytes separated by ':'", s)
	}
	for i := 0; i < 6; i++ {
		hi, ok1 := unhex(s[i*3])
		lo, ok2 := unhex(s[i*3+1])
		if !ok1 || !ok2 || (i < 5 && s[i*3+2] != ':' && s[i*3+2] != '-') {
			return m, fmt.Errorf("MAC %q: want 6 hex bytes separated by ':'", s)
		}
		m[i] = hi<<4 | lo
	}
	return m, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
