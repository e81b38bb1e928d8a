package features

import (
	"encoding/binary"
	"errors"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/internal/tzsptest"
	"github.com/homemole/homemole/schemas"
)

// A MikroTik sniffing the home streams to a collector beside it.
var (
	snifferMAC   = net.HardwareAddr(tzsptest.SnifferMAC)
	collectorMAC = net.HardwareAddr(tzsptest.CollectorMAC)
	snifferIP    = net.IP(tzsptest.SnifferIP)
	collectorIP  = net.IP(tzsptest.CollectorIP)
	sniffer6     = net.ParseIP("fd99::1")
	collector6   = net.ParseIP("fd99::2")
)

// tzspPayload is a TZSP datagram's payload: version 1, the type and
// encapsulation, the tags, the end tag, then the frame.
func tzspPayload(typ byte, encap uint16, tags []byte, frame []byte) []byte {
	return cat([]byte{1, typ, byte(encap >> 8), byte(encap)}, tags, []byte{tzspTagEnd}, frame)
}

// tzspOver4 is the Ethernet frame a sniffer sends to the collector over
// IPv4, carrying payload to port to; id is its IP ID.
func tzspOver4(tb testing.TB, to uint16, id uint16, payload []byte) []byte {
	ip := ip4(snifferIP, collectorIP, layers.IPProtocolUDP)
	ip.Flags, ip.Id = 0, id
	return build(tb, eth(snifferMAC, collectorMAC, layers.EthernetTypeIPv4), ip, udp(40000, to), gopacket.Payload(payload))
}

// fragment4 cuts an IPv4 frame built by tzspOver4 at a payload offset of
// at bytes (a multiple of 8) into the two fragments a 14+20+at MTU sends.
func fragment4(frame []byte, at int) (first, rest []byte) {
	const h = 14 + 20
	first = append([]byte(nil), frame[:h+at]...)
	rest = cat(frame[:h], frame[h+at:])
	binary.BigEndian.PutUint16(first[14+2:], uint16(20+at))
	binary.BigEndian.PutUint16(first[14+6:], 0x2000) // more fragments
	binary.BigEndian.PutUint16(rest[14+2:], uint16(len(rest)-14))
	binary.BigEndian.PutUint16(rest[14+6:], uint16(at/8))
	return first, rest
}

func at(ts int64, data []byte) gopacket.CaptureInfo {
	return gopacket.CaptureInfo{Timestamp: time.Unix(ts, 0), CaptureLength: len(data), Length: len(data)}
}

// mirrorOver4 is the Ethernet frame a mirror sends the collector over
// IPv4 as IP protocol proto (17 to UDP port port, 47 GRE), payload after
// the UDP header.
func mirrorOver4(tb testing.TB, proto layers.IPProtocol, port uint16, payload []byte) []byte {
	ip := ip4(snifferIP, collectorIP, proto)
	if proto == layers.IPProtocolUDP {
		return build(tb, eth(snifferMAC, collectorMAC, layers.EthernetTypeIPv4), ip, udp(40000, port), gopacket.Payload(payload))
	}
	return build(tb, eth(snifferMAC, collectorMAC, layers.EthernetTypeIPv4), ip, gopacket.Payload(payload))
}

// GRE headers of the mirrors: gretap's transparent bridging, with a key;
// ERSPAN type I, II (sequence number, 8-byte header) and III (12 bytes,
// and with the platform subheader).
var (
	greTEBHdr       = []byte{0x00, 0x00, 0x65, 0x58}
	greTEBKeyHdr    = []byte{0x20, 0x00, 0x65, 0x58, 0, 0, 0, 7}
	erspanIHdr      = []byte{0x00, 0x00, 0x88, 0xbe}
	erspanIIHdr     = []byte{0x10, 0x00, 0x88, 0xbe, 0, 0, 0, 9, 0x10, 0x00, 0x00, 0x01, 0, 0, 0, 0}
	erspanIIIHdr    = []byte{0x10, 0x00, 0x22, 0xeb, 0, 0, 0, 9, 0x20, 0x00, 0x00, 0x01, 1, 2, 3, 4, 0, 0, 0, 0}
	erspanIIIPlatHd = []byte{0x10, 0x00, 0x22, 0xeb, 0, 0, 0, 9, 0x20, 0x00, 0x00, 0x01, 1, 2, 3, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}
	vxlanHdr        = []byte{0x08, 0, 0, 0, 0, 0, 42, 0}
)

// TestDecodeMirrored: a frame a mirror sent decodes to the record of the
// frame itself, length on the mirrored wire included, whatever the mirror
// (TZSP with or without tags, VXLAN, gretap, ERSPAN I to III), the IP
// version to the collector, or the capture's snap length.
func TestDecodeMirrored(t *testing.T) {
	inner := build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50000, 443, "PA"), tlsRecord(23, 300))
	innerV6 := build(t, eth(gwMAC, devMAC, layers.EthernetTypeIPv6), ip6(cloud6, dev6, layers.IPProtocolUDP), udp(53, 40000), dnsQuery(t))
	rssi := []byte{10, 1, 0xc4, tzspTagPadding, 12, 1, 0x6c} // RSSI, padding, data rate
	over6 := func(payload []byte) []byte {
		return build(t, eth(snifferMAC, collectorMAC, layers.EthernetTypeIPv6), ip6(sniffer6, collector6, layers.IPProtocolUDP), udp(40000, TZSPPort), gopacket.Payload(payload))
	}
	cases := []struct {
		name  string
		inner []byte
		outer []byte
		snap  int // bytes of the outer frame captured, 0 for all
	}{
		{"Ethernet, no tags", inner, tzspOver4(t, TZSPPort, 1, tzspPayload(tzspTypeRX, 1, nil, inner)), 0},
		{"Ethernet, tags", inner, tzspOver4(t, TZSPPort, 2, tzspPayload(tzspTypeRX, 1, rssi, inner)), 0},
		{"a frame the sniffer sent", innerV6, tzspOver4(t, TZSPPort, 3, tzspPayload(tzspTypeTX, 1, nil, innerV6)), 0},
		{"to a collector over IPv6", innerV6, over6(tzspPayload(tzspTypeRX, 1, rssi, innerV6)), 0},
		{"cut at a snap length of 128", inner, tzspOver4(t, TZSPPort, 4, tzspPayload(tzspTypeRX, 1, nil, inner)), 128},
		{"VXLAN", inner, mirrorOver4(t, layers.IPProtocolUDP, VXLANPort, cat(vxlanHdr, inner)), 0},
		{"VXLAN cut at a snap length of 128", innerV6, mirrorOver4(t, layers.IPProtocolUDP, VXLANPort, cat(vxlanHdr, innerV6)), 128},
		{"gretap", inner, mirrorOver4(t, layers.IPProtocolGRE, 0, cat(greTEBHdr, inner)), 0},
		{"gretap with a key", innerV6, mirrorOver4(t, layers.IPProtocolGRE, 0, cat(greTEBKeyHdr, innerV6)), 0},
		{"gretap cut at a snap length of 128", inner, mirrorOver4(t, layers.IPProtocolGRE, 0, cat(greTEBHdr, inner)), 128},
		{"ERSPAN type I", inner, mirrorOver4(t, layers.IPProtocolGRE, 0, cat(erspanIHdr, inner)), 0},
		{"ERSPAN type II", inner, mirrorOver4(t, layers.IPProtocolGRE, 0, cat(erspanIIHdr, inner)), 0},
		{"ERSPAN type III", innerV6, mirrorOver4(t, layers.IPProtocolGRE, 0, cat(erspanIIIHdr, innerV6)), 0},
		{"ERSPAN type III with its platform subheader", inner, mirrorOver4(t, layers.IPProtocolGRE, 0, cat(erspanIIIPlatHd, inner)), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got, want schemas.Packet
			outer := tc.outer
			ci := at(7, outer)
			if tc.snap > 0 {
				outer = outer[:tc.snap]
				ci.CaptureLength = tc.snap
			}
			if err := NewDecoder(withGW).Decode(LinkTypeEthernet, outer, ci, 1, &got); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if err := NewDecoder(withGW).Decode(LinkTypeEthernet, tc.inner, at(7, tc.inner), 1, &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("TZSP datagram decoded to\n%+v\nwant the frame's own\n%+v", got, want)
			}
			if got.FrameLen != uint32(len(tc.inner)) || got.SrcMAC == schemas.MAC(snifferMAC) {
				t.Errorf("frame length %d from %s; want the carried frame's %d from its sender", got.FrameLen, got.SrcMAC, len(tc.inner))
			}
		})
	}
}

// TestMirrorFragments: a full-size frame, which a mirror on a 1,500-byte
// MTU sends in two IP fragments, is read once, from the first; the second
// is left out as the link's own, and does not move the stream's clock.
// Another host's fragments are read as they are.
func TestMirrorFragments(t *testing.T) {
	inner := build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50000, 443, "PA"), tlsRecord(23, 1514-14-20-20-5))
	if len(inner) != 1514 {
		t.Fatalf("inner frame of %d bytes", len(inner))
	}
	first, rest := fragment4(tzspOver4(t, TZSPPort, 77, tzspPayload(tzspTypeRX, 1, nil, inner)), 1480)
	other, otherRest := fragment4(build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(5000, 6000), gopacket.Payload(make([]byte, 1600))), 1480)
	d := NewDecoder(withGW)
	var p schemas.Packet
	if err := d.Decode(LinkTypeEthernet, first, at(1, first), 0, &p); err != nil {
		t.Fatalf("first fragment: %v", err)
	}
	if p.FrameLen != 1514 || p.SrcMAC != schemas.MAC(devMAC) || p.DPort != 443 {
		t.Errorf("first fragment read as a frame of %d bytes from %s to port %d; want the device's 1514 to 443", p.FrameLen, p.SrcMAC, p.DPort)
	}
	if err := d.Decode(LinkTypeEthernet, rest, at(2, rest), 1, &p); !errors.Is(err, ErrNotPacket) {
		t.Errorf("second fragment: %v, want ErrNotPacket", err)
	}
	if err := d.Decode(LinkTypeEthernet, other, at(3, other), 2, &p); err != nil || p.IntervalNs != 2e9 {
		t.Errorf("a device's own first fragment: %v, interval %d ns; want it read, 2 s after the last frame read", err, p.IntervalNs)
	}
	if err := d.Decode(LinkTypeEthernet, otherRest, at(4, otherRest), 3, &p); err != nil || p.SrcMAC != schemas.MAC(devMAC) {
		t.Errorf("a device's own later fragment: %v from %s; want it read as the device's", err, p.SrcMAC)
	}
	// ERSPAN across a 1,500-byte path: GRE says no length, so the first
	// fragment's frame is as long as its IP header says.
	gre1, gre2 := fragment4(mirrorOver4(t, layers.IPProtocolGRE, 0, cat(erspanIIHdr, inner)), 1400)
	if err := d.Decode(LinkTypeEthernet, gre1, at(5, gre1), 4, &p); err != nil || p.FrameLen != 1514 || p.SrcMAC != schemas.MAC(devMAC) {
		t.Errorf("ERSPAN first fragment: %v, a frame of %d bytes from %s; want the device's 1514", err, p.FrameLen, p.SrcMAC)
	}
	if err := d.Decode(LinkTypeEthernet, gre2, at(6, gre2), 5, &p); !errors.Is(err, ErrNotPacket) {
		t.Errorf("ERSPAN second fragment: %v, want ErrNotPacket", err)
	}
	// A decoder that never saw the first fragment reads the second as
	// what it is: it cannot know.
	if err := NewDecoder(withGW).Decode(LinkTypeEthernet, rest, at(2, rest), 0, &p); err != nil || p.SrcMAC != schemas.MAC(snifferMAC) {
		t.Errorf("an unmatched later fragment: %v from %s; want it read as the sniffer's", err, p.SrcMAC)
	}
}

// TestNotMirrored: a datagram to another port, to TZSP's port but of
// another version, VXLAN-GPE, or GRE carrying a tunnel's IP packets, is
// the packet it is.
func TestNotMirrored(t *testing.T) {
	inner := build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp())
	for name, frame := range map[string][]byte{
		"another port":      tzspOver4(t, 37009, 1, tzspPayload(tzspTypeRX, 1, nil, inner)),
		"another version":   tzspOver4(t, TZSPPort, 1, cat([]byte{2}, tzspPayload(tzspTypeRX, 1, nil, inner)[1:])),
		"VXLAN-GPE":         mirrorOver4(t, layers.IPProtocolUDP, VXLANPort, cat([]byte{0x0c, 0, 0, 3, 0, 0, 42, 0}, inner)),
		"GRE carrying IPv4": mirrorOver4(t, layers.IPProtocolGRE, 0, cat([]byte{0, 0, 0x08, 0x00}, inner[14:])),
		"GRE version 1":     mirrorOver4(t, layers.IPProtocolGRE, 0, cat([]byte{0, 1, 0x65, 0x58}, inner)),
	} {
		var p schemas.Packet
		if err := NewDecoder(withGW).Decode(LinkTypeEthernet, frame, at(1, frame), 0, &p); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if p.SrcMAC != schemas.MAC(snifferMAC) || p.FrameLen != uint32(len(frame)) {
			t.Errorf("%s: read as a frame of %d bytes from %s; want the datagram itself", name, p.FrameLen, p.SrcMAC)
		}
	}
}

// TestAnswerToEphemeralPort37008: TZSP's port lies in Linux's and
// Android's range of ephemeral ports (32768-60999), so a home device may
// take it for its own. A STUN Binding success, a TURN Refresh success or a
// DNS answer sent to it begins with version byte 1 too, but not with a
// TZSP header (the type and encapsulation TZSP defines): it is read as the
// datagram it is, not as a sniffer's stream (it used to be dropped as a
// TZSP frame of an unsupported encapsulation, or as a keepalive).
func TestAnswerToEphemeralPort37008(t *testing.T) {
	xorMapped := []byte{0x00, 0x20, 0x00, 0x08, 0, 1, 0x90, 0x90, 1, 2, 3, 4}
	cookie := []byte{0x21, 0x12, 0xa4, 0x42}
	for _, tc := range []struct {
		name    string
		sport   uint16
		payload []byte
		bits    string
	}{
		{"STUN Binding success", 3478, cat([]byte{0x01, 0x01, 0x00, 0x0c}, cookie, make([]byte, 12), xorMapped), "1010001"},
		{"TURN Refresh success", 3478, cat([]byte{0x01, 0x04, 0x00, 0x08}, cookie, make([]byte, 12), []byte{0x00, 0x0d, 0x00, 0x04, 0, 0, 0x02, 0x58}), "1010001"},
		{"DNS answer of ID 0x0100", 53, cat([]byte{0x01, 0x00, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0}, make([]byte, 30)), "1010010"},
		{"DNS answer of ID 0x0104", 53, cat([]byte{0x01, 0x04, 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0}, make([]byte, 30)), "1010010"},
	} {
		frame := build(t, eth(gwMAC, devMAC, layers.EthernetTypeIPv4), ip4(cloudIP, devIP, layers.IPProtocolUDP), udp(tc.sport, TZSPPort), gopacket.Payload(tc.payload))
		var p schemas.Packet
		if err := NewDecoder(withGW).Decode(LinkTypeEthernet, frame, at(1, frame), 0, &p); err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		want := vec{tc.bits, TZSPPort, in, 64, uint16(28 + len(tc.payload)), 17, 0, 0, 0, uint32(len(tc.payload))}
		if got := vecOf(&p); got != want || p.SrcPort != int32(tc.sport) || p.FrameLen != uint32(len(frame)) {
			t.Errorf("%s: decoded\n got %+v from port %d, %d bytes\nwant %+v from port %d, %d bytes", tc.name, got, p.SrcPort, p.FrameLen, want, tc.sport, len(frame))
		}
	}
}

func TestMirrorErrors(t *testing.T) {
	inner := build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp())
	long := make([]byte, 300)
	for i := 0; i < len(long); i += 3 {
		long[i], long[i+1] = 10, 1
	}
	badUDPLen := tzspOver4(t, TZSPPort, 1, tzspPayload(tzspTypeRX, 1, nil, inner))
	binary.BigEndian.PutUint16(badUDPLen[14+20+4:], 8+3)
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"keepalive", tzspOver4(t, TZSPPort, 1, []byte{1, 4, 0, 1, tzspTagEnd}), ErrNotPacket},
		{"configuration", tzspOver4(t, TZSPPort, 1, []byte{1, 3, 0, 1, tzspTagEnd}), ErrNotPacket},
		{"raw IP encapsulation", tzspOver4(t, TZSPPort, 1, tzspPayload(tzspTypeRX, 7, nil, inner[14:])), ErrUnsupportedLinkType},
		{"header cut short", tzspOver4(t, TZSPPort, 1, []byte{1, 0, 0, 1}), ErrMalformed},
		{"no end tag", tzspOver4(t, TZSPPort, 1, []byte{1, 0, 0, 1, 10, 1, 0xc4}), ErrMalformed},
		{"a tag's length cut short", tzspOver4(t, TZSPPort, 1, []byte{1, 0, 0, 1, 10}), ErrMalformed},
		{"tags past the bound", tzspOver4(t, TZSPPort, 1, cat([]byte{1, 0, 0, 1}, long, []byte{tzspTagEnd}, inner)), ErrMalformed},
		{"inner frame cut short", tzspOver4(t, TZSPPort, 1, tzspPayload(tzspTypeRX, 1, nil, inner[:10])), ErrMalformed},
		{"UDP length short of the frame", badUDPLen, ErrMalformed},
		{"ERSPAN type II of version 2", mirrorOver4(t, layers.IPProtocolGRE, 0, cat(erspanIIHdr[:8], []byte{0x20, 0, 0, 1, 0, 0, 0, 0}, inner)), ErrMalformed},
		{"ERSPAN type III cut short", mirrorOver4(t, layers.IPProtocolGRE, 0, erspanIIIHdr[:14]), ErrMalformed},
		{"gretap frame cut short", mirrorOver4(t, layers.IPProtocolGRE, 0, cat(greTEBHdr, inner[:10])), ErrMalformed},
	} {
		var p schemas.Packet
		if err := NewDecoder(withGW).Decode(LinkTypeEthernet, tc.data, at(1, tc.data), 0, &p); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestTZSPWiFi: a sniffer's Wi-Fi frames (encapsulation 18) read as the
// Ethernet frames their access point bridges them to.
func TestTZSPWiFi(t *testing.T) {
	v4 := build(t, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp())
	air := wifiCase{ds: dot11ToDS, qos: true}.dataFrame(devMAC, gwMAC, cat(snap(0x0800), v4))
	outer := tzspOver4(t, TZSPPort, 5, tzspPayload(tzspTypeRX, 18, []byte{10, 1, 0xc4}, air))
	var got, want schemas.Packet
	if err := NewDecoder(withGW).Decode(LinkTypeEthernet, outer, at(1, outer), 0, &got); err != nil {
		t.Fatal(err)
	}
	if err := NewDecoder(withGW).Decode(LinkTypeIEEE80211, air, at(1, air), 0, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) || got.FrameLen != uint32(14+len(v4)) {
		t.Errorf("Wi-Fi frame in TZSP decoded to\n%+v\nwant\n%+v", got, want)
	}
}

func TestParseTZSPDoesNotAllocate(t *testing.T) {
	inner := build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp())
	frame := tzspOver4(t, TZSPPort, 1, tzspPayload(tzspTypeRX, 1, []byte{10, 1, 0xc4}, inner))
	if n := testing.AllocsPerRun(100, func() { ParseLink(LinkTypeEthernet, frame) }); n != 0 {
		t.Errorf("ParseLink of a TZSP datagram: %v allocations", n)
	}
}

// TestTZSPCaptureOfRealTraffic: every frame of the IoT Sentinel captures,
// streamed by a sniffer as a MikroTik streams it (full-size frames in two
// fragments), decodes to the record the frame itself gives, interval and
// length included; the second fragments are left out as the link's own.
func TestTZSPCaptureOfRealTraffic(t *testing.T) {
	frames, fragmented := 0, 0
	for device, files := range sentinelFiles(t) {
		for _, f := range files {
			link, fr := readPcap(t, f)
			if link != LinkTypeEthernet {
				t.Fatalf("%s: link type %s", f, link)
			}
			direct, remote := NewDecoder(sentinelHome), NewDecoder(sentinelHome)
			for i, x := range fr {
				if x.ci.CaptureLength != x.ci.Length {
					t.Fatalf("%s frame %d: cut at the snap length; the comparison needs whole frames", f, i)
				}
				var want, got schemas.Packet
				wantErr := direct.Decode(link, x.data, x.ci, uint64(i), &want)
				pieces := tzsptest.Sniffed(x.data, uint16(i))
				for k, piece := range pieces {
					ci := x.ci
					ci.CaptureLength, ci.Length = len(piece), len(piece)
					err := remote.Decode(LinkTypeEthernet, piece, ci, uint64(i), &got)
					if k > 0 {
						if !errors.Is(err, ErrNotPacket) {
							t.Fatalf("%s %s frame %d: its second fragment: %v, want ErrNotPacket", device, f, i, err)
						}
						fragmented++
						continue
					}
					if (err == nil) != (wantErr == nil) || err != nil && errors.Is(err, ErrMalformed) != errors.Is(wantErr, ErrMalformed) {
						t.Fatalf("%s %s frame %d: streamed: %v; as captured: %v", device, f, i, err, wantErr)
					}
					if err == nil && !reflect.DeepEqual(got, want) {
						t.Fatalf("%s %s frame %d: streamed, decoded to\n%+v\nas captured\n%+v", device, f, i, got, want)
					}
				}
				frames++
			}
		}
	}
	if fragmented == 0 {
		t.Fatal("no frame was large enough to be sent in fragments: the test checks none")
	}
	t.Logf("%d frames streamed and read as captured, %d of them in two fragments", frames, fragmented)
}

// TestTZSPInference: the home-side inference reads a streamed frame as
// the frame, and leaves its second fragment out as the decoder does.
func TestTZSPInference(t *testing.T) {
	inner := build(t, eth(devMAC, gwMAC, layers.EthernetTypeIPv4), ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50000, 443, "PA"), tlsRecord(23, 1514-14-20-20-5))
	pieces := tzsptest.Sniffed(inner, 9)
	if len(pieces) != 2 {
		t.Fatalf("%d pieces", len(pieces))
	}
	h := NewHomeInference()
	for _, p := range pieces {
		h.Observe(LinkTypeEthernet, p)
	}
	if r := h.Result(); r.Frames != 2 || r.IPFrames != 1 {
		t.Errorf("inference read %d frames, %d of them unicast IP; want 2, 1 (the device's)", r.Frames, r.IPFrames)
	}
}
