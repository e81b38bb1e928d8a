package features

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/pipeline/internal/tcpflags"
	"github.com/homemole/homemole/schemas"
)

var (
	devMAC   = mustMAC("02:00:00:00:00:10")
	phoneMAC = mustMAC("02:00:00:00:00:20")
	gwMAC    = mustMAC("02:00:00:00:00:01")
	bcastMAC = mustMAC("ff:ff:ff:ff:ff:ff")
	ssdpMAC  = mustMAC("01:00:5e:7f:ff:fa")

	devIP   = net.IP{192, 168, 1, 10}
	phoneIP = net.IP{192, 168, 1, 20}
	gwIP    = net.IP{192, 168, 1, 1}
	cloudIP = net.IP{52, 10, 20, 30}
	ssdpIP  = net.IP{239, 255, 255, 250}

	dev6   = net.ParseIP("fd00::10")
	cloud6 = net.ParseIP("2001:db8::30")

	lanOnly = HomeConfig{LANNets: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("fd00::/8")}}
	withGW  = HomeConfig{LANNets: lanOnly.LANNets, GatewayMAC: schemas.MAC(gwMAC)}
)

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// build serializes layers with lengths fixed, the way a capture would hold them.
func build(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, ls...); err != nil {
		t.Fatalf("serialize test frame: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth(src, dst net.HardwareAddr, t layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: t}
}

func ip4(src, dst net.IP, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: src, DstIP: dst, Flags: layers.IPv4DontFragment}
}

func ip6(src, dst net.IP, next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: next, SrcIP: src, DstIP: dst}
}

func udp(sport, dport uint16) *layers.UDP {
	return &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
}

func tcp(sport, dport uint16, flags string) *layers.TCP {
	t := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: 1000, Ack: 2000, Window: 64240}
	tcpflags.Set(t, flags)
	return t
}

func dnsQuery(t testing.TB) gopacket.Payload {
	d := &layers.DNS{ID: 7, RD: true, Questions: []layers.DNSQuestion{{Name: []byte("devs.example.com"), Type: layers.DNSTypeA, Class: layers.DNSClassIN}}}
	return gopacket.Payload(build(t, d))
}

func tlsRecord(ct byte, n int) gopacket.Payload {
	b := make([]byte, 5+n)
	b[0], b[1], b[2] = ct, 3, 3
	binary.BigEndian.PutUint16(b[3:5], uint16(n))
	return b
}

func ntp() gopacket.Payload {
	b := make([]byte, 48)
	b[0] = 0x23 // v4, client
	return b
}

// vec is the part of a record a rule decides.
type vec struct {
	Bits      string
	DPort     int32
	Dir       int8
	TTL       uint8
	IPLen     uint16
	Transport uint8
	Flags     uint16
	Win       uint16
	OptLen    uint8
	Payload   uint32
}

func vecOf(p *schemas.Packet) vec {
	return vec{schemas.ProtoBitsString(p.ProtoBits), p.DPort, p.Direction, p.TTL, p.IPLen, p.Transport, p.TCPFlags, p.TCPWindow, p.TCPOptionsLen, p.PayloadLen}
}

const (
	out   = schemas.DirOutbound
	in    = schemas.DirInbound
	local = schemas.DirLocal
	none  = schemas.NoPort
)

func TestDecodeRules(t *testing.T) {
	get := []byte("GET /status HTTP/1.1\r\nHost: cloud\r\n\r\n")
	okResp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	notify := []byte("NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNTS: ssdp:alive\r\n\r\n")
	quic := append([]byte{0xc3, 0, 0, 0, 1}, make([]byte, 1195)...)
	mqtt := []byte{0xc0, 0x00} // PINGREQ in the clear

	synOpts := tcp(50000, 443, "S")
	synOpts.Options = []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
		{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
		{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
		{OptionType: layers.TCPOptionKindNop},
	}

	firstFrag := ip4(devIP, cloudIP, layers.IPProtocolUDP)
	firstFrag.Flags, firstFrag.Id = layers.IPv4MoreFragments, 99
	laterFrag := ip4(devIP, cloudIP, layers.IPProtocolUDP)
	laterFrag.Id, laterFrag.FragOffset, laterFrag.Flags = 99, 185, 0

	tests := []struct {
		name string
		home HomeConfig
		link LinkType
		data []byte
		want vec
	}{
		{"UDP DNS query is 1010010", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(40000, 53), dnsQuery(t)),
			vec{"1010010", 53, out, 64, 62, 17, 0, 0, 0, 34}},
		{"DNS answer keeps DNS bit by source port", lanOnly, LinkTypeEthernet,
			build(t, eth(gwMAC, devMAC, layers.EthernetTypeIPv4), ip4(cloudIP, devIP, layers.IPProtocolUDP), udp(53, 40000), dnsQuery(t)),
			vec{"1010010", 40000, in, 64, 62, 17, 0, 0, 0, 34}},
		{"DNS over TCP", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(40001, 53, "PA"), gopacket.Payload(append([]byte{0, 34}, dnsQuery(t)...))),
			vec{"1100010", 53, out, 64, 76, 6, 0x18, 64240, 0, 36}},
		{"mDNS multicast is DNS and stays local", withGW, LinkTypeEthernet,
			build(t, eth(devMAC, mustMAC("01:00:5e:00:00:fb"), layers.EthernetTypeIPv4), ip4(devIP, net.IP{224, 0, 0, 251}, layers.IPProtocolUDP), udp(5353, 5353), dnsQuery(t)),
			vec{"1010010", 5353, local, 64, 62, 17, 0, 0, 0, 34}},
		{"NTP is 1010001", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp()),
			vec{"1010001", 123, out, 64, 76, 17, 0, 0, 0, 48}},
		{"QUIC is other", lanOnly, LinkTypeEthernet,
			build(t, eth(phoneMAC, gwMAC, layers.EthernetTypeIPv4), ip4(phoneIP, cloudIP, layers.IPProtocolUDP), udp(55555, 443), gopacket.Payload(quic)),
			vec{"1010001", 443, out, 64, 1228, 17, 0, 0, 0, 1200}},
		{"empty UDP datagram has no application bit", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(1000, 9999)),
			vec{"1010000", 9999, out, 64, 28, 17, 0, 0, 0, 0}},
		{"SYN with options is 1100000", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), synOpts),
			vec{"1100000", 443, out, 64, 52, 6, 0x002, 64240, 12, 0}},
		{"pure ACK in a padded 60-byte frame", lanOnly, LinkTypeEthernet,
			build(t, eth(gwMAC, devMAC, layers.EthernetTypeIPv4), ip4(cloudIP, devIP, layers.IPProtocolTCP), tcp(443, 50000, "A")),
			vec{"1100000", 50000, in, 64, 40, 6, 0x010, 64240, 0, 0}},
		{"all nine TCP flags", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(1, 2, "FSRPAUECN")),
			vec{"1100000", 2, out, 64, 40, 6, 0x1ff, 64240, 0, 0}},
		{"TLS handshake record", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50000, 443, "PA"), tlsRecord(22, 512)),
			vec{"1101000", 443, out, 64, 557, 6, 0x018, 64240, 0, 517}},
		{"TLS application data on 8883", lanOnly, LinkTypeEthernet,
			build(t, eth(gwMAC, devMAC, layers.EthernetTypeIPv4), ip4(cloudIP, devIP, layers.IPProtocolTCP), tcp(8883, 50001, "PA"), tlsRecord(23, 26)),
			vec{"1101000", 50001, in, 64, 71, 6, 0x018, 64240, 0, 31}},
		{"TLS continuation segment is other", lanOnly, LinkTypeEthernet,
			build(t, eth(gwMAC, devMAC, layers.EthernetTypeIPv4), ip4(cloudIP, devIP, layers.IPProtocolTCP), tcp(443, 50000, "A"), gopacket.Payload(make([]byte, 100))),
			vec{"1100001", 50000, in, 64, 140, 6, 0x010, 64240, 0, 100}},
		{"record header with an impossible length is not TLS", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50000, 443, "PA"), gopacket.Payload([]byte{23, 3, 3, 0xff, 0xff, 0})),
			vec{"1100001", 443, out, 64, 46, 6, 0x018, 64240, 0, 6}},
		{"HTTP request", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50002, 80, "PA"), gopacket.Payload(get)),
			vec{"1100100", 80, out, 64, uint16(40 + len(get)), 6, 0x018, 64240, 0, uint32(len(get))}},
		{"HTTP response", lanOnly, LinkTypeEthernet,
			build(t, eth(gwMAC, devMAC, layers.EthernetTypeIPv4), ip4(cloudIP, devIP, layers.IPProtocolTCP), tcp(80, 50002, "PA"), gopacket.Payload(okResp)),
			vec{"1100100", 50002, in, 64, uint16(40 + len(okResp)), 6, 0x018, 64240, 0, uint32(len(okResp))}},
		{"SSDP NOTIFY is HTTP over UDP and local", withGW, LinkTypeEthernet,
			build(t, eth(devMAC, ssdpMAC, layers.EthernetTypeIPv4), ip4(devIP, ssdpIP, layers.IPProtocolUDP), udp(1900, 1900), gopacket.Payload(notify)),
			vec{"1010100", 1900, local, 64, uint16(28 + len(notify)), 17, 0, 0, 0, uint32(len(notify))}},
		{"MQTT in the clear is other", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50003, 1883, "PA"), gopacket.Payload(mqtt)),
			vec{"1100001", 1883, out, 64, 42, 6, 0x018, 64240, 0, 2}},
		{"ARP is other only and local", withGW, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeARP), &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPReply, SourceHwAddress: devMAC, SourceProtAddress: devIP, DstHwAddress: gwMAC, DstProtAddress: gwIP}),
			vec{"0000001", none, local, 0, 0, 0, 0, 0, 0, 0}},
		{"EAPOL is other only", withGW, LinkTypeEthernet,
			build(t, eth(gwMAC, devMAC, layers.EthernetTypeEAPOL), gopacket.Payload(make([]byte, 99))),
			vec{"0000001", none, local, 0, 0, 0, 0, 0, 0, 0}},
		{"802.3 LLC is other only", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, mustMAC("01:80:c2:00:00:00"), layers.EthernetTypeLLC), gopacket.Payload([]byte{0x42, 0x42, 0x03, 0, 0, 0})),
			vec{"0000001", none, local, 0, 0, 0, 0, 0, 0, 0}},
		{"ICMP is IP and other", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolICMPv4), &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 1}, gopacket.Payload(make([]byte, 56))),
			vec{"1000001", none, out, 64, 84, 1, 0, 0, 0, 64}},
		{"DHCP discover to broadcast is other and local", withGW, LinkTypeEthernet,
			build(t, eth(devMAC, bcastMAC, layers.EthernetTypeIPv4), ip4(net.IPv4zero.To4(), net.IPv4bcast.To4(), layers.IPProtocolUDP), udp(68, 67), gopacket.Payload(make([]byte, 300))),
			vec{"1010001", 67, local, 64, 328, 17, 0, 0, 0, 300}},
		{"IPv4 first fragment has ports", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), firstFrag, &layers.UDP{SrcPort: 5000, DstPort: 53, Length: 3008}, gopacket.Payload(make([]byte, 1472))),
			vec{"1010010", 53, out, 64, 1500, 17, 0, 0, 0, 1472}},
		{"IPv4 later fragment has no port", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), laterFrag, gopacket.Payload(make([]byte, 1480))),
			vec{"1010000", none, out, 64, 1500, 17, 0, 0, 0, 1480}},
		{"802.1Q tagged", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 10, Type: layers.EthernetTypeIPv4}, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp()),
			vec{"1010001", 123, out, 64, 76, 17, 0, 0, 0, 48}},
		{"802.1ad QinQ double tagged", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeQinQ), &layers.Dot1Q{VLANIdentifier: 100, Type: layers.EthernetTypeDot1Q}, &layers.Dot1Q{VLANIdentifier: 10, Type: layers.EthernetTypeIPv4}, ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50000, 443, "A")),
			vec{"1100000", 443, out, 64, 40, 6, 0x010, 64240, 0, 0}},
		{"IPv6 TCP TLS", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv6), ip6(dev6, cloud6, layers.IPProtocolTCP), tcp(50000, 443, "PA"), tlsRecord(23, 100)),
			vec{"1101000", 443, out, 255, 165, 6, 0x018, 64240, 0, 105}},
		{"IPv6 extension headers are skipped", lanOnly, LinkTypeEthernet,
			build(t, eth(gwMAC, devMAC, layers.EthernetTypeIPv6), ip6(cloud6, dev6, layers.IPProtocolIPv6Destination),
				gopacket.Payload{byte(layers.IPProtocolIPv6Fragment), 0, 1, 4, 0, 0, 0, 0}, // destination options, PadN
				gopacket.Payload{byte(layers.IPProtocolUDP), 0, 0, 1, 0, 0, 0, 42},         // first fragment, more follow
				&layers.UDP{SrcPort: 53, DstPort: 40000, Length: 2000}, gopacket.Payload(make([]byte, 1000))),
			vec{"1010010", 40000, in, 255, 40 + 16 + 1008, 17, 0, 0, 0, 1000}},
		{"IPv6 later fragment", lanOnly, LinkTypeEthernet,
			build(t, eth(gwMAC, devMAC, layers.EthernetTypeIPv6), ip6(cloud6, dev6, layers.IPProtocolIPv6Fragment),
				gopacket.Payload{byte(layers.IPProtocolUDP), 0, 0x03, 0xf0, 0, 0, 0, 42}, gopacket.Payload(make([]byte, 992))),
			vec{"1010000", none, in, 255, 40 + 8 + 992, 17, 0, 0, 0, 992}},
		{"raw IPv4 (101)", lanOnly, LinkTypeRaw,
			build(t, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp()),
			vec{"1010001", 123, out, 64, 76, 17, 0, 0, 0, 48}},
		{"raw IPv6 (101)", lanOnly, LinkTypeRaw,
			build(t, ip6(cloud6, dev6, layers.IPProtocolTCP), tcp(443, 50000, "A")),
			vec{"1100000", 50000, in, 255, 60, 6, 0x010, 64240, 0, 0}},
		{"raw IPv4 (228)", lanOnly, LinkTypeIPv4,
			build(t, ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50000, 443, "S")),
			vec{"1100000", 443, out, 64, 40, 6, 0x002, 64240, 0, 0}},
		{"raw IPv6 (229)", lanOnly, LinkTypeIPv6,
			build(t, ip6(dev6, cloud6, layers.IPProtocolUDP), udp(40000, 53), dnsQuery(t)),
			vec{"1010010", 53, out, 255, 82, 17, 0, 0, 0, 34}},
		{"Linux SLL", lanOnly, LinkTypeLinuxSLL,
			append(sllHeader(0x0800), build(t, ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50000, 443, "PA"), tlsRecord(23, 50))...),
			vec{"1101000", 443, out, 64, 95, 6, 0x018, 64240, 0, 55}},
		{"Linux SLL2", lanOnly, LinkTypeLinuxSLL2,
			append(sll2Header(0x86dd), build(t, ip6(cloud6, dev6, layers.IPProtocolUDP), udp(123, 123), ntp())...),
			vec{"1010001", 123, in, 255, 96, 17, 0, 0, 0, 48}},
		{"Linux SLL ARP", lanOnly, LinkTypeLinuxSLL,
			append(sllHeader(0x0806), make([]byte, 28)...),
			vec{"0000001", none, local, 0, 0, 0, 0, 0, 0, 0}},
		{"ARP probe names no sender", withGW, LinkTypeEthernet,
			build(t, eth(devMAC, bcastMAC, layers.EthernetTypeARP), &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest, SourceHwAddress: devMAC, SourceProtAddress: net.IPv4zero.To4(), DstHwAddress: make([]byte, 6), DstProtAddress: devIP}),
			vec{"0000001", none, local, 0, 0, 0, 0, 0, 0, 0}},
		{"IPv4-in-IPv6 tunnel describes the outer header", lanOnly, LinkTypeEthernet,
			build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv6), ip6(dev6, cloud6, layers.IPProtocolIPv4), ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(1, 53), dnsQuery(t)),
			vec{"1000001", none, out, 255, 102, 4, 0, 0, 0, 62}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDecoder(tc.home)
			ts := time.Unix(1_700_000_000, 123_456_789)
			var p schemas.Packet
			if err := d.Decode(tc.link, tc.data, gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(tc.data), Length: len(tc.data)}, 7, &p); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got := vecOf(&p); got != tc.want {
				t.Errorf("decoded\n got %+v\nwant %+v", got, tc.want)
			}
			if p.TsNs != ts.UnixNano() || p.Offset != 7 || p.FrameLen != uint32(len(tc.data)) || p.IntervalNs != 0 {
				t.Errorf("TsNs %d Offset %d FrameLen %d IntervalNs %d; want %d 7 %d 0", p.TsNs, p.Offset, p.FrameLen, p.IntervalNs, ts.UnixNano(), len(tc.data))
			}
			if tc.link == LinkTypeEthernet {
				if p.SrcMAC != schemas.MAC(tc.data[6:12]) || p.DstMAC != schemas.MAC(tc.data[0:6]) {
					t.Errorf("MACs %s -> %s, want %x -> %x", p.SrcMAC, p.DstMAC, tc.data[6:12], tc.data[0:6])
				}
			} else if !p.SrcMAC.IsZero() || !p.DstMAC.IsZero() {
				t.Errorf("non-Ethernet frame got MACs %s -> %s", p.SrcMAC, p.DstMAC)
			}
		})
	}
}

// ahHeader is an IPsec authentication header (RFC 4302) of 24 bytes, its
// 12 fixed ones and a 96-bit ICV (HMAC-SHA1-96), before next.
func ahHeader(next layers.IPProtocol) gopacket.Payload {
	b := make([]byte, 24)
	b[0], b[1] = byte(next), 24/4-2            // the length in 4-octet units, less 2
	binary.BigEndian.PutUint32(b[4:8], 0x1000) // SPI
	binary.BigEndian.PutUint32(b[8:12], 7)     // sequence number
	return b
}

// TestDecodeAuthenticationHeader: an IPsec authentication header, in IPv4
// or among IPv6's extension headers, is walked past to the transport header
// behind it, as tshark does (it hides nothing; ESP would); one whose length
// is below its fixed 12 bytes or beyond the packet is malformed. Before, the
// record was of transport 51 and had no port. gopacket's layer agrees.
func TestDecodeAuthenticationHeader(t *testing.T) {
	shortAH := ahHeader(layers.IPProtocolTCP)
	shortAH[1] = 0 // 8 bytes
	longAH := ahHeader(layers.IPProtocolTCP)
	longAH[1] = 60
	for _, tc := range []struct {
		name string
		data []byte
		want vec
		err  error
	}{
		{"IPv4 AH then TCP", build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolAH), ahHeader(layers.IPProtocolTCP), tcp(50000, 443, "PA"), tlsRecord(23, 100)),
			vec{"1101000", 443, out, 64, 20 + 24 + 20 + 105, 6, 0x018, 64240, 0, 105}, nil},
		{"IPv6 AH then TCP", build(t, eth(gwMAC, devMAC, layers.EthernetTypeIPv6), ip6(cloud6, dev6, layers.IPProtocolAH), ahHeader(layers.IPProtocolTCP), tcp(443, 50000, "A")),
			vec{"1100000", 50000, in, 255, 40 + 24 + 20, 6, 0x010, 64240, 0, 0}, nil},
		{"IPv6 destination options, AH, UDP", build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv6), ip6(dev6, cloud6, layers.IPProtocolIPv6Destination),
			gopacket.Payload{byte(layers.IPProtocolAH), 0, 1, 4, 0, 0, 0, 0}, ahHeader(layers.IPProtocolUDP), udp(40000, 53), dnsQuery(t)),
			vec{"1010010", 53, out, 255, 40 + 8 + 24 + 8 + 34, 17, 0, 0, 0, 34}, nil},
		{"IPv4 AH below its 12 bytes", build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolAH), shortAH, tcp(50000, 443, "A")), vec{}, ErrMalformed},
		{"IPv6 AH beyond the packet", build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv6), ip6(dev6, cloud6, layers.IPProtocolAH), longAH, tcp(50000, 443, "A")), vec{}, ErrMalformed},
	} {
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: len(tc.data), Length: len(tc.data)}
		var p schemas.Packet
		err := NewDecoder(lanOnly).Decode(LinkTypeEthernet, tc.data, ci, 0, &p)
		switch {
		case tc.err != nil && !errors.Is(err, tc.err):
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		case tc.err == nil && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err == nil && vecOf(&p) != tc.want:
			t.Errorf("%s: decoded\n got %+v\nwant %+v", tc.name, vecOf(&p), tc.want)
		}
		if msg := compareWithGopacket(NewDecoder(lanOnly), newGopacketDecoder(lanOnly), LinkTypeEthernet, tc.data, ci, 0); msg != "" {
			t.Errorf("%s: against gopacket's layers: %s", tc.name, msg)
		}
	}
}

func sllHeader(proto uint16) []byte {
	h := make([]byte, 16)
	binary.BigEndian.PutUint16(h[0:2], 4) // sent by us
	binary.BigEndian.PutUint16(h[2:4], 1) // ARPHRD_ETHER
	binary.BigEndian.PutUint16(h[4:6], 6)
	copy(h[6:], devMAC)
	binary.BigEndian.PutUint16(h[14:16], proto)
	return h
}

func sll2Header(proto uint16) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:2], proto)
	binary.BigEndian.PutUint32(h[4:8], 3) // interface index
	binary.BigEndian.PutUint16(h[8:10], 1)
	h[10] = 0 // to us
	h[11] = 6
	copy(h[12:], gwMAC)
	return h
}

func TestDirection(t *testing.T) {
	a := netip.MustParseAddr
	dev, phone, gw, cloud := a("192.168.1.10"), a("192.168.1.20"), a("192.168.1.1"), a("52.10.20.30")
	d, g, p := schemas.MAC(devMAC), schemas.MAC(gwMAC), schemas.MAC(phoneMAC)
	tests := []struct {
		name     string
		home     HomeConfig
		src, dst netip.Addr
		sm, dm   schemas.MAC
		want     int8
	}{
		{"LAN to internet", lanOnly, dev, cloud, d, g, out},
		{"internet to LAN", lanOnly, cloud, dev, g, d, in},
		{"LAN to LAN", lanOnly, dev, phone, d, p, local},
		{"LAN to the gateway's own address", lanOnly, dev, gw, d, g, local},
		{"to the gateway MAC is outbound", withGW, dev, gw, d, g, out},
		{"from the gateway MAC is inbound", withGW, gw, dev, g, d, in},
		{"gateway MAC decides before prefixes", withGW, cloud, dev, d, g, out},
		{"prefixes decide when the MACs are not the gateway's", withGW, dev, cloud, d, p, out},
		{"MACs unknown (raw IP) fall back to prefixes", withGW, cloud, dev, schemas.MAC{}, schemas.MAC{}, in},
		{"multicast from a LAN host is local", lanOnly, dev, a("239.255.255.250"), d, schemas.MAC(ssdpMAC), local},
		{"multicast via the gateway MAC is still local", withGW, dev, a("239.255.255.250"), d, g, local},
		{"broadcast is local", withGW, a("0.0.0.0"), a("255.255.255.255"), d, schemas.MAC(bcastMAC), local},
		{"group MAC is local even to a unicast IP", lanOnly, dev, cloud, d, schemas.MAC(bcastMAC), local},
		{"IPv6 multicast is local", lanOnly, a("fd00::10"), a("ff02::fb"), d, schemas.MAC{0x33, 0x33, 0, 0, 0, 0xfb}, local},
		{"IPv6 ULA to global is outbound", lanOnly, a("fd00::10"), a("2001:db8::1"), d, g, out},
		{"no configuration decides nothing", HomeConfig{}, dev, cloud, d, g, local},
		{"internet to internet", lanOnly, cloud, a("8.8.8.8"), d, g, local},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.home.Direction(tc.src, tc.dst, tc.sm, tc.dm); got != tc.want {
				t.Errorf("Direction(%s -> %s) = %d, want %d", tc.src, tc.dst, got, tc.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	good := build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(1, 2, "A"))
	patch := func(b []byte, off int, v ...byte) []byte {
		c := append([]byte(nil), b...)
		copy(c[off:], v)
		return c
	}
	var tags []gopacket.SerializableLayer
	tags = append(tags, eth(devMAC, gwMAC, layers.EthernetTypeDot1Q))
	for range 5 {
		tags = append(tags, &layers.Dot1Q{Type: layers.EthernetTypeDot1Q})
	}
	tags = append(tags, gopacket.Payload(make([]byte, 40)))

	tests := []struct {
		name string
		link LinkType
		data []byte
		want error
	}{
		{"unknown link type", 147, good, ErrUnsupportedLinkType},
		{"DLT 12 is raw IP", 12, good[14:], nil},
		{"short Ethernet", LinkTypeEthernet, good[:10], ErrMalformed},
		{"IPv4 header with version 6", LinkTypeEthernet, patch(good, 14, 0x65), ErrMalformed},
		{"IPv4 IHL below 5", LinkTypeEthernet, patch(good, 14, 0x44), ErrMalformed},
		{"IPv4 total length below the header", LinkTypeEthernet, patch(good, 16, 0, 12), ErrMalformed},
		{"IPv4 header cut short", LinkTypeEthernet, good[:14+12], ErrMalformed},
		{"TCP data offset below 5", LinkTypeEthernet, patch(good, 14+20+12, 0x30), ErrMalformed},
		{"TCP header longer than the IP packet", LinkTypeEthernet, patch(good, 14+20+12, 0xf0), ErrMalformed},
		{"TCP header cut short", LinkTypeEthernet, patch(good, 16, 0, 30)[:14+30], ErrMalformed},
		{"UDP length below 8", LinkTypeEthernet, patch(build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(1, 2), ntp()), 14+20+4, 0, 3), ErrMalformed},
		{"raw IP version 5", LinkTypeRaw, patch(good[14:], 0, 0x55), ErrMalformed},
		{"empty raw IP", LinkTypeRaw, nil, ErrMalformed},
		{"raw IPv6 link type with an IPv4 packet", LinkTypeIPv6, good[14:], ErrMalformed},
		{"short SLL", LinkTypeLinuxSLL, make([]byte, 15), ErrMalformed},
		{"SLL with an absurd address length", LinkTypeLinuxSLL, append(patch(sllHeader(0x0800), 4, 0xff, 0xff), good[14:]...), nil},
		{"short SLL2", LinkTypeLinuxSLL2, make([]byte, 19), ErrMalformed},
		{"five VLAN tags", LinkTypeEthernet, build(t, tags...), ErrMalformed},
		{"IPv6 extension header overruns the packet", LinkTypeRaw, build(t, ip6(dev6, cloud6, layers.IPProtocolIPv6Routing), gopacket.Payload{17, 9, 0, 0, 0, 0, 0, 0}), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p schemas.Packet
			err := NewDecoder(lanOnly).Decode(tc.link, tc.data, gopacket.CaptureInfo{Length: len(tc.data), CaptureLength: len(tc.data)}, 3, &p)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode error = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestIntervalAndFrameLen(t *testing.T) {
	frame := build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50000, 443, "PA"), tlsRecord(23, 1455))
	base := time.Unix(1_700_000_000, 0)
	d := NewDecoder(lanOnly)
	steps := []struct {
		at       time.Duration
		data     []byte
		wireLen  int
		wantErr  bool
		interval time.Duration
	}{
		{0, frame, len(frame), false, 0},
		{1500 * time.Microsecond, frame, len(frame), false, 1500 * time.Microsecond},
		{2 * time.Millisecond, frame[:8], len(frame), true, 0}, // rejected: does not move the clock
		{3 * time.Millisecond, frame[:96], len(frame), false, 1500 * time.Microsecond},
		{2 * time.Millisecond, frame, len(frame), false, 0}, // backwards in time
		{5 * time.Millisecond, frame, len(frame), false, 3 * time.Millisecond},
	}
	for i, s := range steps {
		var p schemas.Packet
		ci := gopacket.CaptureInfo{Timestamp: base.Add(s.at), CaptureLength: len(s.data), Length: s.wireLen}
		err := d.Decode(LinkTypeEthernet, s.data, ci, uint64(i), &p)
		if (err != nil) != s.wantErr {
			t.Fatalf("step %d: err = %v, want error %v", i, err, s.wantErr)
		}
		if err != nil {
			continue
		}
		if time.Duration(p.IntervalNs) != s.interval {
			t.Errorf("step %d: IntervalNs = %v, want %v", i, time.Duration(p.IntervalNs), s.interval)
		}
		// A snap length that cuts the payload leaves the wire figures alone.
		if p.FrameLen != uint32(len(frame)) || p.PayloadLen != 1460 || p.IPLen != 1500 || schemas.ProtoBitsString(p.ProtoBits) != "1101000" {
			t.Errorf("step %d: FrameLen %d PayloadLen %d IPLen %d bits %s, want %d 1460 1500 1101000",
				i, p.FrameLen, p.PayloadLen, p.IPLen, schemas.ProtoBitsString(p.ProtoBits), len(frame))
		}
	}
}

// TestDecodeSnapLengthCuts: a frame the capture cut inside its IPv4
// options, its IPv6 extension headers or its TCP header (tcpdump -s 68 of
// a SYN with 20 bytes of TCP options) is read as far as it was captured,
// as tshark reads it: its direction, frame length and interval, the IP
// figures, and the ports when TCP's or UDP's first 4 bytes are there; a
// field not captured stays zero. It used to be dropped whole as
// malformed. The same bytes as a whole frame (no snap length) still are,
// as is a cut frame whose own length fields disagree.
func TestDecodeSnapLengthCuts(t *testing.T) {
	syn := synWithOptions()
	routing := gopacket.Payload(cat([]byte{byte(layers.IPProtocolTCP), 2}, make([]byte, 22))) // 24 bytes
	routingUDP := gopacket.Payload(cat([]byte{byte(layers.IPProtocolUDP), 2}, make([]byte, 22)))
	syn4 := build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), syn)
	syn6 := build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv6), ip6(dev6, cloud6, layers.IPProtocolTCP), syn)
	synRouted := build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv6), ip6(dev6, cloud6, layers.IPProtocolIPv6Routing), routing, syn)
	udp4opts := build(t, eth(gwMAC, devMAC, layers.EthernetTypeIPv4), ip4opts(cloudIP, devIP, layers.IPProtocolUDP), udp(53, 40000), dnsQuery(t))
	udpRouted := build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv6), ip6(dev6, cloud6, layers.IPProtocolIPv6Routing), routingUDP, udp(40000, 53), dnsQuery(t))
	tls4 := build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50000, 443, "PA"), tlsRecord(23, 100))
	ah4 := build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolAH), ahHeader(layers.IPProtocolTCP), tcp(50000, 443, "A"))
	longOffset := slices.Clone(tls4)
	longOffset[14+20+12] = 0xf0 // 60 bytes of TCP header in a 145-byte IP payload: fine
	longOffset[14+3] = 20 + 40  // but the IP packet is 60 bytes long
	for _, tc := range []struct {
		name  string
		frame []byte
		snap  int
		want  vec
		err   error
	}{
		{"IPv4 SYN cut at 68 in its TCP options", syn4, 68, vec{"1100000", 443, out, 64, 60, 6, 0x002, 64240, 20, 0}, nil},
		{"IPv6 SYN cut at 68, before its window", syn6, 68, vec{"1100000", 443, out, 255, 80, 6, 0x002, 0, 20, 0}, nil},
		{"IPv6 SYN behind a routing header cut at 96", synRouted, 96, vec{"1100000", 443, out, 255, 104, 6, 0x002, 64240, 20, 0}, nil},
		{"TCP cut before its ports", tls4, 14 + 20 + 3, vec{"1100000", none, out, 64, 145, 6, 0, 0, 0, 0}, nil},
		{"TCP cut after its ports, before its data offset", tls4, 14 + 20 + 6, vec{"1100000", 443, out, 64, 145, 6, 0, 0, 0, 0}, nil},
		{"IPv4 cut in its options", udp4opts, 14 + 22, vec{"1010000", none, in, 64, 24 + 8 + 34, 17, 0, 0, 0, 34}, nil},
		{"IPv6 cut in a routing header", udpRouted, 14 + 40 + 16, vec{"1010000", none, out, 255, 40 + 24 + 8 + 34, 17, 0, 0, 0, 34}, nil},
		{"IPv6 cut before a routing header's length", udpRouted, 14 + 40 + 1, vec{"1000001", none, out, 255, 40 + 24 + 8 + 34, 43, 0, 0, 0, 24 + 8 + 34}, nil},
		{"IPv4 cut in an authentication header", ah4, 14 + 20 + 6, vec{"1100000", none, out, 64, 20 + 24 + 20, 6, 0, 0, 0, 0}, nil},
		{"UDP cut after its ports", udpRouted, 14 + 40 + 24 + 5, vec{"1010010", 53, out, 255, 40 + 24 + 8 + 34, 17, 0, 0, 0, 34}, nil},
		{"TCP header longer than its IP packet", longOffset, 14 + 20 + 30, vec{}, ErrMalformed},
	} {
		d := NewDecoder(lanOnly)
		base := time.Unix(1_700_000_000, 0)
		var p schemas.Packet
		if err := d.Decode(LinkTypeEthernet, tc.frame, gopacket.CaptureInfo{Timestamp: base, CaptureLength: len(tc.frame), Length: len(tc.frame)}, 0, &p); err != nil && tc.err == nil {
			t.Fatalf("%s: the whole frame: %v", tc.name, err)
		}
		data := tc.frame[:tc.snap]
		err := d.Decode(LinkTypeEthernet, data, gopacket.CaptureInfo{Timestamp: base.Add(time.Second), CaptureLength: tc.snap, Length: len(tc.frame)}, 1, &p)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := vecOf(&p); got != tc.want {
			t.Errorf("%s: decoded\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
		if p.FrameLen != uint32(len(tc.frame)) || p.IntervalNs != int64(time.Second) || (p.DPort == none) != (p.SrcPort == none) {
			t.Errorf("%s: FrameLen %d IntervalNs %d ports %d -> %d; want %d, 1 s, both or neither", tc.name, p.FrameLen, p.IntervalNs, p.SrcPort, p.DPort, len(tc.frame))
		}
		// Uncut, the same bytes say they hold a header they do not.
		whole := gopacket.CaptureInfo{Timestamp: base, CaptureLength: tc.snap, Length: tc.snap}
		if err := NewDecoder(lanOnly).Decode(LinkTypeEthernet, data, whole, 0, &p); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: as a whole frame of %d bytes: %v, want %v", tc.name, tc.snap, err, ErrMalformed)
		}
	}
}

// TestDecodeTimestampOutOfRange: a frame whose time lies outside the
// years an int64 of nanoseconds since 1970 holds (1677-2262) is malformed,
// with a reason that names the likely cause, and does not move the
// stream's clock; it used to be decoded with a TsNs wrapped to another
// year (nanoseconds read as microseconds give the year 56302, whose TsNs
// fell in 1938). The first and last instants TsNs holds are decoded.
func TestDecodeTimestampOutOfRange(t *testing.T) {
	frame := build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(40000, 53), dnsQuery(t))
	good := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	d := NewDecoder(lanOnly)
	for i, s := range []struct {
		ts       time.Time
		ok       bool
		interval time.Duration
	}{
		{good, true, 0},
		{time.Unix(good.UnixNano()/1e6, 0), false, 0}, // nanoseconds read as microseconds: 56302
		{time.Date(1653, 1, 1, 0, 0, 0, 0, time.UTC), false, 0},
		{good.Add(time.Second), true, time.Second}, // the gap to the last frame decoded
		{time.Unix(0, math.MaxInt64), true, time.Unix(0, math.MaxInt64).Sub(good.Add(time.Second))},
		{time.Unix(0, math.MaxInt64).Add(1), false, 0},
		{time.Unix(0, math.MinInt64), true, 0},
		{time.Unix(0, math.MinInt64).Add(-1), false, 0},
	} {
		var p schemas.Packet
		ci := gopacket.CaptureInfo{Timestamp: s.ts, CaptureLength: len(frame), Length: len(frame)}
		err := d.Decode(LinkTypeEthernet, frame, ci, uint64(i), &p)
		switch {
		case s.ok && err != nil:
			t.Errorf("frame %d at %v: %v", i, s.ts, err)
		case s.ok && (p.TsNs != s.ts.UnixNano() || p.IntervalNs != int64(s.interval)):
			t.Errorf("frame %d at %v: TsNs %d IntervalNs %d, want %d %d", i, s.ts, p.TsNs, p.IntervalNs, s.ts.UnixNano(), int64(s.interval))
		case !s.ok && (!errors.Is(err, ErrMalformed) || !strings.Contains(fmt.Sprint(err), "if_tsresol")):
			t.Errorf("frame %d at %v: %v, want %v naming if_tsresol", i, s.ts, err, ErrMalformed)
		}
	}
}

func TestDecodeDoesNotAllocate(t *testing.T) {
	frames := [][]byte{
		build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50000, 443, "PA"), tlsRecord(23, 100)),
		build(t, eth(devMAC, gwMAC, layers.EthernetTypeDot1Q), &layers.Dot1Q{Type: layers.EthernetTypeIPv6}, ip6(dev6, cloud6, layers.IPProtocolUDP), udp(1, 53), dnsQuery(t)),
		build(t, eth(devMAC, ssdpMAC, layers.EthernetTypeIPv4), ip4(devIP, ssdpIP, layers.IPProtocolUDP), udp(1900, 1900), gopacket.Payload("M-SEARCH * HTTP/1.1\r\n\r\n")),
		build(t, eth(devMAC, gwMAC, layers.EthernetTypeARP), gopacket.Payload(make([]byte, 28))),
	}
	d := NewDecoder(withGW)
	var p schemas.Packet
	ci := gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), Length: 1500}
	allocs := testing.AllocsPerRun(200, func() {
		for i, f := range frames {
			ci.CaptureLength = len(f)
			if err := d.Decode(LinkTypeEthernet, f, ci, uint64(i), &p); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("Decode allocates %.1f times per %d frames, want 0", allocs, len(frames))
	}
}

func TestProtoBitsRule(t *testing.T) {
	// At most one application bit, whatever the payload.
	payloads := [][]byte{nil, {22, 3, 1, 0, 5, 1}, []byte("GET / HTTP/1.1"), []byte("HTTP/1.0 200"), {0x17, 3, 3}, []byte("NOTIFY"), make([]byte, 10)}
	for _, tcpSeg := range []bool{true, false} {
		for _, port := range []uint16{53, 80, 443, 1900, 5353, 8883} {
			for _, pl := range payloads {
				b := appBit(tcpSeg, 40000, port, pl)
				if b == 0 || b&(b-1) != 0 || b&^(schemas.ProtoTLS|schemas.ProtoHTTP|schemas.ProtoDNS|schemas.ProtoOther) != 0 {
					t.Errorf("appBit(tcp=%v, port %d, %q) = %07b, want exactly one application bit", tcpSeg, port, pl, b)
				}
				if !tcpSeg && b == schemas.ProtoTLS {
					t.Errorf("UDP payload %q classified as TLS", pl)
				}
			}
		}
	}
}

// TestDecodeARPSender: an ARP for IPv4 names the address its sender holds
// (behind a MAC-NAT repeater, the device), and nothing else does.
func TestDecodeARPSender(t *testing.T) {
	arp := func(op uint16, sender net.IP, proto layers.EthernetType, protoLen uint8) []byte {
		return build(t, eth(devMAC, bcastMAC, layers.EthernetTypeARP), &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: proto,
			HwAddressSize: 6, ProtAddressSize: protoLen, Operation: op, SourceHwAddress: devMAC, SourceProtAddress: sender,
			DstHwAddress: make([]byte, 6), DstProtAddress: make([]byte, protoLen)})
	}
	request := arp(layers.ARPRequest, devIP, layers.EthernetTypeIPv4, 4)
	want := [4]byte(devIP.To4())
	// An ARP of a link with 250-byte hardware addresses: its length,
	// 516 bytes, does not fit the byte gopacket 1.1.19 sums it in.
	longARP := append(append(append(append(append(slices.Clone(request[:14]), 0, 1, 8, 0, 250, 4, 0, 1),
		make([]byte, 250)...), devIP.To4()...), make([]byte, 250)...), gwIP.To4()...)
	for _, c := range []struct {
		name string
		link LinkType
		data []byte
		want [4]byte
	}{
		{"request", LinkTypeEthernet, request, want},
		{"reply", LinkTypeEthernet, arp(layers.ARPReply, devIP, layers.EthernetTypeIPv4, 4), want},
		{"in a VLAN", LinkTypeEthernet, build(t, eth(devMAC, bcastMAC, layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeARP}, gopacket.Payload(request[14:])), want},
		{"Linux SLL", LinkTypeLinuxSLL, append(sllHeader(0x0806), request[14:]...), want},
		{"probe from 0.0.0.0", LinkTypeEthernet, arp(layers.ARPRequest, net.IPv4zero.To4(), layers.EthernetTypeIPv4, 4), [4]byte{}},
		{"not for IPv4", LinkTypeEthernet, arp(layers.ARPRequest, make([]byte, 16), layers.EthernetTypeIPv6, 16), [4]byte{}},
		{"cut before the target's address", LinkTypeEthernet, request[:14+8+6+4+6], [4]byte{}},
		{"250-byte hardware addresses", LinkTypeEthernet, longARP, want},
		{"IPv4, not ARP", LinkTypeEthernet, build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(1000, 123), ntp()), [4]byte{}},
	} {
		var p schemas.Packet
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: len(c.data), Length: len(c.data)}
		if err := NewDecoder(withGW).Decode(c.link, c.data, ci, 0, &p); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if p.ARPSender != c.want || p.SrcIP.IsValid() != (c.name == "IPv4, not ARP") {
			t.Errorf("%s: ARP sender %v, source IP %v; want %v", c.name, p.ARPSender, p.SrcIP, c.want)
		}
		if msg := compareWithGopacket(NewDecoder(withGW), newGopacketDecoder(withGW), c.link, c.data, ci, 0); msg != "" {
			t.Errorf("%s: against gopacket's layers: %s", c.name, msg)
		}
	}
}
