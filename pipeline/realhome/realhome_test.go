package realhome

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/internal/sentineldata"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/schemas"
)

const sentinel = "../../../shared/data/iot-sentinel-dev"

// assembleTwice assembles the IoT Sentinel home of cfg, and the same home
// with change made to cfg: what one option does, all else equal.
func assembleTwice(t *testing.T, cfg Config, change func(*Config)) (plain, changed *Home) {
	t.Helper()
	devs := loadSentinel(t)
	plain, err := Assemble(context.Background(), devs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	change(&cfg)
	if changed, err = Assemble(context.Background(), devs, cfg); err != nil {
		t.Fatal(err)
	}
	return plain, changed
}

func loadSentinel(t *testing.T) []Device {
	t.Helper()
	sentineldata.Need(t)
	devs, err := LoadDevices(sentinel)
	if err != nil {
		t.Fatal(err)
	}
	return devs
}

func TestByTime(t *testing.T) {
	files := []string{"d/Setup-C-4-STA.pcap", "d/Setup-A-1-STA.pcap", "d/Setup-A-10-STA.pcap", "d/x.pcap", "d/Setup-C-2-STA.pcap"}
	early, late := ByTime(files)
	want := []string{"d/Setup-A-1-STA.pcap", "d/Setup-C-2-STA.pcap", "d/Setup-C-4-STA.pcap"}
	if !slices.Equal(early, want) || !slices.Equal(late, []string{"d/Setup-A-10-STA.pcap", "d/x.pcap"}) {
		t.Fatalf("early %v late %v", early, late)
	}
	if e, l := ByTime([]string{"a-1-STA.pcap"}); len(e) != 1 || len(l) != 0 {
		t.Fatalf("one capture: early %v late %v, want it early", e, l)
	}
	if _, err := ParseSplit("later"); err == nil || !strings.Contains(err.Error(), "late") {
		t.Fatalf("ParseSplit(later) = %v, want an error naming the choices", err)
	}
}

// ipv4Valid says whether the IPv4 header checksum of a frame holds and,
// for an unfragmented TCP or UDP packet captured whole, the transport one.
func ipv4Valid(b []byte) (ipOK, l4OK, l4Checked bool) {
	off, et := etherType(b)
	if et != 0x0800 || len(b) < off+20 {
		return true, true, false
	}
	ip := b[off:]
	ihl := int(ip[0]&0x0f) * 4
	ipOK = sum16(ip[:ihl], 0) == 0xffff
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if total > len(ip) || binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 || (ip[9] != 6 && ip[9] != 17) {
		return ipOK, true, false
	}
	l4 := ip[ihl:total]
	if ip[9] == 17 && binary.BigEndian.Uint16(l4[6:8]) == 0 {
		return ipOK, true, false
	}
	pseudo := uint32(binary.BigEndian.Uint16(ip[12:14])) + uint32(binary.BigEndian.Uint16(ip[14:16])) +
		uint32(binary.BigEndian.Uint16(ip[16:18])) + uint32(binary.BigEndian.Uint16(ip[18:20])) + uint32(ip[9]) + uint32(len(l4))
	return ipOK, sum16(l4, pseudo) == 0xffff, true
}

func sum16(b []byte, s uint32) uint16 {
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func TestAssembleHeldOutUnits(t *testing.T) {
	devs := loadSentinel(t)
	cfg := Config{Devices: 5, Units: map[string]int{"WeMoSwitch": 4}, Duration: 10 * time.Minute, Sessions: LateSessions, Seed: 3}
	h, err := Assemble(context.Background(), devs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Device{}
	for _, d := range devs {
		byName[d.Name] = d
	}
	origBad := 0 // checksums the capture already had wrong stay wrong, no more
	types := map[string]int{}
	sessions := map[string]bool{}
	macs := map[schemas.MAC]bool{}
	ips := map[netip.Addr]bool{}
	for _, u := range h.Units {
		types[u.Device]++
		_, late := ByTime(byName[u.Device].Files)
		if !slices.Contains(late, u.Session) {
			t.Errorf("unit %s comes from %s, not one of the held-out (late) captures %v", u.Name, u.Session, late)
		}
		if sessions[u.Session] || macs[u.MAC] || ips[u.IP] {
			t.Errorf("unit %s shares its capture, MAC or address with another unit", u.Name)
		}
		sessions[u.Session], macs[u.MAC], ips[u.IP] = true, true, true
		if orig := byName[u.Device].MAC; u.MAC == orig || !bytes.Equal(u.MAC[:3], orig[:3]) {
			t.Errorf("unit %s MAC %s: want a new MAC with the vendor OUI of %s", u.Name, u.MAC, orig)
		}
		if !h.LAN.Contains(u.IP) || u.IP == h.GatewayIP {
			t.Errorf("unit %s address %s outside the LAN %s or the gateway's", u.Name, u.IP, h.LAN)
		}
		// A whole session fits in 10 minutes: every frame of the device
		// in it is in the home, once.
		frames, err := deviceFrames(u.Session, byName[u.Device].MAC)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frames {
			if _, ok, checked := ipv4Valid(f.data); checked && !ok {
				origBad++
			}
		}
		if u.Packets != len(frames) {
			t.Errorf("unit %s has %d packets, its capture %d frames of the device", u.Name, u.Packets, len(frames))
		}
	}
	if len(types) != 5 || types["WeMoSwitch"] != 4 || len(h.Units) != 8 {
		t.Fatalf("units per device %v, want 5 devices, 4 WeMoSwitch units, 8 units", types)
	}
	start, end := h.Start.UnixNano(), h.Start.Add(h.Duration).UnixNano()
	perUnit := make([]int, len(h.Units))
	var ipBad, l4Bad, l4Checked int
	for i, p := range h.Packets {
		if p.TsNs < start || p.TsNs >= end || i > 0 && p.TsNs < h.Packets[i-1].TsNs {
			t.Fatalf("packet %d at %d: outside the home's time or out of order", i, p.TsNs)
		}
		perUnit[p.Unit]++
		u := h.Units[p.Unit]
		if src, dst := schemas.MAC(p.Data[6:12]), schemas.MAC(p.Data[0:6]); src != u.MAC && dst != u.MAC {
			t.Fatalf("packet %d of unit %s is from %s to %s: neither is the unit's MAC", i, u.Name, src, dst)
		}
		ipOK, l4OK, checked := ipv4Valid(p.Data)
		if !ipOK {
			ipBad++
		}
		if checked {
			l4Checked++
			if !l4OK {
				l4Bad++
			}
		}
	}
	for i, u := range h.Units {
		if perUnit[i] != u.Packets {
			t.Errorf("unit %s: %d packets in the home, %d counted", u.Name, perUnit[i], u.Packets)
		}
	}
	if ipBad > 0 || l4Checked < 100 || l4Bad != origBad {
		t.Fatalf("checksums after moving the units: %d bad IP headers, %d of %d TCP/UDP checksums bad, %d bad in the captures", ipBad, l4Bad, l4Checked, origBad)
	}
	t.Logf("%d units, %d packets, %d TCP/UDP checksums checked, %d bad as in the captures", len(h.Units), len(h.Packets), l4Checked, l4Bad)

	// The same seed gives the same capture; another seed another home.
	var a, b, c bytes.Buffer
	if err := h.WritePcap(&a); err != nil {
		t.Fatal(err)
	}
	h2, err := Assemble(context.Background(), devs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h2.WritePcap(&b)
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("the same seed gave two different captures")
	}
	cfg.Seed = 4
	h3, err := Assemble(context.Background(), devs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h3.WritePcap(&c)
	if bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Fatal("seeds 3 and 4 gave the same capture")
	}

	// The capture reads back with as many packets, and its truth too.
	if n := len(capturetest.FramesOf(t, "home", a.Bytes())); n != len(h.Packets) {
		t.Fatalf("capture holds %d packets, the home %d", n, len(h.Packets))
	}
	rows := truthRows(t, h, nil)
	for i, r := range rows {
		if u := h.Units[h.Packets[i].Unit]; r.Unit != u.Name || r.Device != u.Device || r.MAC != u.MAC || r.LANIndex != int64(i) {
			t.Fatalf("truth row %d %+v, want unit %s", i, r, u.Name)
		}
	}
	if len(rows) != len(h.Packets) {
		t.Fatalf("truth has %d rows for %d packets", len(rows), len(h.Packets))
	}
}

func TestAssembleRefuses(t *testing.T) {
	devs := loadSentinel(t)
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		// WeMoSwitch2 has 3 captures, one of them in the later half.
		{Config{Units: map[string]int{"WeMoSwitch2": 2}, Duration: time.Minute, Sessions: LateSessions}, "every unit needs a capture of its own"},
		{Config{Units: map[string]int{"NoSuchCam": 1}, Duration: time.Minute}, `"NoSuchCam": no such device folder`},
		{Config{Devices: 2, Units: map[string]int{"Aria": 1, "Withings": 1, "Lightify": 1}, Duration: time.Minute}, "ask for at least 3"},
		{Config{Devices: 99, Duration: time.Minute}, "the folder holds 31"},
		{Config{Devices: 2}, "want a positive length"},
	} {
		if _, err := Assemble(context.Background(), devs, c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Assemble(%+v) = %v, want an error saying %q", c.cfg, err, c.want)
		}
	}
	if _, err := LoadDevices(t.TempDir()); err == nil || !strings.Contains(err.Error(), "_iotdevice-mac.txt") {
		t.Errorf("LoadDevices(empty) = %v, want an error naming the MAC file", err)
	}
	bad := t.TempDir()
	os.Mkdir(filepath.Join(bad, "Cam"), 0o755)
	os.WriteFile(filepath.Join(bad, "Cam", "_iotdevice-mac.txt"), []byte("not a mac"), 0o644)
	if _, err := LoadDevices(bad); err == nil || !strings.Contains(err.Error(), "Cam") {
		t.Errorf("LoadDevices(bad MAC) = %v, want an error naming the folder", err)
	}
}

// TestViewNAPT runs an assembled home through the emulated gateway: every
// WAN packet's truth names the unit of the LAN packet it came from.
func TestViewNAPT(t *testing.T) {
	devs := loadSentinel(t)
	h, err := Assemble(context.Background(), devs, Config{Devices: 6, Units: map[string]int{"TP-LinkPlugHS110": 2}, Duration: 5 * time.Minute, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []gateway.Mode{gateway.NAPT, gateway.VPN} {
		var wan bytes.Buffer
		lan, st, err := h.View(context.Background(), gateway.Config{Mode: mode, Cipher: gateway.AES256GCM, Seed: 1}, &wan)
		if err != nil {
			t.Fatal(err)
		}
		if st.Crossing < 100 || len(lan) != st.WANPackets {
			t.Fatalf("%s: %d packets crossed, %d truth rows for %d WAN packets", mode, st.Crossing, len(lan), st.WANPackets)
		}
		rows := truthRows(t, h, lan)
		named := 0
		for i, r := range rows {
			if r.LANIndex < 0 {
				continue
			}
			named++
			p := h.Packets[r.LANIndex]
			if u := h.Units[p.Unit]; r.Unit != u.Name {
				t.Fatalf("%s: WAN packet %d from LAN %d: truth says %s, the LAN packet is %s's", mode, i, r.LANIndex, r.Unit, u.Name)
			}
			// Only traffic to or from outside the home crosses.
			if src, dst, _, _, ok := ipv4Of(p.Data); ok && h.LAN.Contains(src) && h.LAN.Contains(dst) {
				t.Fatalf("%s: LAN-local packet %d %s->%s crossed", mode, r.LANIndex, src, dst)
			}
		}
		if named != st.Crossing {
			t.Fatalf("%s: %d WAN packets name a LAN packet, %d crossed", mode, named, st.Crossing)
		}
		t.Logf("%s: %d LAN packets, %d crossed, %d WAN packets", mode, len(h.Packets), st.Crossing, st.WANPackets)
	}
}

func TestReadTruthRefuses(t *testing.T) {
	for _, in := range []string{
		TruthHeader + "\n1,1,a#1,a,00:11:22:33:44:55\n",
		TruthHeader + "\n0,0,a#1,a\n",
		TruthHeader + "\n0,,a#1,a,00:11:22:33:44:55\n",
		TruthHeader + "\n0,x,a#1,a,00:11:22:33:44:55\n",
		TruthHeader + "\n0,0,a#1,a,zz\n",
	} {
		if _, err := ReadTruth(strings.NewReader(in), "t.csv"); err == nil || !strings.Contains(err.Error(), "t.csv line 2") {
			t.Errorf("ReadTruth(%q) = %v, want an error naming t.csv line 2", in, err)
		}
	}
}

func FuzzReadTruth(f *testing.F) {
	f.Add([]byte(TruthHeader + "\n0,0,a#1,a,00:11:22:33:44:55\n1,,,,\n"))
	f.Add([]byte("0,3,x,y,00:00:00:00:00:01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rows, err := ReadTruth(bytes.NewReader(b), "fuzz")
		if err != nil {
			return
		}
		for i, r := range rows {
			if r.Index != int64(i) || (r.LANIndex < 0) != (r.Unit == "") {
				t.Fatalf("row %d accepted inconsistent: %+v", i, r)
			}
		}
	})
}

// FuzzRewrite feeds arbitrary frames of the device through the rewriter,
// which reads captured headers: it must neither panic nor change a frame's
// length.
func FuzzRewrite(f *testing.F) {
	dev := schemas.MAC{0x74, 0xda, 0x38, 1, 2, 3}
	arp := append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x74, 0xda, 0x38, 1, 2, 3, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1},
		[]byte{0x74, 0xda, 0x38, 1, 2, 3, 192, 168, 0, 7, 0, 0, 0, 0, 0, 0, 192, 168, 0, 1}...)
	ip := []byte{0, 1, 2, 3, 4, 5, 0x74, 0xda, 0x38, 1, 2, 3, 0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0,
		192, 168, 0, 7, 8, 8, 8, 8, 0x30, 0x39, 0, 53, 0, 8, 0x12, 0x34}
	f.Add(arp, ip)
	f.Add(ip, []byte{0x81, 0x00})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		frames := []frame{{ts: 1, data: slices.Clone(a)}, {ts: 2, data: slices.Clone(b)}}
		h := &Home{LAN: netip.MustParsePrefix("192.168.1.0/24"), GatewayMAC: schemas.MAC{2}}
		al := newAllocator(h.LAN, nil)
		h.GatewayIP = al.next()
		al.macs[dev] = true
		rw := &rewriter{macs: map[schemas.MAC]schemas.MAC{dev: {0x74, 0xda, 0x38, 9, 9, 9}}, addrs: map[netip.Addr]netip.Addr{}, home: h, al: al}
		if _, err := newRewriter(dev, frames, h, newAllocator(h.LAN, rand.New(rand.NewPCG(1, 2)))); err != nil {
			t.Fatal(err)
		}
		for _, fr := range frames {
			n := len(fr.data)
			rw.rewrite(fr.data)
			if len(fr.data) != n {
				t.Fatalf("rewrite changed a frame's length from %d to %d", n, len(fr.data))
			}
		}
	})
}

// truthRows writes h's truth (of its WAN view when lan is not nil) and
// reads it back as a user of the file would.
func truthRows(t *testing.T, h *Home, lan []int64) []TruthRow {
	t.Helper()
	var tr bytes.Buffer
	if err := h.WriteTruth(&tr, lan); err != nil {
		t.Fatal(err)
	}
	rows, err := ReadTruth(&tr, "truth")
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// TestAssembleIDOffsets: with IDOffsets every unit's IPv4 IDs are those of
// the same home without, shifted by one offset of the unit's own (0 stays
// 0), and every IP header checksum still holds; nothing else moves.
func TestAssembleIDOffsets(t *testing.T) {
	plain, shifted := assembleTwice(t, Config{Devices: 4, Units: map[string]int{"Lightify": 3}, Duration: 100 * time.Second, Seed: 5}, func(c *Config) { c.IDOffsets = true })
	if len(plain.Packets) != len(shifted.Packets) {
		t.Fatalf("%d packets, %d with offsets", len(plain.Packets), len(shifted.Packets))
	}
	offsets := map[int]map[uint16]bool{}
	moved := 0
	for i, p := range plain.Packets {
		q := shifted.Packets[i]
		u := shifted.Units[q.Unit]
		if p.Unit != q.Unit || p.TsNs != q.TsNs || len(p.Data) != len(q.Data) {
			t.Fatalf("packet %d: unit, time or length moved", i)
		}
		off, et := etherType(p.Data)
		if ipOK, _, _ := ipv4Valid(q.Data); !ipOK {
			t.Fatalf("packet %d: IP header checksum wrong after the shift", i)
		}
		// Only the ID and the header checksum may differ, and only in the
		// unit's own IPv4 packets.
		for j := range p.Data {
			if p.Data[j] != q.Data[j] && !(et == 0x0800 && (j == off+4 || j == off+5 || j == off+10 || j == off+11)) {
				t.Fatalf("packet %d: byte %d moved", i, j)
			}
		}
		if et != 0x0800 {
			continue
		}
		a, b := binary.BigEndian.Uint16(p.Data[off+4:]), binary.BigEndian.Uint16(q.Data[off+4:])
		if schemas.MAC(q.Data[6:12]) != u.MAC || a == 0 {
			if a != b {
				t.Fatalf("packet %d: ID %d -> %d, not the unit's own or an ID of 0", i, a, b)
			}
			continue
		}
		if offsets[q.Unit] == nil {
			offsets[q.Unit] = map[uint16]bool{}
		}
		offsets[q.Unit][b-a] = true
		moved++
	}
	seen := map[uint16]bool{}
	for unit, offs := range offsets {
		if len(offs) != 1 {
			t.Errorf("unit %d shifted by %d offsets, want one", unit, len(offs))
		}
		for o := range offs {
			if seen[o] {
				t.Errorf("two units shifted by %d", o)
			}
			seen[o] = true
		}
	}
	if moved < 100 || len(offsets) < 4 {
		t.Errorf("%d IDs of %d units shifted: want the units' own packets", moved, len(offsets))
	}
}

// TestAssembleRelay: behind a MAC-NAT repeater, no frame carries a unit's
// MAC any more, the repeater's stands in each place it stood (the Ethernet
// header, ARP's hardware addresses; neighbour discovery's options in
// TestAssembleLinkLocal), the units' EAPOL (their handshakes
// with the repeater) is left out, and nothing else moves.
func TestAssembleRelay(t *testing.T) {
	plain, relayed := assembleTwice(t, Config{Devices: 4, Units: map[string]int{"Lightify": 2}, Duration: 100 * time.Second, Seed: 5}, func(c *Config) { c.Relay = true })
	r := relayed.Relay
	if r.IsZero() || !plain.Relay.IsZero() || len(plain.Packets) != len(relayed.Packets)+relayed.LeftEAPOL || relayed.FrameMAC(0) != r || plain.FrameMAC(0) != plain.Units[0].MAC {
		t.Fatalf("repeater %v (plain %v), %d and %d packets, %d EAPOL left out", r, plain.Relay, len(plain.Packets), len(relayed.Packets), relayed.LeftEAPOL)
	}
	units := map[schemas.MAC]bool{}
	for _, u := range relayed.Units {
		units[u.MAC] = true
	}
	swapped, eapol, perUnit := 0, 0, make([]int, len(relayed.Units))
	i := 0
	for _, p := range plain.Packets {
		if _, et := etherType(p.Data); et == etherTypeEAPOL && (units[schemas.MAC(p.Data[0:6])] || units[schemas.MAC(p.Data[6:12])]) {
			eapol++
			continue
		}
		q := relayed.Packets[i]
		i++
		if q.Unit >= 0 {
			perUnit[q.Unit]++
		}
		if p.Unit != q.Unit || p.TsNs != q.TsNs || len(p.Data) != len(q.Data) {
			t.Fatalf("packet %d: unit, time or length moved", i)
		}
		for j := 0; j < len(p.Data); j++ {
			if p.Data[j] == q.Data[j] {
				continue
			}
			// A difference is a whole MAC: the unit's in plain, the
			// repeater's behind it.
			at := slices.IndexFunc([]int{0, 6, 22, 32}, func(a int) bool { return j >= a && j < a+6 })
			start := []int{0, 6, 22, 32}[max(at, 0)]
			if at < 0 || !units[schemas.MAC(p.Data[start:start+6])] || schemas.MAC(q.Data[start:start+6]) != r {
				t.Fatalf("packet %d: byte %d moved, not a unit's MAC turned the repeater's", i, j)
			}
			swapped++
			j = start + 5
		}
		for _, at := range []int{0, 6} {
			if units[schemas.MAC(q.Data[at:at+6])] {
				t.Fatalf("packet %d still carries a unit's MAC", i)
			}
		}
	}
	if eapol == 0 || eapol != relayed.LeftEAPOL {
		t.Errorf("%d EAPOL frames of the units in the plain home, %d left out behind the repeater; want them all, and some", eapol, relayed.LeftEAPOL)
	}
	for u, n := range perUnit {
		if n != relayed.Units[u].Packets {
			t.Errorf("unit %s: %d packets in the home, %d counted", relayed.Units[u].Name, n, relayed.Units[u].Packets)
		}
	}
	if swapped < len(relayed.Packets)/2 {
		t.Errorf("%d MACs swapped in %d packets, want the units' frames behind the repeater", swapped, len(relayed.Packets))
	}
}

// TestAssembleDHCPAddresses: the addresses a DHCP message carries move
// into the home with the headers' (a request asks for the unit's address
// in the home, not the one its capture held), and every checksum holds.
func TestAssembleDHCPAddresses(t *testing.T) {
	devs := loadSentinel(t)
	h, err := Assemble(context.Background(), devs, Config{Devices: 6, Units: map[string]int{"D-LinkSiren": 2}, Duration: 100 * time.Second, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	requests := 0
	for i, p := range h.Packets {
		off, et := etherType(p.Data)
		if et != 0x0800 || len(p.Data) < off+28+240 || p.Data[off+9] != 17 {
			continue
		}
		ip := p.Data[off:]
		l4 := ip[int(ip[0]&0x0f)*4:]
		if binary.BigEndian.Uint16(l4[0:2]) != 68 || binary.BigEndian.Uint16(l4[2:4]) != 67 {
			continue
		}
		if _, l4OK, checked := ipv4Valid(p.Data); checked && !l4OK {
			t.Fatalf("packet %d: a DHCP request's UDP checksum is wrong", i)
		}
		opts := l4[8+240:]
		for j := 0; j+1 < len(opts) && opts[j] != 255; {
			if opts[j] == 0 {
				j++
				continue
			}
			if opts[j] == 50 && opts[j+1] == 4 {
				requests++
				a := netip.AddrFrom4([4]byte(opts[j+2 : j+6]))
				if a != h.Units[p.Unit].IP {
					t.Errorf("packet %d: %s asks for %s, its address in the home is %s", i, h.Units[p.Unit].Name, a, h.Units[p.Unit].IP)
				}
			}
			j += 2 + int(opts[j+1])
		}
	}
	if requests == 0 {
		t.Fatal("no DHCP request asked for an address")
	}
}

// TestAssembleNoDHCP: a home whose units joined before the tap started is
// the same home without its DHCP frames: every other frame kept, in
// order, byte for byte, and no DHCP message left.
func TestAssembleNoDHCP(t *testing.T) {
	plain, joined := assembleTwice(t, Config{Devices: 4, Units: map[string]int{"iKettle2": 2}, Duration: 100 * time.Second, Seed: 7}, func(c *Config) { c.NoDHCP = true })
	var kept []Packet
	for _, p := range plain.Packets {
		if !isDHCP(p.Data) {
			kept = append(kept, p)
		}
	}
	if joined.LeftDHCP == 0 || !joined.NoDHCP || len(plain.Packets)-len(kept) != joined.LeftDHCP || len(kept) != len(joined.Packets) {
		t.Fatalf("%d packets, %d DHCP left out; the plain home has %d, %d of them DHCP", len(joined.Packets), joined.LeftDHCP, len(plain.Packets), len(plain.Packets)-len(kept))
	}
	for i, p := range joined.Packets {
		if q := kept[i]; p.TsNs != q.TsNs || p.Unit != q.Unit || !bytes.Equal(p.Data, q.Data) {
			t.Fatalf("packet %d differs from the plain home's", i)
		}
	}
	// What isDHCP takes: UDP from or to a DHCP port, over IPv4 (a first
	// fragment too, not a later one) or IPv6, through an 802.1Q tag.
	udp := func(v6 bool, src, dst uint16, frag uint16, vlan bool) []byte {
		var b []byte
		if vlan {
			b = append(make([]byte, 12), 0x81, 0x00, 0, 1)
		} else {
			b = make([]byte, 12)
		}
		if v6 {
			b = append(b, 0x86, 0xdd)
			ip := make([]byte, 40)
			ip[0], ip[6] = 0x60, 17
			b = append(b, ip...)
		} else {
			b = append(b, 0x08, 0x00)
			ip := make([]byte, 20)
			ip[0], ip[9] = 0x45, 17
			binary.BigEndian.PutUint16(ip[6:8], frag)
			b = append(b, ip...)
		}
		return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, src), dst)
	}
	for _, c := range []struct {
		what  string
		frame []byte
		want  bool
	}{
		{"a DHCPv4 request", udp(false, 68, 67, 0, false), true},
		{"a DHCPv4 answer, tagged", udp(false, 67, 68, 0, true), true},
		{"a DHCPv6 solicit", udp(true, 546, 547, 0, false), true},
		{"DNS", udp(false, 40000, 53, 0, false), false},
		{"a later fragment", udp(false, 68, 67, 0x0010, false), false},
		{"a first fragment", udp(false, 68, 67, 0x2000, false), true},
		{"a truncated frame", udp(false, 68, 67, 0, false)[:20], false},
		{"a header length past the frame", func() []byte { b := udp(false, 68, 67, 0, false); b[14] = 0x4f; return b }(), false},
	} {
		if got := isDHCP(c.frame); got != c.want {
			t.Errorf("%s: isDHCP %v, want %v", c.what, got, c.want)
		}
	}
}

// FuzzIsDHCP reads any bytes as a frame: no panic, and a frame taken for
// DHCP holds a UDP header past its Ethernet and IP headers.
func FuzzIsDHCP(f *testing.F) {
	f.Add([]byte{})
	f.Add(append(make([]byte, 12), 0x08, 0x00, 0x4f, 0, 0, 0, 0, 0, 0, 0, 0, 17))
	f.Add(append(append(make([]byte, 12), 0x08, 0x00, 0x45, 0, 0, 0, 0, 0, 0, 0, 0, 17), append(make([]byte, 10), 0, 68, 0, 67)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		if isDHCP(b) && len(b) < 14+20+4 {
			t.Fatalf("%d bytes taken for a DHCP message: too short for one", len(b))
		}
	})
}

// TestAssembleLinkLocal: a unit's IPv6 link-local address is the EUI-64
// of the MAC the home gives it, not of its capture's device, so two units
// made from captures of one physical device have two; neighbour
// discovery's link-layer options name the MAC the frame comes from (the
// unit's, or behind a repeater the repeater's); and every ICMPv6 and UDP
// checksum over the moved addresses and MACs holds.
func TestAssembleLinkLocal(t *testing.T) {
	devs := loadSentinel(t)
	// Behind a MAC-NAT repeater the options name the repeater, and the
	// addresses keep the unit's own EUI-64.
	for _, relay := range []bool{false, true} {
		h, err := Assemble(context.Background(), devs, Config{Devices: 4, Units: map[string]int{"D-LinkSiren": 2}, Duration: 100 * time.Second, Seed: 9, Relay: relay})
		if err != nil {
			t.Fatal(err)
		}
		// A unit sends from its own MAC's EUI-64, and may send from others
		// (IoT Sentinel's D-LinkHomeHub also sends from one of a random local
		// MAC), but never from another unit's or the gateway's.
		macs := map[schemas.MAC]bool{h.GatewayMAC: true}
		for _, u := range h.Units {
			macs[u.MAC] = true
		}
		if relay {
			macs[h.Relay] = true
		}
		linkLocal := map[int]map[netip.Addr]bool{}
		own := map[int]bool{}
		checked, options := 0, 0
		for i, p := range h.Packets {
			pkt := gopacket.NewPacket(p.Data, layers.LayerTypeEthernet, gopacket.Default)
			ip6, _ := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			if ip6 == nil {
				continue
			}
			src, _ := netip.AddrFromSlice(ip6.SrcIP)
			eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			if from := schemas.MAC(eth.SrcMAC); src.IsLinkLocalUnicast() && p.Unit >= 0 && from == h.FrameMAC(p.Unit) {
				if s := src.As16(); s[11] == 0xff && s[12] == 0xfe {
					switch m := (schemas.MAC{s[8] ^ 2, s[9], s[10], s[13], s[14], s[15]}); {
					case m == h.Units[p.Unit].MAC:
						own[p.Unit] = true
					case macs[m]:
						t.Fatalf("packet %d: unit %s sends from %s, which names %s", i, h.Units[p.Unit].Name, src, m)
					}
				}
				if linkLocal[p.Unit] == nil {
					linkLocal[p.Unit] = map[netip.Addr]bool{}
				}
				linkLocal[p.Unit][src] = true
			}
			for _, l := range pkt.Layers() {
				var upper []byte
				var proto layers.IPProtocol
				switch l := l.(type) {
				case *layers.ICMPv6:
					upper, proto = append(slices.Clone(l.Contents), l.Payload...), layers.IPProtocolICMPv6
				case *layers.UDP:
					upper, proto = append(slices.Clone(l.Contents), l.Payload...), layers.IPProtocolUDP
				case *layers.ICMPv6RouterSolicitation:
					options += ndOptions(t, i, l.Options, eth, macs)
				case *layers.ICMPv6NeighborSolicitation:
					options += ndOptions(t, i, l.Options, eth, macs)
				case *layers.ICMPv6NeighborAdvertisement:
					options += ndOptions(t, i, l.Options, eth, macs)
				}
				if upper == nil {
					continue
				}
				pseudo := append(append(slices.Clone([]byte(ip6.SrcIP)), ip6.DstIP...), 0, 0, byte(len(upper)>>8), byte(len(upper)), 0, 0, 0, byte(proto))
				if sum := gateway.Checksum(upper, pseudoSum(pseudo)); sum != 0 && sum != 0xffff {
					t.Fatalf("packet %d: the %s checksum does not hold over the moved addresses (%#04x)", i, proto, sum)
				}
				checked++
			}
		}
		if checked == 0 || options == 0 {
			t.Fatalf("%d checksums and %d neighbour discovery options checked; want some of each", checked, options)
		}
		sirens := 0
		for u, addrs := range linkLocal {
			if !own[u] {
				t.Errorf("unit %s sends from no link-local address of its own MAC: %v", h.Units[u].Name, addrs)
			}
			for v := range linkLocal {
				for a := range addrs {
					if v != u && linkLocal[v][a] {
						t.Errorf("units %s and %s both send from %s", h.Units[u].Name, h.Units[v].Name, a)
					}
				}
			}
			if h.Units[u].Device == "D-LinkSiren" {
				sirens++
			}
		}
		if sirens != 2 {
			t.Fatalf("link-local addresses of %d D-LinkSiren units; want both (made from captures of one siren)", sirens)
		}
		t.Logf("%d checksums and %d neighbour discovery options checked; link-local addresses %v", checked, options, linkLocal)
	}
}

// ndOptions checks the link-layer address options of packet i's
// neighbour discovery message: a unit's or the gateway's name the MAC
// it sent from. It returns how many it checked.
func ndOptions(t *testing.T, i int, opts layers.ICMPv6Options, eth *layers.Ethernet, macs map[schemas.MAC]bool) int {
	t.Helper()
	n := 0
	for _, o := range opts {
		if o.Type != layers.ICMPv6OptSourceAddress && o.Type != layers.ICMPv6OptTargetAddress || len(o.Data) != 6 {
			continue
		}
		if from := schemas.MAC(eth.SrcMAC); macs[from] && schemas.MAC(o.Data) != from {
			t.Errorf("packet %d: sent by %s, its neighbour discovery option names %x", i, from, o.Data)
		}
		n++
	}
	return n
}

// pseudoSum is the ones' complement partial sum of b, 16 bits at a time.
func pseudoSum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	return s
}

// FuzzRewrite6 moves any bytes as an IPv6 packet of a capture into a
// home: no panic, and where the upper layer follows the fixed header and
// holds its checksum field, the ones' complement sum over the pseudo-
// header and the upper layer stays what it was (a checksum right before
// is right after; the adjustment is exact).
func FuzzRewrite6(f *testing.F) {
	// A router solicitation from an EUI-64 link-local address, with its
	// source link-layer address option.
	rs := append([]byte{0x60, 0, 0, 0, 0, 16, 58, 255, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x92, 0x8d, 0x78, 0xff, 0xfe, 0xdd, 0x0d, 0x60,
		0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}, 133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0x90, 0x8d, 0x78, 0xdd, 0x0d, 0x60)
	f.Add(rs)
	// The same behind a hop-by-hop header, and cut short.
	f.Add(append(append(slices.Clone(rs[:6]), 0, 1), append(append(slices.Clone(rs[8:40]), 58, 0, 5, 2, 0, 0, 1, 0), rs[40:]...)...))
	f.Add(rs[:44])
	f.Fuzz(func(t *testing.T, ip []byte) {
		rw := &rewriter{macs: map[schemas.MAC]schemas.MAC{}, al: newAllocator(netip.MustParsePrefix("192.168.1.0/24"), rand.New(rand.NewPCG(1, 2)))}
		before, ok := upperSum(ip)
		rw.rewrite6(ip)
		if after, _ := upperSum(ip); ok && after != before {
			t.Fatalf("the checksum sum moved from %#04x to %#04x", before, after)
		}
	})
}

// upperSum is the folded ones' complement sum (0xffff read as 0) over an
// IPv6 packet's pseudo-header and upper layer, where that follows the
// fixed header (ICMPv6, UDP or TCP) and holds its checksum field.
func upperSum(ip []byte) (uint16, bool) {
	if len(ip) < 40 || ip[0]>>4 != 6 {
		return 0, false
	}
	at := map[byte]int{58: 2, 17: 6, 6: 16}
	if a, ok := at[ip[6]]; !ok || len(ip) < 40+a+2 {
		return 0, false
	}
	up := slices.Clone(ip[40:])
	if len(up)%2 == 1 {
		up = append(up, 0)
	}
	n := len(ip) - 40
	s := pseudoSum(append(slices.Clone(ip[8:40]), byte(n>>24), byte(n>>16), byte(n>>8), byte(n), 0, 0, 0, ip[6])) + pseudoSum(up)
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	if s == 0xffff {
		s = 0
	}
	return uint16(s), true
}

// TestServersOfRealCaptures: on IoT Sentinel's captures, the servers of
// each device type's earlier half (by first packet) join D-LinkSensor with
// its siblings, whose traffic its later firmware copies, and no family
// spans two vendors.
func TestServersOfRealCaptures(t *testing.T) {
	devs := loadSentinel(t)
	for i := range devs {
		devs[i].Files, _ = campaign.SplitByTime(devs[i].Files, func(f string) (int64, bool) { return capture.FirstPacketTime(f) })
	}
	servers, err := Servers(context.Background(), devs)
	if err != nil {
		t.Fatal(err)
	}
	fams := evaluate.ServerFamilies(servers)
	t.Logf("server families: %s", evaluate.FamilyList(fams))
	var dlink []string
	for _, f := range fams {
		if slices.Contains(f, "D-LinkSensor") {
			dlink = f
		}
		// A vendor's devices share its name's first letters.
		if evaluate.FamilyName(f) == strings.Join(f, "/") {
			t.Errorf("family %v spans vendors", f)
		}
	}
	for _, d := range []string{"D-LinkSensor", "D-LinkSiren", "D-LinkWaterSensor"} {
		if !slices.Contains(dlink, d) {
			t.Errorf("D-LinkSensor's family %v lacks %s", dlink, d)
		}
	}
	// The kettles reach no server: nothing beyond the LAN joins them.
	for _, k := range servers["iKettle2"] {
		if len(k) > 0 {
			t.Errorf("an iKettle2 capture reaches servers %v", k)
		}
	}
}

// TestVendorServer: which servers a device reaches tell of its vendor.
func TestVendorServer(t *testing.T) {
	for _, c := range []struct {
		addr string
		port int32
		want bool
	}{
		{"52.28.38.154", 443, true},
		{"2a00:1450:4001:82b::200e", 443, true},
		{"::ffff:52.28.38.154", 80, true}, // a v4-mapped address is the v4 one
		{"4.2.2.2", 53, false},            // a public resolver
		{"129.132.2.21", 123, false},      // a university's time server
		{"1.1.1.1", 853, false},
		{"10.10.10.72", 58813, false}, // the phone on the LAN
		{"192.168.0.1", 80, false},
		{"100.64.12.1", 443, false}, // the ISP's carrier-grade NAT
		{"fd00::1", 443, false},
		{"fe80::1", 443, false},
		{"239.255.255.250", 1900, false},
		{"255.255.255.255", 67, false},
	} {
		if got := vendorServer(netip.MustParseAddr(c.addr), c.port); got != c.want {
			t.Errorf("vendorServer(%s, %d) = %v, want %v", c.addr, c.port, got, c.want)
		}
	}
}
