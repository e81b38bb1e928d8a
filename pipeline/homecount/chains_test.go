package homecount

import (
	"context"
	"encoding/binary"
	"net/netip"
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

func everyPacket(*schemas.Packet) bool { return true }

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
	chains := LinkChains(pkts, cfg, everyPacket)
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
	if got := len(LinkChains(conns, cfg, everyPacket)); got != 3 {
		t.Errorf("three connections numbered apart (and one of two packets): %d sequences, want 3", got)
	}

	// A minute and a second of silence ends a sequence: the next packet,
	// one ID on, starts another.
	idle := []schemas.Packet{out(0, 5, 80, 60), out(time.Second, 6, 80, 60), out(2*time.Second, 7, 80, 60),
		out(63*time.Second, 8, 80, 60), out(64*time.Second, 9, 80, 60), out(65*time.Second, 10, 80, 60)}
	if got := len(LinkChains(idle, cfg, everyPacket)); got != 2 {
		t.Errorf("a sequence silent for 61 s: %d sequences, want 2", got)
	}
	// Only what out says was sent outbound is linked.
	if got := len(LinkChains(pkts, cfg, func(*schemas.Packet) bool { return false })); got != 0 {
		t.Errorf("no packet outbound: %d sequences", got)
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
		for _, c := range LinkChains(pkts, cfg, everyPacket) {
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
