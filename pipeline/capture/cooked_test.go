package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
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

// cookedFrame is a frame as `tcpdump -i any` would write it.
type cookedFrame struct {
	ifindex uint32
	hatype  uint16
	pkttype uint16
	src     schemas.MAC
	dst     schemas.MAC // what SLL drops; a PKTAP Ethernet frame keeps it
	proto   uint16
	payload []byte // after the link header (a VLAN tag included)
	ts      time.Time
}

// pktapNames are the interfaces of gatewayCopies as a Mac sharing its
// connection names them: the bridge and its member port, the uplink, a
// VPN's utun and loopback.
var pktapNames = map[uint32]string{1: "lo0", 5: "bridge100", 6: "en1", 7: "en0", 9: "utun3"}

// pktap is the frame as macOS tcpdump -i pktap writes it: Apple's header
// (108 bytes, little-endian: length, a packet follows, its link type, the
// interface, the direction), then an Ethernet frame, or a BSD loopback one
// for interfaces without Ethernet.
func (f cookedFrame) pktap() []byte {
	h := make([]byte, 108)
	binary.LittleEndian.PutUint32(h[0:], 108)
	binary.LittleEndian.PutUint32(h[4:], 1)
	name, ok := pktapNames[f.ifindex]
	if !ok {
		name = fmt.Sprintf("en%d", f.ifindex)
	}
	copy(h[12:36], name)
	dir := uint32(1)
	if f.pkttype == pktOutgoing {
		dir = 2
	}
	binary.LittleEndian.PutUint32(h[36:], dir)
	if f.hatype != arphrdEther {
		af := uint32(2)
		if f.proto == 0x86dd {
			af = 30
		}
		return slices.Concat(h, binary.LittleEndian.AppendUint32(nil, af), f.payload)
	}
	binary.LittleEndian.PutUint32(h[8:], 1)
	return slices.Concat(h, f.dst[:], f.src[:], binary.BigEndian.AppendUint16(nil, f.proto), f.payload)
}

func (f cookedFrame) sll2() []byte {
	b := make([]byte, 20, 20+len(f.payload))
	binary.BigEndian.PutUint16(b[0:], f.proto)
	binary.BigEndian.PutUint32(b[4:], f.ifindex)
	binary.BigEndian.PutUint16(b[8:], f.hatype)
	b[10] = byte(f.pkttype)
	if f.src != (schemas.MAC{}) || f.hatype == arphrdEther {
		b[11] = 6
		copy(b[12:], f.src[:])
	}
	return append(b, f.payload...)
}

func (f cookedFrame) sll() []byte {
	b := make([]byte, 16, 16+len(f.payload))
	binary.BigEndian.PutUint16(b[0:], f.pkttype)
	binary.BigEndian.PutUint16(b[2:], f.hatype)
	if f.src != (schemas.MAC{}) || f.hatype == arphrdEther {
		binary.BigEndian.PutUint16(b[4:], 6)
		copy(b[6:], f.src[:])
	}
	binary.BigEndian.PutUint16(b[14:], f.proto)
	return append(b, f.payload...)
}

// cookedPcap writes frames as a pcap file of link type SLL2 (v2) or SLL.
// pcapgo's writer takes the link type as a byte, which cannot say 276.
func cookedPcap(frames []cookedFrame, v2 bool) []byte {
	if v2 {
		return writeCooked(frames, features.LinkTypeLinuxSLL2, cookedFrame.sll2)
	}
	return writeCooked(frames, features.LinkTypeLinuxSLL, cookedFrame.sll)
}

// pktapPcap writes frames as a pcap file of link type PKTAP (258).
func pktapPcap(frames []cookedFrame) []byte {
	return writeCooked(frames, features.LinkTypePKTAP, cookedFrame.pktap)
}

func writeCooked(frames []cookedFrame, lt features.LinkType, encode func(cookedFrame) []byte) []byte {
	var b bytes.Buffer
	hdr := []byte{0x4d, 0x3c, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(hdr[20:], uint32(lt))
	b.Write(hdr)
	for _, f := range frames {
		data := encode(f)
		rec := make([]byte, 16)
		binary.LittleEndian.PutUint32(rec[0:], uint32(f.ts.Unix()))
		binary.LittleEndian.PutUint32(rec[4:], uint32(f.ts.Nanosecond()))
		binary.LittleEndian.PutUint32(rec[8:], uint32(len(data)))
		binary.LittleEndian.PutUint32(rec[12:], uint32(len(data)))
		b.Write(rec)
		b.Write(data)
	}
	return b.Bytes()
}

// gatewayCopies turns a real LAN capture (Ethernet, with the gateway's
// MAC) into what `tcpdump -i any` records on that gateway: each frame on
// the LAN bridge and on the bridge port it crossed, the packets to and
// from the internet again on the WAN (hop limit one further from the
// device, in an arrival order that follows the packet) and on the VPN's
// tun device, and loopback chatter. With trunk, the LAN and the WAN are
// VLANs 1 and 2 of one switch port (OpenWrt's swconfig layout), seen both
// tagged on the trunk and untagged on eth0.1 and eth0.2.
//
// Frames to another unicast MAC than the gateway's are to its radio (the
// IoT Sentinel captures' access point): those are the radio's own, on the
// port only, and the radio's side of the exchange (which the captures do
// not hold) is put before them, so the radio's MAC shows as a gateway's
// would; with trunk the device is wired and has no such frames. lan is the
// LAN capture with those changes: what the view should be; wan what a
// capture on the WAN interface (eth0.2 with trunk) shows.
func gatewayCopies(frames []frame, gw schemas.MAC, trunk bool) (out []cookedFrame, lan, wanFrames []frame) {
	const (
		lo, bridge, port, wan, tun, eth0, eth01, eth02 = 1, 5, 6, 7, 9, 2, 3, 4
	)
	wanMAC := schemas.MAC{0x02, 0, 0, 0, 0, 0x57}
	ispMAC := schemas.MAC{0x02, 0, 0, 0, 0, 0x15}
	tag := func(vid uint16, et uint16, p []byte) []byte {
		return slices.Concat(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, vid), et), p)
	}
	for _, f := range frames {
		dst, src := schemas.MAC(f.data[0:6]), schemas.MAC(f.data[6:12])
		if src != gw && dst != gw && dst[0]&1 == 0 && trunk {
			continue // a wired device has no radio to talk to
		}
		if src != gw && dst != gw && dst[0]&1 == 0 {
			radio := slices.Concat(src[:], dst[:], f.data[12:14], []byte(fmt.Sprintf("the radio's side, frame %d", len(lan))))
			ci := f.ci
			ci.Timestamp = ci.Timestamp.Add(-time.Millisecond)
			ci.CaptureLength, ci.Length = len(radio), len(radio)
			lan = append(lan, frame{radio, ci, features.LinkTypeEthernet})
			out = append(out, cookedFrame{ifindex: port, hatype: arphrdEther, pkttype: pktOutgoing, src: dst, dst: src, proto: binary.BigEndian.Uint16(f.data[12:14]),
				payload: radio[14:], ts: ci.Timestamp})
			out = append(out, cookedFrame{ifindex: port, hatype: arphrdEther, pkttype: pktHost, src: src, dst: dst, proto: binary.BigEndian.Uint16(f.data[12:14]),
				payload: f.data[14:], ts: f.ci.Timestamp})
			lan = append(lan, f)
			continue
		}
		lan = append(lan, f)
		et := binary.BigEndian.Uint16(f.data[12:14])
		ts := f.ci.Timestamp
		at := func(n int) time.Time { return ts.Add(time.Duration(n) * time.Microsecond) }
		pkt := func() uint16 {
			switch {
			case src == gw:
				return pktOutgoing
			case dst == (schemas.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}):
				return pktBroadcast
			case dst[0]&1 == 1:
				return pktMulticast
			case dst == gw:
				return pktHost
			}
			return pktOtherHost
		}
		p := pkt()
		lanCopies := []cookedFrame{
			{ifindex: port, hatype: arphrdEther, pkttype: p, src: src, dst: dst, proto: et, payload: f.data[14:]},
			{ifindex: bridge, hatype: arphrdEther, pkttype: p, src: src, dst: dst, proto: et, payload: f.data[14:]},
		}
		if p == pktOutgoing {
			// The gateway sends on the bridge, which sends on the port.
			lanCopies[0], lanCopies[1] = lanCopies[1], lanCopies[0]
		}
		if trunk {
			lanCopies = []cookedFrame{
				{ifindex: eth0, hatype: arphrdEther, pkttype: p, src: src, dst: dst, proto: 0x8100, payload: tag(1, et, f.data[14:])},
				{ifindex: eth01, hatype: arphrdEther, pkttype: p, src: src, dst: dst, proto: et, payload: f.data[14:]},
				{ifindex: bridge, hatype: arphrdEther, pkttype: p, src: src, dst: dst, proto: et, payload: f.data[14:]},
			}
			if p == pktOutgoing {
				slices.Reverse(lanCopies)
			}
		}
		// Only unicast IPv4 between the LAN and beyond crosses the gateway.
		var wanCopies []cookedFrame
		far := func() bool {
			a := f.data[30:34] // the destination address
			if src == gw {
				a = f.data[26:30]
			}
			return !sentinelHome.LANNets[0].Contains(netip.AddrFrom4([4]byte(a)))
		}
		if et == 0x0800 && len(f.data) >= 34 && (dst == gw || src == gw) && far() {
			ip := bytes.Clone(f.data[14:])
			toLAN := src == gw
			if toLAN {
				ip[8]++ // the gateway took one off on the way in
			} else {
				ip[8]--
			}
			wanPkt := pktOutgoing
			wanSrc, wanDst := wanMAC, ispMAC
			if toLAN {
				wanPkt, wanSrc, wanDst = pktHost, ispMAC, wanMAC
			}
			wanCopies = []cookedFrame{
				{ifindex: wan, hatype: arphrdEther, pkttype: uint16(wanPkt), src: wanSrc, dst: wanDst, proto: 0x0800, payload: ip},
				{ifindex: tun, hatype: 65534, pkttype: uint16(wanPkt), proto: 0x0800, payload: ip},
			}
			if trunk {
				wanCopies = []cookedFrame{
					{ifindex: eth02, hatype: arphrdEther, pkttype: uint16(wanPkt), src: wanSrc, dst: wanDst, proto: 0x0800, payload: ip},
					{ifindex: eth0, hatype: arphrdEther, pkttype: uint16(wanPkt), src: wanSrc, dst: wanDst, proto: 0x8100, payload: tag(2, 0x0800, ip)},
				}
			}
			if toLAN {
				slices.Reverse(wanCopies)
			}
		}
		// The LAN's first copy keeps the LAN capture's time stamp; a
		// packet from the internet was on the WAN a little before.
		all, first := append(lanCopies, wanCopies...), 0
		if src == gw && len(wanCopies) > 0 {
			all, first = append(wanCopies, lanCopies...), len(wanCopies)
		}
		for i := range all {
			all[i].ts = at(i - first)
		}
		for _, c := range all {
			// The first copy on the WAN: a trunk sees a packet from the
			// internet before its WAN VLAN's interface does.
			if c.ifindex == wan || c.ifindex == eth02 || c.ifindex == eth0 && c.proto == 0x8100 && c.payload[1] == 2 {
				dst := wanMAC
				if c.src == wanMAC {
					dst = ispMAC
				}
				ip := c.payload
				if c.proto == 0x8100 {
					ip = ip[4:]
				}
				eth := slices.Concat(dst[:], c.src[:], []byte{8, 0}, ip)
				wanFrames = append(wanFrames, frame{eth, gopacket.CaptureInfo{Timestamp: c.ts, CaptureLength: len(eth), Length: len(eth)}, features.LinkTypeEthernet})
				break
			}
		}
		out = append(out, all...)
		if len(out)%7 == 0 {
			out = append(out, cookedFrame{ifindex: lo, hatype: arphrdLoopback, pkttype: pktHost, proto: 0x0800,
				payload: []byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1}, ts: at(9)})
		}
	}
	return out, lan, wanFrames
}

// cookedFormats are the ways gatewayCopies' gateway is written as a
// capture on every interface: Linux's SLL2 and SLL (tcpdump -i any), a
// switch's trunk under SLL2, and a Mac sharing its connection captured
// with tcpdump -i pktap.
var cookedFormats = []struct {
	name  string
	trunk bool
	write func([]cookedFrame) []byte
}{
	{"sll2", false, func(f []cookedFrame) []byte { return cookedPcap(f, true) }},
	{"sll", false, func(f []cookedFrame) []byte { return cookedPcap(f, false) }},
	{"sll2-trunk", true, func(f []cookedFrame) []byte { return cookedPcap(f, true) }},
	{"pktap", false, pktapPcap},
	{"pcapng", false, ngPcap},
	{"pcapng-trunk", true, ngPcap},
}

// linuxNames are gatewayCopies' interfaces as an OpenWrt gateway names
// them, in a pcapng file of them all (dumpcap -i ...).
var linuxNames = map[uint32]string{1: "lo", 2: "eth0", 3: "eth0.1", 4: "eth0.2", 5: "br-lan", 6: "lan1", 7: "eth1", 9: "tun0"}

// ngPcap writes gatewayCopies' frames as dumpcap writes a capture of
// every interface of the gateway named: one pcapng file, each interface
// in its own link type (Linux's lo an Ethernet interface of zero MACs, a
// tun raw IP), nothing saying which way a frame went.
func ngPcap(frames []cookedFrame) []byte { return ngPcapNamed(frames, linuxNames, false) }

// ngPcapNamed is ngPcap with the interfaces named by names; bsd writes
// loopback and tunnels as macOS does, NULL link type (a 4-byte address
// family before the packet).
func ngPcapNamed(frames []cookedFrame, names map[uint32]string, bsd bool) []byte {
	b := &ngBuilder{order: binary.LittleEndian}
	b.section()
	ids := map[uint32]uint32{}
	for _, f := range frames {
		if _, ok := ids[f.ifindex]; ok {
			continue
		}
		ids[f.ifindex] = uint32(len(ids))
		link := uint16(features.LinkTypeEthernet)
		switch {
		case bsd && f.hatype != arphrdEther:
			link = uint16(features.LinkTypeNull)
		case f.hatype == arphrdNone:
			link = uint16(features.LinkTypeRaw)
		}
		b.iface(link, 0, b.option(2, []byte(names[f.ifindex])), b.option(9, []byte{9}))
	}
	for _, f := range frames {
		data := f.payload
		switch {
		case f.hatype == arphrdEther:
			data = slices.Concat(f.dst[:], f.src[:], binary.BigEndian.AppendUint16(nil, f.proto), f.payload)
		case bsd:
			af := uint32(2)
			if f.proto == 0x86dd {
				af = 30
			}
			data = slices.Concat(binary.LittleEndian.AppendUint32(nil, af), f.payload)
		case f.hatype == arphrdLoopback:
			data = slices.Concat(make([]byte, 12), binary.BigEndian.AppendUint16(nil, f.proto), f.payload)
		}
		b.epb(ids[f.ifindex], uint64(f.ts.UnixNano()), data, uint32(len(data)))
	}
	return b.buf.Bytes()
}

// TestMacVPNInterfaces: a Mac sharing its VPN (Internet Sharing's bridge
// and port, the VPN's utun, a NULL interface as lo0 is) captured with
// Wireshark into one pcapng. Its uplink carries only the tunnel's own
// packets, so the LAN's sides show only in what the Mac forwards into the
// utun: the LAN view is still the LAN capture, and utun and lo0 are left
// out.
func TestMacVPNInterfaces(t *testing.T) {
	_, sentinel := smallSentinelRaw(t)
	cooked, lan, _ := gatewayCopies(sentinel, sentinelHome.GatewayMAC, false)
	var vpn []cookedFrame
	for _, f := range cooked {
		if pktapNames[f.ifindex] != "en0" { // the uplink's NAPT copies: not a VPN's
			vpn = append(vpn, f)
		}
	}
	got, st := readView(t, ngPcapNamed(vpn, pktapNames, true), "mac.pcapng")
	t.Log(st.Summary())
	sameFrames(t, "the LAN capture", got, lan)
	for _, i := range st.Interfaces {
		want := map[string]string{"interface bridge100": "LAN", "interface en1": "LAN", "interface utun3": "other", "interface lo0": "loopback"}[i.Name]
		if i.Side != want {
			t.Errorf("%s (%s) judged %s, want %s", i.Name, i.Hardware, i.Side, want)
		}
	}
}

func readView(t *testing.T, raw []byte, name string) ([]frame, CookedStats) {
	t.Helper()
	src, err := NewReader(bytes.NewReader(raw), name)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out := readAll(t, src)
	st, _ := CookedStatsOf(src)
	return out, st
}

// TestCookedViewOfRealTraffic: a real device's LAN capture, recorded as a
// gateway's `tcpdump -i any` would record it, reads back as the LAN
// capture, frame for frame.
func TestCookedViewOfRealTraffic(t *testing.T) {
	_, sentinel := smallSentinelRaw(t)
	gw := sentinelHome.GatewayMAC
	for _, c := range cookedFormats {
		t.Run(c.name, func(t *testing.T) {
			cooked, lan, _ := gatewayCopies(sentinel, gw, c.trunk)
			got, st := readView(t, c.write(cooked), c.name)
			t.Log(st.Summary())
			sameFrames(t, "the LAN capture", got, lan)
			if st.Frames != uint64(len(cooked)) || st.LAN != uint64(len(lan)) || st.LAN+st.LeftOut() != st.Frames || st.NoDestination != 0 || st.Loopback == 0 {
				t.Errorf("stats %+v for %d cooked frames", st, len(cooked))
			}
			// Decoded, the view gives the LAN capture's records.
			var lanRaw bytes.Buffer
			w := pcapgo.NewWriter(&lanRaw)
			w.WriteFileHeader(65535, layers.LinkTypeEthernet)
			for _, f := range lan {
				w.WritePacket(f.ci, f.data)
			}
			want, _ := readRecords(t, lanRaw.Bytes(), "lan")
			if got, _ := readRecords(t, c.write(cooked), c.name); !reflect.DeepEqual(got, want) {
				t.Errorf("%d records from the cooked capture differ from the LAN capture's %d", len(got), len(want))
			}
		})
	}
}

// TestCookedViewTrunkTag9100: a switch's trunk whose VLAN tags carry the
// TPID 0x9100 (the QinQ outer tag before 802.1ad, which some switches
// still write) is judged VLAN by VLAN, as one tagged 0x8100 is: before,
// the LAN's and the WAN's VLANs on it were one interface to the view,
// and the WAN's frames on the trunk were read as the LAN's.
func TestCookedViewTrunkTag9100(t *testing.T) {
	_, sentinel := smallSentinelRaw(t)
	for _, c := range cookedFormats {
		if !c.trunk {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			cooked, lan, _ := gatewayCopies(sentinel, sentinelHome.GatewayMAC, true)
			tagged := 0
			for i := range cooked {
				if cooked[i].proto == 0x8100 {
					cooked[i].proto = 0x9100
					tagged++
				}
			}
			got, st := readView(t, c.write(cooked), c.name)
			sameFrames(t, "the LAN capture", got, lan)
			if tagged == 0 || st.LAN != uint64(len(lan)) || st.NoDestination != 0 {
				t.Errorf("%d frames tagged; stats %+v", tagged, st)
			}
		})
	}
}

// TestCookedViewWANSide: the same gateway's capture read as its WAN side
// is the WAN interface's capture, frame for frame; read as both sides at
// once (what a LAN and a WAN tap of one live capture get), each side is
// what reading it alone gives, and every frame is counted once.
func TestCookedViewWANSide(t *testing.T) {
	_, sentinel := smallSentinelRaw(t)
	for _, c := range cookedFormats {
		t.Run(c.name, func(t *testing.T) {
			cooked, lan, wan := gatewayCopies(sentinel, sentinelHome.GatewayMAC, c.trunk)
			if len(wan) < 50 {
				t.Fatalf("the capture has %d WAN frames", len(wan))
			}
			raw := c.write(cooked)
			src, err := NewSideReader(bytes.NewReader(raw), c.name, SideWAN)
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(t, src)
			st, _ := CookedStatsOf(src)
			t.Log(st.Summary())
			sameFrames(t, "the WAN capture", got, wan)
			if st.WAN != uint64(len(wan)) || st.LAN != 0 || st.NoDestination != 0 || st.WAN+st.LeftOut() != st.Frames {
				t.Errorf("WAN side: %+v", st)
			}
			if err := WANInput(src, c.name); err != nil {
				t.Errorf("the WAN side is refused as a WAN capture: %v", err)
			}

			// Both sides of one reading, each read by its own goroutine.
			in := input{r: bytes.NewReader(raw), name: c.name, buf: make([]byte, readBufferSize)}
			var r Source
			if bytes.HasPrefix(raw, magicPcapng[:]) {
				r, err = newNgReader(in)
			} else {
				r, err = newPcapReader(in)
			}
			if err != nil {
				t.Fatal(err)
			}
			s := newSides(newCookedView(r, SideLAN|SideWAN), nil)
			var sides [2][]frame
			errs := make(chan error, 2)
			for i, o := range s.out {
				go func() {
					for {
						f, err := o.Next()
						if err != nil {
							errs <- err
							return
						}
						if f.Offset != uint64(len(sides[i])) {
							errs <- fmt.Errorf("%v side: frame %d has Offset %d", o.side, len(sides[i]), f.Offset)
							return
						}
						sides[i] = append(sides[i], frame{f.Data, f.CI, f.LinkType})
					}
				}()
			}
			for range 2 {
				if err := <-errs; !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
			}
			sameFrames(t, "the LAN capture", sides[0], lan)
			sameFrames(t, "the WAN capture", sides[1], wan)
			lst, _ := CookedStatsOf(s.out[0])
			wst, _ := CookedStatsOf(s.out[1])
			if lst.LAN != uint64(len(lan)) || lst.WAN != uint64(len(wan)) || lst.LAN+lst.WAN+lst.LeftOut() != lst.Frames || wst.LeftOut() != 0 || len(lst.Interfaces) == 0 {
				t.Errorf("both sides: LAN's stats %+v, WAN's %+v", lst, wst)
			}
			for _, o := range s.out {
				if err := o.Close(); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestSidesClose: a side closed early drops its frames and the other
// still gets all of its own; a side whose reader waits for frames that do
// not come is woken by Close, which returns once the view stopped.
func TestSidesClose(t *testing.T) {
	_, sentinel := smallSentinelRaw(t)
	cooked, _, wan := gatewayCopies(sentinel, sentinelHome.GatewayMAC, false)
	raw := cookedPcap(cooked, true)

	r, err := newPcapReader(input{r: bytes.NewReader(raw), name: "early", buf: make([]byte, readBufferSize)})
	if err != nil {
		t.Fatal(err)
	}
	s := newSides(newCookedView(r, SideLAN|SideWAN), nil)
	if err := s.out[0].Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.out[0].Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("Next on a closed side: %v, want io.EOF", err)
	}
	sameFrames(t, "the WAN capture, its LAN side closed", readAll(t, s.out[1]), wan)
	if err := s.out[1].Close(); err != nil {
		t.Fatal(err)
	}

	// A capture that stops delivering mid-stream, as a quiet live one does.
	pr, pw := io.Pipe()
	go pw.Write(raw[:len(raw)/2])
	r, err = newPcapReader(input{r: pr, name: "quiet", buf: make([]byte, readBufferSize), closers: []io.Closer{pr}})
	if err != nil {
		t.Fatal(err)
	}
	s = newSides(newCookedView(r, SideLAN|SideWAN), nil)
	ended := make(chan error, 1)
	go func() { _, err := drain(s.out[1]); ended <- err }()
	select {
	case err := <-ended:
		t.Fatalf("the WAN side ended (%v) while its capture was still open", err)
	case <-time.After(100 * time.Millisecond):
	}
	closed := make(chan error, 2)
	go func() { closed <- s.out[0].Close(); closed <- s.out[1].Close() }()
	for range 2 {
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("Close of both sides did not return")
		}
	}
	select {
	case err := <-ended:
		if !errors.Is(err, io.EOF) {
			t.Errorf("the waiting side ended with %v, want io.EOF", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not wake the side waiting for frames")
	}
}

func ipv4Packet(src, dst [4]byte, ttl uint8) []byte {
	p := []byte{0x45, 0, 0, 28, 0, 0, 0x40, 0, ttl, 17, 0, 0}
	p = append(p, src[:]...)
	p = append(p, dst[:]...)
	return append(p, 0x30, 0x39, 0, 53, 0, 8, 0, 0)
}

// TestCookedViewWithoutLAN: captures with no LAN side are read whole:
// one host's own interfaces (Ethernet with internet traffic, loopback),
// and a cooked capture of a PPP link.
func TestCookedViewWithoutLAN(t *testing.T) {
	host := schemas.MAC{0x02, 0, 0, 0, 0, 1}
	router := schemas.MAC{0x02, 0, 0, 0, 0, 2}
	t0 := time.Unix(1700000000, 0)
	var frames []cookedFrame
	for i := range 40 {
		ts := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		frames = append(frames,
			cookedFrame{ifindex: 2, hatype: arphrdEther, pkttype: pktOutgoing, src: host, proto: 0x0800, payload: ipv4Packet([4]byte{192, 0, 2, 7}, [4]byte{198, 51, 100, 9}, 64), ts: ts},
			cookedFrame{ifindex: 2, hatype: arphrdEther, pkttype: pktHost, src: router, proto: 0x0800, payload: ipv4Packet([4]byte{198, 51, 100, 9}, [4]byte{192, 0, 2, 7}, 51), ts: ts.Add(time.Millisecond)},
			cookedFrame{ifindex: 1, hatype: arphrdLoopback, pkttype: pktHost, proto: 0x0800, payload: ipv4Packet([4]byte{127, 0, 0, 1}, [4]byte{127, 0, 0, 1}, 64), ts: ts.Add(2 * time.Millisecond)})
	}
	for _, v2 := range []bool{true, false} {
		got, st := readView(t, cookedPcap(frames, v2), "host")
		if len(got) != 80 || st.Whole != 80 || st.LAN != 0 || st.Loopback != 40 || st.OtherSide != 0 {
			t.Fatalf("v2 %v: %d frames, %+v: want the 80 Ethernet frames and no loopback", v2, len(got), st)
		}
		for i, f := range got {
			src := host
			if i%2 == 1 {
				src = router
			}
			if f.link != features.LinkTypeEthernet || schemas.MAC(f.data[6:12]) != src {
				t.Fatalf("v2 %v: frame %d: link %d, source %x", v2, i, f.link, f.data[6:12])
			}
		}
		src, _ := NewReader(bytes.NewReader(cookedPcap(frames, v2)), "host")
		if _, err := drain(src); !errors.Is(err, io.EOF) || WANInput(src, "host") != nil {
			t.Errorf("v2 %v: a capture with no LAN side is refused as a WAN capture: %v", v2, WANInput(src, "host"))
		}
		// The host's MAC goes back on what it received; the router's
		// MAC on what it sent once the router is known by its address.
		if schemas.MAC(got[1].data[0:6]) != host || schemas.MAC(got[2].data[0:6]) != router {
			t.Errorf("v2 %v: destinations %x and %x", v2, got[1].data[0:6], got[2].data[0:6])
		}
	}

	// A PPP link cooked: no Ethernet anywhere; passed on as it is, and
	// the decoder reads it.
	var ppp []cookedFrame
	for i := range 10 {
		ppp = append(ppp, cookedFrame{ifindex: 4, hatype: 512, pkttype: pktOutgoing, proto: 0x0800,
			payload: ipv4Packet([4]byte{100, 64, 0, 2}, [4]byte{198, 51, 100, 9}, 64), ts: t0.Add(time.Duration(i) * time.Second)})
	}
	raw := cookedPcap(ppp, true)
	got, st := readView(t, raw, "ppp")
	if len(got) != 10 || st.AsIs != 10 || got[0].link != features.LinkTypeLinuxSLL2 || !bytes.Equal(got[0].data, ppp[0].sll2()) {
		t.Fatalf("PPP: %d frames, %+v", len(got), st)
	}
	src, _ := NewReader(bytes.NewReader(raw), "ppp")
	rst, err := Read(context.Background(), src, features.PrivateHome(), func(*schemas.Packet) error { return nil })
	if err != nil || rst.Decoded() != 10 || rst.OtherViews != 0 {
		t.Fatalf("PPP read: %+v, %v", rst, err)
	}
}

// TestCookedViewHostPeerFirst: one host's capture on every interface (a
// Raspberry Pi running a home hub, tcpdump -i any) whose first frames are
// a LAN peer's (a phone opening the hub's web UI) before the host has
// sent anything, then the host's own traffic to the internet through the
// home router, is read whole: the peer's packets were to the host, not
// through it, which the host's first packet from that address shows,
// answering them or not (a firewall that drops them). Under SLL, which
// judges each source MAC apart, the peer's MAC had stayed a LAN side that
// nothing outvotes, and every other frame was left out as the other
// side's: 2 of 42 frames read. (Under SLL2 every frame was read, its
// first as a LAN side's.)
func TestCookedViewHostPeerFirst(t *testing.T) {
	host, phone, router := schemas.MAC{0xb8, 0x27, 0xeb, 0, 0, 0x20}, schemas.MAC{2, 0x11, 0x22, 0, 0, 0x30}, schemas.MAC{2, 0xaa, 0xbb, 0, 0, 1}
	hostIP, phoneIP, cloud := [4]byte{192, 168, 1, 20}, [4]byte{192, 168, 1, 30}, [4]byte{1, 1, 1, 1}
	t0 := time.Unix(1700000000, 0)
	for _, answered := range []bool{true, false} {
		var frames []cookedFrame
		add := func(pkttype uint16, src schemas.MAC, payload []byte) {
			frames = append(frames, cookedFrame{ifindex: 2, hatype: arphrdEther, pkttype: pkttype, src: src, proto: 0x0800, payload: payload,
				ts: t0.Add(time.Duration(len(frames)) * time.Second)})
		}
		add(pktHost, phone, ipv4Packet(phoneIP, hostIP, 64))
		if answered {
			add(pktOutgoing, host, ipv4Packet(hostIP, phoneIP, 64))
		} else {
			add(pktHost, phone, ipv4Packet(phoneIP, hostIP, 64))
		}
		for range 20 {
			add(pktOutgoing, host, ipv4Packet(hostIP, cloud, 64))
			add(pktHost, router, ipv4Packet(cloud, hostIP, 57))
		}
		for _, v2 := range []bool{false, true} {
			got, st := readView(t, cookedPcap(frames, v2), "pi")
			if len(got) != 42 || st.Whole != 42 || st.LAN != 0 || st.OtherSide != 0 {
				t.Errorf("answered %v, v2 %v: %d of 42 frames, %s: want all, read whole", answered, v2, len(got), st.Summary())
			}
		}
	}
}

// TestCookedViewVotesBounded: the LAN votes remembered to be taken back
// are a bounded table, as a gateway's LAN sends to the whole internet;
// the votes of the addresses sent to lately are still there to take.
func TestCookedViewVotesBounded(t *testing.T) {
	c := newCookedView(nil, SideLAN)
	i := &cookedIface{hatype: arphrdEther}
	for n := range 100_000 {
		i.lan++
		c.lanVotes.add([16]byte{10: 0xff, 11: 0xff, 12: 198, 13: byte(n >> 16), 14: byte(n >> 8), 15: byte(n)}, i)
	}
	if n := len(c.lanVotes.cur) + len(c.lanVotes.old); n > cookedMaxPending {
		t.Errorf("%d addresses remembered, want at most %d", n, cookedMaxPending)
	}
	last := [16]byte{10: 0xff, 11: 0xff, 12: 198, 13: 1, 14: 0x86, 15: 0x9f} // 99999
	c.ownAddr(last)
	if i.lan != 100_000-1 {
		t.Errorf("%d LAN votes left, want one taken back", i.lan)
	}
}

// TestCookedViewSides: PPPoE makes an interface the access link whatever
// its votes; a tun device never is the LAN; a frame held back waiting for
// its interface's votes comes out in its place; the frames before a
// truncation come out before the error.
func TestCookedViewSides(t *testing.T) {
	dev := schemas.MAC{0x02, 0, 0, 0, 0, 1}
	gwLAN := schemas.MAC{0x02, 0, 0, 0, 0, 0x10}
	isp := schemas.MAC{0x02, 0, 0, 0, 0, 0x20}
	t0 := time.Unix(1700000000, 0)
	ts := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	up := ipv4Packet([4]byte{192, 168, 1, 5}, [4]byte{198, 51, 100, 9}, 64)
	// A PPPoE session frame: ver/type, code 0, session 1, length, PPP IPv4.
	pppoe := slices.Concat([]byte{0x11, 0, 0, 1, 0, byte(len(up) + 2), 0, 0x21}, ipv4Packet([4]byte{198, 51, 100, 9}, [4]byte{100, 64, 0, 2}, 64))
	// The device's packet as the gateway sends it on: from its PPP
	// address (NAT), one hop on.
	pppoeOut := slices.Concat(pppoe[:8], ipv4Packet([4]byte{100, 64, 0, 2}, [4]byte{198, 51, 100, 9}, 63))
	frames := []cookedFrame{
		// The access link first, with starting hop limits (its BRAS
		// talks to the gateway): still not the LAN.
		{ifindex: 3, hatype: arphrdEther, pkttype: pktHost, src: isp, proto: 0x8864, payload: pppoe, ts: ts(0)},
		{ifindex: 3, hatype: arphrdEther, pkttype: pktHost, src: isp, proto: 0x8864, payload: pppoe, ts: ts(1)},
		{ifindex: 8, hatype: 512, pkttype: pktHost, proto: 0x0800, payload: pppoe[8:], ts: ts(2)},
		// The gateway's first frame on the LAN, before any vote: held.
		{ifindex: 2, hatype: arphrdEther, pkttype: pktOutgoing, src: gwLAN, proto: 0x0800, payload: ipv4Packet([4]byte{192, 168, 1, 1}, [4]byte{192, 168, 1, 5}, 64), ts: ts(3)},
		{ifindex: 2, hatype: arphrdEther, pkttype: pktHost, src: dev, proto: 0x0800, payload: up, ts: ts(4)},
		{ifindex: 3, hatype: arphrdEther, pkttype: pktOutgoing, src: gwLAN, proto: 0x8864, payload: pppoeOut, ts: ts(5)},
		{ifindex: 2, hatype: arphrdEther, pkttype: pktHost, src: dev, proto: 0x0800, payload: up, ts: ts(6000)},
	}
	raw := cookedPcap(frames, true)
	got, st := readView(t, raw, "pppoe")
	if len(got) != 3 || st.OtherSide != 4 || st.LAN != 3 {
		t.Fatalf("%d frames, %+v: want the LAN's 3", len(got), st)
	}
	if schemas.MAC(got[0].data[0:6]) != dev || schemas.MAC(got[0].data[6:12]) != gwLAN || !got[0].ci.Timestamp.Equal(ts(3)) ||
		schemas.MAC(got[1].data[0:6]) != gwLAN || !got[2].ci.Timestamp.Equal(ts(6000)) {
		t.Fatalf("view out of order or addressed wrong: %x %x %v", got[0].data[0:12], got[1].data[0:12], got[0].ci.Timestamp)
	}
	var sides []string
	for _, i := range st.Interfaces {
		sides = append(sides, i.Name+" "+i.Side)
	}
	if want := []string{"interface 2 LAN", "interface 3 other", "interface 8 other"}; !slices.Equal(sides, want) {
		t.Errorf("sides %q, want %q", sides, want)
	}

	// Read as a WAN capture, it is refused, naming the cut to make.
	src, err := NewReader(bytes.NewReader(raw), "gw.pcap")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Next(); err != nil {
		t.Fatal(err)
	}
	if err := WANInput(src, "gw.pcap"); !errors.Is(err, ErrNotWAN) || !strings.Contains(err.Error(), "tcpdump -r gw.pcap -w wan.pcap ifindex N, N one of its other interfaces: 3, 8") {
		t.Errorf("WANInput = %v", err)
	}

	// Cut inside the last record: the frames held back come out, then
	// the error.
	src, err = NewReader(bytes.NewReader(raw[:len(raw)-5]), "cut")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := drain(src); n != 2 || !errors.Is(err, ErrTruncated) {
		t.Fatalf("truncated: %d frames, then %v", n, err)
	}
}

// TestCookedViewBounded: a home that sends from a hundred thousand MACs
// and addresses (SLL, where each MAC is judged apart) costs the view a
// bounded table, and its frames still come out.
func TestCookedViewBounded(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	const n = 100_000
	frames := make([]cookedFrame, 0, n)
	for i := range n {
		m := schemas.MAC{0x02, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
		frames = append(frames, cookedFrame{hatype: arphrdEther, pkttype: pktHost, src: m, proto: 0x0800,
			payload: ipv4Packet([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}, [4]byte{198, 51, 100, 9}, 64), ts: t0.Add(time.Duration(i) * time.Microsecond)})
	}
	src, err := NewReader(bytes.NewReader(cookedPcap(frames, false)), "flood")
	if err != nil {
		t.Fatal(err)
	}
	got, err := drain(src)
	if !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	c := src.(*cookedView)
	if got != n {
		t.Errorf("%d of %d frames came out", got, n)
	}
	if len(c.keys) > cookedMaxKeys+1 || len(c.neigh.cur)+len(c.neigh.old) > cookedMaxTable || len(c.foreign.cur)+len(c.foreign.old) > cookedMaxTable ||
		len(c.seen) > cookedMaxSeen {
		t.Errorf("tables grew to %d keys, %d addresses, %d MACs, %d frames remembered", len(c.keys),
			len(c.neigh.cur)+len(c.neigh.old), len(c.foreign.cur)+len(c.foreign.old), len(c.seen))
	}
}

// BenchmarkCookedView reads a gateway's -i any capture (a real device's
// traffic, each frame on the port, the bridge, the WAN and the tun device)
// as its LAN view, beside reading the LAN capture itself: ns per cooked
// frame against ns per Ethernet frame.
func BenchmarkCookedView(b *testing.B) {
	_, sentinel := smallSentinelRaw(b)
	cooked, lan, _ := gatewayCopies(sentinel, sentinelHome.GatewayMAC, false)
	var eth bytes.Buffer
	w := pcapgo.NewWriter(&eth)
	w.WriteFileHeader(65535, layers.LinkTypeEthernet)
	for _, f := range lan {
		w.WritePacket(f.ci, f.data)
	}
	for _, c := range []struct {
		name   string
		raw    []byte
		frames int
	}{{"cooked", cookedPcap(cooked, true), len(cooked)}, {"pcapng-interfaces", ngPcap(cooked), len(cooked)}, {"ethernet", eth.Bytes(), len(lan)}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.raw)))
			b.ReportAllocs()
			for b.Loop() {
				src, err := NewReader(bytes.NewReader(c.raw), "bench")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := drain(src); !errors.Is(err, io.EOF) {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*c.frames), "ns/frame")
		})
	}
	// The same cooked capture read as both sides at once, each by its own
	// goroutine, as a live capture feeding a LAN and a WAN tap is.
	raw := cookedPcap(cooked, true)
	b.Run("cooked-both-sides", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		b.ReportAllocs()
		for b.Loop() {
			r, err := newPcapReader(input{r: bytes.NewReader(raw), name: "bench", buf: make([]byte, readBufferSize)})
			if err != nil {
				b.Fatal(err)
			}
			s := newSides(newCookedView(r, SideLAN|SideWAN), nil)
			done := make(chan error, 1)
			go func() { _, err := drain(s.out[1]); done <- err }()
			if _, err := drain(s.out[0]); !errors.Is(err, io.EOF) {
				b.Fatal(err)
			}
			if err := <-done; !errors.Is(err, io.EOF) {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(cooked)), "ns/frame")
	})
}

// TestCookedViewQuietLAN: a gateway whose LAN says nothing for the first
// half minute of the capture (the gateway's own DNS on the WAN meanwhile)
// is still a gateway: its WAN is not read as a host's, and once the
// device speaks, the view is the device's traffic only.
func TestCookedViewQuietLAN(t *testing.T) {
	dev, gwLAN, gwWAN, isp := schemas.MAC{2, 0, 0, 0, 0, 5}, schemas.MAC{2, 0, 0, 0, 0, 1}, schemas.MAC{2, 0, 0, 0, 0, 2}, schemas.MAC{2, 0, 0, 0, 0, 3}
	t0 := time.Unix(1700000000, 0)
	wanIP, resolver, server, devIP := [4]byte{203, 0, 113, 2}, [4]byte{198, 51, 100, 53}, [4]byte{198, 51, 100, 9}, [4]byte{192, 168, 1, 5}
	var frames []cookedFrame
	wanFrames := 0
	for s := range 40 {
		ts := t0.Add(time.Duration(s) * time.Second)
		frames = append(frames,
			cookedFrame{ifindex: 3, hatype: arphrdEther, pkttype: pktOutgoing, src: gwWAN, proto: 0x0800, payload: ipv4Packet(wanIP, resolver, 64), ts: ts},
			cookedFrame{ifindex: 3, hatype: arphrdEther, pkttype: pktHost, src: isp, proto: 0x0800, payload: ipv4Packet(resolver, wanIP, 52), ts: ts.Add(time.Millisecond)})
		wanFrames += 2
		if s >= 30 {
			frames = append(frames,
				cookedFrame{ifindex: 2, hatype: arphrdEther, pkttype: pktHost, src: dev, proto: 0x0800, payload: ipv4Packet(devIP, server, 64), ts: ts.Add(2 * time.Millisecond)},
				cookedFrame{ifindex: 3, hatype: arphrdEther, pkttype: pktOutgoing, src: gwWAN, proto: 0x0800, payload: ipv4Packet(wanIP, server, 63), ts: ts.Add(3 * time.Millisecond)},
				cookedFrame{ifindex: 3, hatype: arphrdEther, pkttype: pktHost, src: isp, proto: 0x0800, payload: ipv4Packet(server, wanIP, 50), ts: ts.Add(4 * time.Millisecond)},
				cookedFrame{ifindex: 2, hatype: arphrdEther, pkttype: pktOutgoing, src: gwLAN, proto: 0x0800, payload: ipv4Packet(server, devIP, 49), ts: ts.Add(5 * time.Millisecond)})
			wanFrames += 2
		}
	}
	got, st := readView(t, cookedPcap(frames, true), "quiet")
	if len(got) != 20 || st.LAN != 20 || st.Whole != 0 || st.OtherSide != uint64(wanFrames) {
		t.Fatalf("%d frames, %+v: want the device's 20 and the %d WAN frames left out", len(got), st, wanFrames)
	}
	for i, f := range got {
		if s, d := schemas.MAC(f.data[6:12]), schemas.MAC(f.data[0:6]); !(s == dev && d == gwLAN || s == gwLAN && d == dev) {
			t.Fatalf("frame %d goes %v -> %v: not the device's", i, s, d)
		}
	}
}

// TestCookedViewFirstFrameThroughGateway: a capture whose first frame is
// a device's packet to the internet (the lab's tcpdump -i any, started
// between two of the device's flows), followed by that packet leaving by
// the WAN and the gateway's answer on the LAN. The device's frame goes to
// the gateway's LAN MAC, which only the answer shows; SLL, which names no
// interface, had taken the WAN MAC the gateway sent from just before.
func TestCookedViewFirstFrameThroughGateway(t *testing.T) {
	dev, gwLAN, gwWAN, isp := schemas.MAC{2, 0, 0, 0, 0, 5}, schemas.MAC{2, 0, 0, 0, 0, 1}, schemas.MAC{2, 0, 0, 0, 0, 2}, schemas.MAC{2, 0, 0, 0, 0, 3}
	devIP, wanIP, server := [4]byte{192, 168, 50, 2}, [4]byte{203, 0, 113, 2}, [4]byte{198, 51, 100, 2}
	const port, bridge, wan = 2, 3, 4
	t0 := time.Unix(1700000000, 0)
	var frames []cookedFrame
	for s := range 5 {
		at := func(n int) time.Time {
			return t0.Add(time.Duration(s)*time.Second + time.Duration(n)*10*time.Microsecond)
		}
		up, down := ipv4Packet(devIP, server, 64), ipv4Packet(server, devIP, 62)
		frames = append(frames,
			cookedFrame{ifindex: port, hatype: arphrdEther, pkttype: pktHost, src: dev, proto: 0x0800, payload: up, ts: at(0)},
			cookedFrame{ifindex: bridge, hatype: arphrdEther, pkttype: pktHost, src: dev, proto: 0x0800, payload: up, ts: at(1)},
			cookedFrame{ifindex: wan, hatype: arphrdEther, pkttype: pktOutgoing, src: gwWAN, proto: 0x0800, payload: ipv4Packet(wanIP, server, 63), ts: at(2)},
			cookedFrame{ifindex: wan, hatype: arphrdEther, pkttype: pktHost, src: isp, proto: 0x0800, payload: ipv4Packet(server, wanIP, 63), ts: at(3)},
			cookedFrame{ifindex: bridge, hatype: arphrdEther, pkttype: pktOutgoing, src: gwLAN, proto: 0x0800, payload: down, ts: at(4)},
			cookedFrame{ifindex: port, hatype: arphrdEther, pkttype: pktOutgoing, src: gwLAN, proto: 0x0800, payload: down, ts: at(5)})
	}
	for _, v2 := range []bool{true, false} {
		got, st := readView(t, cookedPcap(frames, v2), "first")
		if len(got) != 10 || st.LAN != 10 || st.NoDestination != 0 {
			t.Fatalf("v2 %v: %d frames, %+v: want the LAN's 10", v2, len(got), st)
		}
		for i, f := range got {
			want := [2]schemas.MAC{gwLAN, dev}
			if i%2 == 1 {
				want = [2]schemas.MAC{dev, gwLAN}
			}
			if d, s := schemas.MAC(f.data[0:6]), schemas.MAC(f.data[6:12]); d != want[0] || s != want[1] {
				t.Errorf("v2 %v: frame %d goes %v -> %v, want %v -> %v", v2, i, s, d, want[1], want[0])
			}
		}
	}
}
