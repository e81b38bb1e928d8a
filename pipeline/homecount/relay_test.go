package homecount

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/homemole/homemole/schemas"
)

// behind sends p from the repeater's MAC at addr, as a device behind a
// MAC-NAT repeater does.
func behind(p schemas.Packet, relay int, addr string) schemas.Packet {
	p.SrcMAC, p.SrcIP = mac(relay), netip.MustParseAddr(addr)
	return p
}

// playHand plays pkts through a LiveHome of handModel and returns it,
// every window it judged, and those that lie within [from, to]; fewer
// than least of those fails the test.
func playHand(t *testing.T, pkts []schemas.Packet, from, to time.Duration, least int) (*LiveHome, []schemas.SeenWindow, []schemas.SeenWindow) {
	t.Helper()
	h, err := NewLiveHome(handModel(t), DefaultLiveConfig())
	if err != nil {
		t.Fatal(err)
	}
	ws := append(feed(t, h, pkts), h.Flush()...)
	var within []schemas.SeenWindow
	for _, w := range ws {
		if w.StartNs >= int64(from) && w.EndNs <= int64(to) {
			within = append(within, w)
		}
	}
	if len(within) < least {
		t.Fatalf("%d windows judged between %s and %s, want %d or more", len(within), from, to, least)
	}
	return h, ws, within
}

// playRestored plays pkts[:cut] through a LiveHome of handModel, shows it
// to atCut, saves its table, and plays the rest through the table
// restored: the windows judged, in order.
func playRestored(t *testing.T, pkts []schemas.Packet, cut int, atCut func(*LiveHome)) []schemas.SeenWindow {
	t.Helper()
	half, err := NewLiveHome(handModel(t), DefaultLiveConfig())
	if err != nil {
		t.Fatal(err)
	}
	got := feed(t, half, pkts[:cut])
	atCut(half)
	st, err := half.State(7)
	if err != nil {
		t.Fatal(err)
	}
	r, _, err := RestoreLiveHome(handModel(t), DefaultLiveConfig(), st)
	if err != nil {
		t.Fatal(err)
	}
	return append(append(got, feed(t, r, pkts[cut:])...), r.Flush()...)
}

// TestLiveHomeRelay: two units behind one MAC-NAT repeater, sending in
// turn, are two hosts by their addresses, both counted, and the
// repeater's MAC is none; a unit whose lease changes once stays one host
// with what it sent, and so does one that keeps an address in another
// network (an Edimax plug does). Restored half way, the home judges as
// one never stopped.
func TestLiveHomeRelay(t *testing.T) {
	var pkts []schemas.Packet
	for i := range 120 {
		ts := time.Duration(i) * time.Second
		pkts = append(pkts,
			behind(pkt(ts, 0, 17, 69, 55), 9, "192.168.1.20"),                      // A behind the repeater
			behind(pkt(ts+500*time.Millisecond, 0, 6, 443, 60), 9, "192.168.1.21")) // B behind it
		// A unit of A whose lease changes once, at 60 s.
		lease := "192.168.1.30"
		if i >= 60 {
			lease = "192.168.1.31"
		}
		pkts = append(pkts, behind(pkt(ts+100*time.Millisecond, 0, 17, 69, 55), 3, lease))
		// A unit of B with a second address in another network.
		pkts = append(pkts, behind(pkt(ts+200*time.Millisecond, 0, 6, 443, 60), 4, []string{"192.168.1.40", "192.168.20.3"}[i%2]))
	}
	// The repeater is found at its devices' second turn; the windows well
	// after are judged.
	h, ws, late := playHand(t, pkts, 30*time.Second, 110*time.Second, 5)
	for _, w := range late {
		if a, b := countOf(w, "A"), countOf(w, "B"); a != 2 || b != 2 || w.Hosts != 4 || w.Unknown {
			t.Errorf("window [%s, %s): A %d, B %d, %d hosts, unknown %v; want 2 of each, 4 hosts", time.Duration(w.StartNs), time.Duration(w.EndNs), a, b, w.Hosts, w.Unknown)
		}
	}
	for _, m := range []schemas.MAC{mac(3), mac(4)} {
		if host := h.hosts[m]; host == nil || host.relay || len(host.keys) == 0 {
			t.Errorf("host %s: %+v; want one host of its own keys, no repeater", m, host)
		}
	}
	if host := h.hosts[mac(9)]; host == nil || !host.relay {
		t.Error("the repeater's MAC was not found to be one")
	}
	if h.hosts[relayHost(netip.MustParseAddr("192.168.1.20"))] == nil || h.hosts[relayHost(netip.MustParseAddr("192.168.1.21"))] == nil {
		t.Error("no host for each device behind the repeater")
	}

	got := playRestored(t, pkts, len(pkts)/2, func(*LiveHome) {})
	a, _ := json.Marshal(ws)
	b, _ := json.Marshal(got)
	if !bytes.Equal(a, b) {
		t.Errorf("restored half way, the home judged\n%s\nwant\n%s", b, a)
	}
}

// TestRelaySeen: a MAC is a repeater's when it goes back to an address of
// the same /24 within a minute, another in between; not when it goes back
// later, nor to an address of another network.
func TestRelaySeen(t *testing.T) {
	a, b, other := netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.6"), netip.MustParseAddr("192.168.20.3")
	sec := int64(time.Second)
	for _, c := range []struct {
		what string
		seq  []netip.Addr
		at   []int64
		want bool
	}{
		{"in turn", []netip.Addr{a, b, a}, []int64{0, sec, 2 * sec}, true},
		{"a lease changed", []netip.Addr{a, a, b, b}, []int64{0, sec, 2 * sec, 3 * sec}, false},
		{"a lease won back after an hour", []netip.Addr{a, b, a}, []int64{0, 1800 * sec, 3600 * sec}, false},
		{"two networks", []netip.Addr{a, other, a, other}, []int64{0, sec, 2 * sec, 3 * sec}, false},
	} {
		var r relaySeen
		got := false
		for i, x := range c.seq {
			got = r.see(x, c.at[i])
		}
		if got != c.want {
			t.Errorf("%s: a repeater %v, want %v", c.what, got, c.want)
		}
	}
}

// TestRelayKeepsWhatCameFirst: a device behind a repeater that sends its
// one signature key in its first seconds, alone behind it, and only what
// every type sends after, is still its type once a second device's turn
// shows the MAC is a repeater's: live (its shadow host), restored while
// the MAC only may be a repeater's, and read whole (hostPackets). Its
// name, given from 0.0.0.0 before it sent from its address, is its own.
// A MAC whose lease changed keeps no shadow once its old address is past
// RelayWindow.
func TestRelayKeepsWhatCameFirst(t *testing.T) {
	a, b := netip.MustParseAddr("192.168.1.20"), netip.MustParseAddr("192.168.1.21")
	dhcp := behind(pkt(0, 0, 17, 67, 300), 9, "0.0.0.0")
	dhcp.DHCP.Requested, dhcp.DHCP.Name = a.As4(), 0xbeef
	pkts := []schemas.Packet{dhcp}
	for i := range 120 {
		ts := time.Duration(i)*time.Second + 100*time.Millisecond
		if i < 5 {
			pkts = append(pkts, behind(pkt(ts, 0, 17, 69, 55), 9, a.String())) // A's signature key, early only
		}
		pkts = append(pkts, behind(pkt(ts+10*time.Millisecond, 0, 17, 53, 60), 9, a.String())) // what both types send
		if i >= 30 {
			pkts = append(pkts, behind(pkt(ts+500*time.Millisecond, 0, 6, 443, 60), 9, b.String())) // B joins
		}
	}
	h, ws, judged := playHand(t, pkts, 40*time.Second, 110*time.Second, 5)
	for _, w := range judged {
		if countOf(w, "A") != 1 || countOf(w, "B") != 1 {
			t.Errorf("window [%s, %s): %+v; want A and B once each", time.Duration(w.StartNs), time.Duration(w.EndNs), w.Detections)
		}
	}
	host := h.hosts[relayHost(a)]
	if host == nil || host.shadow || !host.keys[udpKey(69, 55)] || !host.keys[dhcpNameKey(0xbeef)] {
		t.Fatalf("A's host %+v: want a host of its own with its early key and its name", host)
	}
	if h.hosts[relayHost(b)].keys[dhcpNameKey(0xbeef)] {
		t.Error("B's host holds A's name")
	}

	// Restored while the MAC only may be a repeater's: B's first packet.
	cut := slices.IndexFunc(pkts, func(p schemas.Packet) bool { return p.SrcIP == b }) + 1
	got := playRestored(t, pkts, cut, func(half *LiveHome) {
		if r := half.hosts[mac(9)]; r == nil || !r.candidate || r.relay {
			t.Fatalf("after B's first packet the MAC is %+v: want a candidate, no repeater yet", r)
		}
	})
	want, _ := json.Marshal(ws)
	if g, _ := json.Marshal(got); !bytes.Equal(g, want) {
		t.Errorf("restored while a candidate, the home judged\n%s\nwant\n%s", g, want)
	}

	// Read whole, the capture gives A its early key too.
	sent := hostKeys(hostPackets(pkts), schemas.MAC{}, 1<<62)
	if !sent[relayHost(a)][udpKey(69, 55)] || !sent[relayHost(a)][dhcpNameKey(0xbeef)] || sent[mac(9)] != nil {
		t.Errorf("read whole: A's keys %v, the repeater's %v; want A's early key and name, nothing left to the repeater", sent[relayHost(a)], sent[mac(9)])
	}

	// Turns more than RelayWindow apart: a1, then a2 70 s later, then a1
	// again. What the MAC sent before is both addresses', and goes to
	// neither: not a1's key to a2's device.
	var apart []schemas.Packet
	for i := range 5 {
		apart = append(apart, behind(pkt(time.Duration(i)*time.Second, 0, 17, 69, 55), 9, a.String()))
	}
	for i := range 5 {
		apart = append(apart, behind(pkt(time.Duration(70+i)*time.Second, 0, 6, 443, 60), 9, b.String()))
	}
	apart = append(apart, behind(pkt(80*time.Second, 0, 17, 53, 60), 9, a.String()), behind(pkt(85*time.Second, 0, 6, 443, 60), 9, b.String()))
	ap, _ := NewLiveHome(handModel(t), DefaultLiveConfig())
	feed(t, ap, apart)
	if r := ap.hosts[mac(9)]; r == nil || !r.relay {
		t.Fatal("turns apart: the repeater was not found at a2's second turn")
	}
	if hb := ap.hosts[relayHost(b)]; hb == nil || hb.keys[udpKey(69, 55)] {
		t.Errorf("turns apart: b's host %+v holds a1's early key", hb)
	}

	// A lease changed: the old address is past RelayWindow after 90 s.
	var lease []schemas.Packet
	for i := range 200 {
		addr := "192.168.1.30"
		if i >= 30 {
			addr = "192.168.1.31"
		}
		lease = append(lease, behind(pkt(time.Duration(i)*time.Second, 0, 17, 69, 55), 3, addr))
	}
	l, _ := NewLiveHome(handModel(t), DefaultLiveConfig())
	for _, w := range append(feed(t, l, lease), l.Flush()...) {
		if countOf(w, "A") != 1 || w.Hosts != 1 {
			t.Errorf("window [%s, %s): %d hosts, %+v; want the one unit of A", time.Duration(w.StartNs), time.Duration(w.EndNs), w.Hosts, w.Detections)
		}
	}
	if l.Hosts() != 1 || l.hosts[mac(3)].candidate {
		t.Errorf("a changed lease left %d hosts (candidate %v), want its one", l.Hosts(), l.hosts[mac(3)].candidate)
	}
}

// arp is an ARP message host sends from addr.
func arp(ts time.Duration, host int, addr string) schemas.Packet {
	return schemas.Packet{TsNs: int64(ts), SrcMAC: mac(host), DPort: schemas.NoPort, ProtoBits: schemas.ProtoOther,
		Direction: schemas.DirLocal, FrameLen: 42, ARPSender: netip.MustParseAddr(addr).As4()}
}

// TestRelayARP: behind a repeater, a device that only ARPs for a minute
// (its ARP under the repeater's MAC) is still counted, live and read
// whole; and ARP from an address a MAC never sent IP from (a device
// asking for its last network's gateway from its last address there)
// makes neither a host nor a repeater.
func TestRelayARP(t *testing.T) {
	var pkts []schemas.Packet
	for i := range 120 {
		ts := time.Duration(i) * time.Second
		if i < 60 {
			pkts = append(pkts, behind(pkt(ts, 0, 17, 69, 55), 9, "192.168.1.20"))
		} else {
			pkts = append(pkts, arp(ts, 9, "192.168.1.20"))
		}
		pkts = append(pkts, behind(pkt(ts+500*time.Millisecond, 0, 6, 443, 60), 9, "192.168.1.21"))
		// A unit of A of its own MAC that ARPs from its last address, and
		// a device behind the repeater that does.
		pkts = append(pkts, behind(pkt(ts+100*time.Millisecond, 0, 17, 69, 55), 3, "192.168.1.30"), arp(ts+200*time.Millisecond, 3, "192.168.1.99"),
			arp(ts+300*time.Millisecond, 9, "192.168.1.98"))
	}
	h, _, arped := playHand(t, pkts, 65*time.Second, 118*time.Second, 3)
	for _, w := range arped {
		if a, b := countOf(w, "A"), countOf(w, "B"); a != 2 || b != 1 || w.Hosts != 3 {
			t.Errorf("window [%s, %s), the repeater's A only ARPing: A %d, B %d, %d hosts; want 2 A, 1 B, 3 hosts", time.Duration(w.StartNs), time.Duration(w.EndNs), a, b, w.Hosts)
		}
	}
	if host := h.hosts[mac(3)]; host == nil || host.relay {
		t.Errorf("a MAC that ARPs from its last address is taken for a repeater: %+v", host)
	}
	for _, a := range []string{"192.168.1.98", "192.168.1.99"} {
		if h.hosts[relayHost(netip.MustParseAddr(a))] != nil {
			t.Errorf("an ARP from %s, whence no IP came, made a host", a)
		}
	}

	rs := relays{}
	for i := range pkts {
		rs.host(&pkts[i])
	}
	late := arp(121*time.Second, 9, "192.168.1.20")
	if got, want := rs.host(&late), relayHost(netip.MustParseAddr("192.168.1.20")); got != want {
		t.Errorf("read whole, an ARP behind the repeater is of %s, want %s", got, want)
	}
	stale := arp(121*time.Second, 9, "192.168.1.98")
	if got := rs.host(&stale); got != mac(9) {
		t.Errorf("read whole, an ARP behind the repeater from an address no IP came from is of %s, want the repeater's MAC %s", got, mac(9))
	}
}

// univ is a universal (vendor-assigned) MAC, as IoT devices have.
func univ(i int) schemas.MAC { return schemas.MAC{0x00, 0x24, 0xe4, 0, 0, byte(i)} }

// slaacFrom sends p in a frame of MAC frame from the address SLAAC forms
// from dev's MAC in prefix (a /64, or fe80:: for link-local), with hop
// limit ttl.
func slaacFrom(p schemas.Packet, frame, dev schemas.MAC, prefix string, ttl uint8) schemas.Packet {
	a, id := netip.MustParseAddr(prefix).As16(), dev.EUI64()
	copy(a[8:], id[:])
	p.SrcMAC, p.SrcIP, p.TTL = frame, netip.AddrFrom16(a), ttl
	return p
}

// TestRelaySLAAC: behind a MAC-NAT repeater of an IPv6-only home, each
// device is the MAC its autoconfigured address names, counted whatever
// hop limit it sends with, and the repeater none; restored half way the home judges the same. A gateway
// forwarding from a server whose address names a MAC, a packet forwarded
// once, and a device's second, locally administered interface make no
// repeater. A repeater whose devices have IPv4 addresses keeps to them
// (a dual-stack device is not counted twice), and is found by the first
// link-local address of another MAC, before any device's second turn.
func TestRelaySLAAC(t *testing.T) {
	const lan6 = "2001:db8:1:1::"
	var pkts []schemas.Packet
	for i := range 120 {
		ts := time.Duration(i) * time.Second
		pkts = append(pkts,
			slaacFrom(pkt(ts, 0, 17, 69, 55), mac(9), univ(1), lan6, 64), // A behind the repeater
			// B behind it, at the hop limit of SSDP: a repeater forwards
			// only its devices' packets, whatever their hop limit.
			slaacFrom(pkt(ts+300*time.Millisecond, 0, 6, 443, 60), mac(9), univ(2), lan6, 4),
			slaacFrom(pkt(ts+400*time.Millisecond, 0, 17, 69, 55), univ(3), univ(3), lan6, 64), // A of its own MAC
			// Link-local frames behind the repeater stay with it.
			slaacFrom(pkt(ts+500*time.Millisecond, 0, 17, 5353, 90), mac(9), univ(1), "fe80::", 255),
			// Not repeaters: the gateway forwarding from a server whose
			// address names a MAC, a host's packet forwarded once, and a
			// device's bridge interface.
			slaacFrom(pkt(ts+600*time.Millisecond, 0, 6, 50000, 80), mac(1), univ(7), "2a00:1450:4001:80b::", 57),
			slaacFrom(pkt(ts+700*time.Millisecond, 0, 17, 53, 40), mac(5), univ(8), lan6, 63),
			slaacFrom(pkt(ts+800*time.Millisecond, 0, 17, 5353, 90), mac(6), schemas.MAC{0x06, 0x11, 0x22, 0x33, 0x44, 0x55}, "fe80::", 255))
	}
	h, ws, late := playHand(t, pkts, 30*time.Second, 110*time.Second, 5)
	for _, w := range late {
		if a, b := countOf(w, "A"), countOf(w, "B"); a != 2 || b != 1 {
			t.Errorf("window [%s, %s): A %d, B %d; want 2 A (one behind the repeater), 1 B", time.Duration(w.StartNs), time.Duration(w.EndNs), a, b)
		}
	}
	for _, m := range []schemas.MAC{univ(1), univ(2)} {
		if host := h.hosts[m]; host == nil || len(host.keys) == 0 {
			t.Errorf("no host of the device %s behind the repeater", m)
		}
	}
	if host := h.hosts[mac(9)]; host == nil || !host.relay {
		t.Error("the repeater's MAC was not found to be one")
	}
	for _, m := range []schemas.MAC{mac(1), mac(5), mac(6), univ(3)} {
		if host := h.hosts[m]; host == nil || host.relay {
			t.Errorf("%s taken for a repeater: %+v", m, host)
		}
	}
	for _, m := range []schemas.MAC{univ(7), univ(8), {0x06, 0x11, 0x22, 0x33, 0x44, 0x55}} {
		if h.hosts[m] != nil {
			t.Errorf("a host %s made from an address no repeater relayed", m)
		}
	}
	got := playRestored(t, pkts, len(pkts)/2, func(*LiveHome) {})
	a, _ := json.Marshal(ws)
	b, _ := json.Marshal(got)
	if !bytes.Equal(a, b) {
		t.Errorf("restored half way, the home judged\n%s\nwant\n%s", b, a)
	}
	rs := relays{}
	for i := range pkts {
		rs.host(&pkts[i])
	}
	for i, want := range []schemas.MAC{univ(1), univ(2), univ(3), mac(9), mac(1), mac(5), mac(6)} {
		if got := rs.host(&pkts[len(pkts)-7+i]); got != want {
			t.Errorf("read whole, packet %d of the last turn is of %s, want %s", i, got, want)
		}
	}

	// Dual stack: the repeater's devices by their IPv4 addresses, found
	// at the first link-local frame of another MAC.
	var dual []schemas.Packet
	dual = append(dual, slaacFrom(pkt(0, 0, 58, 0, 32), mac(10), univ(4), "fe80::", 255))
	for i := range 60 {
		ts := time.Duration(i)*time.Second + time.Millisecond
		dual = append(dual,
			behind(pkt(ts, 0, 17, 69, 55), 10, "192.168.1.30"),
			slaacFrom(pkt(ts+100*time.Millisecond, 0, 17, 69, 55), mac(10), univ(4), lan6, 64))
	}
	h, _, _ = playHand(t, dual, 0, time.Minute, 0)
	if host := h.hosts[mac(10)]; host == nil || !host.relay {
		t.Error("a MAC sending from another MAC's link-local address was not found to be a repeater")
	}
	if h.hosts[relayHost(netip.MustParseAddr("192.168.1.30"))] == nil {
		t.Error("the device behind the repeater found by its link-local address has no host at its IPv4 address")
	}
	if h.hosts[univ(4)] != nil {
		t.Error("a dual-stack device behind a repeater was made a second host by its IPv6 address")
	}
	// Read whole, a global address sent from before the first IPv4 one is
	// known to be of a dual-stack repeater's device too (live, the first
	// device behind a repeater that sends so is a host of its own until
	// its IPv4 address comes).
	early := slaacFrom(pkt(0, 0, 17, 53, 40), mac(10), univ(4), lan6, 64)
	for _, p := range hostPackets(append([]schemas.Packet{dual[0], early}, dual[1:]...)) {
		if p.Host == univ(4) || p.Host == mac(10) {
			t.Fatalf("read whole, a packet of the dual-stack repeater's device is of %s, want its IPv4 address's host", p.Host)
		}
	}

	// An IPv6-only repeater whose devices' addresses name no MAC (::N):
	// found by a link-local address, but none of its devices can be told
	// apart, so it is counted as one host, as before it was found.
	var opaque []schemas.Packet
	for i := range 90 {
		ts := time.Duration(i) * time.Second
		p := pkt(ts, 0, 17, 69, 55)
		p.SrcMAC, p.SrcIP, p.TTL = mac(11), netip.MustParseAddr("2001:db8:1:1::20"), 64
		opaque = append(opaque, p, slaacFrom(pkt(ts+time.Millisecond, 0, 58, 0, 32), mac(11), univ(5), "fe80::", 255))
	}
	h, _, late = playHand(t, opaque, 30*time.Second, 80*time.Second, 3)
	if host := h.hosts[mac(11)]; host == nil || !host.relay || host.told {
		t.Errorf("the repeater of devices that cannot be told apart: %+v; want one found, none told", host)
	}
	for _, w := range late {
		if countOf(w, "A") != 1 {
			t.Errorf("window [%s, %s): A %d; want 1, the repeater's host", time.Duration(w.StartNs), time.Duration(w.EndNs), countOf(w, "A"))
		}
	}
	if hp := hostPackets(opaque); len(hp) != len(opaque) || hp[0].Host != mac(11) {
		t.Errorf("read whole, %d of %d packets kept under the repeater that tells no device apart", len(hp), len(opaque))
	}
}
