package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// nflogAttrs is an NFLOG record of group 5 as netfilter logs pkt
// (EtherType et) at hook for family fam, attributes in byte order order
// (little-endian if nil) and padded to 4 bytes: the rule's prefix if any,
// the interfaces it names (0: none), br_netfilter's port going out
// (physOut), for a hook with an in interface the link header hw, and for
// the bridge family its own link header l2 (NFULA_L2HDR).
type nflogAttrs struct {
	order            binary.AppendByteOrder
	fam              byte
	et               uint16
	hook             byte
	prefix           string
	in, out, physOut uint32
	hw, l2, pkt      []byte
}

func (a nflogAttrs) record() []byte {
	o := a.order
	if o == nil {
		o = binary.LittleEndian
	}
	b := []byte{a.fam, 0, 0, 5}
	tlv := func(typ uint16, v []byte) {
		b = o.AppendUint16(b, uint16(4+len(v)))
		b = o.AppendUint16(b, typ)
		b = append(b, v...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	tlv(1, append(binary.BigEndian.AppendUint16(nil, a.et), a.hook, 0))
	if a.prefix != "" {
		tlv(10, []byte(a.prefix+"\x00"))
	}
	for _, d := range []struct {
		typ uint16
		dev uint32
	}{{4, a.in}, {5, a.out}, {7, a.physOut}} {
		if d.dev != 0 {
			tlv(d.typ, binary.BigEndian.AppendUint32(nil, d.dev))
		}
	}
	if a.hw != nil {
		tlv(15, binary.BigEndian.AppendUint16(nil, 1)) // ARPHRD_ETHER
		tlv(17, binary.BigEndian.AppendUint16(nil, uint16(len(a.hw))))
		tlv(16, a.hw)
	}
	if a.l2 != nil {
		tlv(21, a.l2)
	}
	if a.pkt != nil {
		tlv(9, a.pkt)
	}
	return b
}

// nflogRecord is an NFLOG record as the kernel logs a packet of EtherType
// et, with the rule's prefix, attributes in byte order o: with hw (the
// frame's link header) as one that came in by interface 3 (PREROUTING),
// without as one going out by it (POSTROUTING).
func nflogRecord(o binary.AppendByteOrder, et uint16, pkt, hw []byte) []byte {
	a := nflogAttrs{order: o, fam: 7, et: et, hook: 4, prefix: "hm-lan", out: 3, hw: hw, pkt: pkt} // 7: a bridge's hook, ARP and the like
	switch et {
	case 0x0800:
		a.fam = 2
	case 0x86dd:
		a.fam = 10
	}
	if hw != nil {
		a.hook, a.in, a.out = 0, 3, 0 // PREROUTING
	}
	return a.record()
}

// TestNFLOGCapture writes a real capture's packets as a gateway's NFLOG
// log of its LAN interface (the device's packets as they came in, with
// their link header; the gateway's as they went out, without), as pcap
// little-endian and as pcapng big-endian cut at a snap length. Every
// packet must read back as its Ethernet frame: those that came in as they
// were, those that went out with the MACs the others showed. Only what no
// earlier frame could show is missing: a going-out packet before the
// gateway's MAC came in is raw IP, one to an address not yet seen has a
// zero destination MAC.
func TestNFLOGCapture(t *testing.T) {
	frames := openAll(t, smallSentinel(t))
	gw := sentinelHome.GatewayMAC
	type logged struct {
		frame []byte // the Ethernet frame without a wire's padding, nil for no packet
		out   bool   // the gateway sent it
	}
	var log []logged
	for _, f := range frames {
		n := len(f.data)
		switch binary.BigEndian.Uint16(f.data[12:14]) {
		case 0x0800:
			n = 14 + int(binary.BigEndian.Uint16(f.data[16:18]))
		case 0x86dd:
			n = 14 + 40 + int(binary.BigEndian.Uint16(f.data[18:20]))
		}
		log = append(log, logged{f.data[:n], schemas.MAC(f.data[6:12]) == gw})
	}
	log = append(log, logged{}) // a rule that logs its prefix only

	// Enough for every header of these packets, not for every payload.
	const snap = 160
	var pcap bytes.Buffer
	w := pcapgo.NewWriter(&pcap)
	if err := w.WriteFileHeader(65535, layers.LinkType(features.LinkTypeNFLOG)); err != nil {
		t.Fatal(err)
	}
	ng := &ngBuilder{order: binary.BigEndian}
	ng.section()
	ng.iface(uint16(features.LinkTypeNFLOG), snap)
	for i, l := range log {
		et, pkt, hw := uint16(0x0800), []byte(nil), []byte(nil)
		if l.frame != nil {
			et, pkt = binary.BigEndian.Uint16(l.frame[12:14]), l.frame[14:]
			if !l.out {
				hw = l.frame[:14]
			}
		}
		ts := frames[min(i, len(frames)-1)].ci.Timestamp
		rec := nflogRecord(binary.LittleEndian, et, pkt, hw)
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(rec), Length: len(rec)}, rec); err != nil {
			t.Fatal(err)
		}
		rec = nflogRecord(binary.BigEndian, et, pkt, hw)
		ng.epb(0, uint64(ts.UnixMicro()), rec[:min(len(rec), snap)], uint32(len(rec)))
	}

	for _, c := range []struct {
		name string
		data []byte
		snap int
	}{{"pcap", pcap.Bytes(), 0}, {"pcapng, big-endian, cut", ng.buf.Bytes(), snap}} {
		t.Run(c.name, func(t *testing.T) {
			src, err := NewReader(bytes.NewReader(c.data), c.name)
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(t, src)
			if len(got) != len(log) {
				t.Fatalf("%d frames, want %d", len(got), len(log))
			}
			exact, rawIP, noDst := 0, 0, 0
			gwSeen := false // a frame came in to the gateway's MAC
			for i, f := range got {
				l := log[i]
				if l.frame == nil || !slices.Contains([]uint16{0x0800, 0x86dd}, binary.BigEndian.Uint16(l.frame[12:14])) {
					if f.link != features.LinkTypeNFLOG {
						t.Fatalf("frame %d, no IP packet: link type %v, want the record kept", i, f.link)
					}
					continue
				}
				want := l.frame
				if c.snap > 0 {
					// The record holds 72 or 36 bytes before the packet.
					want = want[:min(len(want), 14+c.snap-map[bool]int{false: 72, true: 36}[l.out])]
				}
				switch {
				case f.link == features.LinkTypeEthernet && bytes.Equal(f.data, want):
					exact++
				case f.link == features.LinkTypeEthernet && l.out && schemas.MAC(f.data[0:6]).IsZero() && bytes.Equal(f.data[6:], want[6:]):
					noDst++
				case l.out && !gwSeen && f.link != features.LinkTypeEthernet && bytes.Equal(f.data, want[14:]):
					rawIP++
				default:
					t.Fatalf("frame %d (%s): link type %v\n% x\nwant\n% x", i, map[bool]string{false: "came in", true: "went out"}[l.out], f.link, f.data[:min(len(f.data), 40)], want[:min(len(want), 40)])
				}
				gwSeen = gwSeen || !l.out && schemas.MAC(l.frame[0:6]) == gw
				full := len(l.frame)
				if f.link != features.LinkTypeEthernet {
					full -= 14
				}
				if f.ci.Length != full || f.ci.CaptureLength != len(f.data) {
					t.Errorf("frame %d: %d of %d bytes, want %d of %d", i, f.ci.CaptureLength, f.ci.Length, len(f.data), full)
				}
			}
			t.Logf("%d frames exactly as on the LAN, %d gone out before the gateway's MAC came in (raw IP), %d to an address not yet seen", exact, rawIP, noDst)
			ns, ok := NFLOGStatsOf(src)
			if want := (NFLOGStats{Records: uint64(exact + rawIP + noDst), Ethernet: uint64(exact + noDst), RawIP: uint64(rawIP), NoDestination: uint64(noDst)}); !ok || ns != want {
				t.Errorf("NFLOGStatsOf: %+v, %v; want %+v", ns, ok, want)
			}
			t.Log(ns.Summary())
			if ip := exact + rawIP + noDst; ip < 50 || exact < ip*9/10 {
				t.Errorf("%d of %d IP frames read back as they were on the LAN", exact, ip)
			}

			// Decoded: each packet's record is the LAN capture's but for
			// a wire's padding (the frame length), and the MACs a frame
			// could not be given.
			recs, st := readRecords(t, c.data, c.name)
			if st.NotPackets != 1 || st.DecodeErrors != 0 || int(st.Decoded()) != len(frames) {
				t.Fatalf("Read: %+v: want %d decoded, the prefix alone counted apart", st, len(frames))
			}
			lan, _ := smallSentinelRaw(t)
			wantRecs, _ := readRecords(t, lan, "lan")
			for i, p := range recs {
				w := wantRecs[i]
				if !w.SrcIP.IsValid() || p.SrcMAC != w.SrcMAC || p.DstMAC != w.DstMAC {
					continue // ARP, or a frame given no MAC
				}
				w.FrameLen, w.TsNs, w.IntervalNs = p.FrameLen, p.TsNs/1000*1000, p.IntervalNs
				p.TsNs = p.TsNs / 1000 * 1000
				if c.snap > 0 {
					w.PayloadLen, w.ProtoBits, w.DHCP = p.PayloadLen, p.ProtoBits, p.DHCP
				}
				if !reflect.DeepEqual(p, w) {
					t.Fatalf("packet %d decoded to\n%+v\nwant\n%+v", i, p, w)
				}
			}
		})
	}
}

// BenchmarkReadNFLOG reads and decodes a real capture's IP packets as an
// NFLOG log against the same packets as Ethernet frames: what unwrapping
// the records costs.
func BenchmarkReadNFLOG(b *testing.B) {
	var eth, nflog bytes.Buffer
	we, wn := pcapgo.NewWriter(&eth), pcapgo.NewWriter(&nflog)
	we.WriteFileHeader(65535, layers.LinkTypeEthernet)
	wn.WriteFileHeader(65535, layers.LinkType(features.LinkTypeNFLOG))
	n := 0
	for _, f := range openAll(b, smallSentinel(b)) {
		et := binary.BigEndian.Uint16(f.data[12:14])
		if et != 0x0800 && et != 0x86dd {
			continue
		}
		rec := nflogRecord(binary.LittleEndian, et, f.data[14:], f.data[:14])
		we.WritePacket(gopacket.CaptureInfo{Timestamp: f.ci.Timestamp, CaptureLength: len(f.data), Length: len(f.data)}, f.data)
		wn.WritePacket(gopacket.CaptureInfo{Timestamp: f.ci.Timestamp, CaptureLength: len(rec), Length: len(rec)}, rec)
		n++
	}
	for _, c := range []struct {
		name string
		data []byte
	}{{"ethernet", eth.Bytes()}, {"nflog", nflog.Bytes()}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				src, err := NewReader(bytes.NewReader(c.data), c.name)
				if err != nil {
					b.Fatal(err)
				}
				st, err := Read(context.Background(), src, sentinelHome, func(*schemas.Packet) error { return nil })
				if err != nil || st.Decoded() != uint64(n) {
					b.Fatalf("%+v, %v: want %d packets", st, err, n)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/frame")
		})
	}
}

// TestNFLOGForwardRules: a log of FORWARD rules is read, and its summary
// says why its packets to the internet carry the WAN's MACs and which
// rules to write instead.
func TestNFLOGForwardRules(t *testing.T) {
	rec := nflogRecord(binary.LittleEndian, 0x0800, []byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 192, 168, 1, 5, 52, 0, 0, 2}, nil)
	rec[4+4+2] = 2 // the packet header's hook: FORWARD
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	w.WriteFileHeader(65535, layers.LinkType(features.LinkTypeNFLOG))
	w.WritePacket(gopacket.CaptureInfo{CaptureLength: len(rec), Length: len(rec)}, rec)
	src, err := NewReader(bytes.NewReader(buf.Bytes()), "forward.pcap")
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, src)
	st, ok := NFLOGStatsOf(src)
	if !ok || st.Forward != 1 || st.RawIP != 1 || !strings.Contains(st.Summary(), "POSTROUTING -o LAN") {
		t.Errorf("%+v, %v: %s", st, ok, st.Summary())
	}
	eth, err := OpenFile(smallSentinel(t))
	if err != nil {
		t.Fatal(err)
	}
	defer eth.Close()
	readAll(t, eth)
	if _, ok := NFLOGStatsOf(eth); ok {
		t.Error("an Ethernet capture has NFLOG stats")
	}
}

// nflogHookRecord is an IPv4 record of the IP family's hook.
func nflogHookRecord(hook byte, in, out, physOut uint32, hw, pkt []byte) []byte {
	return nflogAttrs{fam: 2, et: 0x0800, hook: hook, in: in, out: out, physOut: physOut, hw: hw, pkt: pkt}.record()
}

// nflogPcap writes NFLOG records as a pcap file.
func nflogPcap(recs ...[]byte) []byte {
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	w.WriteFileHeader(65535, layers.LinkType(features.LinkTypeNFLOG))
	for i, r := range recs {
		// 2 ms apart: a flooded frame's copies come within microseconds.
		w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(1700000000, 0).Add(time.Duration(i) * 2 * time.Millisecond), CaptureLength: len(r), Length: len(r)}, r)
	}
	return buf.Bytes()
}

// TestNFLOGBridgedFrames: where br_netfilter passes bridged frames to the
// IP hooks, a log of the LAN's two hooks holds each frame between two
// devices twice, coming in with its own link header and going out without
// one. The view gives it once, as it was on the LAN, and the frames between
// the devices, sent to each other's MACs, do not move the gateway's MAC
// that the gateway's own packets get. A FORWARD log's bridged frames keep
// their headers and are not taken for routed ones.
func TestNFLOGBridgedFrames(t *testing.T) {
	gw, a, b := schemas.MAC{2, 0, 0, 0, 0, 1}, schemas.MAC{2, 0, 0, 0, 0, 0x0a}, schemas.MAC{2, 0, 0, 0, 0, 0x0b}
	ipA, ipB, far := [4]byte{192, 168, 1, 10}, [4]byte{192, 168, 1, 11}, [4]byte{52, 0, 0, 2}
	const br, port = 3, 5
	eth := func(dst, src schemas.MAC) []byte { return slices.Concat(dst[:], src[:], []byte{8, 0}) }
	read := func(recs ...[]byte) ([]frame, NFLOGStats) {
		src, err := NewReader(bytes.NewReader(nflogPcap(recs...)), "bridged.pcap")
		if err != nil {
			t.Fatal(err)
		}
		// readAll requires the frames numbered as in a capture without the
		// left-out records.
		got := readAll(t, src)
		st, _ := NFLOGStatsOf(src)
		return got, st
	}
	check := func(got []frame, want [][2]schemas.MAC) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%d frames, want %d", len(got), len(want))
		}
		for i, f := range got {
			if f.link != features.LinkTypeEthernet || schemas.MAC(f.data[0:6]) != want[i][0] || schemas.MAC(f.data[6:12]) != want[i][1] {
				t.Errorf("frame %d: link %d, %x -> %x; want %v -> %v", i, f.link, f.data[6:12], f.data[0:6], want[i][1], want[i][0])
			}
		}
	}

	got, st := read(
		nflogHookRecord(0, br, 0, 0, eth(gw, a), ipv4Packet(ipA, far, 64)),
		// A to B before B has sent anything: bridged, and no vote for B.
		nflogHookRecord(0, br, 0, 0, eth(b, a), ipv4Packet(ipA, ipB, 64)),
		nflogHookRecord(4, 0, br, port, nil, ipv4Packet(ipA, ipB, 64)),
		nflogHookRecord(0, br, 0, 0, eth(a, b), ipv4Packet(ipB, ipA, 64)),
		nflogHookRecord(4, 0, br, port, nil, ipv4Packet(ipB, ipA, 64)),
		// The gateway's answer from beyond, routed out by the bridge.
		nflogHookRecord(4, 0, br, 0, nil, ipv4Packet(far, ipA, 50)),
	)
	check(got, [][2]schemas.MAC{{gw, a}, {b, a}, {a, b}, {a, gw}})
	if st.Ethernet != 4 || st.Bridged != 2 || st.Repeats != 2 || st.RawIP+st.NoDestination+st.Forward != 0 || !strings.Contains(st.Summary(), "2 second records of a frame") {
		t.Errorf("%+v: %s", st, st.Summary())
	}

	// FORWARD alone: the bridged frame once, with its header.
	got, st = read(
		nflogHookRecord(2, br, br, port, eth(b, a), ipv4Packet(ipA, ipB, 64)),
		nflogHookRecord(2, br, br, port, eth(a, b), ipv4Packet(ipB, ipA, 64)),
	)
	check(got, [][2]schemas.MAC{{b, a}, {a, b}})
	if st.Bridged != 2 || st.Repeats != 0 || st.Forward != 0 {
		t.Errorf("FORWARD log: %+v", st)
	}
}

// TestNFLOGBridgeFamily: a log of the bridge's own hooks (ebtables,
// nftables' bridge family) holds each frame's own header at every hook,
// the gateway's frames going out included, so every frame, ARP too, reads
// back exactly. A flooded frame, logged where the gateway takes it in and
// for each port it leaves by, is given once; a frame a host sends twice is
// given twice, as is one sent again after the flood's copies are over.
func TestNFLOGBridgeFamily(t *testing.T) {
	gw, a, b := schemas.MAC{2, 0, 0, 0, 0, 1}, schemas.MAC{2, 0, 0, 0, 0, 0x0a}, schemas.MAC{2, 0, 0, 0, 0, 0x0b}
	bcast, mcast := schemas.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, schemas.MAC{0x33, 0x33, 0, 0, 0, 1}
	const br, p1, p2 = 3, 5, 6
	ipA, ipB := [4]byte{192, 168, 1, 10}, [4]byte{192, 168, 1, 11}
	toGW, toB := ipv4Packet(ipA, [4]byte{192, 168, 1, 1}, 64), ipv4Packet(ipA, ipB, 64)
	arp := make([]byte, 28)
	ra := append([]byte{0x60, 0, 0, 0, 0, 8, 58, 255}, make([]byte, 32)...)
	ra = append(ra, 134, 0, 0, 0, 0, 0, 0, 0)
	rec := func(hook byte, et uint16, out uint32, dst, src schemas.MAC, pkt []byte) []byte {
		a := nflogAttrs{fam: 7, et: et, hook: hook, l2: slices.Concat(dst[:], src[:], binary.BigEndian.AppendUint16(nil, et)), pkt: pkt}
		if hook != 3 {
			a.in = br
		}
		if out != 0 {
			a.out, a.physOut = br, out
		}
		return a.record()
	}
	recs := [][]byte{
		rec(1, 0x0800, 0, gw, a, toGW),    // INPUT: to the gateway
		rec(2, 0x0800, p2, b, a, toB),     // FORWARD: A to B
		rec(2, 0x0800, p2, b, a, toB),     // A sends B the same again at once
		rec(1, 0x0806, 0, bcast, a, arp),  // A's ARP request, taken in by the gateway
		rec(2, 0x0806, p2, bcast, a, arp), // and flooded to B's port: a repeat
		rec(3, 0x86dd, p1, mcast, gw, ra), // OUTPUT: the gateway's RA, to A's port
		rec(3, 0x86dd, p2, mcast, gw, ra), // and to B's: a repeat
		rec(2, 0x0806, p2, bcast, a, arp), // A's ARP again, later
	}
	want := []int{0, 1, 2, 3, 5, 7}
	src, err := NewReader(bytes.NewReader(nflogPcap(recs...)), "bridge.pcap")
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, src)
	if len(got) != len(want) {
		t.Fatalf("%d frames, want %d", len(got), len(want))
	}
	for i, f := range got {
		h, _ := features.ParseNFLOG(recs[want[i]])
		w := slices.Concat(recs[want[i]][h.L2At:h.L2At+h.L2Len], recs[want[i]][h.At:h.At+h.Len])
		if f.link != features.LinkTypeEthernet || !bytes.Equal(f.data, w) {
			t.Errorf("frame %d: link %d, % x; want record %d's frame % x", i, f.link, f.data, want[i], w)
		}
	}
	st, _ := NFLOGStatsOf(src)
	if st.Ethernet != 6 || st.Repeats != 2 || st.Bridged != 2 || st.RawIP+st.NoDestination+st.Forward != 0 {
		t.Errorf("%+v: %s", st, st.Summary())
	}
}
