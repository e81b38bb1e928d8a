package main

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/homemole/homemole/internal/tzsptest"
)

// linkFixture is a capture of one link type: every IP packet of
// linkFixturePackets behind the fixture's link header, then frames of the
// link's own that carry no IP.
type linkFixture struct {
	name string
	link uint16
	ng   bool // written as pcapng instead of pcap
	// wrap puts the link header in front of an IP packet.
	wrap func(ip []byte, v6 bool) []byte
	// nonIP are frames of the link that carry no IP (control protocols).
	nonIP [][]byte
	// dissected is what tshark's frame.protocols must start with for the
	// IP frames, so that the check knows tshark read the link as meant.
	dissected string
	// bridged is how many bytes longer each frame is than the Ethernet
	// frame an access point bridges it to (802.11), or that a cooked
	// capture's frame was on the LAN (SLL), whose length HomeMole gives.
	bridged int
	// carried says each frame carries the frame HomeMole reads inside
	// another (TZSP): tshark's fields are then their last occurrences.
	carried bool
}

func join(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func pick[T any](v6 bool, v4, v6v T) T {
	if v6 {
		return v6v
	}
	return v4
}

var (
	fixDev, fixGW = net.HardwareAddr{2, 0, 0, 0, 0, 0x10}, net.HardwareAddr{2, 0, 0, 0, 0, 1}
)

func ethHdr(et uint16) []byte {
	return binary.BigEndian.AppendUint16(join(fixGW, fixDev), et)
}

func pppoe(ppp []byte) []byte {
	h := []byte{0x11, 0x00, 0x00, 0x2a, 0, 0}
	binary.BigEndian.PutUint16(h[4:6], uint16(len(ppp)))
	return join(h, ppp)
}

func ppi(inner uint32) []byte {
	h := make([]byte, 8+4+20)
	binary.LittleEndian.PutUint16(h[2:4], uint16(len(h)))
	binary.LittleEndian.PutUint32(h[4:8], inner)
	binary.LittleEndian.PutUint16(h[8:10], 2) // 802.11-common
	binary.LittleEndian.PutUint16(h[10:12], 20)
	return h
}

// pktapHdr is an Apple PKTAP header (xnu's struct pktap_header, 108
// bytes, little-endian) for a packet that came in on ifname in link type
// dlt, sent to a process named by the header too.
func pktapHdr(dlt uint32, ifname string) []byte {
	h := make([]byte, 108)
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(h)))
	binary.LittleEndian.PutUint32(h[4:8], 1) // a packet follows
	binary.LittleEndian.PutUint32(h[8:12], dlt)
	copy(h[12:36], ifname)
	binary.LittleEndian.PutUint32(h[36:40], 1) // in
	binary.LittleEndian.PutUint32(h[52:56], 321)
	copy(h[56:73], "mDNSResponder")
	return h
}

// nflogHdrLen is how many bytes nflogWrap puts before the packet.
const nflogHdrLen = 4 + 8 + 12 + 8 + 4

// nflogWrap puts an IP packet in an NFLOG record as the kernel logs one
// coming in (little-endian attributes) by a link without Ethernet (a tun
// or PPP interface): the packet header (its EtherType, the PREROUTING
// hook), the rule's prefix, the incoming interface, then the packet, which
// ends the record without padding.
func nflogWrap(ip []byte, v6 bool) []byte {
	b := []byte{pick[byte](v6, 2, 10), 0, 0, 5}
	tlv := func(typ uint16, v []byte) {
		b = binary.LittleEndian.AppendUint16(b, uint16(4+len(v)))
		b = binary.LittleEndian.AppendUint16(b, typ)
		b = append(b, v...)
		for typ != 9 && len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	tlv(1, append(ipEtherType(v6), 0, 0)) // PREROUTING
	tlv(10, []byte("hm-lan\x00"))
	tlv(4, []byte{0, 0, 0, 3})
	tlv(9, ip)
	return b
}

// wlanData is an 802.11 data frame's header and LLC/SNAP header from the
// device to the gateway through an access point (ToDS), or back (FromDS),
// with a QoS control field when qos; et is the MSDU's EtherType.
func wlanData(toAP, qos bool, et []byte) []byte {
	bssid := net.HardwareAddr{2, 0, 0, 0, 0x0a, 1}
	fc := []byte{0x08, 0x01}
	addrs := join(bssid, fixDev, fixGW)
	if !toAP {
		fc[1], addrs = 0x02, join(fixDev, bssid, fixGW)
	}
	if qos {
		fc[0] = 0x88
	}
	h := join(fc, []byte{0, 0}, addrs, []byte{0x10, 0})
	if qos {
		h = append(h, 0, 0)
	}
	return join(h, []byte{0xaa, 0xaa, 0x03, 0, 0, 0}, et)
}

// radiotapTSFT is a radiotap header with TSFT and Flags (none set) present.
var radiotapTSFT = []byte{0, 0, 18, 0, 0x03, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0}

// prismHdr is a Prism monitoring header (little-endian, 144 bytes), avsHdr
// an AVS one (version 1, 64 bytes).
var (
	prismHdr = join([]byte{0x44, 0, 0, 0, 144, 0, 0, 0}, []byte("wlan0"), make([]byte, 144-8-5))
	avsHdr   = join([]byte{0x80, 0x21, 0x10, 0x01, 0, 0, 0, 64}, make([]byte, 56))
)

// arpRequest is an ARP request from the device for the gateway.
var arpRequest = join([]byte{0, 1, 8, 0, 6, 4, 0, 1}, fixDev, []byte{192, 168, 1, 10}, make([]byte, 6), []byte{192, 168, 1, 1})

// nullWrap wraps IP packets in a BSD loopback header: the address family
// in byte order o, 2 for IPv4, and af6 for IPv6, which differs between
// systems.
func nullWrap(o binary.AppendByteOrder, af6 uint32) func(ip []byte, v6 bool) []byte {
	return func(ip []byte, v6 bool) []byte {
		return join(o.AppendUint32(nil, pick[uint32](v6, 2, af6)), ip)
	}
}

// pflogWrap puts an IP packet behind a pf log header whose length byte
// is length, padded to 4 bytes, of af6 for IPv6, logged passing in on
// em0 by rule 3.
func pflogWrap(length int, af6 byte) func(ip []byte, v6 bool) []byte {
	return func(ip []byte, v6 bool) []byte {
		h := make([]byte, (length+3)&^3)
		h[0], h[1] = byte(length), pick(v6, byte(2), af6)
		copy(h[4:20], "em0")
		binary.BigEndian.PutUint32(h[36:40], 3)
		h[60] = 1 // in
		return join(h, ip)
	}
}

// mirrorWrap puts an IP packet in an Ethernet frame and that, behind hdr,
// in an IPv4 packet of protocol proto from a mirror to a collector: UDP
// to VXLAN's port for 17, GRE for 47.
func mirrorWrap(proto byte, hdr []byte) func(ip []byte, v6 bool) []byte {
	return func(ip []byte, v6 bool) []byte {
		payload := join(hdr, ethHdr(pick[uint16](v6, 0x0800, 0x86dd)), ip)
		if proto == 17 {
			payload = join(binary.BigEndian.AppendUint16([]byte{0x9c, 0x40, 0x12, 0xb5}, uint16(8+len(payload))), []byte{0, 0}, payload)
		}
		outer := join(tzsptest.CollectorMAC, tzsptest.SnifferMAC, []byte{0x08, 0x00, 0x45, 0, 0, 0, 0, 1, 0, 0, 64, proto, 0, 0}, tzsptest.SnifferIP, tzsptest.CollectorIP)
		binary.BigEndian.PutUint16(outer[14+2:], uint16(20+len(payload)))
		return join(outer, payload)
	}
}

// rawIP is the wrap of the link types that carry bare IP packets.
func rawIP(ip []byte, _ bool) []byte { return ip }

// pppIP wraps an IP packet in a PPP frame without address and control
// fields: the protocol alone, 0x21 for IPv4, 0x57 for IPv6.
func pppIP(ip []byte, v6 bool) []byte { return join([]byte{0x00, pick[byte](v6, 0x21, 0x57)}, ip) }

// ipEtherType is the EtherType of an IP version, as it is sent.
func ipEtherType(v6 bool) []byte {
	return binary.BigEndian.AppendUint16(nil, pick[uint16](v6, 0x0800, 0x86dd))
}

var linkFixtures = []linkFixture{
	{name: "null-le-darwin", link: 0, dissected: "null:ip", wrap: nullWrap(binary.LittleEndian, 30)},
	{name: "null-be-freebsd", link: 0, dissected: "null:ip", wrap: nullWrap(binary.BigEndian, 28)},
	{name: "null-le-openbsd", link: 0, dissected: "null:ip", wrap: nullWrap(binary.LittleEndian, 24)},
	{name: "loop", link: 108, dissected: "null:ip", wrap: nullWrap(binary.BigEndian, 24)},
	{name: "ppp-hdlc", link: 9, dissected: "ppp:ip",
		wrap:  func(ip []byte, v6 bool) []byte { return join([]byte{0xff, 0x03}, pppIP(ip, v6)) },
		nonIP: [][]byte{{0xff, 0x03, 0xc0, 0x21, 0x09, 0x01, 0x00, 0x08, 0x12, 0x34, 0x56, 0x78}}}, // LCP echo request
	{name: "ppp-bare", link: 9, dissected: "ppp:ip", wrap: pppIP},
	{name: "raw-12", link: 12, dissected: "raw:ip", wrap: rawIP},
	{name: "raw-12-pcapng", link: 12, ng: true, dissected: "raw:ip", wrap: rawIP},
	{name: "raw-14", link: 14, dissected: "raw:ip", wrap: rawIP},
	{name: "raw-101", link: 101, dissected: "raw:ip", wrap: rawIP},
	{name: "cisco-hdlc", link: 104, dissected: "chdlc:ip",
		wrap: func(ip []byte, v6 bool) []byte {
			return join([]byte{0x0f, 0x00}, ipEtherType(v6), ip)
		},
		nonIP: [][]byte{{0x8f, 0x00, 0x80, 0x35, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 6, 0xff, 0xff, 0, 0}}}, // SLARP keepalive
	{name: "pppoe", link: 1, dissected: "eth:ethertype:pppoes:ppp:ip",
		wrap: func(ip []byte, v6 bool) []byte {
			return join(ethHdr(0x8864), pppoe(pppIP(ip, v6)))
		},
		nonIP: [][]byte{
			join(ethHdr(0x8863), []byte{0x11, 0x09, 0, 0, 0, 4, 0x01, 0x01, 0, 0}),  // PADI
			join(ethHdr(0x8864), pppoe([]byte{0xc0, 0x21, 0x09, 0x02, 0x00, 0x04})), // LCP echo
		}},
	{name: "vlan-pppoe", link: 1, dissected: "eth:ethertype:vlan:ethertype:pppoes:ppp:ip",
		wrap: func(ip []byte, v6 bool) []byte {
			return join(ethHdr(0x8100), []byte{0x00, 0x07, 0x88, 0x64}, pppoe(pppIP(ip, v6)))
		}},
	{name: "dot1q", link: 1, dissected: "eth:ethertype:vlan:ethertype:ip",
		wrap: func(ip []byte, v6 bool) []byte {
			return join(ethHdr(0x8100), []byte{0x00, 0x0a}, ipEtherType(v6), ip)
		}},
	{name: "qinq-88a8", link: 1, dissected: "eth:ethertype:ieee8021ad:ethertype:vlan:ethertype:ip",
		wrap: func(ip []byte, v6 bool) []byte {
			return join(ethHdr(0x88a8), []byte{0x00, 0x64, 0x81, 0x00, 0x00, 0x0a}, ipEtherType(v6), ip)
		}},
	{name: "qinq-9100", link: 1, dissected: "eth:ethertype:vlan:ethertype:vlan:ethertype:ip",
		wrap: func(ip []byte, v6 bool) []byte {
			return join(ethHdr(0x9100), []byte{0x00, 0x64, 0x81, 0x00, 0x00, 0x0a}, ipEtherType(v6), ip)
		}},
	// A gateway's tcpdump -i any (SLL; pcapgo cannot write SLL2's 276):
	// frames a device sent in, read as the Ethernet frames they were.
	{name: "linux-sll", link: 113, dissected: "sll:ethertype:ip", bridged: 16 - 14,
		wrap: func(ip []byte, v6 bool) []byte {
			return join([]byte{0, 0, 0, 1, 0, 6}, fixDev, []byte{0, 0}, ipEtherType(v6), ip)
		},
		nonIP: [][]byte{join([]byte{0, 1, 0, 1, 0, 6}, fixDev, []byte{0, 0, 8, 6}, arpRequest)}},
	{name: "ppi-ethernet", link: 192, dissected: "ppi:pcap_pktdata:eth:ethertype:ip",
		wrap: func(ip []byte, v6 bool) []byte {
			return join(ppi(1), ethHdr(pick[uint16](v6, 0x0800, 0x86dd)), ip)
		}},
	{name: "ppi-raw", link: 192, dissected: "ppi:pcap_pktdata:raw:ip",
		wrap: func(ip []byte, _ bool) []byte { return join(ppi(101), ip) }},
	// macOS tcpdump -i pktap: every interface, each frame in its own link
	// type behind Apple's header: Ethernet on en0, read as the Ethernet
	// frames they were; and a VPN client's utun, BSD loopback framing.
	{name: "pktap-ethernet", link: 258, dissected: "pktap:pcap_pktdata:eth:ethertype:ip", bridged: 108,
		wrap: func(ip []byte, v6 bool) []byte {
			return join(pktapHdr(1, "en0"), ethHdr(pick[uint16](v6, 0x0800, 0x86dd)), ip)
		},
		nonIP: [][]byte{join(pktapHdr(1, "en0"), ethHdr(0x0806), arpRequest)}},
	{name: "pktap-utun", link: 258, dissected: "pktap:pcap_pktdata:null:ip",
		wrap: func(ip []byte, v6 bool) []byte {
			return join(pktapHdr(0, "utun3"), nullWrap(binary.LittleEndian, 30)(ip, v6))
		}},
	// A Linux gateway's iptables or nftables log (tcpdump -i nflog:5):
	// each packet behind netlink attributes, read as the packet itself.
	{name: "nflog", link: 239, dissected: "nflog:ip", bridged: nflogHdrLen, wrap: nflogWrap},
	// A BSD gateway's pf log (tcpdump -i pflog0): FreeBSD's and pfSense's
	// header (IPv6 is 28) and OpenBSD's (24), read as the packet itself.
	{name: "pflog-freebsd", link: 117, dissected: "pflog:ip", bridged: 64, wrap: pflogWrap(61, 28)},
	{name: "pflog-openbsd", link: 117, dissected: "pflog:ip", bridged: 100, wrap: pflogWrap(100, 24)},
	// A MikroTik's packet sniffer streaming the LAN to a collector, whose
	// capture holds TZSP datagrams: read as the frames they carry.
	{name: "tzsp", link: 1, dissected: "eth:ethertype:ip:udp:tzsp:eth:ethertype:ip", bridged: 14 + 20 + 8 + 8, carried: true,
		wrap: func(ip []byte, v6 bool) []byte {
			return tzsptest.Sniffed(join(ethHdr(pick[uint16](v6, 0x0800, 0x86dd)), ip), 1)[0]
		}},
	// Mirror ports sending to a collector: VXLAN (cloud traffic
	// mirroring), Linux gretap, a switch's ERSPAN type II.
	{name: "vxlan", link: 1, dissected: "eth:ethertype:ip:udp:vxlan:eth:ethertype:ip", bridged: 14 + 20 + 8 + 8, carried: true,
		wrap: mirrorWrap(17, []byte{0x08, 0, 0, 0, 0, 0, 42, 0})},
	{name: "gretap", link: 1, dissected: "eth:ethertype:ip:gre:eth:ethertype:ip", bridged: 14 + 20 + 4, carried: true,
		wrap: mirrorWrap(47, []byte{0, 0, 0x65, 0x58})},
	{name: "erspan-ii", link: 1, dissected: "eth:ethertype:ip:gre:erspan:eth:ethertype:ip", bridged: 14 + 20 + 8 + 8, carried: true,
		wrap: mirrorWrap(47, []byte{0x10, 0, 0x88, 0xbe, 0, 0, 0, 9, 0x10, 0, 0, 1, 0, 0, 0, 0})},
	// Wi-Fi: QoS data to the access point behind radiotap, plain data
	// from it, and data behind PPI; ARP is the frame without IP.
	{name: "radiotap-80211", link: 127, dissected: "radiotap:wlan_radio:wlan:llc:ip", bridged: 18 + 26 + 8 - 14,
		wrap:  func(ip []byte, v6 bool) []byte { return join(radiotapTSFT, wlanData(true, true, ipEtherType(v6)), ip) },
		nonIP: [][]byte{join(radiotapTSFT, wlanData(true, true, []byte{0x08, 0x06}), arpRequest)}},
	{name: "80211", link: 105, dissected: "wlan:llc:ip", bridged: 24 + 8 - 14,
		wrap:  func(ip []byte, v6 bool) []byte { return join(wlanData(false, false, ipEtherType(v6)), ip) },
		nonIP: [][]byte{join(wlanData(true, false, []byte{0x08, 0x06}), arpRequest)}},
	{name: "prism-80211", link: 119, dissected: "prism:wlan_radio:wlan:llc:ip", bridged: 144 + 24 + 8 - 14,
		wrap: func(ip []byte, v6 bool) []byte { return join(prismHdr, wlanData(true, false, ipEtherType(v6)), ip) }},
	{name: "avs-80211", link: 163, dissected: "wlancap:wlan_radio:wlan:llc:ip", bridged: 64 + 26 + 8 - 14,
		wrap: func(ip []byte, v6 bool) []byte { return join(avsHdr, wlanData(false, true, ipEtherType(v6)), ip) }},
	{name: "ppi-80211", link: 192, dissected: "ppi:wlan_radio:wlan:llc:ip", bridged: 32 + 24 + 8 - 14,
		wrap: func(ip []byte, v6 bool) []byte { return join(ppi(105), wlanData(true, false, ipEtherType(v6)), ip) }},
}

// linkFixturePackets are the IP packets every fixture carries: both IP
// versions, TCP with options and with TLS, UDP, ICMP.
func linkFixturePackets(t *testing.T) (ips [][]byte, v6 []bool) {
	t.Helper()
	dev4, cloud4 := net.IP{192, 168, 1, 10}, net.IP{52, 10, 20, 30}
	dev6, cloud6 := net.ParseIP("2001:db8:1::10"), net.ParseIP("2606:4700::1111")
	ip4 := func(p layers.IPProtocol, src, dst net.IP) *layers.IPv4 {
		return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 4321, Flags: layers.IPv4DontFragment, Protocol: p, SrcIP: src, DstIP: dst}
	}
	ip6 := func(p layers.IPProtocol, src, dst net.IP) *layers.IPv6 {
		return &layers.IPv6{Version: 6, HopLimit: 57, NextHeader: p, SrcIP: src, DstIP: dst}
	}
	tls := make([]byte, 5+120)
	tls[0], tls[1], tls[2], tls[4] = 23, 3, 3, 120
	ntp := make([]byte, 48)
	ntp[0] = 0x23
	dns := gopacket.NewSerializeBuffer()
	if err := (&layers.DNS{ID: 9, RD: true, Questions: []layers.DNSQuestion{{Name: []byte("api.example.com"), Type: layers.DNSTypeAAAA, Class: layers.DNSClassIN}}}).
		SerializeTo(dns, gopacket.SerializeOptions{FixLengths: true}); err != nil {
		t.Fatal(err)
	}
	syn := &layers.TCP{SrcPort: 50123, DstPort: 443, Seq: 1, SYN: true, Window: 64240,
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}, {OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2}}}
	packets := []struct {
		v6 bool
		ls []gopacket.SerializableLayer
	}{
		{false, []gopacket.SerializableLayer{ip4(layers.IPProtocolUDP, dev4, cloud4), &layers.UDP{SrcPort: 123, DstPort: 123}, gopacket.Payload(ntp)}},
		{false, []gopacket.SerializableLayer{ip4(layers.IPProtocolTCP, dev4, cloud4), syn}},
		{true, []gopacket.SerializableLayer{ip6(layers.IPProtocolTCP, cloud6, dev6), &layers.TCP{SrcPort: 443, DstPort: 50124, Seq: 9, Ack: 7, ACK: true, PSH: true, Window: 501}, gopacket.Payload(tls)}},
		{true, []gopacket.SerializableLayer{ip6(layers.IPProtocolUDP, dev6, cloud6), &layers.UDP{SrcPort: 40000, DstPort: 53}, gopacket.Payload(dns.Bytes())}},
		{false, []gopacket.SerializableLayer{ip4(layers.IPProtocolICMPv4, dev4, cloud4), &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 3, Seq: 1}, gopacket.Payload(make([]byte, 32))}},
	}
	for _, p := range packets {
		buf := gopacket.NewSerializeBuffer()
		for _, l := range p.ls {
			if n, ok := l.(interface {
				SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
			}); ok {
				if err := n.SetNetworkLayerForChecksum(p.ls[0].(gopacket.NetworkLayer)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, p.ls...); err != nil {
			t.Fatalf("build fixture packet: %v", err)
		}
		ips, v6 = append(ips, bytes.Clone(buf.Bytes())), append(v6, p.v6)
	}
	return ips, v6
}

// capFrame is a frame to write and its capture info.
type capFrame struct {
	ci   gopacket.CaptureInfo
	data []byte
}

// writeCapture writes frames, each whole (its captured length its length),
// to path as a capture of link type link, pcapng with ng, else pcap, and
// returns the file's bytes. pcapgo takes link types up to 255; a pcap
// header gets a larger one (Apple PKTAP's 258) written over it.
func writeCapture(t *testing.T, path string, link uint16, ng bool, frames []capFrame) []byte {
	t.Helper()
	var buf bytes.Buffer
	var write func(gopacket.CaptureInfo, []byte) error
	flush := func() error { return nil } // a pcap writer does not buffer
	switch {
	case link > 255 && ng:
		t.Fatalf("%s: pcapgo writes no pcapng of link type %d", path, link)
	case ng:
		w, err := pcapgo.NewNgWriter(&buf, layers.LinkType(link))
		if err != nil {
			t.Fatal(err)
		}
		write, flush = w.WritePacket, w.Flush
	default:
		w := pcapgo.NewWriter(&buf)
		if err := w.WriteFileHeader(65535, layers.LinkType(link&0xff)); err != nil {
			t.Fatal(err)
		}
		binary.LittleEndian.PutUint32(buf.Bytes()[20:24], uint32(link)) // pcapgo's header is little-endian
		write = w.WritePacket
	}
	for i, f := range frames {
		f.ci.CaptureLength, f.ci.Length = len(f.data), len(f.data)
		if err := write(f.ci, f.data); err != nil {
			t.Fatalf("write %s frame %d: %v", path, i, err)
		}
	}
	if err := flush(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// writeLinkFixture writes the fixture's capture and returns its path and
// how many of its frames carry IP.
func writeLinkFixture(t *testing.T, dir string, fx linkFixture, ips [][]byte, v6 []bool) (string, int) {
	t.Helper()
	var frames [][]byte
	for i, ip := range ips {
		frames = append(frames, fx.wrap(ip, v6[i]))
	}
	frames = append(frames, fx.nonIP...)
	start := time.Unix(1_700_000_000, 250_000_000)
	var capFrames []capFrame
	for i, f := range frames {
		capFrames = append(capFrames, capFrame{gopacket.CaptureInfo{Timestamp: start.Add(time.Duration(i) * 1500 * time.Microsecond)}, f})
	}
	path := filepath.Join(dir, fx.name+map[bool]string{false: ".pcap", true: ".pcapng"}[fx.ng])
	writeCapture(t, path, fx.link, fx.ng, capFrames)
	return path, len(ips)
}

// TestLinkTypesAgreeWithTshark writes one capture per link type the
// decoder reads beyond plain Ethernet and compares `homemole features` with
// tshark on every frame. tshark must have dissected each IP frame down to
// its IP header through the intended link layer, or the fixture is wrong.
func TestLinkTypesAgreeWithTshark(t *testing.T) {
	needTshark(t)
	ips, v6 := linkFixturePackets(t)
	dir := t.TempDir()
	for _, fx := range linkFixtures {
		t.Run(fx.name, func(t *testing.T) {
			path, nIP := writeLinkFixture(t, dir, fx, ips, v6)
			c := compareWithTshark(t, path, fx.bridged, pick(fx.carried, "f", "l"))
			if c.packets != nIP+len(fx.nonIP) {
				t.Fatalf("%d rows, want %d", c.packets, nIP+len(fx.nonIP))
			}
			for i, proto := range c.protocols {
				want := fx.dissected
				if i < nIP && v6[i] {
					want += "v6"
				}
				if i < nIP && !strings.HasPrefix(proto, want) {
					t.Errorf("tshark dissected frame %d as %s, want %s...: the fixture is not what it should be", i+1, proto, want)
				}
				if i >= nIP && strings.Contains(proto, ":ip") {
					t.Errorf("tshark found IP in the non-IP frame %d: %s", i+1, proto)
				}
			}
			if c.present["transport"] != nIP {
				t.Errorf("tshark saw an IP header in %d frames, want %d", c.present["transport"], nIP)
			}
			for _, f := range comparedFields {
				if c.agree[f] != c.packets {
					t.Errorf("%s: %d of %d frames agree", f, c.agree[f], c.packets)
				}
			}
		})
	}
}
