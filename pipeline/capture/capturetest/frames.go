package capturetest

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// IPFrame is one Ethernet frame of a home a test lays out by hand: IPv4 or
// IPv6 by the addresses, a TCP segment of an open connection (ACK, PSH and
// 40 bytes) or a UDP datagram between the ports, sent with TTL (the hop
// limit in IPv6; 64 when zero).
type IPFrame struct {
	SrcMAC, DstMAC   string
	Src, Dst         string
	SrcPort, DstPort uint16
	TCP              bool
	TTL              uint8
}

// Bytes is the frame on the wire.
func (f IPFrame) Bytes(tb testing.TB) []byte {
	tb.Helper()
	src, dst := netip.MustParseAddr(f.Src), netip.MustParseAddr(f.Dst)
	ttl := f.TTL
	if ttl == 0 {
		ttl = 64
	}
	proto := layers.IPProtocolUDP
	if f.TCP {
		proto = layers.IPProtocolTCP
	}
	eth := &layers.Ethernet{SrcMAC: hwAddr(tb, f.SrcMAC), DstMAC: hwAddr(tb, f.DstMAC), EthernetType: layers.EthernetTypeIPv4}
	var ip interface {
		gopacket.SerializableLayer
		gopacket.NetworkLayer
	}
	if src.Is4() {
		ip = &layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip = &layers.IPv6{Version: 6, HopLimit: ttl, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	}
	var l4 gopacket.SerializableLayer
	if f.TCP {
		tcp := &layers.TCP{SrcPort: layers.TCPPort(f.SrcPort), DstPort: layers.TCPPort(f.DstPort), ACK: true, PSH: true, Window: 1024}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			tb.Fatal(err)
		}
		l4 = tcp
	} else {
		udp := &layers.UDP{SrcPort: layers.UDPPort(f.SrcPort), DstPort: layers.UDPPort(f.DstPort)}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			tb.Fatal(err)
		}
		l4 = udp
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, l4, gopacket.Payload(make([]byte, 40))); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// RouterAdvertisement is an ICMPv6 router advertisement from mac, sent from
// its link-local address ll to all nodes.
func RouterAdvertisement(tb testing.TB, mac, ll string) []byte {
	tb.Helper()
	ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6,
		SrcIP: netip.MustParseAddr(ll).AsSlice(), DstIP: net.ParseIP("ff02::1")}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeRouterAdvertisement, 0)}
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: hwAddr(tb, mac), DstMAC: net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, EthernetType: layers.EthernetTypeIPv6},
		ip, icmp, gopacket.Payload(make([]byte, 12))); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// WriteEthernet writes frames into a new Ethernet pcap file under the
// test's temporary directory, 100 ms apart, and returns its path.
func WriteEthernet(tb testing.TB, frames [][]byte) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "home.pcap")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		tb.Fatal(err)
	}
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	for i, b := range frames {
		ci := gopacket.CaptureInfo{Timestamp: t0.Add(time.Duration(i) * 100 * time.Millisecond), CaptureLength: len(b), Length: len(b)}
		if err := w.WritePacket(ci, b); err != nil {
			tb.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return path
}

func hwAddr(tb testing.TB, s string) net.HardwareAddr {
	tb.Helper()
	m, err := net.ParseMAC(s)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// IPv6OnlyOneCloud is the capture of one device of an IPv6-only home and
// its router, with no router advertisement: the device asks the router's
// resolver at its link-local address, and talks to one cloud server (its
// answers come at hopLimit, 64 when zero), from its stable address and
// then from a temporary one. The device has more addresses than the
// router: 20 rounds of four frames.
func IPv6OnlyOneCloud(hopLimit uint8) (frames []IPFrame, router, device string) {
	const cloud = "2600:1f18:4a3:6d00::10"
	router, device = "02:aa:00:00:00:01", "02:00:00:00:00:11"
	for i := range 20 {
		src := "2001:db8:1::ff:fe00:11"
		if i >= 10 {
			src = "2001:db8:1:0:8c1e:53aa:1b2:77c3"
		}
		frames = append(frames,
			IPFrame{SrcMAC: device, DstMAC: router, Src: "fe80::ff:fe00:11", Dst: "fe80::1", SrcPort: 33000, DstPort: 53},
			IPFrame{SrcMAC: router, DstMAC: device, Src: "fe80::1", Dst: "fe80::ff:fe00:11", SrcPort: 53, DstPort: 33000},
			IPFrame{SrcMAC: device, DstMAC: router, Src: src, Dst: cloud, SrcPort: 40000, DstPort: 8883, TCP: true},
			IPFrame{SrcMAC: router, DstMAC: device, Src: cloud, Dst: src, SrcPort: 8883, DstPort: 40000, TCP: true, TTL: hopLimit})
	}
	return frames, router, device
}
