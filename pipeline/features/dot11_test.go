package features

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/schemas"
)

var (
	bssid = mustMAC("02:00:00:00:0a:01")
	ap2   = mustMAC("02:00:00:00:0a:02")
)

// wifiCase is a data frame to build: its DS bits, QoS (and an HT control
// field), sequence control and Retry bit, and the MSDU it carries.
type wifiCase struct {
	ds        byte // dot11ToDS, dot11FromDS, both or neither
	qos, ht   bool
	seq       uint16
	retry     bool
	protected bool
}

// dataFrame is an 802.11 data frame from src to dst through the access
// point bssid (the DS bits place them: IEEE 802.11-2020 Table 9-30)
// carrying body, the MSDU.
func (c wifiCase) dataFrame(src, dst net.HardwareAddr, body []byte) []byte {
	sub := byte(0)
	if c.qos {
		sub = dot11SubtypeQoS
	}
	flags := c.ds
	if c.ht && c.qos {
		flags |= dot11Order
	}
	if c.retry {
		flags |= dot11Retry
	}
	if c.protected {
		flags |= dot11Protected
	}
	h := []byte{dot11TypeData<<2 | sub<<4, flags, 0, 0}
	switch c.ds {
	case 0:
		h = cat(h, dst, src, bssid)
	case dot11ToDS:
		h = cat(h, bssid, src, dst)
	case dot11FromDS:
		h = cat(h, dst, bssid, src)
	default:
		h = cat(h, ap2, bssid, dst)
	}
	h = binary.LittleEndian.AppendUint16(h, c.seq)
	if c.ds == dot11ToDS|dot11FromDS {
		h = cat(h, src)
	}
	if c.qos {
		h = append(h, 0, 0)
		if c.ht {
			h = append(h, 0, 0, 0, 0)
		}
	}
	return cat(h, body)
}

// snap is an RFC 1042 LLC/SNAP header naming et.
func snap(et uint16) []byte { return []byte{0xaa, 0xaa, 0x03, 0, 0, 0, byte(et >> 8), byte(et)} }

// radiotapHeader is a radiotap header with TSFT and Flags present (and, with
// ext, a second, empty presence bitmap), the flags given.
func radiotapHeader(flags byte, ext bool) []byte {
	present := []byte{0x03, 0, 0, 0}
	if ext {
		present = []byte{0x03, 0, 0, 0x80, 0, 0, 0, 0}
	}
	h := cat([]byte{0, 0, 0, 0}, present)
	for len(h)%8 != 0 {
		h = append(h, 0)
	}
	h = cat(h, make([]byte, 8), []byte{flags, 0})
	binary.LittleEndian.PutUint16(h[2:4], uint16(len(h)))
	return h
}

// prismHeader is a 144-byte Prism monitoring header, its length in the
// writer's byte order o.
func prismHeader(o binary.ByteOrder) []byte {
	h := make([]byte, 144)
	o.PutUint32(h[0:4], 0x44)
	o.PutUint32(h[4:8], 144)
	copy(h[8:], "wlan0")
	return h
}

// avsHeader is a version 1 AVS monitoring header (64 bytes, big-endian).
func avsHeader() []byte {
	h := make([]byte, 64)
	binary.BigEndian.PutUint32(h[0:4], 0x80211001)
	binary.BigEndian.PutUint32(h[4:8], 64)
	return h
}

// ppi80211 is a PPI header carrying 802.11 whose 802.11-common field has
// the given flags.
func ppi80211(flags uint16) []byte {
	h := ppiHeader(uint32(LinkTypeIEEE80211))
	binary.LittleEndian.PutUint16(h[8+4+8:], flags)
	return h
}

// TestDecodeWiFi: a packet read from an 802.11 frame, however the frame
// carries it, has the record of the Ethernet frame an access point bridges
// it to: the same addresses, fields and length.
func TestDecodeWiFi(t *testing.T) {
	v4 := build(t, ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50000, 443, "PA"), tlsRecord(23, 40))
	v4in := build(t, ip4(cloudIP, devIP, layers.IPProtocolTCP), tcp(443, 50000, "A"), tlsRecord(23, 300))
	v6 := build(t, ip6(dev6, cloud6, layers.IPProtocolUDP), udp(40000, 53), dnsQuery(t))
	arp := build(t, &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: 1, SourceHwAddress: devMAC, SourceProtAddress: devIP, DstHwAddress: make([]byte, 6), DstProtAddress: gwIP})
	stp := []byte{0x42, 0x42, 0x03, 0, 0, 0, 0, 0, 0x80, 0x00}
	ether := func(src, dst net.HardwareAddr, et uint16, payload []byte) []byte {
		return cat(dst, src, []byte{byte(et >> 8), byte(et)}, payload)
	}
	vlan := cat([]byte{0, 7, 0x08, 0x00}, v4)
	fcs := []byte{0xde, 0xad, 0xbe, 0xef}
	// An A-MSDU of two subframes, each padded to 4 bytes.
	sub := func(src, dst net.HardwareAddr, msdu []byte) []byte {
		b := cat(dst, src, binary.BigEndian.AppendUint16(nil, uint16(len(msdu))), msdu)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	amsdu := wifiCase{ds: dot11ToDS, qos: true}.dataFrame(devMAC, gwMAC, cat(sub(devMAC, gwMAC, cat(snap(0x0800), v4)), sub(devMAC, gwMAC, cat(snap(0x86dd), v6))))
	amsdu[dot11HeaderLen] |= dot11AMSDUPresent
	amsduLLC := wifiCase{ds: dot11ToDS, qos: true}.dataFrame(devMAC, bcastMAC, cat(sub(devMAC, bcastMAC, stp), sub(devMAC, gwMAC, cat(snap(0x0800), v4))))
	amsduLLC[dot11HeaderLen] |= dot11AMSDUPresent
	// DataPad: the 26-byte QoS header padded to 28.
	padded := wifiCase{ds: dot11ToDS, qos: true}.dataFrame(devMAC, gwMAC, nil)
	padded = cat(radiotapHeader(radiotapDataPad, false), padded, []byte{0, 0}, snap(0x0800), v4)

	for _, c := range []struct {
		name string
		link LinkType
		wifi []byte
		eth  []byte // the bridged Ethernet frame
	}{
		{"station to its access point", LinkTypeIEEE80211, wifiCase{ds: dot11ToDS}.dataFrame(devMAC, gwMAC, cat(snap(0x0800), v4)), ether(devMAC, gwMAC, 0x0800, v4)},
		{"access point to a station, QoS", LinkTypeIEEE80211, wifiCase{ds: dot11FromDS, qos: true}.dataFrame(gwMAC, devMAC, cat(snap(0x0800), v4in)), ether(gwMAC, devMAC, 0x0800, v4in)},
		{"radiotap with FCS, QoS and HT control, IPv6", LinkTypeRadiotap, cat(radiotapHeader(radiotapFCS, false), wifiCase{ds: dot11ToDS, qos: true, ht: true}.dataFrame(devMAC, gwMAC, cat(snap(0x86dd), v6)), fcs), ether(devMAC, gwMAC, 0x86dd, v6)},
		{"radiotap with two presence bitmaps", LinkTypeRadiotap, cat(radiotapHeader(0, true), wifiCase{ds: dot11FromDS}.dataFrame(gwMAC, devMAC, cat(snap(0x0800), v4in))), ether(gwMAC, devMAC, 0x0800, v4in)},
		{"radiotap with the header padded", LinkTypeRadiotap, padded, ether(devMAC, gwMAC, 0x0800, v4)},
		{"between access points, four addresses", LinkTypeIEEE80211, wifiCase{ds: dot11ToDS | dot11FromDS, qos: true}.dataFrame(devMAC, gwMAC, cat(snap(0x0800), v4)), ether(devMAC, gwMAC, 0x0800, v4)},
		{"ad hoc", LinkTypeIEEE80211, wifiCase{}.dataFrame(devMAC, phoneMAC, cat(snap(0x0800), v4)), ether(devMAC, phoneMAC, 0x0800, v4)},
		{"802.1H bridge tunnel", LinkTypeIEEE80211, wifiCase{ds: dot11ToDS}.dataFrame(devMAC, gwMAC, cat([]byte{0xaa, 0xaa, 0x03, 0, 0, 0xf8, 0x08, 0x00}, v4)), ether(devMAC, gwMAC, 0x0800, v4)},
		{"VLAN tag inside SNAP", LinkTypeIEEE80211, wifiCase{ds: dot11ToDS}.dataFrame(devMAC, gwMAC, cat(snap(0x8100), vlan)), ether(devMAC, gwMAC, 0x8100, vlan)},
		{"Prism header, little-endian", LinkTypePrism, cat(prismHeader(binary.LittleEndian), wifiCase{ds: dot11ToDS}.dataFrame(devMAC, gwMAC, cat(snap(0x0800), v4))), ether(devMAC, gwMAC, 0x0800, v4)},
		{"Prism header, big-endian", LinkTypePrism, cat(prismHeader(binary.BigEndian), wifiCase{ds: dot11FromDS}.dataFrame(gwMAC, devMAC, cat(snap(0x0800), v4in))), ether(gwMAC, devMAC, 0x0800, v4in)},
		{"AVS header", LinkTypeAVS, cat(avsHeader(), wifiCase{ds: dot11ToDS, qos: true}.dataFrame(devMAC, gwMAC, cat(snap(0x86dd), v6))), ether(devMAC, gwMAC, 0x86dd, v6)},
		{"AVS header under Prism's link type", LinkTypePrism, cat(avsHeader(), wifiCase{ds: dot11ToDS}.dataFrame(devMAC, gwMAC, cat(snap(0x0800), v4))), ether(devMAC, gwMAC, 0x0800, v4)},
		{"PPI with FCS", LinkTypePPI, cat(ppi80211(1), wifiCase{ds: dot11ToDS}.dataFrame(devMAC, gwMAC, cat(snap(0x0800), v4)), fcs), ether(devMAC, gwMAC, 0x0800, v4)},
		{"A-MSDU: its first MSDU", LinkTypeIEEE80211, amsdu, ether(devMAC, gwMAC, 0x0800, v4)},
		{"A-MSDU whose first MSDU is LLC without SNAP", LinkTypeIEEE80211, amsduLLC, ether(devMAC, bcastMAC, uint16(len(stp)), stp)},
		{"ARP", LinkTypeIEEE80211, wifiCase{ds: dot11ToDS}.dataFrame(devMAC, bcastMAC, cat(snap(0x0806), arp)), ether(devMAC, bcastMAC, 0x0806, arp)},
		{"LLC without SNAP (spanning tree)", LinkTypeIEEE80211, wifiCase{ds: dot11ToDS}.dataFrame(devMAC, bcastMAC, stp), ether(devMAC, bcastMAC, uint16(len(stp)), stp)},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got, want schemas.Packet
			ci := func(b []byte) gopacket.CaptureInfo {
				return gopacket.CaptureInfo{Timestamp: time.Unix(100, 0), CaptureLength: len(b), Length: len(b)}
			}
			if err := NewDecoder(withGW).Decode(c.link, c.wifi, ci(c.wifi), 3, &got); err != nil {
				t.Fatalf("802.11 frame: %v", err)
			}
			if err := NewDecoder(withGW).Decode(LinkTypeEthernet, c.eth, ci(c.eth), 3, &want); err != nil {
				t.Fatalf("Ethernet frame: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("records differ:\n802.11   %+v\nEthernet %+v", got, want)
			}
			// A snap length that cut the frame does not move its length.
			cut := c.wifi[:len(c.wifi)-10]
			if err := NewDecoder(withGW).Decode(c.link, cut, gopacket.CaptureInfo{CaptureLength: len(cut), Length: len(c.wifi)}, 3, &got); err == nil && got.FrameLen != want.FrameLen {
				t.Errorf("cut by the snap length: FrameLen %d, want %d", got.FrameLen, want.FrameLen)
			}
		})
	}
}

// TestWiFiMatchesGopacket: where gopacket's 802.11 layers find the IP packet
// of a frame, ParseLink finds it at the same byte, with the addresses
// gopacket's Dot11 layer gives in the places the DS bits say.
func TestWiFiMatchesGopacket(t *testing.T) {
	v4 := build(t, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp())
	checked := 0
	for _, c := range []struct {
		link LinkType
		data []byte
	}{
		{LinkTypeIEEE80211, wifiCase{ds: dot11ToDS}.dataFrame(devMAC, gwMAC, cat(snap(0x0800), v4))},
		{LinkTypeIEEE80211, wifiCase{ds: dot11FromDS, qos: true}.dataFrame(gwMAC, devMAC, cat(snap(0x0800), v4))},
		{LinkTypeIEEE80211, wifiCase{ds: dot11ToDS | dot11FromDS}.dataFrame(devMAC, gwMAC, cat(snap(0x0800), v4))},
		{LinkTypeIEEE80211, wifiCase{}.dataFrame(devMAC, phoneMAC, cat(snap(0x0800), v4))},
		{LinkTypeRadiotap, cat(radiotapHeader(0, false), wifiCase{ds: dot11ToDS, qos: true}.dataFrame(devMAC, gwMAC, cat(snap(0x0800), v4)))},
		{LinkTypeRadiotap, cat(radiotapHeader(radiotapFCS, true), wifiCase{ds: dot11FromDS}.dataFrame(gwMAC, devMAC, cat(snap(0x0800), v4)), []byte{1, 2, 3, 4})},
	} {
		l, err := ParseLink(c.link, c.data)
		if err != nil {
			t.Fatalf("%s frame: %v", c.link, err)
		}
		pkt := gopacket.NewPacket(c.data, layers.LinkType(c.link), gopacket.Default)
		ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		d11, _ := pkt.Layer(layers.LayerTypeDot11).(*layers.Dot11)
		if ip == nil || d11 == nil {
			t.Fatalf("%s frame: gopacket finds no IPv4 or 802.11 layer: %v", c.link, pkt)
		}
		if !bytes.HasPrefix(c.data[l.Offset:], ip.Contents) {
			t.Errorf("%s frame: the IP packet at byte %d is not the one gopacket reads", c.link, l.Offset)
		}
		src, dst := map[bool]net.HardwareAddr{true: d11.Address2, false: d11.Address3}, d11.Address3
		switch {
		case d11.Flags.ToDS() && d11.Flags.FromDS():
			src[true], dst = d11.Address4, d11.Address3
		case d11.Flags.FromDS():
			src[true], dst = d11.Address3, d11.Address1
		case !d11.Flags.ToDS():
			dst = d11.Address1
		}
		if !bytes.Equal(l.SrcMAC[:], src[true]) || !bytes.Equal(l.DstMAC[:], dst) {
			t.Errorf("%s frame: %s -> %s, gopacket's addresses %s -> %s", c.link, l.SrcMAC, l.DstMAC, src[true], dst)
		}
		checked++
	}
	t.Logf("%d frames read as gopacket reads them", checked)
}

// TestWiFiNotPackets: beacons, acknowledgements, null frames and a frame
// sent again after it was read are the link's own (ErrNotPacket), and do
// not move the stream's clock; a protected frame says to decrypt the
// capture; a frame whose FCS failed, or whose radio header lies, is
// malformed.
func TestWiFiNotPackets(t *testing.T) {
	v4 := build(t, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp())
	data := func(c wifiCase) []byte { return c.dataFrame(devMAC, gwMAC, cat(snap(0x0800), v4)) }
	beacon := cat([]byte{0x80, 0, 0, 0}, bcastMAC, bssid, bssid, []byte{0x10, 0}, make([]byte, 12))
	ack := cat([]byte{0xd4, 0, 0, 0}, devMAC)
	null := cat([]byte{0x48, dot11ToDS, 0, 0}, bssid, devMAC, bssid, []byte{0x20, 0})
	qosNull := cat([]byte{0xc8, dot11ToDS, 0, 0}, bssid, devMAC, bssid, []byte{0x30, 0, 0, 0})

	d := NewDecoder(withGW)
	var p schemas.Packet
	at := func(sec int64) gopacket.CaptureInfo { return gopacket.CaptureInfo{Timestamp: time.Unix(sec, 0)} }
	decode := func(what string, link LinkType, b []byte, sec int64, want error) {
		t.Helper()
		ci := at(sec)
		ci.CaptureLength, ci.Length = len(b), len(b)
		err := d.Decode(link, b, ci, 0, &p)
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", what, err, want)
		}
	}
	decode("first frame", LinkTypeIEEE80211, data(wifiCase{ds: dot11ToDS, seq: 5 << 4}), 10, nil)
	decode("beacon", LinkTypeIEEE80211, beacon, 11, ErrNotPacket)
	decode("acknowledgement", LinkTypeRadiotap, cat(radiotapHeader(0, false), ack), 12, ErrNotPacket)
	decode("null frame", LinkTypeIEEE80211, null, 13, ErrNotPacket)
	decode("QoS null frame", LinkTypeIEEE80211, qosNull, 14, ErrNotPacket)
	decode("the first frame sent again", LinkTypeIEEE80211, data(wifiCase{ds: dot11ToDS, seq: 5 << 4, retry: true}), 15, ErrNotPacket)
	decode("the next frame", LinkTypeIEEE80211, data(wifiCase{ds: dot11ToDS, seq: 6 << 4}), 16, nil)
	if p.IntervalNs != int64(6*time.Second) {
		t.Errorf("interval after the link's own frames: %v, want 6s (to the last packet)", time.Duration(p.IntervalNs))
	}
	// A retransmission whose first sending the capture missed is the
	// only copy; one of another transmitter's frame is its own.
	decode("a retransmission of a frame not captured", LinkTypeIEEE80211, data(wifiCase{ds: dot11ToDS, seq: 7 << 4, retry: true}), 17, nil)
	decode("another station's frame of the same number, sent again", LinkTypeIEEE80211,
		wifiCase{ds: dot11ToDS, seq: 7 << 4, retry: true}.dataFrame(phoneMAC, gwMAC, cat(snap(0x0800), v4)), 18, nil)

	decode("protected", LinkTypeIEEE80211, data(wifiCase{ds: dot11ToDS, protected: true}), 19, ErrUnsupportedLinkType)
	if err := d.Decode(LinkTypeIEEE80211, data(wifiCase{ds: dot11ToDS, protected: true}), at(19), 0, &p); err == nil || !strings.Contains(err.Error(), "decrypt the capture") {
		t.Errorf("a protected frame's error does not say to decrypt the capture: %v", err)
	}
	ok := cat(radiotapHeader(0, false), data(wifiCase{ds: dot11ToDS, seq: 9 << 4}))
	for _, c := range []struct {
		name string
		link LinkType
		b    []byte
	}{
		{"FCS found wrong", LinkTypeRadiotap, cat(radiotapHeader(radiotapBadFCS, false), data(wifiCase{ds: dot11ToDS}))},
		{"FCS found wrong behind PPI", LinkTypePPI, cat(ppi80211(4), data(wifiCase{ds: dot11ToDS}))},
		{"radiotap version 1", LinkTypeRadiotap, func() []byte { b := bytes.Clone(ok); b[0] = 1; return b }()},
		{"radiotap longer than the frame", LinkTypeRadiotap, func() []byte { b := bytes.Clone(ok); b[2], b[3] = 0xff, 0xff; return b }()},
		{"radiotap shorter than its fixed part", LinkTypeRadiotap, func() []byte { b := bytes.Clone(ok); b[2] = 4; return b }()},
		{"radiotap presence bitmaps without end", LinkTypeRadiotap, cat([]byte{0, 0, 44, 0}, bytes.Repeat([]byte{0, 0, 0, 0x80}, 10))},
		{"AVS header of another version", LinkTypeAVS, cat([]byte{0x12, 0x34, 0x56, 0x78}, avsHeader()[4:], data(wifiCase{ds: dot11ToDS}))},
		{"Prism header longer than the frame", LinkTypePrism, cat(func() []byte { h := prismHeader(binary.LittleEndian); h[4], h[5] = 0xff, 0xff; return h }(), data(wifiCase{ds: dot11ToDS}))},
		{"802.11 protocol version 1", LinkTypeIEEE80211, func() []byte { b := data(wifiCase{ds: dot11ToDS}); b[0] |= 1; return b }()},
		{"data header cut short", LinkTypeIEEE80211, data(wifiCase{ds: dot11ToDS})[:20]},
		{"no LLC header", LinkTypeIEEE80211, data(wifiCase{ds: dot11ToDS})[:dot11HeaderLen+2]},
	} {
		decode(c.name, c.link, c.b, 20, ErrMalformed)
	}
	decode("the well-formed radiotap frame those were made from", LinkTypeRadiotap, ok, 21, nil)
}

// onTheAir is the Ethernet frame f (the i-th of its capture) as a monitor
// near the access point captures it: behind radiotap with its FCS, to or
// from the access point, QoS on every third frame; false for a frame too
// short for Ethernet.
func onTheAir(f rawFrame, i int, retry bool) (rawFrame, bool) {
	if len(f.data) < 14 {
		return f, false
	}
	src, dst, et := net.HardwareAddr(f.data[6:12]), net.HardwareAddr(f.data[0:6]), binary.BigEndian.Uint16(f.data[12:14])
	c := wifiCase{ds: dot11ToDS, qos: i%3 == 0, seq: uint16(i) << 4, retry: retry}
	if schemas.MAC(src) == sentinelHome.GatewayMAC {
		c.ds = dot11FromDS
	}
	body := cat(snap(et), f.data[14:])
	if et < 0x600 { // 802.3: the length, then LLC
		body = f.data[14:]
	}
	w := cat(radiotapHeader(radiotapFCS, i%2 == 0), c.dataFrame(src, dst, body), []byte{0, 0, 0, 0})
	ci := f.ci
	ci.CaptureLength, ci.Length = len(w), f.ci.Length-len(f.data)+len(w)
	return rawFrame{w, ci}, true
}

// TestWiFiCaptureOfRealTraffic: the IoT Sentinel captures, put on the air
// (onTheAir, a beacon every tenth frame, every seventh frame sent twice),
// decode to the records of the Ethernet captures, and the link's own
// frames are told apart.
func TestWiFiCaptureOfRealTraffic(t *testing.T) {
	frames, own := 0, 0
	beacon := cat(radiotapHeader(0, false), []byte{0x80, 0, 0, 0}, bcastMAC, bssid, bssid, []byte{0, 0}, make([]byte, 40))
	for device, files := range sentinelFiles(t) {
		link, eth := readPcap(t, files[0])
		if link != LinkTypeEthernet {
			t.Fatalf("%s: link type %s", files[0], link)
		}
		wired, air := NewDecoder(sentinelHome), NewDecoder(sentinelHome)
		var want, got schemas.Packet
		for i, f := range eth {
			w, ok := onTheAir(f, i, false)
			if !ok {
				continue
			}
			if i%10 == 0 {
				if err := air.Decode(LinkTypeRadiotap, beacon, w.ci, uint64(i), &got); !errors.Is(err, ErrNotPacket) {
					t.Fatalf("%s: a beacon: %v", device, err)
				}
				own++
			}
			errWire := wired.Decode(link, f.data, f.ci, uint64(i), &want)
			errAir := air.Decode(LinkTypeRadiotap, w.data, w.ci, uint64(i), &got)
			if (errWire == nil) != (errAir == nil) {
				t.Fatalf("%s frame %d: on the wire %v, on the air %v", files[0], i, errWire, errAir)
			}
			if errWire == nil && !reflect.DeepEqual(got, want) {
				t.Fatalf("%s frame %d: records differ:\nair  %+v\nwire %+v", files[0], i, got, want)
			}
			frames++
			if i%7 == 0 {
				again, _ := onTheAir(f, i, true)
				if err := air.Decode(LinkTypeRadiotap, again.data, again.ci, uint64(i), &got); !errors.Is(err, ErrNotPacket) {
					t.Fatalf("%s frame %d sent again: %v", files[0], i, err)
				}
				own++
			}
		}
	}
	if frames == 0 {
		t.Fatal("no frames")
	}
	t.Logf("%d frames decode as on the wire, %d of the link's own told apart", frames, own)
}

// BenchmarkDecodeWiFi decodes the frames of BenchmarkDecode's captures put
// on the air (onTheAir): radiotap, 802.11 and LLC/SNAP before the IP
// header.
func BenchmarkDecodeWiFi(b *testing.B) {
	var frames []rawFrame
	for _, files := range sentinelFiles(b) {
		_, fr := readPcap(b, files[0])
		for i, f := range fr {
			if w, ok := onTheAir(f, i, false); ok {
				frames = append(frames, w)
			}
		}
	}
	d := NewDecoder(sentinelHome)
	var p schemas.Packet
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f := &frames[i%len(frames)]
		_ = d.Decode(LinkTypeRadiotap, f.data, f.ci, uint64(i), &p)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
}

// wifiSeeds are 802.11 frames for the decoder's fuzz target.
func wifiSeeds(tb testing.TB) []decodeSeed {
	v4 := build(tb, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp())
	v6 := build(tb, ip6(dev6, cloud6, layers.IPProtocolTCP), tcp(1, 2, "S"))
	amsdu := wifiCase{ds: dot11ToDS, qos: true}.dataFrame(devMAC, gwMAC, cat(devMAC, gwMAC, []byte{0, byte(8 + len(v4))}, snap(0x0800), v4))
	amsdu[dot11HeaderLen] |= dot11AMSDUPresent
	return []decodeSeed{
		{LinkTypeIEEE80211, wifiCase{ds: dot11ToDS}.dataFrame(devMAC, gwMAC, cat(snap(0x0800), v4))},
		{LinkTypeIEEE80211, wifiCase{ds: dot11ToDS | dot11FromDS, qos: true, ht: true}.dataFrame(devMAC, gwMAC, cat(snap(0x86dd), v6))},
		{LinkTypeIEEE80211, amsdu},
		{LinkTypeRadiotap, cat(radiotapHeader(radiotapFCS|radiotapDataPad, true), wifiCase{ds: dot11FromDS, qos: true}.dataFrame(gwMAC, devMAC, nil), []byte{0, 0}, snap(0x0800), v4, []byte{1, 2, 3, 4})},
		{LinkTypePPI, cat(ppi80211(1), wifiCase{ds: dot11ToDS}.dataFrame(devMAC, gwMAC, cat(snap(0x0806), make([]byte, 28))))},
		{LinkTypePrism, cat(prismHeader(binary.LittleEndian), wifiCase{ds: dot11FromDS}.dataFrame(gwMAC, devMAC, cat(snap(0x0800), v4)))},
		{LinkTypeAVS, cat(avsHeader(), wifiCase{ds: dot11ToDS}.dataFrame(devMAC, gwMAC, cat(snap(0x86dd), v6)))},
	}
}

// lengthRewritten says a frame's FrameLen is not its captured wire
// length: an 802.11 frame's is its bridged Ethernet frame's, a pflog
// record's its packet's, a mirror's packet's the frame's it carries.
func lengthRewritten(link LinkType, data []byte) bool {
	if l, err := ParseLink(link, data); err == nil && (l.wire > 0 || l.unwired > 0) {
		return true
	}
	return carries80211(link, data)
}

// carries80211 says a frame of link type link is read as 802.11, whose
// FrameLen is its bridged Ethernet frame's, not the wire length.
func carries80211(link LinkType, data []byte) bool {
	switch link {
	case LinkTypeIEEE80211, LinkTypeRadiotap, LinkTypePrism, LinkTypeAVS:
		return true
	case LinkTypePPI:
		return len(data) >= 8 && binary.LittleEndian.Uint32(data[4:8]) == uint32(LinkTypeIEEE80211)
	}
	return false
}

func ExampleParseLink_wiFi() {
	frame := cat(radiotapHeader(radiotapFCS, false), wifiCase{ds: dot11ToDS, qos: true}.dataFrame(devMAC, gwMAC, cat(snap(0x0800), make([]byte, 20))), make([]byte, 4))
	l, err := ParseLink(LinkTypeRadiotap, frame)
	fmt.Println(l.SrcMAC, "->", l.DstMAC, l.IsIP(), l.Offset, err)
	// Output: 02:00:00:00:00:10 -> 02:00:00:00:00:01 true 52 <nil>
}
