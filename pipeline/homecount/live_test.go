package homecount

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/heartbeat"
	"github.com/homemole/homemole/schemas"
)

// handModel has two units: A sends UDP/69 of length 55, B TCP/443 of 60,
// and both send the same DNS query, which tells neither.
func handModel(t testing.TB) *HostModel {
	t.Helper()
	data := `{"version":3,
	 "units":[{"name":"A","members":["A"],"signature":["17/69/55"]},{"name":"B","members":["B"],"signature":["6/443/60"]}],
	 "captures":[{"unit":0,"keys":["17/69/55","17/53/60"]},{"unit":1,"keys":["6/443/60","17/53/60"]}]}`
	m, err := ReadHostModel(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mac(i int) schemas.MAC { return schemas.MAC{0x02, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)} }

// pkt is a packet whose IP payload is length bytes, as the decoder reads it.
func pkt(ts time.Duration, host int, transport uint8, port int32, length uint16) schemas.Packet {
	hdr := map[uint8]uint16{6: 20, 17: 8}[transport]
	return schemas.Packet{TsNs: int64(ts), SrcMAC: mac(host), Transport: transport, DPort: port, IPLen: 20 + length,
		PayloadLen: uint32(length - hdr), SrcIP: netip.AddrFrom4([4]byte{192, 168, 1, byte(host)})}
}

func feed(t testing.TB, h *LiveHome, pkts []schemas.Packet) []schemas.SeenWindow {
	t.Helper()
	var out []schemas.SeenWindow
	for i := range pkts {
		out = append(out, h.Add(&pkts[i])...)
	}
	return out
}

// TestLiveHomeLate: a host whose first packets tell nothing (a DNS query
// both units send) is counted in that window when the window is judged
// after its signature key came, and not when it is judged before; a
// window judged on time waits for a new host (Settle).
func TestLiveHomeLate(t *testing.T) {
	pkts := []schemas.Packet{
		pkt(1*time.Second, 1, 17, 53, 60),
		pkt(25*time.Second, 1, 17, 69, 55),
		pkt(26*time.Second, 2, 6, 443, 60),
		pkt(90*time.Second, 1, 17, 53, 60),
	}
	for _, c := range []struct {
		late, settle time.Duration
		want         int // A's count in the window [0 s, 20 s)
	}{{20 * time.Second, 0, 1}, {0, 0, 0}, {0, time.Minute, 1}} {
		cfg := DefaultLiveConfig()
		cfg.Late, cfg.Settle = c.late, c.settle
		h, err := NewLiveHome(handModel(t), cfg)
		if err != nil {
			t.Fatal(err)
		}
		ws := append(feed(t, h, pkts), h.Flush()...)
		var ends []time.Duration
		for _, w := range ws {
			ends = append(ends, time.Duration(w.EndNs))
			if w.Method != MethodHosts || w.EndNs-w.StartNs != int64(cfg.Window) {
				t.Errorf("window %+v: want method hosts and %s long", w, cfg.Window)
			}
		}
		// Windows holding a packet only: the silence from 40 s to 90 s is
		// stepped over.
		want := []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second, 40 * time.Second, 100 * time.Second, 110 * time.Second}
		if !slices.Equal(ends, want) {
			t.Fatalf("late %s: windows end at %v, want %v", c.late, ends, want)
		}
		if got := countOf(ws[1], "A"); got != c.want || ws[1].Hosts != 1 || ws[1].Unknown != (c.want == 0) {
			t.Errorf("late %s: window [0 s, 20 s): A counted %d of %d hosts, unknown %v; want %d of 1, unknown when not counted", c.late, got, ws[1].Hosts, ws[1].Unknown, c.want)
		}
		if a, b := countOf(ws[3], "A"), countOf(ws[3], "B"); a != 1 || b != 1 || ws[3].Hosts != 2 || ws[3].Packets != 2 {
			t.Errorf("late %s: window [20 s, 40 s): A %d, B %d, %d hosts, %d packets; want 1, 1, 2, 2", c.late, a, b, ws[3].Hosts, ws[3].Packets)
		}
	}
}

// TestLiveHomeSettle: a window waits for a new host it cannot name
// (Settle) until a minute after that host's first packet, and no longer;
// a home whose hosts are all known is judged Late after each window, as
// without Settle.
func TestLiveHomeSettle(t *testing.T) {
	judgedAt := func(hosts ...int) time.Duration {
		t.Helper()
		h, err := NewLiveHome(handModel(t), DefaultLiveConfig())
		if err != nil {
			t.Fatal(err)
		}
		for ts := time.Second; ts < 100*time.Second; ts += 5 * time.Second {
			for _, host := range hosts {
				p := pkt(ts, host, 17, 69, 55) // A's signature key
				if host == 1 {
					p = pkt(ts, host, 17, 53, 60) // a DNS query, of no type
				}
				for _, w := range h.Add(&p) {
					if w.EndNs == int64(20*time.Second) {
						return ts
					}
				}
			}
		}
		t.Fatal("the window [0 s, 20 s) was never judged")
		return 0
	}
	if at := judgedAt(2); at != 41*time.Second {
		t.Errorf("a home of one known host: window [0 s, 20 s) judged at %s, want 41 s (the first packet 20 s after it ended)", at)
	}
	if at := judgedAt(1, 2); at != 61*time.Second {
		t.Errorf("a home with a host of no type since 1 s: window [0 s, 20 s) judged at %s, want 61 s (a minute after that host's first packet)", at)
	}
}

// TestLiveHomeInfrastructure: the gateway, named or found by what it
// forwards, is never a unit, nor a host of the window.
func TestLiveHomeInfrastructure(t *testing.T) {
	fwd := pkt(2*time.Second, 9, 17, 69, 55) // a signature key, but from the Internet
	fwd.SrcIP = netip.MustParseAddr("93.184.216.34")
	v6 := func(ts time.Duration, prefix string) schemas.Packet {
		p := pkt(ts, 8, 17, 69, 55)
		p.SrcIP = netip.MustParseAddr(prefix + "::1")
		return p
	}
	pkts := []schemas.Packet{pkt(time.Second, 1, 17, 69, 55), fwd, v6(3*time.Second, "2001:db8:1:1"), v6(4*time.Second, "2001:db8:1:2"),
		v6(5*time.Second, "2001:db8:1:3"), pkt(6*time.Second, 7, 17, 69, 55), pkt(60*time.Second, 1, 17, 69, 55)}
	cfg := DefaultLiveConfig()
	cfg.Gateway = mac(7)
	h, err := NewLiveHome(handModel(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ws := feed(t, h, pkts)
	if len(ws) == 0 {
		t.Fatal("no window judged")
	}
	if w := ws[0]; countOf(w, "A") != 1 || w.Hosts != 1 {
		t.Errorf("window %+v: want A counted once, one host: the forwarding host (public IPv4), the one from three IPv6 /64s and the named gateway are none", w)
	}
	// Two /64s are a host with two prefixes, not a router.
	h2, _ := NewLiveHome(handModel(t), DefaultLiveConfig())
	ws = feed(t, h2, []schemas.Packet{v6(3*time.Second, "2001:db8:1:1"), v6(4*time.Second, "2001:db8:1:2"), pkt(60*time.Second, 1, 17, 53, 60)})
	if len(ws) == 0 || countOf(ws[0], "A") != 1 {
		t.Errorf("a host of two IPv6 /64s: windows %+v, want it counted as A", ws)
	}
}

// from is p sent from src.
func from(p schemas.Packet, src string) schemas.Packet {
	p.SrcIP = netip.MustParseAddr(src)
	return p
}

// TestLiveHomePublicLAN: on a LAN of public addresses (an ISP that routes
// a public /24 to the home, no NAT) a public source is no sign of
// forwarding: a unit at 85.10.20.11 is counted as at 192.168.1.11. Once
// the hop limit shows which packets left their host's stack, the gateway
// is found by the one server it forwards from, and the unit still counted.
func TestLiveHomePublicLAN(t *testing.T) {
	count := func(pkts []schemas.Packet) (a, hosts int) {
		t.Helper()
		h, err := NewLiveHome(handModel(t), DefaultLiveConfig())
		if err != nil {
			t.Fatal(err)
		}
		ws := append(feed(t, h, pkts), h.Flush()...)
		if len(ws) == 0 {
			t.Fatal("no window judged")
		}
		for _, w := range ws {
			a, hosts = max(a, countOf(w, "A")), max(hosts, w.Hosts)
		}
		return a, hosts
	}
	for _, src := range []string{"192.168.1.11", "85.10.20.11"} {
		var pkts []schemas.Packet
		for ts := time.Second; ts < 80*time.Second; ts += 10 * time.Second {
			pkts = append(pkts, from(pkt(ts, 1, 17, 69, 55), src)) // A's signature key, no TTL seen
		}
		if a, hosts := count(pkts); a != 1 || hosts != 1 {
			t.Errorf("a unit at %s: A counted %d of %d hosts at most, want 1 of 1", src, a, hosts)
		}
	}
	var pkts []schemas.Packet
	for ts := time.Second; ts < 80*time.Second; ts += 10 * time.Second {
		dev := from(pkt(ts, 1, 17, 69, 55), "85.10.20.11")
		dev.TTL = 64
		gw := from(pkt(ts+time.Millisecond, 9, 6, 40000, 60), "93.184.216.34") // the server's answer, forwarded
		gw.TTL = 52
		pkts = append(pkts, dev, gw)
	}
	if a, hosts := count(pkts); a != 1 || hosts != 1 {
		t.Errorf("a public LAN with hop limits: A counted %d of %d hosts at most, want 1 of 1 (the gateway none)", a, hosts)
	}
	// A device left at its factory address (192.168.1.50) makes the LAN's
	// /24s known, and the unit's public address outside them until its
	// ARP shows it is the LAN's; the windows are judged with what that
	// showed.
	pkts = nil
	for ts := time.Second; ts < 80*time.Second; ts += 10 * time.Second {
		pkts = append(pkts, from(pkt(ts, 5, 17, 53, 60), "192.168.1.50"), from(pkt(ts+time.Millisecond, 1, 17, 69, 55), "85.10.20.11"))
	}
	arp := pkt(3*time.Second, 1, 0, schemas.NoPort, 28)
	arp.SrcIP, arp.ARPSender = netip.Addr{}, [4]byte{85, 10, 20, 11}
	pkts = slices.Insert(pkts, 2, arp)
	if a, hosts := count(pkts); a != 1 || hosts != 2 {
		t.Errorf("a public LAN with a host at a private address: A counted %d of %d hosts at most, want 1 of 2", a, hosts)
	}
}

// TestLiveHomePrefixRenumbering: an ISP that renumbers the home's IPv6
// prefix (daily, on reconnect) gives a device a new /64 each day; three
// /64s over three days are not a router's, which forwards from many at
// once, so the device is counted every day.
func TestLiveHomePrefixRenumbering(t *testing.T) {
	h, err := NewLiveHome(handModel(t), DefaultLiveConfig())
	if err != nil {
		t.Fatal(err)
	}
	var pkts []schemas.Packet
	for day := range 3 {
		start := time.Duration(day) * 24 * time.Hour
		for ts := start + time.Second; ts < start+80*time.Second; ts += 10 * time.Second {
			pkts = append(pkts, from(pkt(ts, 1, 17, 69, 55), fmt.Sprintf("2001:db8:%x::11", 0x100+day)))
		}
	}
	perDay := map[int]int{}
	for _, w := range append(feed(t, h, pkts), h.Flush()...) {
		d := int(time.Duration(w.EndNs) / (24 * time.Hour))
		perDay[d] = max(perDay[d], countOf(w, "A"))
	}
	for day := range 3 {
		if perDay[day] != 1 {
			t.Errorf("day %d (the device's /64 number %d): A counted %d, want 1", day, day+1, perDay[day])
		}
	}
}

// TestLiveHomeNAT64Gateway: in an IPv6-only home with NAT64 the gateway
// forwards every IPv4 server's packets from 64:ff9b::/96, one /64, which no
// host of a LAN holds: it is found as when it forwards from native IPv6
// servers of many /64s, and the one host counted is the unit.
func TestLiveHomeNAT64Gateway(t *testing.T) {
	for _, c := range []struct {
		name   string
		server func(i int) string
	}{
		{"native", func(i int) string { return fmt.Sprintf("2600:1f18:%x::10", i+1) }},
		{"nat64", func(i int) string { return fmt.Sprintf("64:ff9b::34.%d.2.3", i+1) }},
	} {
		h, err := NewLiveHome(handModel(t), DefaultLiveConfig())
		if err != nil {
			t.Fatal(err)
		}
		var pkts []schemas.Packet
		for i, ts := 0, time.Second; ts < 80*time.Second; i, ts = i+1, ts+5*time.Second {
			pkts = append(pkts, from(pkt(ts, 1, 17, 69, 55), "2001:db8:1::11"),
				from(pkt(ts+time.Millisecond, 9, 6, 40000, 60), c.server(i%8))) // a server's answer, forwarded
		}
		ws := append(feed(t, h, pkts), h.Flush()...)
		if len(ws) == 0 {
			t.Fatal("no window judged")
		}
		for _, w := range ws {
			if w.Hosts != 1 || w.Unknown || countOf(w, "A") != 1 {
				t.Errorf("%s servers: window %+v: want one host, A; the gateway none", c.name, w)
				break
			}
		}
	}
}

// TestLiveHomeForwardingHolds: a host that forwarded (from three /64s of
// servers) is the home's infrastructure for an hour after the last packet
// that showed it, not for good: sending its unit's keys from its own
// address it is not counted half an hour later, and is two hours later.
// A table of the counter before, which kept "infra" for good, restores as
// a host that showed it at its last packet.
func TestLiveHomeForwardingHolds(t *testing.T) {
	later := func(h *LiveHome) (at30m, at2h int) {
		t.Helper()
		ws := append(feed(t, h, []schemas.Packet{pkt(30*time.Minute, 9, 17, 69, 55), pkt(2*time.Hour, 9, 17, 69, 55)}), h.Flush()...)
		for _, w := range ws {
			switch {
			case w.EndNs > int64(30*time.Minute) && w.StartNs <= int64(30*time.Minute):
				at30m = max(at30m, countOf(w, "A"))
			case w.EndNs > int64(2*time.Hour) && w.StartNs <= int64(2*time.Hour):
				at2h = max(at2h, countOf(w, "A"))
			}
		}
		return at30m, at2h
	}
	h, _ := NewLiveHome(handModel(t), DefaultLiveConfig())
	for i := range 3 {
		p := from(pkt(time.Duration(i+1)*time.Second, 9, 6, 40000, 60), fmt.Sprintf("2600:1f18:%x::10", i+1))
		feed(t, h, []schemas.Packet{p})
	}
	if a, b := later(h); a != 0 || b != 1 {
		t.Errorf("a host that forwarded at 3 s: A counted %d at 30 min and %d at 2 h, want 0 and 1", a, b)
	}
	old := `{"version":2,"seq":1,"last_ns":1000000000,"hosts":[{"mac":"02:00:00:00:00:09","infra":true,"prefixes":["2001:db8:1::/64","2001:db8:2::/64","2001:db8:3::/64"],"last_ns":1000000000}]}`
	r, _, err := RestoreLiveHome(handModel(t), DefaultLiveConfig(), []byte(old))
	if err != nil {
		t.Fatal(err)
	}
	if a, b := later(r); a != 0 || b != 1 {
		t.Errorf("a host an older table marked infra at 1 s: A counted %d at 30 min and %d at 2 h, want 0 and 1", a, b)
	}
}

// TestLiveHomeBounded: a home that sends from ever new MACs and sizes keeps
// at most MaxHosts hosts and MaxKeys keys, and its checkpoint stays under
// NATS's 1 MiB message; a host of more keys than any IoT capture is none.
func TestLiveHomeBounded(t *testing.T) {
	cfg := DefaultLiveConfig()
	h, err := NewLiveHome(handModel(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var pkts []schemas.Packet
	for i := range 20000 {
		for k := range 8 {
			pkts = append(pkts, pkt(time.Duration(i)*time.Millisecond, 100+i, 17, int32(1000+k), uint16(i)))
		}
	}
	// One host sends its signature key among thousands of sizes.
	pkts = append(pkts, pkt(21*time.Second, 1, 17, 69, 55))
	for k := range cfg.MaxHostKeys {
		pkts = append(pkts, pkt(21*time.Second, 1, 6, 443, uint16(100+k)))
	}
	feed(t, h, pkts)
	if h.Hosts() > cfg.MaxHosts || h.keys > cfg.MaxKeys {
		t.Errorf("%d hosts with %d keys, want at most %d and %d", h.Hosts(), h.keys, cfg.MaxHosts, cfg.MaxKeys)
	}
	st, err := h.State(1)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) >= 1<<20 {
		t.Errorf("checkpoint of %d bytes, want under 1 MiB", len(st))
	}
	ws := h.Flush()
	if len(ws) == 0 {
		t.Fatal("no window judged")
	}
	for _, w := range ws {
		if countOf(w, "A") != 0 {
			t.Errorf("window %+v: a host of %d keys counted as A, want none", w, cfg.MaxHostKeys+1)
		}
	}
}

// TestLiveHomeState: a home saved half way and restored judges the rest
// exactly as one never stopped.
func TestLiveHomeState(t *testing.T) {
	var pkts []schemas.Packet
	for i := range 200 {
		host := 1 + i%5
		key := [][3]int{{17, 53, 60}, {17, 69, 55}, {6, 443, 60}}[(i/7+host)%3]
		pkts = append(pkts, pkt(time.Duration(i)*700*time.Millisecond, host, uint8(key[0]), int32(key[1]), uint16(key[2])))
	}
	pkts[40].SrcIP = netip.MustParseAddr("93.184.216.34")
	pkts[41].SrcIP = netip.MustParseAddr("2001:db8::1")
	whole, _ := NewLiveHome(handModel(t), DefaultLiveConfig())
	want := append(feed(t, whole, pkts), whole.Flush()...)

	h, _ := NewLiveHome(handModel(t), DefaultLiveConfig())
	got := feed(t, h, pkts[:100])
	st, err := h.State(42)
	if err != nil {
		t.Fatal(err)
	}
	r, seq, err := RestoreLiveHome(handModel(t), DefaultLiveConfig(), st)
	if err != nil || seq != 42 {
		t.Fatalf("restore: seq %d, %v; want 42", seq, err)
	}
	got = append(append(got, feed(t, r, pkts[100:])...), r.Flush()...)
	a, _ := json.Marshal(want)
	b, _ := json.Marshal(got)
	if len(want) < 10 || !bytes.Equal(a, b) {
		t.Errorf("restored home judged\n%s\nwant\n%s", b, a)
	}
	// Restarted with other windows: what the hosts sent is kept, the
	// windows start again on the new grid at the next packet.
	other := DefaultLiveConfig()
	other.Window, other.Step = 30*time.Second, 15*time.Second
	o, _, err := RestoreLiveHome(handModel(t), other, st)
	if err != nil {
		t.Fatal(err)
	}
	ws := append(feed(t, o, pkts[100:]), o.Flush()...)
	if len(ws) == 0 || ws[0].EndNs%int64(15*time.Second) != 0 || ws[0].EndNs-ws[0].StartNs != int64(30*time.Second) || o.Hosts() != 5 {
		t.Errorf("restored on other windows: %d windows %+v, %d hosts; want 30 s windows every 15 s and the 5 hosts", len(ws), ws, o.Hosts())
	}
	again, err := r.State(43)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := RestoreLiveHome(handModel(t), DefaultLiveConfig(), again); err != nil {
		t.Errorf("restore of a restored home: %v", err)
	}
}

// TestLiveHomeClockBack: a clock that goes back by hours starts the windows
// again where it is, knowing what the hosts sent, rather than wait hours.
func TestLiveHomeClockBack(t *testing.T) {
	h, _ := NewLiveHome(handModel(t), DefaultLiveConfig())
	day := 24 * time.Hour
	ws := feed(t, h, []schemas.Packet{pkt(day+time.Second, 1, 17, 69, 55), pkt(day+45*time.Second, 1, 17, 53, 60),
		pkt(time.Second, 1, 17, 53, 60), pkt(45*time.Second, 1, 17, 53, 60)})
	var back []schemas.SeenWindow
	for _, w := range ws {
		if w.EndNs < int64(day) {
			back = append(back, w)
		}
	}
	if len(back) == 0 || countOf(back[0], "A") != 1 {
		t.Errorf("after the clock went back a day: windows %+v, want them judged, the host still known as A", back)
	}
}

// TestLiveHomeBadTime: packets before 1970 or at the end of int64 (a
// hostile home's batch) are counted aside, and the home goes on.
func TestLiveHomeBadTime(t *testing.T) {
	h, _ := NewLiveHome(handModel(t), DefaultLiveConfig())
	bad := []schemas.Packet{pkt(time.Second, 1, 17, 69, 55), pkt(0, 1, 17, 69, 55), pkt(0, 2, 17, 69, 55)}
	bad[1].TsNs, bad[2].TsNs = -1, math.MaxInt64
	ws := append(feed(t, h, bad), feed(t, h, []schemas.Packet{pkt(time.Minute, 1, 17, 69, 55)})...)
	if h.BadTime != 2 || h.Hosts() != 1 || len(ws) == 0 || countOf(ws[0], "A") != 1 {
		t.Errorf("bad times %d, %d hosts, windows %+v: want 2 set aside, one host counted as A", h.BadTime, h.Hosts(), ws)
	}
}

func TestLiveHomeStateRefused(t *testing.T) {
	cfg := DefaultLiveConfig()
	small := cfg
	small.MaxHosts = 1
	h, _ := NewLiveHome(handModel(t), cfg)
	feed(t, h, []schemas.Packet{pkt(time.Second, 1, 17, 69, 55), pkt(2*time.Second, 2, 17, 53, 60)})
	good, err := h.State(3)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cfg  LiveConfig
		data string
		want string
	}{
		{cfg, `not json`, "decode host table"},
		{cfg, `{"version":3,"seq":1}`, "version 3"},
		{cfg, `{"version":2,"seq":1,"hosts":[{"mac":"nonsense"}]}`, "host table"},
		{cfg, `{"version":2,"seq":1,"hosts":[{"mac":"02:00:00:00:00:01","keys":"AAAA"}]}`, "key bytes"},
		{cfg, `{"version":2,"seq":1,"hosts":[{"mac":"02:00:00:00:00:01","active":[5,3]}]}`, "sorted"},
		{cfg, `{"version":2,"seq":1,"hosts":[{"mac":"02:00:00:00:00:01","served":[80,80]}]}`, "served ports"},
		{cfg, `{"version":2,"seq":1,"lan":["192.168.1.7/24"]}`, "LAN prefix"},
		{cfg, `{"version":2,"seq":1,"lan":["10.0.0.0/24","10.0.0.0/24"]}`, "LAN prefix"},
		{cfg, `{"version":2,"seq":1,"lan":["` + strings.Repeat(`10.0.0.0/24","`, maxLANPrefixes) + `10.0.1.0/24"]}`, "LAN prefixes"},
		{cfg, `{"version":2,"seq":1,"hosts":[{"mac":"02:00:00:00:00:01","remote":[{"src":"2001:db8::/48"}]}]}`, "remote source"},
		{cfg, `{"version":2,"seq":1,"hosts":[{"mac":"02:00:00:00:00:01","remote":[{"src":"1.2.3.4/32","last_ns":-1}]}]}`, "remote source"},
		{cfg, `{"version":2,"seq":1,"hosts":[{"mac":"02:00:00:00:00:01","remote":[{"src":"1.2.3.4/32"},{"src":"1.2.3.5/32"},{"src":"1.2.3.6/32"},{"src":"1.2.3.7/32"}]}]}`, "remote sources"},
		{cfg, `{"version":2,"seq":1,"hosts":[{"mac":"02:00:00:00:00:01","forwarded_until_ns":-1}]}`, "forwarding until"},
		{cfg, `{"version":1,"seq":1}`, "earlier version"},
		{cfg, `{"version":2,"seq":1,"last_ns":-5}`, "outside the times"},
		{cfg, `{"version":2,"seq":1,"window":20000000000,"step":10000000000,"late":20000000000,"next_ns":10000000000,"last_ns":900000000000}`, "next window"},
		{cfg, `{"version":2,"seq":1,"window":20000000000,"step":10000000000,"late":20000000000,"next_ns":3,"last_ns":1}`, "next window"},
		{small, string(good), "at most 1"},
		{LiveConfig{Window: time.Second, Step: 2 * time.Second}, string(good), "whole number"},
	} {
		if _, _, err := RestoreLiveHome(handModel(t), c.cfg, []byte(c.data)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("restore %.40q: %v, want an error with %q", c.data, err, c.want)
		}
	}
}

// TestHostModelRefused: a model file that is not one `hosts learn` writes
// is refused, saying what is wrong.
func TestHostModelRefused(t *testing.T) {
	for _, c := range []struct{ data, want string }{
		{`[]`, "decode host model"},
		{`{"version":2}`, "version 2"},
		{`{"version":4}`, "version 4"},
		{`{"version":3,"units":[],"captures":[]}`, "0 units"},
		{`{"version":3,"units":[{"name":"A","members":["A"]}],"captures":[{"unit":1}]}`, "unit 1 of 1"},
		{`{"version":3,"units":[{"name":"","members":["A"]}],"captures":[{"unit":0}]}`, "want a name"},
		{`{"version":3,"units":[{"name":"A","members":["A"],"signature":["17/69"]}],"captures":[{"unit":0}]}`, "transport/port/length"},
		{`{"version":3,"units":[{"name":"A","members":["A"],"signature":["0/69/55"]}],"captures":[{"unit":0}]}`, "transport 1-255"},
		{`{"version":3,"units":[{"name":"A","members":["A"],"signature":["17/dhcp256/1"]}],"captures":[{"unit":0}]}`, "dhcp0-dhcp255"},
		{`{"version":3,"units":[{"name":"A","members":["A"],"signature":["17/@dhcp55/1"]}],"captures":[{"unit":0}]}`, "dhcp0-dhcp255"},
		{strings.Repeat(" ", maxHostModelBytes+1), "over 64 MiB"},
	} {
		if _, err := ReadHostModel(strings.NewReader(c.data)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("model %.40q: %v, want an error with %q", c.data, err, c.want)
		}
	}
}

func FuzzRestoreLiveHome(f *testing.F) {
	h, _ := NewLiveHome(handModel(f), DefaultLiveConfig())
	feed(f, h, []schemas.Packet{pkt(time.Second, 1, 17, 69, 55), pkt(2*time.Second, 2, 6, 443, 60), pkt(45*time.Second, 2, 17, 53, 60)})
	served := pkt(50*time.Second, 3, 6, 40000, 60)
	served.SrcPort, served.TCPFlags = 8080, tcpSYN|tcpACK
	feed(f, h, []schemas.Packet{served})
	st, _ := h.State(7)
	f.Add(st)
	f.Add([]byte(`{"version":2,"seq":1,"next_ns":10000000000,"last_ns":1,"hosts":[{"mac":"02:00:00:00:00:01","keys":"AAAAAAAAAA==","active":[-9,0]}]}`))
	// A WAN tap's table, with open IP ID sequences.
	wan, _ := NewLiveHome(wanModel(f), DefaultLiveConfig())
	feed(f, wan, wanHome()[:40])
	st, _ = wan.State(7)
	f.Add(st)
	lan, wm := handModel(f), wanModel(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, m := range []*HostModel{lan, wm} {
			h, _, err := RestoreLiveHome(m, DefaultLiveConfig(), data)
			if err != nil {
				continue
			}
			// Whatever it restored takes packets, judges and saves again.
			feed(t, h, []schemas.Packet{pkt(time.Minute, 1, 17, 69, 55), pkt(3*time.Minute, 3, 6, 443, 60)})
			feed(t, h, wanHome()[40:80])
			h.Flush()
			if _, err := h.State(1); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzReadHostModel(f *testing.F) {
	var b bytes.Buffer
	if err := handModel(f).Write(&b); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	b.Reset()
	if err := wanModel(f).Write(&b); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ReadHostModel(bytes.NewReader(data))
		if err != nil {
			return
		}
		// A model read back classifies without a panic, and counts a home.
		if u := m.Classify(map[heartbeat.Key]bool{{Transport: 17, Port: 69, IPLen: 55}: true}); u >= len(m.Units) {
			t.Fatalf("classified as unit %d of %d", u, len(m.Units))
		}
		h, err := NewLiveHome(m, DefaultLiveConfig())
		if err != nil {
			t.Fatal(err)
		}
		feed(t, h, wanHome()[:60])
		h.Flush()
	})
}

// BenchmarkLiveHome is the live counter's cost per packet: a home of 30
// hosts, each sending 20 kinds of packet, 200 packets a second, judged
// every 10 s. The model is the handmade one: a host is classified only when
// its keys change, which after its first minutes is rare.
func BenchmarkLiveHome(b *testing.B) {
	m := handModel(b)
	pkts := make([]schemas.Packet, 0, 1<<16)
	for i := range cap(pkts) {
		host := 1 + i%30
		pkts = append(pkts, pkt(time.Duration(i)*5*time.Millisecond, host, 17, int32(1000+host), uint16(100+(i/30)%20)))
	}
	benchLiveHome(b, m, pkts)
}

// benchLiveHome feeds a home with m the packets over and over, each round
// a second after the last, and reports packets a second.
func benchLiveHome(b *testing.B, m *HostModel, pkts []schemas.Packet) {
	h, err := NewLiveHome(m, DefaultLiveConfig())
	if err != nil {
		b.Fatal(err)
	}
	span := pkts[len(pkts)-1].TsNs + int64(time.Second)
	b.ResetTimer()
	for i := range b.N {
		p := pkts[i%len(pkts)]
		p.TsNs += int64(i/len(pkts)) * span
		h.Add(&p)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
}

// FuzzLiveHomeAdd feeds a home packets a hostile home could send, in any
// order and at any time: the counter must neither hang nor panic, keep its
// bounds, and judge only whole windows.
func FuzzLiveHomeAdd(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
	f.Add(bytes.Repeat([]byte{0xff}, 40))
	f.Add(append(bytes.Repeat([]byte{0x7f}, 8), bytes.Repeat([]byte{0xff}, 32)...))
	f.Add(append([]byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, bytes.Repeat([]byte{1}, 32)...))
	// A SYN-ACK from port 80, then an answer from it.
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 1, 6, 0xc3, 0x50, 0, 60, 0, 0, 0, 80, 0, 0x12,
		0, 0, 0, 0, 0, 0, 0, 2, 1, 6, 0xc3, 0x50, 1, 4, 0, 0, 0, 80, 0, 0x18})
	// One MAC sends from two addresses in turn, then ARPs from each.
	var relayed []byte
	for i, kind := range []byte{2, 2, 2, 6, 6} {
		relayed = append(relayed, 0, 0, 0, 0, 0, 0, 0, byte(i), 1, 17, 0, 69, 0, 55, kind, byte(20+i%2), 0, 0, 0, 0)
	}
	f.Add(relayed)
	// One MAC sends from the IPv6 addresses SLAAC forms from two devices'
	// MACs in turn: a repeater of an IPv6-only home.
	var relayed6 []byte
	for i := range 4 {
		relayed6 = append(relayed6, 0, 0, 0, 0, 0, 0, byte(i), 0, 1, 17, 0, 69, 0, 55, 8, byte(i%2), 0, 0, 0, 0)
	}
	f.Add(relayed6)
	lan, wan := handModel(f), wanModel(f)
	cfg := DefaultLiveConfig()
	cfg.MaxHosts, cfg.MaxKeys, cfg.MaxHostKeys = 4, 16, 8
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, m := range []*HostModel{lan, wan} {
			fuzzLiveHome(t, m, cfg, data)
		}
	})
}

// fuzzLiveHome is FuzzLiveHomeAdd's run of one model: a LAN one, or a WAN
// one that links the packets into IP ID sequences.
func fuzzLiveHome(t *testing.T, m *HostModel, cfg LiveConfig, data []byte) {
	h, err := NewLiveHome(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var ws []schemas.SeenWindow
	// A packet is 20 bytes: time, host, transport, destination port,
	// length, source address, source port, TCP flags.
	for ; len(data) >= 20; data = data[20:] {
		p := pkt(0, int(data[8]%8), data[9], int32(binary.BigEndian.Uint16(data[10:])), binary.BigEndian.Uint16(data[12:]))
		p.TsNs = int64(binary.BigEndian.Uint64(data))
		switch data[14] & 3 {
		case 1:
			p.SrcIP = netip.AddrFrom4([4]byte{data[15], 1, 2, 3})
		case 2:
			// Hosts of one LAN: a MAC that sends from several in turn is a
			// MAC-NAT repeater's.
			p.SrcIP = netip.AddrFrom4([4]byte{192, 168, 1, data[15]})
		case 3:
			// A DHCP request from 0.0.0.0 that names the address it asks
			// for, and a host name.
			p.SrcIP, p.DHCP.Requested, p.DHCP.Name = netip.IPv4Unspecified(), [4]byte{192, 168, 1, data[15]}, uint32(data[16])+1
		}
		if data[14]&4 != 0 {
			// An ARP message: no IP header, a sender address.
			p.SrcIP, p.Transport, p.DHCP, p.ARPSender = netip.Addr{}, 0, schemas.DHCPClient{}, [4]byte{192, 168, 1, data[15]}
		}
		if data[14]&8 != 0 {
			// An IPv6 address SLAAC formed from a device's universal MAC:
			// behind a MAC-NAT repeater, the device's host.
			p.SrcIP = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 1, 0x02, 0x24, 0xe4, 0xff, 0xfe, 0, 0, data[15]})
			p.TTL = [4]uint8{64, 255, 63, 128}[data[17]&3]
		}
		p.SrcPort, p.TCPFlags = int32(binary.BigEndian.Uint16(data[16:])), binary.BigEndian.Uint16(data[18:])
		p.IPID = binary.BigEndian.Uint16(data[10:]) ^ binary.BigEndian.Uint16(data[16:])
		ws = append(ws, h.Add(&p)...)
		if l := h.linker; l != nil && l.open() > l.max {
			t.Fatalf("%d IP ID sequences open, over the bound %d", l.open(), l.max)
		}
		if h.Hosts() > cfg.MaxHosts || h.keys > cfg.MaxKeys {
			t.Fatalf("%d hosts, %d keys: over the bounds %d and %d", h.Hosts(), h.keys, cfg.MaxHosts, cfg.MaxKeys)
		}
		keys := 0
		for _, host := range h.hosts {
			keys += len(host.keys)
			if len(host.names) > maxRelayNames {
				t.Fatalf("a host remembers %d DHCP names, the bound %d", len(host.names), maxRelayNames)
			}
		}
		if keys != h.keys {
			t.Fatalf("the table's hosts hold %d keys, its count says %d", keys, h.keys)
		}
		for _, host := range h.hosts {
			if len(host.addrs) > maxRelayAddrs || len(host.addrs) != len(host.times) {
				t.Fatalf("a host remembers %d addresses and %d times, the bound %d", len(host.addrs), len(host.times), maxRelayAddrs)
			}
			if len(host.served) > maxServed || !isStrictlySorted(host.served) {
				t.Fatalf("served ports %v: over the bound %d, or not ascending", host.served, maxServed)
			}
			if len(host.remote) > forwardSources {
				t.Fatalf("a host remembers %d remote sources, the bound %d", len(host.remote), forwardSources)
			}
		}
		if len(h.lan) > maxLANPrefixes {
			t.Fatalf("the home keeps %d LAN prefixes, the bound %d", len(h.lan), maxLANPrefixes)
		}
	}
	ws = append(ws, h.Flush()...)
	for _, w := range ws {
		if w.EndNs-w.StartNs != int64(cfg.Window) {
			t.Fatalf("window %+v: not %s long", w, cfg.Window)
		}
	}
	// What it holds saves and restores.
	st, err := h.State(1)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := RestoreLiveHome(m, cfg, st); err != nil {
		t.Fatalf("a table the counter saved is refused: %v", err)
	}
}

// TestLiveConfigBounded: a window of more steps than MaxWindowSteps (a
// million hours every 10 s: 360 million windows a packet is in) and a
// window, late or settle beyond MaxLiveSpan are refused, not walked for
// hours.
func TestLiveConfigBounded(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*LiveConfig)
	}{
		{"window of a million hours", func(c *LiveConfig) { c.Window = 1000000 * time.Hour }},
		{"window of too many steps", func(c *LiveConfig) { c.Window = (MaxWindowSteps + 1) * c.Step }},
		{"late beyond the span", func(c *LiveConfig) { c.Late = MaxLiveSpan + time.Second }},
		{"settle beyond the span", func(c *LiveConfig) { c.Settle = MaxLiveSpan + time.Second }},
		{"step near the end of int64", func(c *LiveConfig) { c.Step, c.Window = math.MaxInt64/2, math.MaxInt64/2 }},
	} {
		cfg := DefaultLiveConfig()
		tc.edit(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: window %s every %s, %s late, %s settle accepted", tc.name, cfg.Window, cfg.Step, cfg.Late, cfg.Settle)
		}
	}
	cfg := DefaultLiveConfig()
	cfg.Window = MaxWindowSteps * cfg.Step
	if err := cfg.Validate(); err != nil {
		t.Errorf("a window of %d steps refused: %v", MaxWindowSteps, err)
	}
}

// TestLiveHomeFlushWalksPackets: Flush's work is the windows the steps
// that hold packets are in, not every step of the time they span: three
// packets over 20 days, judged a month late on 1 ms steps, are three
// windows at once, not 1.7 billion steps walked.
func TestLiveHomeFlushWalksPackets(t *testing.T) {
	cfg := DefaultLiveConfig()
	cfg.Window, cfg.Step, cfg.Late, cfg.Settle = time.Millisecond, time.Millisecond, MaxLiveSpan, 0
	h, err := NewLiveHome(handModel(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ws := feed(t, h, []schemas.Packet{pkt(time.Second, 1, 17, 69, 55), pkt(2*time.Second, 1, 17, 69, 55), pkt(20*24*time.Hour, 2, 6, 443, 60)}); len(ws) != 0 {
		t.Fatalf("windows %+v judged before they are a month old", ws)
	}
	done := make(chan []schemas.SeenWindow, 1)
	go func() { done <- h.Flush() }()
	select {
	case ws := <-done:
		if len(ws) != 3 || countOf(ws[0], "A") != 1 || countOf(ws[2], "B") != 1 {
			t.Errorf("windows %+v: want 3, A in the first, B in the last", ws)
		}
		for _, w := range ws {
			if w.Packets != 1 || w.EndNs-w.StartNs != int64(time.Millisecond) {
				t.Errorf("window %+v: want one packet in 1 ms", w)
			}
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Flush still walking after 20 s")
	}
	// Once flushed, the home goes on from the last packet.
	if ws := h.Flush(); len(ws) != 0 {
		t.Errorf("a second Flush judged %+v, want nothing", ws)
	}
}
