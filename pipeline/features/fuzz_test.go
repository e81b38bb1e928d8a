package features

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/schemas"
)

// decodeSeed is a frame of one link type.
type decodeSeed struct {
	link LinkType
	data []byte
}

// decodeSeeds are FuzzDecode's seeds: a frame of each link type and
// header chain the decoder reads, and every 50th frame of a real capture.
func decodeSeeds(tb testing.TB) []decodeSeed {
	seeds := []decodeSeed{
		{LinkTypeEthernet, build(tb, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50000, 443, "PA"), tlsRecord(23, 40))},
		{LinkTypeEthernet, build(tb, eth(devMAC, gwMAC, layers.EthernetTypeDot1Q), &layers.Dot1Q{Type: layers.EthernetTypeIPv6}, ip6(dev6, cloud6, layers.IPProtocolUDP), udp(1, 53), dnsQuery(tb))},
		{LinkTypeEthernet, build(tb, eth(gwMAC, devMAC, layers.EthernetTypeIPv6), ip6(cloud6, dev6, layers.IPProtocolIPv6Destination),
			gopacket.Payload{byte(layers.IPProtocolIPv6Fragment), 0, 1, 4, 0, 0, 0, 0}, gopacket.Payload{17, 0, 0, 1, 0, 0, 0, 42}, udp(53, 4000), gopacket.Payload(make([]byte, 20)))},
		{LinkTypeEthernet, build(tb, eth(devMAC, ssdpMAC, layers.EthernetTypeIPv4), ip4(devIP, ssdpIP, layers.IPProtocolUDP), udp(1900, 1900), gopacket.Payload("M-SEARCH * HTTP/1.1\r\n\r\n"))},
		{LinkTypeLinuxSLL, append(sllHeader(0x0800), build(tb, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp())...)},
		{LinkTypeLinuxSLL2, append(sll2Header(0x86dd), build(tb, ip6(dev6, cloud6, layers.IPProtocolTCP), tcp(1, 2, "S"))...)},
		{LinkTypeRaw, build(tb, ip4(devIP, cloudIP, layers.IPProtocolICMPv4), gopacket.Payload(make([]byte, 8)))},
		{LinkTypeNull, cat([]byte{30, 0, 0, 0}, build(tb, ip6(dev6, cloud6, layers.IPProtocolUDP), udp(1, 53), dnsQuery(tb)))},
		{LinkTypeLoop, cat([]byte{0, 0, 0, 2}, build(tb, ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(1, 2, "S")))},
		{LinkTypePPP, cat([]byte{0xff, 0x03, 0x00, 0x21}, build(tb, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp()))},
		{LinkTypePPP, cat([]byte{0x57}, build(tb, ip6(dev6, cloud6, layers.IPProtocolTCP), tcp(1, 2, "S")))},
		{LinkTypeRawDLT, cat([]byte{0, 0, 0, 24}, build(tb, ip6(dev6, cloud6, layers.IPProtocolTCP), tcp(1, 2, "S")))},
		{LinkTypeRawOpenBSD, build(tb, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp())},
		{LinkTypeCiscoHDLC, cat([]byte{0x0f, 0x00, 0x86, 0xdd}, build(tb, ip6(dev6, cloud6, layers.IPProtocolUDP), udp(123, 123), ntp()))},
		{LinkTypeEthernet, cat(ethHeader(0x8100), []byte{0, 7, 0x88, 0x64}, pppoeHeader(50), []byte{0, 0x21}, build(tb, ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(1, 2, "S")))},
		{LinkTypeEthernet, cat(ethHeader(0x88a8), []byte{0, 7, 0x81, 0x00, 0, 8, 0x08, 0x00}, build(tb, ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(1, 2, "S")))},
		{LinkTypePPI, cat(ppiHeader(1), ethHeader(0x0800), build(tb, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp()))},
		{LinkTypePKTAP, cat(pktapHeader(1, "en0"), ethHeader(0x0800), build(tb, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp()))},
		{LinkTypePKTAP, cat(pktapHeader(0, "utun3"), []byte{30, 0, 0, 0}, build(tb, ip6(dev6, cloud6, layers.IPProtocolTCP), tcp(1, 2, "S")))},
		{LinkTypeNFLOG, nflogRecord(binary.LittleEndian, afInet, 0x0800, build(tb, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp()))},
		{LinkTypeNFLOG, nflogRecord(binary.BigEndian, afInet6, 0x86dd, build(tb, ip6(dev6, cloud6, layers.IPProtocolTCP), tcp(1, 2, "S")))},
		{LinkTypeNFLOG, nflogRecord(binary.LittleEndian, 7, 0x0806, make([]byte, 28))},
		{LinkTypePFLOG, cat(pflogHeader(61, 2, "igb1", 2), build(tb, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp()))},
		{LinkTypePFLOG, cat(pflogHeader(100, 24, "em0", 1), build(tb, ip6(dev6, cloud6, layers.IPProtocolTCP), tcp(1, 2, "S")))},
		// A remote sniffer's TZSP datagrams: an Ethernet frame with tags,
		// the first fragment of a full-size one, and a Wi-Fi frame.
		{LinkTypeEthernet, tzspOver4(tb, TZSPPort, 1, tzspPayload(tzspTypeRX, 1, []byte{10, 1, 0xc4, 0}, build(tb, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(1, 2, "S"))))},
		{LinkTypeEthernet, func() []byte {
			first, _ := fragment4(tzspOver4(tb, TZSPPort, 2, tzspPayload(tzspTypeRX, 1, nil, build(tb, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(1, 2), gopacket.Payload(make([]byte, 1472))))), 1480)
			return first
		}()},
		{LinkTypeEthernet, tzspOver4(tb, TZSPPort, 3, tzspPayload(tzspTypeRX, 18, nil, wifiCase{ds: dot11ToDS}.dataFrame(devMAC, gwMAC, cat(snap(0x0800), build(tb, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp())))))},
		// A STUN Binding success to a device's port 37008, TZSP's: no
		// TZSP header.
		{LinkTypeEthernet, build(tb, eth(gwMAC, devMAC, layers.EthernetTypeIPv4), ip4(cloudIP, devIP, layers.IPProtocolUDP), udp(3478, TZSPPort),
			gopacket.Payload(cat([]byte{0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42}, make([]byte, 12), []byte{0x00, 0x20, 0x00, 0x08, 0, 1, 0x90, 0x90, 1, 2, 3, 4})))},
		// VXLAN and ERSPAN type III mirrors.
		{LinkTypeEthernet, mirrorOver4(tb, layers.IPProtocolUDP, VXLANPort, cat(vxlanHdr, build(tb, eth(devMAC, gwMAC, layers.EthernetTypeIPv6), ip6(dev6, cloud6, layers.IPProtocolUDP), udp(1, 53), dnsQuery(tb))))},
		{LinkTypeEthernet, mirrorOver4(tb, layers.IPProtocolGRE, 0, cat(erspanIIIPlatHd, build(tb, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(1, 2, "S"))))},
		// Header options: IPv4's router alert, TCP's MSS, NOPs and SACK
		// permitted, an IPv6 hop-by-hop header (PadN) and a jumbogram
		// (hop-by-hop jumbo length 70000, the UDP length 0, cut short).
		{LinkTypeEthernet, build(tb, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4opts(devIP, cloudIP, layers.IPProtocolTCP), tcpOpts(50000, 443), tlsRecord(22, 30))},
		{LinkTypeEthernet, build(tb, eth(devMAC, gwMAC, layers.EthernetTypeIPv6), ip6(dev6, cloud6, layers.IPProtocolIPv6HopByHop),
			gopacket.Payload{17, 0, 1, 4, 0, 0, 0, 0}, udp(5353, 5353), dnsQuery(tb))},
		{LinkTypeRaw, cat([]byte{0x60, 0, 0, 0, 0, 0, 0, 64}, dev6.To16(), cloud6.To16(), []byte{17, 0, 0xc2, 4, 0, 1, 0x11, 0x70}, []byte{0, 53, 0, 53, 0, 0, 0, 0}, make([]byte, 32))},
		// IPsec authentication headers, in IPv4 and behind IPv6's
		// destination options; a SYN with 20 bytes of options behind an
		// IPv6 routing header (the fuzz target reads each seed cut by a
		// snap length too).
		{LinkTypeEthernet, build(tb, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolAH), ahHeader(layers.IPProtocolTCP), tcp(50000, 443, "PA"), tlsRecord(23, 40))},
		{LinkTypeEthernet, build(tb, eth(devMAC, gwMAC, layers.EthernetTypeIPv6), ip6(dev6, cloud6, layers.IPProtocolIPv6Destination),
			gopacket.Payload{byte(layers.IPProtocolAH), 0, 1, 4, 0, 0, 0, 0}, ahHeader(layers.IPProtocolUDP), udp(40000, 53), dnsQuery(tb))},
		{LinkTypeEthernet, build(tb, eth(devMAC, gwMAC, layers.EthernetTypeIPv6), ip6(dev6, cloud6, layers.IPProtocolIPv6Routing),
			gopacket.Payload(cat([]byte{byte(layers.IPProtocolTCP), 2}, make([]byte, 22))), synWithOptions())},
	}
	seeds = append(seeds, wifiSeeds(tb)...)
	// A DHCP client's request, for its fingerprint.
	seeds = append(seeds, decodeSeed{LinkTypeEthernet, dhcpFrame(tb, layers.NewDHCPOption(layers.DHCPOptParamsRequest, []byte{1, 3, 6}),
		layers.NewDHCPOption(layers.DHCPOptHostname, []byte("ESP_07AEFB")))})
	seeds = append(seeds, decodeSeed{LinkTypeEthernet, dhcp6Frame(tb, layers.DHCPv6MsgTypeSolicit, layers.NewDHCPv6Option(layers.DHCPv6OptOro, []byte{0, 23}),
		layers.NewDHCPv6Option(layers.DHCPv6OptClientFQDN, fqdn("DCH-S150")))})
	// A few real frames of every kind the IoT Sentinel captures hold.
	if files, _ := filepath.Glob(filepath.Join(sentinelDir, "HueBridge", "Setup-A-1-STA.pcap")); len(files) == 1 {
		link, frames := readPcap(tb, files[0])
		for i := 0; i < len(frames); i += 50 {
			seeds = append(seeds, decodeSeed{link, frames[i].data})
		}
	}
	return seeds
}

func ip4opts(src, dst net.IP, proto layers.IPProtocol) *layers.IPv4 {
	ip := ip4(src, dst, proto)
	ip.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}
	return ip
}

// synWithOptions is a SYN with the 20 bytes of options Linux sends: MSS,
// SACK permitted, timestamps, NOP, window scale.
func synWithOptions() *layers.TCP {
	syn := tcp(50000, 443, "S")
	syn.Options = []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
		{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
		{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}},
	}
	return syn
}

func tcpOpts(sport, dport uint16) *layers.TCP {
	t := tcp(sport, dport, "S")
	t.Options = []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xb4}},
		{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
	}
	return t
}

func FuzzDecode(f *testing.F) {
	for _, s := range decodeSeeds(f) {
		f.Add(uint16(s.link), s.data)
	}
	f.Fuzz(func(t *testing.T, link uint16, data []byte) {
		// The home-side inference reads the same frames: it must take
		// anything without a panic.
		inf := NewHomeInference()
		inf.Observe(LinkType(link), data)
		inf.Observe(LinkType(link), data)
		if r := inf.Result(); r.Frames != 2 || r.IPFrames > 2 {
			t.Fatalf("inference counted %d frames, %d IP, of 2", r.Frames, r.IPFrames)
		}
		// The capture readers split an A-MSDU where ParseAMSDU says: its
		// subframes must lie in the frame, in order, after the headers.
		if a, subs, ok := ParseAMSDU(LinkType(link), data, nil); ok {
			prev := a.Subframes
			for _, s := range subs {
				if s[0] < prev || s[1] < s[0]+14 && s[1] != len(data)-a.FCS || s[1] > len(data)-a.FCS || a.Frame+24 > a.Subframes {
					t.Fatalf("A-MSDU %+v: subframe %v out of place in %d bytes", a, s, len(data))
				}
				prev = s[1]
			}
		}
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: len(data), Length: len(data)}
		if msg := compareWithGopacket(NewDecoder(withGW), newGopacketDecoder(withGW), LinkType(link), data, ci, 0); msg != "" {
			t.Fatalf("against gopacket's layers: %s", msg)
		}
		if msg := checkDecode(LinkType(link), data, ci); msg != "" {
			t.Fatal(msg)
		}
		// The same bytes as what a snap length left of a longer frame.
		ci.Length += 100
		if msg := checkDecode(LinkType(link), data, ci); msg != "" {
			t.Fatalf("cut by the capture: %s", msg)
		}
	})
}

// checkDecode decodes one frame and says what is wrong with the outcome,
// "" when nothing is: an error of a known kind, or a record that holds
// together (structural) and makes a CSV row.
func checkDecode(link LinkType, data []byte, ci gopacket.CaptureInfo) string {
	var p schemas.Packet
	if err := NewDecoder(withGW).Decode(link, data, ci, 0, &p); err != nil {
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedLinkType) && !errors.Is(err, ErrNotPacket) {
			return fmt.Sprintf("error of no known kind: %v", err)
		}
		return ""
	}
	// A mirrored frame has its own length on the mirrored wire (less
	// its 802.11 headers for a Wi-Fi frame), which a fragmented
	// packet's first piece is shorter than.
	wire := ci
	if l, err := ParseLink(link, data); err == nil && l.wire > 0 {
		if p.FrameLen > uint32(l.wire) || !l.wifi.data && p.FrameLen != uint32(l.wire) {
			return fmt.Sprintf("FrameLen %d of a mirrored frame of %d bytes", p.FrameLen, l.wire)
		}
		wire.Length = int(l.wire)
	}
	if msg := structural(&p, rawFrame{data, wire}, !lengthRewritten(link, data)); msg != "" {
		return fmt.Sprintf("%s: %+v", msg, p)
	}
	if msg := checkCSVRow(&p); msg != "" {
		return fmt.Sprintf("CSV row: %s", msg)
	}
	return ""
}

// TestDecodeCutSeeds: the fuzz seeds cut at every length, as a snap length
// cuts a frame (the wire length the seed's), decode without a panic to a
// record that holds together or an error of a known kind: the headers
// read as far as they were captured, in every go test.
func TestDecodeCutSeeds(t *testing.T) {
	for si, s := range decodeSeeds(t) {
		for n := range len(s.data) {
			ci := gopacket.CaptureInfo{Timestamp: time.Unix(1, 0), CaptureLength: n, Length: len(s.data)}
			if msg := checkDecode(s.link, s.data[:n], ci); msg != "" {
				t.Fatalf("seed %d (%s) cut to %d of its %d bytes: %s", si, s.link, n, len(s.data), msg)
			}
		}
	}
}

// BenchmarkDecode decodes the frames of real captures held in memory.
func BenchmarkDecode(b *testing.B) {
	byDevice := sentinelFiles(b)
	var links []LinkType
	var frames []rawFrame
	for _, files := range byDevice {
		link, fr := readPcap(b, files[0])
		for range fr {
			links = append(links, link)
		}
		frames = append(frames, fr...)
	}
	d := NewDecoder(sentinelHome)
	var p schemas.Packet
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		i := n % len(frames)
		if err := d.Decode(links[i], frames[i].data, frames[i].ci, uint64(i), &p); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "packets/s")
}
