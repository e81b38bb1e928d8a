package homecount

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/heartbeat"
	"github.com/homemole/homemole/schemas"
)

const (
	tcpSYN = 0x02
	tcpACK = 0x10
	tcpPSH = 0x08
)

// seg is a TCP segment from sport to dport with flags.
func seg(sport, dport int32, flags uint16) schemas.Packet {
	p := pkt(0, 1, 6, dport, 60)
	p.SrcPort, p.TCPFlags = sport, flags
	return p
}

// TestServicePort keys a host's packets by the service they are of: a
// client's by the port it connects to, a server's answers by the port it
// serves, never by the client's pick of port.
func TestServicePort(t *testing.T) {
	udp := func(sport, dport int32) schemas.Packet {
		p := pkt(0, 1, 17, dport, 40)
		p.SrcPort = sport
		return p
	}
	icmp := pkt(0, 1, 1, schemas.NoPort, 64)
	icmp.SrcPort = schemas.NoPort
	var served servedPorts
	for _, c := range []struct {
		name string
		p    schemas.Packet
		want int32
	}{
		{"a client's SYN", seg(40000, 8443, tcpSYN), 8443},
		{"a client's segment", seg(40000, 8443, tcpACK|tcpPSH), 8443},
		{"an answer from a well-known port", seg(80, 51234, tcpACK|tcpPSH), ServedPort + 80},
		{"a SYN-ACK from a high port", seg(62910, 50077, tcpSYN|tcpACK), ServedPort + 62910},
		{"a segment from the port it served", seg(62910, 50222, tcpACK), ServedPort + 62910},
		{"a client's segment from another high port", seg(50222, 62910, tcpACK), 62910},
		{"a UDP answer from a well-known port", udp(53, 40001), ServedPort + 53},
		{"UDP between two high ports", udp(1900, 40001), 40001},
		{"UDP between two low ports", udp(68, 67), 67},
		{"ICMP", icmp, schemas.NoPort},
	} {
		if got := hostKey(&c.p, &served).Port; got != c.want {
			t.Errorf("%s: port %d, want %d", c.name, got, c.want)
		}
	}
	// A host's served ports are bounded: a host that answers from ever
	// new ports is not remembered for all of them.
	for port := int32(10000); port < 10000+2*maxServed; port++ {
		p := seg(port, 40000, tcpSYN|tcpACK)
		hostKey(&p, &served)
	}
	if len(served) != maxServed {
		t.Errorf("%d served ports, want the bound %d", len(served), maxServed)
	}
}

// TestLiveHomeServerStaysAUnit: a unit that serves (a bridge answering
// the phone's app) answers thousands of connections, each from a client
// port of its own. Its keys stay the few its answers are, so it never
// passes the bound on a host's keys and stays counted; keyed by the
// client's port it would hold a key per connection and be taken for a
// general-purpose computer.
func TestLiveHomeServerStaysAUnit(t *testing.T) {
	m, err := ReadHostModel(strings.NewReader(`{"version":3,
	 "units":[{"name":"Bridge","members":["Bridge"],"signature":["6/@80/260"]},{"name":"B","members":["B"],"signature":["6/443/60"]}],
	 "captures":[{"unit":0,"keys":["6/@80/260","6/@80/40","17/53/60"]},{"unit":1,"keys":["6/443/60","17/53/60"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewLiveHome(m, DefaultLiveConfig())
	if err != nil {
		t.Fatal(err)
	}
	var ws []schemas.SeenWindow
	const conns = 5000
	for i := range conns {
		ts := time.Duration(i) * 100 * time.Millisecond
		client := int32(32768 + i%28000)
		for j, length := range []uint16{40, 260, 40} {
			p := pkt(ts+time.Duration(j)*time.Millisecond, 1, 6, client, length)
			p.SrcPort, p.TCPFlags = 80, tcpACK
			if j == 0 {
				p.TCPFlags |= tcpSYN
			}
			ws = append(ws, h.Add(&p)...)
		}
	}
	host := h.hosts[mac(1)]
	if host.saturated || len(host.keys) != 2 {
		t.Fatalf("after %d connections the bridge holds %d keys (saturated %v), want its 2", conns, len(host.keys), host.saturated)
	}
	if len(ws) < 40 {
		t.Fatalf("%d windows over %d connections", len(ws), conns)
	}
	for _, w := range ws {
		if countOf(w, "Bridge") != 1 || w.Unknown {
			t.Fatalf("window %+v: want the bridge counted once", w)
		}
	}
	// The table a detector saves keeps the ports served: restored, an
	// answer without a SYN-ACK before it is still the service's.
	st, err := h.State(1)
	if err != nil {
		t.Fatal(err)
	}
	back, _, err := RestoreLiveHome(m, DefaultLiveConfig(), st)
	if err != nil {
		t.Fatal(err)
	}
	if got := back.hosts[mac(1)].served; !slices.Equal(got, servedPorts{80}) {
		t.Errorf("restored served ports %v, want [80]", got)
	}
}

// FuzzKeyText reads any text as a key: one read is written back as text
// that reads as the same key.
func FuzzKeyText(f *testing.F) {
	for _, s := range []string{"17/69/55", "6/@80/260", "1/-1/64", "6/@-1/2", "6/65616/3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var k KeyText
		if k.UnmarshalText([]byte(s)) != nil {
			return
		}
		text, err := k.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back KeyText
		if err := back.UnmarshalText(text); err != nil || heartbeat.Key(back) != heartbeat.Key(k) {
			t.Fatalf("%q read as %+v, written as %q, read back as %+v (%v)", s, k, text, back, err)
		}
	})
}
