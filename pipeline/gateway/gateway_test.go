package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/homegen/homegentest"
	"github.com/homemole/homemole/schemas"
)

func TestPayloadSize(t *testing.T) {
	for _, c := range []struct {
		cipher Cipher
		inner  int
		want   int
	}{
		{AES256GCM, 40, 64},
		{AES256GCM, 1500, 1524},
		// 1 + 3 + 20 + 16 + pad16(4 + inner): 4+40 = 44 -> 48; 4+44 = 48 -> 64
		// (a whole block of padding); 4+1500 = 1504 -> 1520. The real
		// OpenVPN 2.6 of tools/gatewaylab sent these sizes.
		{AES256CBC, 40, 88},
		{AES256CBC, 43, 88},
		{AES256CBC, 44, 104},
		{AES256CBC, 1500, 1560},
		// 16 + pad16(inner) + 16: a keepalive is 32 bytes.
		{WireGuard, 0, 32},
		{WireGuard, 40, 80},
		{WireGuard, 48, 80},
		{WireGuard, 1420, 1456},
		{"none", 40, 0},
	} {
		if got := PayloadSize(c.cipher, c.inner); got != c.want {
			t.Errorf("PayloadSize(%s, %d) = %d, want %d", c.cipher, c.inner, got, c.want)
		}
	}
}

// generated returns a generated home's first session capture.
func generated(t testing.TB) (string, features.HomeConfig) {
	t.Helper()
	h, home := homegentest.Generate(t, homegen.Config{Seed: 3, Sessions: 1, SessionDuration: 3 * time.Minute}, t.TempDir())
	return h.Files[0], home
}

func emulate(t *testing.T, path string, home features.HomeConfig, cfg Config) ([]byte, []byte, Stats) {
	t.Helper()
	src := capturetest.Open(t, path)
	defer src.Close()
	var wan, truth bytes.Buffer
	st, err := Emulate(context.Background(), src, home, cfg, &wan, &truth)
	if err != nil {
		t.Fatalf("emulate %s: %v", path, err)
	}
	return wan.Bytes(), truth.Bytes(), st
}

func TestDeterministic(t *testing.T) {
	path, home := generated(t)
	for _, mode := range []Mode{NAPT, VPN} {
		w1, t1, _ := emulate(t, path, home, Config{Mode: mode, Seed: 5})
		w2, t2, _ := emulate(t, path, home, Config{Mode: mode, Seed: 5})
		if !bytes.Equal(w1, w2) || !bytes.Equal(t1, t2) {
			t.Errorf("%s: two runs with seed 5 differ", mode)
		}
		w3, _, _ := emulate(t, path, home, Config{Mode: mode, Seed: 6})
		if bytes.Equal(w1, w3) {
			t.Errorf("%s: seeds 5 and 6 give the same WAN capture", mode)
		}
	}
}

func TestTruncatedCapture(t *testing.T) {
	path, home := generated(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "cut.pcap")
	if err := os.WriteFile(cut, data[:len(data)/2+7], 0o644); err != nil {
		t.Fatal(err)
	}
	src := capturetest.Open(t, cut)
	defer src.Close()
	_, err = Emulate(context.Background(), src, home, Config{Mode: NAPT}, io.Discard, io.Discard)
	if !errors.Is(err, capture.ErrTruncated) {
		t.Fatalf("truncated capture: got %v, want an error wrapping capture.ErrTruncated", err)
	}
	if !strings.Contains(err.Error(), "cut.pcap") {
		t.Errorf("error %q does not name the input", err)
	}
}

// readTruth reads a ground-truth file the emulator wrote, through the
// format's one reader, and insists on its header: Emulate always writes it.
func readTruth(t *testing.T, b []byte) []int {
	t.Helper()
	if !bytes.HasPrefix(b, []byte(TruthHeader+"\n")) {
		t.Fatalf("truth file starts %q, want the header %q", b[:min(len(b), 40)], TruthHeader)
	}
	lanOf, err := ReadTruth(bytes.NewReader(b), "truth.csv")
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int, len(lanOf))
	for i, l := range lanOf {
		out[i] = int(l)
	}
	return out
}

// TestWANView checks the WAN captures of both modes: they decode without
// errors, every packet crosses, sizes, addresses, TTLs and checksums are
// what the gateway would produce.
func TestWANView(t *testing.T) {
	path, home := generated(t)
	lan := capturetest.Frames(t, path)
	cfg := DefaultConfig()
	for _, c := range []Config{{Mode: NAPT}, {Mode: VPN, Cipher: AES256GCM}, {Mode: VPN, Cipher: AES256CBC}, {Mode: VPN, Cipher: AES256CBC, Reorder: true},
		{Mode: VPN, Cipher: AES256GCM, VPNPing: 2 * time.Second, Loss: 0.01},
		{Mode: VPN, Cipher: WireGuard}, {Mode: VPN, Cipher: WireGuard, VPNPing: 2 * time.Second, Loss: 0.01}} {
		name := string(c.Mode) + "/" + string(c.Cipher)
		wanBytes, truthBytes, st := emulate(t, path, home, c)
		truth := readTruth(t, truthBytes)
		src, err := capture.NewReader(bytes.NewReader(wanBytes), "wan")
		if err != nil {
			t.Fatal(err)
		}
		dec := features.NewDecoder(features.HomeConfig{LANNets: []netip.Prefix{netip.PrefixFrom(cfg.WANAddr, 32)}})
		var p schemas.Packet
		n, lastTs, pings := 0, int64(0), 0
		ping, port := pingLen, uint16(1194)
		if c.Cipher == WireGuard {
			ping, port = 0, WireGuardPort
		}
		var wgCounter [2]uint64 // next counter per direction
		for ; ; n++ {
			fr, err := src.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := dec.Decode(fr.LinkType, fr.Data, fr.CI, fr.Offset, &p); err != nil {
				t.Fatalf("%s: WAN packet %d does not decode: %v", name, n, err)
			}
			if p.Direction == schemas.DirLocal {
				t.Fatalf("%s: WAN packet %d is not to or from the gateway", name, n)
			}
			ts := fr.CI.Timestamp.UnixNano()
			if ts < lastTs {
				t.Fatalf("%s: WAN packet %d is earlier than the one before", name, n)
			}
			lastTs = ts
			w, err := ParseHeader(fr.LinkType, fr.Data)
			if err != nil {
				t.Fatal(err)
			}
			if c.Cipher == WireGuard {
				// Type 4, reserved zeros, the counter of its direction.
				pl := fr.Data[w.IPStart+w.L4+8:]
				d := 0
				if p.Direction == schemas.DirOutbound {
					d = 1
				}
				if pl[0] != WireGuardData || pl[1]|pl[2]|pl[3] != 0 || binary.LittleEndian.Uint64(pl[8:16]) != wgCounter[d] {
					t.Fatalf("%s: WAN packet %d: WireGuard header % x, want type 4 and counter %d", name, n, pl[:16], wgCounter[d])
				}
				wgCounter[d]++
			}
			if truth[n] < 0 {
				// A keepalive: OpenVPN's ping, 16 bytes of plaintext;
				// WireGuard's, an empty packet.
				if c.Mode != VPN || c.VPNPing == 0 || w.Len-w.HdrLen-8 != PayloadSize(c.Cipher, ping) {
					t.Fatalf("%s: WAN packet %d has no LAN packet and is no VPN ping", name, n)
				}
				pings++
				continue
			}
			lf := lan[truth[n]]
			l, err := ParseHeader(lf.LinkType, lf.Data)
			if err != nil {
				t.Fatal(err)
			}
			out := p.Direction == schemas.DirOutbound
			dt := ts - lf.CI.Timestamp.UnixNano()
			if !out {
				dt = -dt
			}
			if c.Mode == VPN {
				if w.Proto != ProtoUDP || (w.DstPort != port && w.SrcPort != port) {
					t.Fatalf("%s: WAN packet %d is not over UDP %d", name, n, port)
				}
				if got, want := w.Len-w.HdrLen-8, PayloadSize(c.Cipher, l.Len); got != want {
					t.Fatalf("%s: WAN packet %d has payload %d, the size function says %d for inner %d", name, n, got, want, l.Len)
				}
				if dt <= 0 || dt > int64(cfg.VPNDelayMax) {
					t.Fatalf("%s: WAN packet %d is %v from its LAN packet", name, n, time.Duration(dt))
				}
			} else {
				if dt <= 0 || dt > int64(cfg.ForwardMax) {
					t.Fatalf("%s: WAN packet %d is %v from its LAN packet", name, n, time.Duration(dt))
				}
				checkNAPT(t, n, fr.Data, w, l, out, cfg.WANAddr)
			}
		}
		if pings != st.Pings || (c.VPNPing > 0 && pings == 0) {
			t.Fatalf("%s: %d pings, stats say %d", name, pings, st.Pings)
		}
		if n != st.WANPackets || n != len(truth) || n != st.Crossing+st.Pings || n == 0 {
			t.Fatalf("%s: %d WAN packets, stats say %d (%d crossing), truth has %d", name, n, st.WANPackets, st.Crossing, len(truth))
		}
		t.Logf("%s: %d LAN packets, %d crossed, %d local, %d lost, %d pings, %d mappings", name, st.LANPackets, st.Crossing, st.Local, st.Lost, st.Pings, st.Mappings)
	}
}

func checkNAPT(t *testing.T, n int, frame []byte, w, l Header, out bool, wan netip.Addr) {
	t.Helper()
	if w.Len != l.Len || w.ID != l.ID || w.Seq != l.Seq || w.Ack != l.Ack || w.Flags != l.Flags || w.Proto != l.Proto {
		t.Fatalf("WAN packet %d: a field NAPT keeps changed: %+v vs LAN %+v", n, w, l)
	}
	wantTTL := l.TTL - 1
	if !out {
		wantTTL = l.TTL + 1
	}
	if w.TTL != wantTTL {
		t.Fatalf("WAN packet %d: TTL %d, LAN %d, outbound %v", n, w.TTL, l.TTL, out)
	}
	if out && (w.Src != wan || w.Dst != l.Dst || w.DstPort != l.DstPort) || !out && (w.Dst != wan || w.Src != l.Src || w.SrcPort != l.SrcPort) {
		t.Fatalf("WAN packet %d: addresses %v -> %v, LAN %v -> %v", n, w.Src, w.Dst, l.Src, l.Dst)
	}
	if w.V6 {
		return
	}
	ip := frame[w.IPStart : w.IPStart+w.Len]
	if checksum(ip[:w.HdrLen], 0) != 0 {
		t.Fatalf("WAN packet %d: IPv4 header checksum wrong", n)
	}
	if w.Later || (w.Proto != ProtoTCP && w.Proto != ProtoUDP) {
		return
	}
	seg := ip[w.L4:]
	if w.Proto == ProtoUDP && binary.BigEndian.Uint16(seg[6:8]) == 0 {
		return
	}
	var pseudo uint32
	for i := 12; i < 20; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	pseudo += uint32(w.Proto) + uint32(len(seg))
	if c := checksum(seg, pseudo); c != 0 {
		t.Fatalf("WAN packet %d: transport checksum wrong (%#04x)", n, c)
	}
}

// emulateFrames runs the emulator, for a home on 192.168.1.0/24, over a
// capture of Ethernet frames sent at the times at from the start of 2024,
// and returns the WAN capture and the emulator's counts.
func emulateFrames(t *testing.T, cfg Config, frames [][]byte, at []time.Duration) ([]byte, Stats) {
	t.Helper()
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, b := range frames {
		ci := gopacket.CaptureInfo{Timestamp: start.Add(at[i]), CaptureLength: len(b), Length: len(b)}
		if err := w.WritePacket(ci, b); err != nil {
			t.Fatal(err)
		}
	}
	src, err := capture.NewReader(bytes.NewReader(buf.Bytes()), "lan.pcap")
	if err != nil {
		t.Fatal(err)
	}
	home := features.HomeConfig{LANNets: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}}
	var wan bytes.Buffer
	st, err := Emulate(context.Background(), src, home, cfg, &wan, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return wan.Bytes(), st
}

// TestPortReuse runs one UDP flow with a pause longer than the UDP
// timeout: the second burst gets a new mapping.
func TestPortReuse(t *testing.T) {
	lanMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x10}
	gwMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	sent := []time.Duration{0, time.Second, 2 * time.Second, 45 * time.Second}
	var frames [][]byte
	for i := range sent {
		eth := &layers.Ethernet{SrcMAC: lanMAC, DstMAC: gwMAC, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, Id: uint16(i),
			SrcIP: net.IP{192, 168, 1, 20}, DstIP: net.IP{93, 184, 216, 34}}
		udp := &layers.UDP{SrcPort: 40000, DstPort: 123}
		udp.SetNetworkLayerForChecksum(ip)
		sb := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(sb, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			eth, ip, udp, gopacket.Payload(make([]byte, 48))); err != nil {
			t.Fatal(err)
		}
		frames = append(frames, sb.Bytes())
	}
	_, st := emulateFrames(t, Config{Mode: NAPT, PortMin: 50000, PortMax: 50000}, frames, sent)
	if st.Mappings != 2 || st.Reused != 1 || st.WANPackets != 4 {
		t.Fatalf("stats %+v: want 2 mappings, the second reusing the expired one's port", st)
	}
}

// TestICMPErrorQuote sends a UDP probe out and gets a port unreachable
// back: on the WAN the error must quote the probe as it left, with the
// WAN address and port and checksums that hold.
func TestICMPErrorQuote(t *testing.T) {
	lanMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x10}
	gwMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	probeIP := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, Id: 7,
		SrcIP: net.IP{192, 168, 1, 20}, DstIP: net.IP{93, 184, 216, 34}}
	probeUDP := &layers.UDP{SrcPort: 40000, DstPort: 33434}
	probeUDP.SetNetworkLayerForChecksum(probeIP)
	quoted := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(quoted, opts, probeIP, probeUDP, gopacket.Payload(make([]byte, 12))); err != nil {
		t.Fatal(err)
	}
	probe := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(probe, opts, &layers.Ethernet{SrcMAC: lanMAC, DstMAC: gwMAC, EthernetType: layers.EthernetTypeIPv4},
		probeIP, probeUDP, gopacket.Payload(make([]byte, 12))); err != nil {
		t.Fatal(err)
	}
	reply := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(reply, opts, &layers.Ethernet{SrcMAC: gwMAC, DstMAC: lanMAC, EthernetType: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, TTL: 50, Protocol: layers.IPProtocolICMPv4, Id: 99, SrcIP: net.IP{93, 184, 216, 34}, DstIP: net.IP{192, 168, 1, 20}},
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, gopacket.Payload(quoted.Bytes()[:28])); err != nil {
		t.Fatal(err)
	}
	wan, _ := emulateFrames(t, Config{Mode: NAPT}, [][]byte{probe.Bytes(), reply.Bytes()}, []time.Duration{0, 30 * time.Millisecond})
	frames := capturetest.FramesOf(t, "wan", wan)
	if len(frames) != 2 {
		t.Fatalf("%d WAN packets, want 2", len(frames))
	}
	p, err := ParseHeader(features.LinkTypeEthernet, frames[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseHeader(features.LinkTypeEthernet, frames[1].Data)
	if err != nil {
		t.Fatal(err)
	}
	icmp := frames[1].Data[r.IPStart+r.L4 : r.IPStart+r.Len]
	if checksum(icmp, 0) != 0 {
		t.Fatal("ICMP checksum wrong after translation")
	}
	q := icmp[8:]
	if checksum(q[:20], 0) != 0 {
		t.Fatal("quoted IPv4 header checksum wrong after translation")
	}
	if got := netip.AddrFrom4([4]byte(q[12:16])); got != DefaultConfig().WANAddr {
		t.Errorf("quoted source %s, want the WAN address", got)
	}
	if got := binary.BigEndian.Uint16(q[20:22]); got != p.SrcPort {
		t.Errorf("quoted source port %d, the probe left from %d", got, p.SrcPort)
	}
	// The quoted UDP checksum must be the probe's WAN checksum.
	if got, want := binary.BigEndian.Uint16(q[26:28]), binary.BigEndian.Uint16(frames[0].Data[p.IPStart+p.L4+6:]); got != want {
		t.Errorf("quoted UDP checksum %#04x, the probe's on the WAN is %#04x", got, want)
	}
}

// TestEmulateInferredPublicLAN: on a LAN numbered in public addresses (an
// ISP that routes a /24 to the home) or in the ISPs' shared space, with the
// home side inferred from the capture as `gateway` does without flags, the
// hosts' DNS queries to the gateway's own LAN address stay home, as on a
// private LAN: only their 40 packets with the internet cross.
func TestEmulateInferredPublicLAN(t *testing.T) {
	const gw = "02:aa:00:00:00:01"
	for _, lan := range []string{"192.168.1.%d", "85.10.20.%d", "100.64.3.%d"} {
		net := fmt.Sprintf(lan, 0) + "/24"
		var raw [][]byte
		for i := range 10 {
			for j, h := range []string{"02:00:00:00:00:11", "02:00:00:00:00:12"} {
				me, gwIP := fmt.Sprintf(lan, 11+j), fmt.Sprintf(lan, 1)
				r := fmt.Sprintf("52.1.2.%d", (i+j)%5+1)
				for _, f := range []capturetest.IPFrame{
					{SrcMAC: h, DstMAC: gw, Src: me, Dst: gwIP, SrcPort: 33000, DstPort: 53},
					{SrcMAC: gw, DstMAC: h, Src: gwIP, Dst: me, SrcPort: 53, DstPort: 33000},
					{SrcMAC: h, DstMAC: gw, Src: me, Dst: r, SrcPort: 40000, DstPort: 443, TCP: true},
					{SrcMAC: gw, DstMAC: h, Src: r, Dst: me, SrcPort: 443, DstPort: 40000, TCP: true, TTL: 50},
				} {
					raw = append(raw, f.Bytes(t))
				}
			}
		}
		path := capturetest.WriteEthernet(t, raw)
		r, err := capture.InferHome(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		src := capturetest.Open(t, path)
		st, err := Emulate(t.Context(), src, r.Home, DefaultConfig(), io.Discard, io.Discard)
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("LAN %s: %s; %d crossing, %d local of %d", net, r.Brief(), st.Crossing, st.Local, st.LANPackets)
		if st.Crossing != 40 {
			t.Errorf("LAN %s: %d packets cross, want the 40 with the internet", net, st.Crossing)
		}
	}
}
