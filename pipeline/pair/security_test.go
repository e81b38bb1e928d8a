package pair

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/schemas"
)

// identical is n LAN packets and their n NAPT-translated WAN packets, all
// alike and all at one instant: what a home's agent can send to stall its
// labeler partition.
func identical(n int) (lan, wan []schemas.Packet, home features.HomeConfig) {
	home = features.HomeConfig{LANNets: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}}
	base := schemas.Packet{TsNs: 1.8e18, Direction: schemas.DirOutbound, Transport: gateway.ProtoTCP, IPLen: 52, IPID: 7,
		TCPSeq: 1000, TCPAck: 2000, TCPFlags: 0x10, SrcPort: 50000, DPort: 443,
		SrcIP: netip.MustParseAddr("192.168.1.10"), DstIP: netip.MustParseAddr("198.51.100.4")}
	w := base
	w.SrcIP, w.SrcPort = netip.MustParseAddr("203.0.113.1"), 61000
	for range n {
		lan, wan = append(lan, base), append(wan, w)
	}
	return lan, wan, home
}

// TestSecurityNAPTIdenticalPackets: pairing was quadratic in packets
// that share a signature and a time window (40k took 11.3 s).
func TestSecurityNAPTIdenticalPackets(t *testing.T) {
	lan, wan, home := identical(40000)
	// The best of three runs, so that a machine busy with other work does
	// not fail the test; quadratic pairing takes seconds on every run.
	took := time.Duration(math.MaxInt64)
	paired := 0
	for range 3 {
		start := time.Now()
		res, err := Records(lan, wan, Config{Mode: gateway.NAPT, Home: home})
		took = min(took, time.Since(start))
		if err != nil {
			t.Fatal(err)
		}
		paired = res.Paired
		if res.Paired != len(wan) || res.LANUnpaired != 0 {
			t.Fatalf("%d of %d paired, %d LAN packets left; want all, one to one", res.Paired, len(wan), res.LANUnpaired)
		}
		if took < 500*time.Millisecond {
			break
		}
	}
	t.Logf("attack: a home sends 40,000 identical packets at one instant to stall NAPT pairing | expected: paired one to one in under 0.5 s | observed: %d of %d paired in %v (best of up to 3 runs)", paired, len(wan), took.Round(time.Millisecond))
	if took > 500*time.Millisecond {
		t.Errorf("40k identical packets paired in %v, want under 0.5 s", took)
	}
}

func BenchmarkNAPTIdenticalPackets(b *testing.B) {
	lan, wan, home := identical(40000)
	for b.Loop() {
		if _, err := Records(lan, wan, Config{Mode: gateway.NAPT, Home: home}); err != nil {
			b.Fatal(err)
		}
	}
}
