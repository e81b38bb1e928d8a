package homecount

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/realhome/realhometest"
	"github.com/homemole/homemole/schemas"
)

// out is a packet the home sent beyond its NAPT: TCP to port dport, of
// IP ID id.
func out(ts time.Duration, id uint16, dport int32, length uint16) schemas.Packet {
	p := pkt(ts, 1, 6, dport, length)
	p.SrcIP, p.IPID, p.SrcPort = netip.MustParseAddr("203.0.113.2"), id, 40000
	return p
}

// TestLinkChains: two hosts that number every packet from one counter,
// interleaved behind one address, are two sequences, whatever their
// connections; a host that numbers each connection apart is one per
// connection; a counter that wraps goes on (its ID 0 left out: IPv6
// packets and IDs of 0 tell nothing); a sequence silent for longer than
// MaxIdle is over.
func TestLinkChains(t *testing.T) {
	cfg := DefaultChains()
	var pkts []schemas.Packet
	for i := range 20 {
		ts := time.Duration(i) * time.Second
		// A: from 65530 up, over the wrap, to two services; B: from
		// 30000, in steps of 1 to 3 (its LAN packets take the others).
		pkts = append(pkts, out(ts, uint16(65530+i), int32(80+i%2*363), 100))
		pkts = append(pkts, out(ts+time.Millisecond, uint16(30000+3*i-i%2), 9292, 60))
	}
	v6 := out(time.Second, 0, 80, 100)
	v6.SrcIP = netip.MustParseAddr("2001:db8::1")
	pkts = append(pkts, v6, out(2*time.Second, 0, 80, 100))
	chains := LinkChains(pkts, cfg)
	if len(chains) != 2 || chains[0].Packets != 19 || chains[1].Packets != 20 || len(chains[0].Keys) != 2 || len(chains[1].Keys) != 1 {
		for _, c := range chains {
			t.Logf("chain of %d packets, keys %v", c.Packets, c.Keys)
		}
		t.Fatalf("%d sequences, want A's 19 packets (its ID 0 left out) to two services and B's 20 to one", len(chains))
	}

	// Three connections numbered apart, from far-apart starts, and a
	// fourth of two packets: three hosts to the rule, the fourth none.
	var conns []schemas.Packet
	for i := range 10 {
		ts := time.Duration(i) * 100 * time.Millisecond
		for c, start := range []uint16{1000, 21000, 41000} {
			conns = append(conns, out(ts+time.Duration(c)*time.Millisecond, start+uint16(i), 443, 80))
		}
	}
	conns = append(conns, out(2*time.Second, 60000, 443, 80), out(3*time.Second, 60001, 443, 80))
	if got := len(LinkChains(conns, cfg)); got != 3 {
		t.Errorf("three connections numbered apart (and one of two packets): %d sequences, want 3", got)
	}

	// A minute and a second of silence ends a sequence: the next packet,
	// one ID on, starts another.
	idle := []schemas.Packet{out(0, 5, 80, 60), out(time.Second, 6, 80, 60), out(2*time.Second, 7, 80, 60),
		out(63*time.Second, 8, 80, 60), out(64*time.Second, 9, 80, 60), out(65*time.Second, 10, 80, 60)}
	if got := len(LinkChains(idle, cfg)); got != 2 {
		t.Errorf("a sequence silent for 61 s: %d sequences, want 2", got)
	}
	// Sequences are of one source address: a server's packets, whose IDs
	// run just above the home's, do not join the home's sequences.
	server := slices.Clone(idle[:3])
	for i := range server {
		server[i].SrcIP, server[i].IPID = netip.MustParseAddr("198.51.100.7"), uint16(i+6)
	}
	if got := LinkChains(append(server, idle[:3]...), cfg); len(got) != 2 || got[0].Packets != 3 || got[1].Packets != 3 {
		t.Errorf("a server's sequence beside the home's: %d sequences, want two of 3 packets", len(got))
	}
}

// FuzzLinkChains links packets a hostile home could send: any IDs, times
// and keys. No panic, and every sequence holds at least MinPackets of the
// packets it was given, none twice.
func FuzzLinkChains(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 0xff, 0xff, 0, 0, 0, 2, 0, 0, 0, 0, 0, 3, 0, 1})
	f.Add(make([]byte, 60))
	f.Fuzz(func(t *testing.T, data []byte) {
		var pkts []schemas.Packet
		for ; len(data) >= 6; data = data[6:] {
			p := out(time.Duration(binary.BigEndian.Uint16(data))*time.Second, binary.BigEndian.Uint16(data[2:]), int32(data[4]), uint16(data[5]))
			pkts = append(pkts, p)
		}
		cfg := DefaultChains()
		total := 0
		for _, c := range LinkChains(pkts, cfg) {
			if c.Packets < cfg.MinPackets || len(c.Keys) == 0 || c.Last < c.First {
				t.Fatalf("sequence of %d packets, %d keys, from %d to %d", c.Packets, len(c.Keys), c.First, c.Last)
			}
			total += c.Packets
		}
		if total > len(pkts) {
			t.Fatalf("%d packets in the sequences, %d given", total, len(pkts))
		}
	})
}

// TestChainsCountBeyondNAPT counts real units beyond the emulated NAPT by
// their IP ID sequences (the model and eligibility learned per home from
// the captures it did not draw on): the types whose stacks number every
// packet from one counter are eligible and counted within 10 %, those that
// number each connection apart (Linux: D-Link, WeMo, Hue) are not eligible.
func TestChainsCountBeyondNAPT(t *testing.T) {
	hc, err := NewWANHostCounter(context.Background(), realhometest.Devices(t), DefaultChains())
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"D-LinkSensor", "WeMoSwitch", "HueBridge"} {
		if ok, one, captures := hc.ChainEligible(typ, nil); ok {
			t.Errorf("%s eligible: %d of %d captures form one sequence", typ, one, captures)
		}
	}
	for _, typ := range []string{"Lightify", "EdnetGateway"} {
		if ok, one, captures := hc.ChainEligible(typ, nil); !ok {
			t.Fatalf("%s not eligible: %d of %d captures form one sequence", typ, one, captures)
		}
		pts, err := hc.RunChains(context.Background(), HostsConfig{Type: typ, Units: []int{1, 4, 8}, Homes: 5, Others: 3, Duration: 100 * time.Second, Seed: 1, Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pts {
			if e, _ := Err(p.Count, p.Units); e > 0.1 || len(p.Count) != 5 {
				t.Errorf("%s, n = %d: counted %v of %v (%.1f %% off, %d homes unnamed)", typ, p.N, p.Count, p.Units, 100*e, p.Unnamed)
			}
		}
	}
	if _, err := (&HostCounter{}).RunChains(context.Background(), HostsConfig{Type: "Lightify"}); err == nil {
		t.Error("a LAN counter counted IP ID sequences")
	}
}

// wanModel counts unit A (its captures form one IP ID sequence each) by
// its sequences beyond a NAPT; unit B's stack numbers each connection
// apart, so B is never counted.
func wanModel(t testing.TB) *HostModel {
	t.Helper()
	m, err := ReadHostModel(strings.NewReader(`{"version":3,
	 "chains":{"max_step":64,"max_idle":60000000000,"min_packets":3},
	 "units":[{"name":"A","members":["A"],"signature":["6/9292/60"],"one_sequence":true},{"name":"B","members":["B"],"signature":["6/443/80"]}],
	 "captures":[{"unit":0,"keys":["6/9292/60","17/53/60"]},{"unit":1,"keys":["6/443/80","17/53/60"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// wanHome is 60 s beyond a NAPT: two units of A, each numbering all it
// sends from one counter (from IDs 100 and 30000), a unit of B whose every
// connection is numbered apart, a server answering, and IPv6 packets,
// which carry no ID.
func wanHome() []schemas.Packet {
	var pkts []schemas.Packet
	for i := range 60 {
		ts := time.Duration(i) * time.Second
		answer := out(ts, uint16(200+i), 40000, 60)
		answer.SrcIP, answer.SrcPort = netip.MustParseAddr("198.51.100.7"), 9292
		v6 := out(ts+time.Millisecond, 0, 9292, 60)
		v6.SrcIP = netip.MustParseAddr("2001:db8::2")
		pkts = append(pkts, answer, v6)
		if i%10 == 0 {
			for j := range 4 {
				pkts = append(pkts, out(ts+time.Duration(2+j)*time.Millisecond, uint16(5000+1000*i+j), 443, 80))
			}
		}
		pkts = append(pkts, out(ts+10*time.Millisecond, uint16(100+2*i), 9292, 60), out(ts+11*time.Millisecond, uint16(30000+i), 9292, 60))
	}
	return pkts
}

// TestLiveHomeSequences counts a WAN tap beyond a NAPT with a model of
// Chains: A's two sequences are two units in every window, B's
// connections and the server's answers are no unit, IPv6 packets are
// unlinked; and a table saved half way and restored judges the rest as
// one never stopped.
func TestLiveHomeSequences(t *testing.T) {
	m := wanModel(t)
	pkts := wanHome()
	h, err := NewLiveHome(m, DefaultLiveConfig())
	if err != nil {
		t.Fatal(err)
	}
	var whole []schemas.SeenWindow
	for i := range pkts {
		whole = append(whole, h.Add(&pkts[i])...)
	}
	whole = append(whole, h.Flush()...)
	if len(whole) < 5 {
		t.Fatalf("%d windows over a minute", len(whole))
	}
	for _, w := range whole {
		full := w.StartNs >= 0 && w.EndNs <= int64(60*time.Second)
		if w.Method != MethodIPID || countOf(w, "A") > 2 || countOf(w, "B") != 0 || (full && (countOf(w, "A") != 2 || w.Hosts != 2)) {
			t.Errorf("window %d-%d s: %+v, want A twice and B never (method %s)", w.StartNs/1e9, w.EndNs/1e9, w, MethodIPID)
		}
	}
	if h.Unlinked != 60 || h.NoMAC != 0 {
		t.Errorf("%d packets unlinked, %d without MAC: want the 60 IPv6 ones unlinked", h.Unlinked, h.NoMAC)
	}

	half, err := NewLiveHome(m, DefaultLiveConfig())
	if err != nil {
		t.Fatal(err)
	}
	var resumed []schemas.SeenWindow
	for i := range pkts[:len(pkts)/2] {
		resumed = append(resumed, half.Add(&pkts[i])...)
	}
	st, err := half.State(9)
	if err != nil {
		t.Fatal(err)
	}
	back, seq, err := RestoreLiveHome(m, DefaultLiveConfig(), st)
	if err != nil || seq != 9 {
		t.Fatalf("restore: %v (seq %d)", err, seq)
	}
	for i := len(pkts) / 2; i < len(pkts); i++ {
		resumed = append(resumed, back.Add(&pkts[i])...)
	}
	resumed = append(resumed, back.Flush()...)
	a, _ := json.Marshal(whole)
	b, _ := json.Marshal(resumed)
	if !bytes.Equal(a, b) {
		t.Errorf("restored half way, the windows differ:\n%s\n%s", a, b)
	}
	// And the tables themselves: the same sequences under the same ids.
	if x, y := mustState(t, h), mustState(t, back); !bytes.Equal(x, y) {
		t.Errorf("restored half way, the final tables differ:\n%s\n%s", x, y)
	}
	// A table of sequences is refused by a LAN model's counter.
	if _, _, err := RestoreLiveHome(handModel(t), DefaultLiveConfig(), st); err == nil || !strings.Contains(err.Error(), "hosts learn --wan") {
		t.Errorf("a WAN table restored under a LAN model: %v", err)
	}
}

func mustState(t *testing.T, h *LiveHome) []byte {
	t.Helper()
	st, err := h.State(1)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// BenchmarkLiveHomeSequences is the WAN counter's cost per packet: 30
// units behind one address, each numbering its packets from a counter of
// its own, 200 packets a second; and a hostile home whose every packet
// bears a random ID, so every packet opens a sequence and the linker holds
// its bound of open ones, each packet compared with all of them.
func BenchmarkLiveHomeSequences(b *testing.B) {
	m := wanModel(b)
	for _, hostile := range []bool{false, true} {
		name := map[bool]string{false: "units", true: "hostile"}[hostile]
		b.Run(name, func(b *testing.B) {
			pkts := make([]schemas.Packet, 0, 1<<16)
			x := uint32(1)
			for i := range cap(pkts) {
				unit := i % 30
				id := uint16(2000*unit + i/30)
				if hostile {
					x ^= x << 13
					x ^= x >> 17
					x ^= x << 5
					id = uint16(x)
				}
				pkts = append(pkts, out(time.Duration(i)*5*time.Millisecond, id, 9292, 60))
			}
			benchLiveHome(b, m, pkts)
		})
	}
}

// TestLiveHomeSequencesKeepUnits: a WAN tap's table full of servers'
// sequences (twenty new servers between two of a unit's packets, a table
// of eight hosts) still keeps the unit that sends once every 15 s: the
// sequences that count nothing are evicted first, so the unit is counted in
// every window it sends in once its sequence holds three packets.
func TestLiveHomeSequencesKeepUnits(t *testing.T) {
	cfg := DefaultLiveConfig()
	cfg.MaxHosts = 8
	h, err := NewLiveHome(wanModel(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var pkts []schemas.Packet
	var sent []int64
	for i := range 20 {
		ts := time.Duration(i) * 15 * time.Second
		pkts = append(pkts, out(ts, uint16(100+i), 9292, 60))
		sent = append(sent, int64(ts))
		for s := range 20 {
			for j := range 3 {
				p := out(ts+time.Duration(1+s)*time.Second+time.Duration(j)*time.Millisecond, uint16(1000*s+j+1), 40000, 60)
				p.SrcIP = netip.AddrFrom4([4]byte{198, 51, byte(i), byte(s + 1)})
				pkts = append(pkts, p)
			}
		}
	}
	windows := feed(t, h, pkts)
	windows = append(windows, h.Flush()...)
	judged := 0
	for _, w := range windows {
		if w.EndNs <= sent[2] || !anyIn(sent, w.StartNs, w.EndNs) {
			continue // before its third packet, or a window it did not send in
		}
		judged++
		if countOf(w, "A") != 1 {
			t.Errorf("window %d-%d s: A counted %d times, want once", w.StartNs/1e9, w.EndNs/1e9, countOf(w, "A"))
		}
	}
	if judged < 20 || h.Hosts() > cfg.MaxHosts {
		t.Errorf("%d windows judged with A sending, %d hosts held (at most %d)", judged, h.Hosts(), cfg.MaxHosts)
	}
}
