package features

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/schemas"
)

// bsdHeader is a BSD loopback family field in the given byte order.
func bsdHeader(order binary.AppendByteOrder, family uint32) []byte {
	return order.AppendUint32(nil, family)
}

// pppoeHeader is a PPPoE session header for a PPP payload of n bytes
// (protocol field included).
func pppoeHeader(n int) []byte {
	h := []byte{0x11, 0x00, 0x12, 0x34, 0, 0}
	binary.BigEndian.PutUint16(h[4:6], uint16(n))
	return h
}

// ppiHeader is a PPI header of the given inner link type with one
// 20-byte 802.11-common field, as Kismet writes them.
func ppiHeader(inner uint32) []byte {
	h := make([]byte, 8+4+20)
	binary.LittleEndian.PutUint16(h[2:4], uint16(len(h)))
	binary.LittleEndian.PutUint32(h[4:8], inner)
	binary.LittleEndian.PutUint16(h[8:10], 2) // field type: 802.11-common
	binary.LittleEndian.PutUint16(h[10:12], 20)
	return h
}

// pktapHeader is an Apple PKTAP header (108 bytes, little-endian) for a
// packet of link type dlt that came in on ifname.
func pktapHeader(dlt uint32, ifname string) []byte {
	h := make([]byte, 108)
	binary.LittleEndian.PutUint32(h[0:4], 108)
	binary.LittleEndian.PutUint32(h[4:8], 1)
	binary.LittleEndian.PutUint32(h[8:12], dlt)
	copy(h[12:36], ifname)
	binary.LittleEndian.PutUint32(h[36:40], 1)
	return h
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// TestLinkTypes decodes one frame per link layer the decoder reads beyond
// Ethernet, each carrying a packet whose record is known.
func TestLinkTypes(t *testing.T) {
	v4udp := build(t, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp())
	want4udp := vec{"1010001", 123, out, 64, 76, 17, 0, 0, 0, 48}
	v6tcp := build(t, ip6(cloud6, dev6, layers.IPProtocolTCP), tcp(443, 50000, "PA"), tlsRecord(23, 100))
	want6tcp := vec{"1101000", 50000, in, 255, 165, 6, 0x018, 64240, 0, 105}
	nonIP := vec{"0000001", none, local, 0, 0, 0, 0, 0, 0, 0}
	le, be := binary.LittleEndian, binary.BigEndian
	ethIn := func(et uint16, rest ...[]byte) []byte {
		return cat(append([][]byte{ethHeader(et)}, rest...)...)
	}
	vlan := func(id uint16, et uint16) []byte { return []byte{byte(id >> 8), byte(id), byte(et >> 8), byte(et)} }

	tests := []struct {
		name     string
		link     LinkType
		data     []byte
		want     vec
		wantMACs bool
	}{
		{"NULL IPv4, little-endian family", LinkTypeNull, cat(bsdHeader(le, 2), v4udp), want4udp, false},
		{"NULL IPv4, big-endian family", LinkTypeNull, cat(bsdHeader(be, 2), v4udp), want4udp, false},
		{"NULL IPv6 from macOS (30)", LinkTypeNull, cat(bsdHeader(le, 30), v6tcp), want6tcp, false},
		{"NULL IPv6 from FreeBSD (28), big-endian", LinkTypeNull, cat(bsdHeader(be, 28), v6tcp), want6tcp, false},
		{"NULL IPv6 from NetBSD/OpenBSD (24)", LinkTypeNull, cat(bsdHeader(le, 24), v6tcp), want6tcp, false},
		{"NULL IPv6 from Linux (10)", LinkTypeNull, cat(bsdHeader(le, 10), v6tcp), want6tcp, false},
		{"NULL IPv6 from Windows (23)", LinkTypeNull, cat(bsdHeader(le, 23), v6tcp), want6tcp, false},
		{"NULL other family", LinkTypeNull, cat(bsdHeader(le, 17), make([]byte, 20)), nonIP, false},
		{"LOOP IPv4, big-endian as specified", LinkTypeLoop, cat(bsdHeader(be, 2), v4udp), want4udp, false},
		{"LOOP IPv6 (24), little-endian as some write it", LinkTypeLoop, cat(bsdHeader(le, 24), v6tcp), want6tcp, false},
		{"PPP IPv4 with HDLC address and control", LinkTypePPP, cat([]byte{0xff, 0x03, 0x00, 0x21}, v4udp), want4udp, false},
		{"PPP IPv6 without framing", LinkTypePPP, cat([]byte{0x00, 0x57}, v6tcp), want6tcp, false},
		{"PPP IPv4 with a compressed protocol field", LinkTypePPP, cat([]byte{0x21}, v4udp), want4udp, false},
		{"PPP LCP", LinkTypePPP, cat([]byte{0xff, 0x03, 0xc0, 0x21}, make([]byte, 14)), nonIP, false},
		{"raw IP as DLT 12", LinkTypeRawDLT, v4udp, want4udp, false},
		{"raw IPv6 as DLT 12", LinkTypeRawDLT, v6tcp, want6tcp, false},
		{"DLT 12 holding OpenBSD loopback", LinkTypeRawDLT, cat(bsdHeader(be, 24), v6tcp), want6tcp, false},
		{"raw IP as OpenBSD DLT 14", LinkTypeRawOpenBSD, v6tcp, want6tcp, false},
		{"Cisco HDLC IPv4", LinkTypeCiscoHDLC, cat([]byte{0x0f, 0x00, 0x08, 0x00}, v4udp), want4udp, false},
		{"Cisco HDLC IPv6", LinkTypeCiscoHDLC, cat([]byte{0x0f, 0x00, 0x86, 0xdd}, v6tcp), want6tcp, false},
		{"Cisco HDLC SLARP keepalive", LinkTypeCiscoHDLC, cat([]byte{0x8f, 0x00, 0x80, 0x35}, make([]byte, 18)), nonIP, false},
		{"PPPoE session IPv4", LinkTypeEthernet, ethIn(0x8864, pppoeHeader(2+len(v4udp)), []byte{0x00, 0x21}, v4udp), want4udp, true},
		{"PPPoE session IPv6", LinkTypeEthernet, ethIn(0x8864, pppoeHeader(2+len(v6tcp)), []byte{0x00, 0x57}, v6tcp), want6tcp, true},
		{"PPPoE on VLAN 7, as DSL uplinks carry it", LinkTypeEthernet, ethIn(0x8100, vlan(7, 0x8864), pppoeHeader(2+len(v4udp)), []byte{0x00, 0x21}, v4udp), want4udp, true},
		{"PPPoE session LCP echo", LinkTypeEthernet, ethIn(0x8864, pppoeHeader(10), []byte{0xc0, 0x21}, make([]byte, 8)), nonIP, true},
		{"PPPoE discovery", LinkTypeEthernet, ethIn(0x8863, []byte{0x11, 0x09, 0, 0, 0, 4}, make([]byte, 4)), nonIP, true},
		{"802.1ad outer, 802.1Q inner", LinkTypeEthernet, ethIn(0x88a8, vlan(100, 0x8100), vlan(10, 0x0800), v4udp), want4udp, true},
		{"legacy QinQ 0x9100 outer", LinkTypeEthernet, ethIn(0x9100, vlan(100, 0x8100), vlan(10, 0x86dd), v6tcp), want6tcp, true},
		{"PPI carrying Ethernet", LinkTypePPI, cat(ppiHeader(1), ethIn(0x0800, v4udp)), want4udp, true},
		{"PPI carrying raw IPv6 (229)", LinkTypePPI, cat(ppiHeader(229), v6tcp), want6tcp, false},
		{"PPI carrying raw IP (101)", LinkTypePPI, cat(ppiHeader(101), v4udp), want4udp, false},
		{"SLL with a VLAN tag", LinkTypeLinuxSLL, cat(sllHeader(0x8100), vlan(5, 0x0800), v4udp), want4udp, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := time.Unix(1_700_000_000, 0)
			var p schemas.Packet
			if err := NewDecoder(lanOnly).Decode(tc.link, tc.data, gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(tc.data), Length: len(tc.data)}, 1, &p); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got := vecOf(&p); got != tc.want {
				t.Errorf("decoded\n got %+v\nwant %+v", got, tc.want)
			}
			if p.FrameLen != uint32(len(tc.data)) {
				t.Errorf("FrameLen %d, want the whole frame's %d", p.FrameLen, len(tc.data))
			}
			if tc.wantMACs != (p.SrcMAC == schemas.MAC(devMAC) && p.DstMAC == schemas.MAC(gwMAC)) {
				t.Errorf("MACs %s -> %s; want the Ethernet ones: %v", p.SrcMAC, p.DstMAC, tc.wantMACs)
			}
			if !tc.wantMACs && (!p.SrcMAC.IsZero() || !p.DstMAC.IsZero()) {
				t.Errorf("a frame without Ethernet got MACs %s -> %s", p.SrcMAC, p.DstMAC)
			}
		})
	}
}

// TestParseLinkOffsets checks where the network packet starts, which the
// gateway emulator and the pairing cut frames at.
func TestParseLinkOffsets(t *testing.T) {
	v4 := build(t, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(1, 2))
	eth := ethHeader(0x8100)
	tests := []struct {
		name string
		link LinkType
		data []byte
		off  int
		et   uint16
	}{
		{"NULL", LinkTypeNull, cat([]byte{2, 0, 0, 0}, v4), 4, EtherTypeIPv4},
		{"PPP framed", LinkTypePPP, cat([]byte{0xff, 3, 0, 0x21}, v4), 4, EtherTypeIPv4},
		{"PPP compressed", LinkTypePPP, cat([]byte{0x21}, v4), 1, EtherTypeIPv4},
		{"VLAN, VLAN, PPPoE", LinkTypeEthernet, cat(eth, []byte{0, 1, 0x81, 0, 0, 2, 0x88, 0x64}, pppoeHeader(2+len(v4)), []byte{0, 0x21}, v4), 14 + 8 + 6 + 2, EtherTypeIPv4},
		{"PPI over Ethernet over VLAN", LinkTypePPI, cat(ppiHeader(1), eth, []byte{0, 1, 0x08, 0}, v4), 32 + 18, EtherTypeIPv4},
		{"PKTAP over Ethernet over VLAN", LinkTypePKTAP, cat(pktapHeader(1, "en0"), eth, []byte{0, 1, 0x08, 0}, v4), 108 + 18, EtherTypeIPv4},
		{"PKTAP over BSD loopback (utun)", LinkTypePKTAP, cat(pktapHeader(0, "utun3"), []byte{2, 0, 0, 0}, v4), 108 + 4, EtherTypeIPv4},
		{"PKTAP over raw IP", LinkTypePKTAP, cat(pktapHeader(12, "utun3"), v4), 108, EtherTypeIPv4},
		{"ARP", LinkTypeEthernet, cat(build(t, eth2(0x0806)), make([]byte, 28)), 14, 0x0806},
	}
	for _, tc := range tests {
		l, err := ParseLink(tc.link, tc.data)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if l.Offset != tc.off || l.EtherType != tc.et {
			t.Errorf("%s: payload at %d, EtherType %#04x; want %d, %#04x", tc.name, l.Offset, l.EtherType, tc.off, tc.et)
		}
		if l.IsIP() && tc.data[l.Offset]>>4 != 4 {
			t.Errorf("%s: offset %d is not the IPv4 header", tc.name, l.Offset)
		}
	}
}

func eth2(et uint16) *layers.Ethernet { return eth(devMAC, gwMAC, layers.EthernetType(et)) }

// ethHeader is an Ethernet header alone: gopacket pads a serialized
// Ethernet layer to the 60-byte minimum frame.
func ethHeader(et uint16) []byte {
	return binary.BigEndian.AppendUint16(cat(gwMAC, devMAC)[:12:12], et) // destination first
}

func TestLinkErrors(t *testing.T) {
	v4 := build(t, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(1, 2))
	ethHdr := ethHeader(0x8864)
	badPPI := func(mod func([]byte)) []byte {
		h := cat(ppiHeader(1), ethHeader(0x0800), v4)
		mod(h)
		return h
	}
	tests := []struct {
		name string
		link LinkType
		data []byte
		want error
	}{
		{"NULL cut short", LinkTypeNull, []byte{2, 0}, ErrMalformed},
		{"NULL family of no byte order", LinkTypeNull, cat([]byte{2, 0, 0, 1}, v4), ErrMalformed},
		{"NULL family zero", LinkTypeLoop, cat([]byte{0, 0, 0, 0}, v4), ErrMalformed},
		{"NULL IPv4 family over an IPv6 packet", LinkTypeNull, cat([]byte{2, 0, 0, 0}, build(t, ip6(dev6, cloud6, layers.IPProtocolUDP), udp(1, 2))), ErrMalformed},
		{"empty PPP", LinkTypePPP, nil, ErrMalformed},
		{"PPP protocol cut short", LinkTypePPP, []byte{0xff, 0x03, 0x00}, ErrMalformed},
		{"Cisco HDLC cut short", LinkTypeCiscoHDLC, []byte{0x0f, 0x00, 0x08}, ErrMalformed},
		{"DLT 12 neither IP nor loopback", LinkTypeRawDLT, cat([]byte{0x80, 0, 0, 2}, v4), ErrMalformed},
		{"PPPoE header cut short", LinkTypeEthernet, cat(ethHdr, []byte{0x11, 0}), ErrMalformed},
		{"PPPoE of another version", LinkTypeEthernet, cat(ethHdr, []byte{0x21, 0, 0, 1, 0, 30, 0, 0x21}, v4), ErrMalformed},
		{"PPPoE without PPP protocol", LinkTypeEthernet, cat(ethHdr, pppoeHeader(0)), ErrMalformed},
		{"VLAN tag cut short", LinkTypeEthernet, cat(ethHeader(0x8100), []byte{0, 1}), ErrMalformed},
		{"PKTAP cut short", LinkTypePKTAP, make([]byte, 39), ErrMalformed},
		{"PKTAP header longer than the frame", LinkTypePKTAP, cat(binary.LittleEndian.AppendUint32(nil, 400), pktapHeader(1, "en0")[4:], ethHeader(0x0800), v4), ErrMalformed},
		{"PKTAP header shorter than its fields", LinkTypePKTAP, cat(binary.LittleEndian.AppendUint32(nil, 20), pktapHeader(1, "en0")[4:], ethHeader(0x0800), v4), ErrMalformed},
		{"PKTAP record of a drop, not a packet", LinkTypePKTAP, cat(pktapHeader(1, "en0")[:4], []byte{4, 0, 0, 0}, pktapHeader(1, "en0")[8:], ethHeader(0x0800), v4), ErrNotPacket},
		{"PKTAP carrying SLL", LinkTypePKTAP, cat(pktapHeader(113, "en0"), make([]byte, 16), v4), ErrUnsupportedLinkType},
		{"PKTAP carrying PPI", LinkTypePKTAP, cat(pktapHeader(192, "en0"), ppiHeader(1), ethHeader(0x0800), v4), ErrUnsupportedLinkType},
		{"PKTAP carrying link type 70000", LinkTypePKTAP, cat(pktapHeader(70000, "en0"), v4), ErrUnsupportedLinkType},
		{"PPI cut short", LinkTypePPI, make([]byte, 7), ErrMalformed},
		{"PPI version 1", LinkTypePPI, badPPI(func(b []byte) { b[0] = 1 }), ErrMalformed},
		{"PPI header longer than the frame", LinkTypePPI, badPPI(func(b []byte) { binary.LittleEndian.PutUint16(b[2:4], 0xfff0) }), ErrMalformed},
		{"PPI header shorter than itself", LinkTypePPI, badPPI(func(b []byte) { binary.LittleEndian.PutUint16(b[2:4], 4) }), ErrMalformed},
		{"PPI carrying radiotap", LinkTypePPI, badPPI(func(b []byte) { binary.LittleEndian.PutUint32(b[4:8], 127) }), ErrUnsupportedLinkType},
		{"PPI carrying 802.11, its fields past the header", LinkTypePPI, func() []byte {
			b := cat(ppiHeader(105), ethHeader(0x0800), v4)
			binary.LittleEndian.PutUint16(b[10:12], 100)
			return b
		}(), ErrMalformed},
		{"PPI carrying PPI", LinkTypePPI, cat(ppiHeader(192), ppiHeader(1), ethHeader(0x0800), v4), ErrUnsupportedLinkType},
		{"PPI carrying a link type above 16 bits", LinkTypePPI, badPPI(func(b []byte) { binary.LittleEndian.PutUint32(b[4:8], 1<<16|1) }), ErrUnsupportedLinkType},
	}
	for _, tc := range tests {
		var p schemas.Packet
		err := NewDecoder(lanOnly).Decode(tc.link, tc.data, gopacket.CaptureInfo{Length: len(tc.data), CaptureLength: len(tc.data)}, 3, &p)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Decode error = %v, want %v", tc.name, err, tc.want)
		}
	}
}
