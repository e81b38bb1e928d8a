package heartbeat

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSteadyCountsUnitsBehindOneAddress: n units beyond a NAPT share the
// one address but each keeps its connection on an external port of its
// own; a request (few packets, or packets over a short span) and a
// connection of another service are no unit.
func TestSteadyCountsUnitsBehindOneAddress(t *testing.T) {
	wan := netip.MustParseAddr("203.0.113.1")
	server := netip.MustParseAddr("52.18.200.165")
	svc := Service{Transport: 6, Port: 50443}
	conn := func(port int32, s Service, from time.Duration, every time.Duration, k int) []FlowPacket {
		var out []FlowPacket
		for i := range k {
			out = append(out, FlowPacket{TsNs: int64(from + time.Duration(i)*every), Flow: Flow{Service: s, Src: wan, Dst: server, SrcPort: port}})
		}
		return out
	}
	for n := 1; n <= 10; n++ {
		var pkts []FlowPacket
		for u := range n {
			pkts = append(pkts, conn(int32(40000+u), svc, time.Duration(u)*time.Second, 7300*time.Millisecond, 6)...)
		}
		pkts = append(pkts, conn(50000, svc, 0, time.Second, 2)...)                                  // a SYN and a reset
		pkts = append(pkts, conn(50001, svc, 0, time.Second, 5)...)                                  // a request: 5 packets over 4 s
		pkts = append(pkts, conn(50002, Service{Transport: 17, Port: 123}, 0, 10*time.Second, 6)...) // NTP
		if got := Steady(pkts, []Service{svc}, DefaultSteady(), 0, int64(time.Hour)); got != n {
			t.Fatalf("%d units counted as %d", n, got)
		}
		// The window bounds what is counted: before the first beat of
		// any unit, nothing.
		if got := Steady(pkts, []Service{svc}, DefaultSteady(), int64(time.Hour), int64(2*time.Hour)); got != 0 {
			t.Fatalf("an empty window counted %d units", got)
		}
	}
	per := SteadyServices(conn(40000, svc, 0, 5*time.Second, 4), DefaultSteady())
	if len(per) != 1 || per[svc] != 1 {
		t.Fatalf("one capture's steady connections: %v, want one of %s", per, svc)
	}
}

func TestEligibilityRule(t *testing.T) {
	a := Service{Transport: 17, Port: 80}
	b := Service{Transport: 6, Port: 50443}
	c := Service{Transport: 6, Port: 443}
	captures := func(k, of int, m map[Service]int) []map[Service]int {
		var out []map[Service]int
		for i := range of {
			if i < k {
				out = append(out, m)
			} else {
				out = append(out, map[Service]int{})
			}
		}
		return out
	}
	per := map[string][]map[Service]int{
		"bulb":    captures(10, 10, map[Service]int{a: 1}),
		"plug1":   captures(9, 10, map[Service]int{b: 1}),
		"plug2":   captures(10, 10, map[Service]int{b: 1}),
		"hub":     captures(10, 10, map[Service]int{c: 1}),
		"sensor":  captures(10, 10, map[Service]int{c: 2}),
		"camera":  captures(8, 10, map[Service]int{c: 1}),
		"speaker": captures(0, 10, nil),
	}
	got := map[string]TypeService{}
	for _, ts := range Eligibility(per, DefaultSteady()) {
		got[ts.Device] = ts
	}
	if ts := got["bulb"]; !ts.Eligible || ts.Service != a || ts.One != 10 || !slices.Equal(ts.Family, []string{"bulb"}) {
		t.Errorf("bulb: %+v, want eligible by %s alone", ts, a)
	}
	if ts := got["plug1"]; !ts.Eligible || !slices.Equal(ts.Family, []string{"plug1", "plug2"}) {
		t.Errorf("plug1: %+v, want eligible (9 of 10 is 90 %%) with plug2 as its family", ts)
	}
	// The hub keeps one connection each, but the camera (not always) and
	// the sensor (two each) keep some of the same service: counting the
	// service would count them too.
	if ts := got["hub"]; ts.Eligible || !strings.Contains(ts.Why, "also keeps steady connections of tcp/443") {
		t.Errorf("hub: %+v, want not eligible, naming a type that shares its service", ts)
	}
	delete(per, "camera")
	for _, ts := range Eligibility(per, DefaultSteady()) {
		if ts.Device == "hub" && (ts.Eligible || !strings.Contains(ts.Why, "sensor also keeps")) {
			t.Errorf("hub beside the sensor: %+v, want not eligible, naming the sensor", ts)
		}
	}
	if ts := got["camera"]; ts.Eligible || !strings.Contains(ts.Why, "8 of 10") {
		t.Errorf("camera: %+v, want not eligible at 8 of 10", ts)
	}
	if ts := got["speaker"]; ts.Eligible || ts.Why == "" {
		t.Errorf("speaker: %+v, want not eligible with a reason", ts)
	}
}
