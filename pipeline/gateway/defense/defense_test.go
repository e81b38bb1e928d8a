package defense

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/homegen/homegentest"
)

var (
	wanIP    = net.IP{203, 0, 113, 2}
	remoteIP = net.IP{198, 51, 100, 7}
)

// frame builds a WAN frame of IP length n: UDP, or TCP with payload.
func frame(t testing.TB, out, tcp bool, n int) []byte {
	t.Helper()
	src, dst := wanIP, remoteIP
	sp, dp := 40001, 443
	if !out {
		src, dst, sp, dp = dst, src, dp, sp
	}
	ip := &layers.IPv4{Version: 4, TTL: 64, SrcIP: src, DstIP: dst, Id: 7}
	var l4 gopacket.SerializableLayer
	payload := n - 20 - 8
	if tcp {
		ip.Protocol = layers.IPProtocolTCP
		tl := &layers.TCP{SrcPort: layers.TCPPort(sp), DstPort: layers.TCPPort(dp + 1), Seq: 1000, ACK: true, Ack: 5, Window: 500}
		tl.SetNetworkLayerForChecksum(ip)
		l4, payload = tl, n-20-20
	} else {
		ip.Protocol = layers.IPProtocolUDP
		ul := &layers.UDP{SrcPort: layers.UDPPort(sp), DstPort: layers.UDPPort(dp)}
		ul.SetNetworkLayerForChecksum(ip)
		l4 = ul
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, EthernetType: layers.EthernetTypeIPv4}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, l4, gopacket.Payload(bytes.Repeat([]byte{'x'}, payload))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// handmade is four real WAN packets over one second, 1816 wire bytes:
// UDP out 100 B at 0 ms, UDP in 200 B at 10 ms, TCP out 60 B at 20 ms,
// UDP out 1400 B at 1000 ms (IP lengths; each frame 14 bytes more).
// applyHandmade applies the defence text names to the handmade capture
// behind a NAPT gateway; one that does not parse or apply fails the test.
func applyHandmade(t *testing.T, text string, seed uint64) (in, out []Packet, cost Cost) {
	t.Helper()
	spec, err := ParseSpec(text)
	if err != nil {
		t.Fatal(err)
	}
	in = handmade(t)
	out, cost, err = Apply(in, spec, Options{Mode: gateway.NAPT, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	return in, out, cost
}

func handmade(t testing.TB) []Packet {
	ms := int64(time.Millisecond)
	t0 := int64(1_700_000_000) * 1e9
	var pkts []Packet
	for i, p := range []struct {
		at       int64
		out, tcp bool
		n        int
	}{{0, true, false, 100}, {10, false, false, 200}, {20, true, true, 60}, {1000, true, false, 1400}} {
		f := frame(t, p.out, p.tcp, p.n)
		pkts = append(pkts, Packet{TS: t0 + p.at*ms, Frame: f, Wire: len(f), LAN: int64(10 + i)})
	}
	return pkts
}

// TestHandmadeCosts checks each defence's cost on the handmade capture
// against figures worked out by hand (in the comments).
func TestHandmadeCosts(t *testing.T) {
	ms := time.Millisecond
	for _, c := range []struct {
		spec                 string
		packets, dummies     int64
		bytes                int64
		mean, p99            time.Duration
		wantIPLen            []int // the real packets' IP lengths after
		wantKBps, wantByteOH float64
	}{
		// No defence: nothing changes.
		{"none", 4, 0, 1816, 0, 0, []int{100, 200, 60, 1400}, 0, 0},
		// Round up to 128: 128+256+128+1408 IP bytes, +56 wire = 1976.
		{"pad:128", 4, 0, 1976, 0, 0, []int{128, 256, 128, 1408}, 0.160, 160.0 / 1816},
		// Every packet 1500 IP, 1514 wire: 4*1514 = 6056.
		{"pad:mtu", 4, 0, 6056, 0, 0, []int{1500, 1500, 1500, 1500}, 4.240, 4240.0 / 1816},
		// Slots at 0, 100, ..., 1000 ms, upstream at even ones: the real
		// packets take slots 0 (out), 1 (in, after the out packet of its
		// flow), 2 (out) and 10 (out): waits 0, 90, 180, 0 ms, mean 67.5,
		// p99 the largest. Slots 3-9 are dummies copying the last packet
		// their way: in (214 wire) at 3, 5, 7, 9, out (the TCP one, 74)
		// at 4, 6, 8: 1816 + 4*214 + 3*74 = 2894.
		{"cbr:10", 11, 7, 2894, 67500 * time.Microsecond, 180 * ms, []int{100, 200, 60, 1400}, 1.078, 1078.0 / 1816},
		// The same 11 packets, all 1514 wire bytes: 16654.
		{"pad:mtu+cbr:10", 11, 7, 16654, 67500 * time.Microsecond, 180 * ms, []int{1500, 1500, 1500, 1500}, 14.838, 14838.0 / 1816},
		{"cbr:10+pad:mtu", 11, 7, 16654, 67500 * time.Microsecond, 180 * ms, []int{1500, 1500, 1500, 1500}, 14.838, 14838.0 / 1816},
	} {
		t.Run(c.spec, func(t *testing.T) {
			in, out, cost := applyHandmade(t, c.spec, 1)
			if cost.RealPackets != 4 || cost.RealBytes != 1816 || cost.Seconds != 1 {
				t.Errorf("undefended: %d packets, %d bytes, %g s; want 4, 1816, 1", cost.RealPackets, cost.RealBytes, cost.Seconds)
			}
			if cost.Packets != c.packets || cost.Dummies != c.dummies || cost.Bytes != c.bytes {
				t.Errorf("defended: %d packets (%d dummies), %d bytes; want %d (%d), %d", cost.Packets, cost.Dummies, cost.Bytes, c.packets, c.dummies, c.bytes)
			}
			if cost.LatencyMean != c.mean || cost.LatencyP99 != c.p99 {
				t.Errorf("latency mean %s p99 %s, want %s and %s", cost.LatencyMean, cost.LatencyP99, c.mean, c.p99)
			}
			if d := cost.KBps() - c.wantKBps; d > 1e-9 || d < -1e-9 {
				t.Errorf("%g KB/s, want %g", cost.KBps(), c.wantKBps)
			}
			if d := cost.ByteOverhead() - c.wantByteOH; d > 1e-9 || d < -1e-9 {
				t.Errorf("byte overhead %g, want %g", cost.ByteOverhead(), c.wantByteOH)
			}
			if po := cost.PacketOverhead(); po != float64(c.dummies)/4 {
				t.Errorf("packet overhead %g, want %g", po, float64(c.dummies)/4)
			}
			var lens []int
			for _, p := range keepsReal(t, in, out) {
				lens = append(lens, ipLen(p.Frame))
				checkFrame(t, p)
			}
			if !slices.Equal(lens, c.wantIPLen) {
				t.Errorf("real packets' IP lengths %v, want %v", lens, c.wantIPLen)
			}
		})
	}
}

// TestSpanKeepsSending: with Options.Span longer than the capture, the
// shaper goes on sending dummies after the last real packet until the span
// ends, the cost is over the span, and a Span shorter than the capture
// changes nothing.
func TestSpanKeepsSending(t *testing.T) {
	spec, err := ParseSpec("pad:mtu+cbr:10")
	if err != nil {
		t.Fatal(err)
	}
	in := handmade(t)
	_, short, err := Apply(in, spec, Options{Mode: gateway.NAPT, Seed: 1, Span: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if short.Packets != 11 || short.Seconds != 1 {
		t.Errorf("a span shorter than the capture: %d packets over %g s, want the capture's 11 over 1 s", short.Packets, short.Seconds)
	}
	pad, err := ParseSpec("pad:mtu")
	if err != nil {
		t.Fatal(err)
	}
	if _, c, err := Apply(in, pad, Options{Mode: gateway.NAPT, Seed: 1, Span: 3 * time.Second}); err != nil || c.Packets != 4 || c.Seconds != 1 {
		t.Errorf("padding alone over a 3 s span: %d packets over %g s (%v), want the capture's 4 over 1 s: it sends nothing of its own", c.Packets, c.Seconds, err)
	}
	out, cost, err := Apply(in, spec, Options{Mode: gateway.NAPT, Seed: 1, Span: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	keepsReal(t, in, out)
	// Slots every 100 ms from 0 to 3000 ms: 31, the 4 real ones among them.
	if cost.Packets != 31 || cost.Dummies != 27 || cost.Seconds != 3 {
		t.Errorf("over a 3 s span: %d packets (%d dummies) over %g s, want 31 (27) over 3 s", cost.Packets, cost.Dummies, cost.Seconds)
	}
	if got, want := out[len(out)-1].TS-out[0].TS, int64(3*time.Second); got != want {
		t.Errorf("the defended capture spans %d ns, want %d", got, want)
	}
	// 31 packets of 1514 bytes less the 1816 real ones, over 3 s.
	if d := cost.KBps() - (31*1514-1816)/3e3; d > 1e-9 || d < -1e-9 {
		t.Errorf("%g KB/s over the span, want %g", cost.KBps(), (31*1514-1816)/3e3)
	}
	for _, p := range out {
		if ipLen(p.Frame) != 1500 {
			t.Fatalf("a packet of IP length %d under pad:mtu", ipLen(p.Frame))
		}
	}
}

// keepsReal checks that out holds every real packet of in once, none
// earlier than it left undefended and none before an earlier packet of its
// flow (flowOf: under the VPN the carried LAN packet's), with out in time
// order; it returns
// the real packets of out in the order of in. Packets of two flows may
// trade places: a shaper per direction lets a reply wait behind its
// direction's queue while the other direction sends.
func keepsReal(t *testing.T, in, out []Packet) []Packet {
	t.Helper()
	of := map[int64][]int{} // LAN packet -> its places in in, in order
	for k, p := range in {
		of[p.LAN] = append(of[p.LAN], k)
	}
	got := make([]*Packet, len(in))
	lastOf := map[flowKey]int{}
	for i, p := range out {
		if i > 0 && p.TS < out[i-1].TS {
			t.Fatalf("defended packet %d at %d is before packet %d at %d", i, p.TS, i-1, out[i-1].TS)
		}
		if p.Dummy() {
			continue
		}
		places := of[p.LAN]
		if len(places) == 0 {
			t.Fatalf("defended packet %d carries LAN packet %d, which no real packet left undefended carried (or carries it again)", i, p.LAN)
		}
		k := places[0]
		of[p.LAN] = places[1:]
		got[k] = &out[i]
		f := flowOf(in[k])
		if j, ok := lastOf[f]; ok && j > k {
			t.Fatalf("real packet %d (LAN packet %d) left after real packet %d of its flow, which came after it: reordered within a flow", k, p.LAN, j)
		}
		lastOf[f] = k
		if p.TS < in[k].TS {
			t.Fatalf("real packet %d leaves at %d, before its undefended time %d", k, p.TS, in[k].TS)
		}
	}
	real := make([]Packet, len(in))
	for k, p := range got {
		if p == nil {
			t.Fatalf("real packet %d (LAN packet %d) is gone after the defence", k, in[k].LAN)
		}
		real[k] = *p
	}
	return real
}

// checkFrame checks that a defended frame still decodes with lengths and
// checksums that agree with its size.
func checkFrame(t *testing.T, p Packet) {
	t.Helper()
	h, err := gateway.ParseHeader(features.LinkTypeEthernet, p.Frame)
	if err != nil {
		t.Fatalf("defended frame does not parse: %v", err)
	}
	if p.Wire != max(60, 14+h.Len) || len(p.Frame) < 14+h.Len {
		t.Fatalf("frame of %d bytes, wire %d, IP length %d", len(p.Frame), p.Wire, h.Len)
	}
	ip := p.Frame[14 : 14+h.Len]
	if s := gateway.Checksum(ip[:h.HdrLen], 0); s != 0 {
		t.Fatalf("IPv4 header checksum does not verify (%#x)", s)
	}
	if h.Proto == gateway.ProtoUDP && int(binary.BigEndian.Uint16(ip[h.L4+4:])) != h.Len-h.L4 {
		t.Fatalf("UDP length %d in an IP packet of %d", binary.BigEndian.Uint16(ip[h.L4+4:]), h.Len)
	}
	pk := gopacket.NewPacket(p.Frame, layers.LayerTypeEthernet, gopacket.Default)
	if pk.ErrorLayer() != nil {
		t.Fatalf("defended frame: %v", pk.ErrorLayer().Error())
	}
}

func TestParseSpec(t *testing.T) {
	for text, want := range map[string]Spec{
		"pad:128":        {Pad: 128},
		"pad:mtu+cbr:20": {Pad: MTU, CBR: 20},
		"stp:2.5":        {STP: 2.5},
		"mimic:Aria":     {Mimic: "Aria"},
		"vpn-pad+cbr:5":  {VPNPad: true, CBR: 5},
		"none":           {},
	} {
		got, err := ParseSpec(text)
		if err != nil {
			t.Errorf("%s: %v", text, err)
			continue
		}
		got.text, want.text = "", ""
		if got != want {
			t.Errorf("%s: %+v, want %+v", text, got, want)
		}
	}
	for _, bad := range []string{"pad", "pad:0", "pad:1501", "pad:abc", "cbr:0", "cbr:-1", "cbr:NaN", "cbr:1e9", "stp:",
		"mimic:", "mimic:../x", "vpn-pad:3", "pad:128+pad:64", "shape:3", "pad:128+"} {
		if s, err := ParseSpec(bad); err == nil {
			t.Errorf("%q parsed as %+v, want an error", bad, s)
		}
	}
}

func TestVPNPadNeedsVPN(t *testing.T) {
	spec, _ := ParseSpec("vpn-pad")
	if _, _, err := Apply(handmade(t), spec, Options{Mode: gateway.NAPT}); err == nil {
		t.Fatal("vpn-pad on the NAPT view: no error")
	}
}

// TestMimicNeedsTraffic: mimic without the device's traffic is an error,
// not a silent no-op.
func TestMimicNeedsTraffic(t *testing.T) {
	spec, _ := ParseSpec("mimic:Aria")
	if _, _, err := Apply(handmade(t), spec, Options{Mode: gateway.NAPT}); err == nil {
		t.Fatal("mimic without traffic to imitate: no error")
	}
}

// generatedWAN is a generated home's WAN view through the emulator.
func generatedWAN(t *testing.T, mode gateway.Mode, seed uint64) []Packet {
	t.Helper()
	h, home := homegentest.Generate(t, homegen.Config{Seed: seed, Sessions: 1, SessionDuration: 2 * time.Minute}, t.TempDir())
	src := capturetest.Open(t, h.Files[0])
	defer src.Close()
	pkts, _, err := WANView(context.Background(), src, home, gateway.Config{Mode: mode, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkts) < 100 {
		t.Fatalf("generated home: only %d WAN packets", len(pkts))
	}
	return pkts
}

// TestKeepsEveryRealPacket runs every defence on a generated home's NAPT
// and VPN views: every real packet stays, in order, and the written
// capture and truth read back to the same packets.
func TestKeepsEveryRealPacket(t *testing.T) {
	for _, mode := range []gateway.Mode{gateway.NAPT, gateway.VPN} {
		in := generatedWAN(t, mode, 5)
		other := generatedWAN(t, mode, 9)
		for i, p := range in {
			if p.hasInner != (mode == gateway.VPN) {
				t.Fatalf("%s: WAN packet %d knows its LAN packet's flow: %v", mode, i, p.hasInner)
			}
		}
		for _, text := range []string{"pad:128", "pad:mtu", "cbr:20", "stp:30", "mimic:other", "vpn-pad", "pad:mtu+cbr:50+stp:10"} {
			if text == "vpn-pad" && mode != gateway.VPN {
				continue
			}
			spec, err := ParseSpec(text)
			if err != nil {
				t.Fatal(err)
			}
			out, cost, err := Apply(in, spec, Options{Mode: mode, Seed: 2, Mimic: [][]Packet{other}})
			if err != nil {
				t.Fatalf("%s %s: %v", mode, text, err)
			}
			keepsReal(t, in, out)
			if spec.CBR > 0 || spec.STP > 0 || spec.Mimic != "" {
				if cost.Dummies == 0 {
					t.Errorf("%s %s: no dummy packets", mode, text)
				}
			}
			if spec.CBR > 0 {
				// Shaping comes after cover traffic and before padding:
				// what leaves takes turns, out, in, out, ..., whatever the
				// home sent.
				d := defender{opt: Options{WANAddr: gateway.DefaultConfig().WANAddr}}
				for i, p := range out {
					if got := d.dir(p.Frame); got != 1-i%2 {
						t.Fatalf("%s %s: packet %d goes %s, want the directions to take turns", mode, text, i, map[int]string{0: "in", 1: "out"}[got])
					}
				}
			}
			if spec.VPNPad {
				// 14 + 28 + 1524, AES-256-GCM's tunnel packet of 1500 bytes.
				for _, p := range out {
					if p.Wire != 1566 {
						t.Fatalf("%s %s: a %d-byte frame, want every one 1566", mode, text, p.Wire)
					}
				}
			}
			for _, p := range out {
				checkFrame(t, p)
			}
			var wan, truth bytes.Buffer
			if err := Write(out, &wan, &truth); err != nil {
				t.Fatal(err)
			}
			lan, err := gateway.ReadTruth(&truth, "truth")
			if err != nil {
				t.Fatal(err)
			}
			if len(lan) != len(out) {
				t.Fatalf("%s %s: truth has %d rows for %d packets", mode, text, len(lan), len(out))
			}
			for i := range lan {
				if lan[i] != out[i].LAN && !(lan[i] < 0 && out[i].Dummy()) {
					t.Fatalf("%s %s: truth row %d says %d, packet carries %d", mode, text, i, lan[i], out[i].LAN)
				}
			}
			t.Logf("%s %s: %d real packets, %s", mode, text, len(in), cost)
		}
	}
}
