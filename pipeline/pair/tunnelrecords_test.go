package pair

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// tcpSegment is a raw IPv4 frame of one TCP segment and the packet record
// a decoder makes of it, as the agent hands both to a TunnelTracker.
func tcpSegment(t *testing.T, ts time.Duration, src, dst string, sport, dport uint16, seq uint32, flags uint8, payload []byte) ([]byte, schemas.Packet) {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: seq, Window: 512,
		ACK: true, FIN: flags&tcpFIN != 0, RST: flags&tcpRST != 0}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	ci := gopacket.CaptureInfo{Timestamp: time.Unix(1_700_000_000, 0).Add(ts), CaptureLength: len(data), Length: len(data)}
	var p schemas.Packet
	if err := features.NewDecoder(features.HomeConfig{}).Decode(features.LinkTypeIPv4, data, ci, 0, &p); err != nil {
		t.Fatal(err)
	}
	return data, p
}

// TestTunnelTrackerKeepsTunnels: a WAN tap sees whatever the internet
// sends, for weeks. A flood of single segments that look like OpenVPN
// records (a scan) fills the tracker's table, but neither pushes out the
// tunnel at work nor keeps a reconnecting tunnel from being followed; a
// FIN or RST forgets a stream, and the table stays bounded.
func TestTunnelTrackerKeepsTunnels(t *testing.T) {
	tr := NewTunnelTracker()
	const client, server = "203.0.113.7", "198.51.100.1"
	record := rec(600, 9<<3)
	seqs := map[uint16]uint32{}
	// send passes one record of the tunnel from the client's port sport
	// and reports whether its records were told.
	send := func(ts time.Duration, sport uint16, flags uint8) bool {
		data, p := tcpSegment(t, ts, client, server, sport, 1194, 1000+seqs[sport], flags, record)
		seqs[sport] += uint32(len(record))
		tr.Observe(features.LinkTypeIPv4, data, &p)
		return p.Tunnel.Known && p.Tunnel.Starts == 1 && len(p.Tunnel.Ends) == 1
	}
	for i := range 3 {
		if !send(time.Duration(i)*time.Millisecond, 40000, 0) {
			t.Fatalf("segment %d of the tunnel not told", i)
		}
	}
	// The flood: 3 s of single segments from 12,000 addresses and ports,
	// while the tunnel carries a record every 50 ms.
	const flood = 12_000
	at := 10 * time.Millisecond
	for i := range flood {
		at += 250 * time.Microsecond
		src := net.IPv4(100, 64, byte(i>>8), byte(i)).String()
		data, p := tcpSegment(t, at, src, server, uint16(1024+i), 443, 7, 0, record)
		tr.Observe(features.LinkTypeIPv4, data, &p)
		if n := len(tr.streams); n > maxTunnelStreams {
			t.Fatalf("after %d flood segments the tracker holds %d streams, more than %d", i+1, n, maxTunnelStreams)
		}
		if i%200 == 0 && !send(at, 40000, 0) {
			t.Fatalf("the tunnel at work stopped being followed after %d flood segments", i+1)
		}
	}
	if len(tr.streams) != maxTunnelStreams {
		t.Fatalf("the flood left %d streams, want a full table (%d): the test floods too little", len(tr.streams), maxTunnelStreams)
	}
	// The tunnel reconnects from a new port while the table is full.
	if !send(at+time.Millisecond, 40001, 0) || !send(at+2*time.Millisecond, 40001, 0) {
		t.Fatal("the reconnected tunnel is not followed while the table is full of flood segments")
	}
	// Its end forgets it: a RST, both directions; the old one's FIN.
	if _, ok := tr.streams[streamKey{netip.MustParseAddr(client), netip.MustParseAddr(server), 40000, 1194}]; !ok {
		t.Fatal("the first tunnel was forgotten before its FIN")
	}
	send(at+3*time.Millisecond, 40000, tcpFIN)
	data, p := tcpSegment(t, at+4*time.Millisecond, server, client, 1194, 40001, 1, tcpRST, nil)
	tr.Observe(features.LinkTypeIPv4, data, &p)
	for _, port := range []uint16{40000, 40001} {
		if _, ok := tr.streams[streamKey{netip.MustParseAddr(client), netip.MustParseAddr(server), port, 1194}]; ok {
			t.Errorf("the tunnel from port %d is still followed after its end", port)
		}
	}
	if len(tr.order) > 2*len(tr.streams)+64+1 {
		t.Errorf("the tracker's queue holds %d entries for %d streams", len(tr.order), len(tr.streams))
	}
}
