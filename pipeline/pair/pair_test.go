package pair

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/internal/tzsptest"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/homegen/homegentest"
	"github.com/homemole/homemole/schemas"
)

const sentinelDir = "../../../shared/data/iot-sentinel-dev"

func sentinelFiles(t *testing.T) []string {
	sentineldata.Need(t)
	files, err := filepath.Glob(filepath.Join(sentinelDir, "*", "*.pcap"))
	if err != nil || len(files) == 0 {
		t.Skipf("IoT Sentinel captures not available in %s", sentinelDir)
	}
	return files
}

// tally adds up one configuration's pairing over many captures.
type tally struct {
	wan, paired, correct, lanCrossing int
	// sameHost counts WAN packets paired with a LAN packet of the right
	// LAN host, if not the right packet: what a label by device needs.
	sameHost int
}

func (s *tally) add(r Result, truth []int64, hosts []netip.Addr) {
	c, n := Score(r.Pairs, truth)
	s.wan += n
	s.correct += c
	for i, l := range r.Pairs {
		if l >= 0 && i < len(truth) && truth[i] >= 0 && hosts[l] == hosts[truth[i]] {
			s.sameHost++
		}
	}
	s.paired += r.Paired
	s.lanCrossing += r.LANCrossing
}

func (s tally) accuracy() float64 { return float64(s.correct) / float64(max(s.wan, 1)) }

// emulated is the WAN capture and the ground truth the emulator makes of
// the LAN capture at lanPath.
func emulated(t *testing.T, lanPath string, home features.HomeConfig, cfg gateway.Config) (wan, truth *bytes.Buffer) {
	t.Helper()
	src := capturetest.Open(t, lanPath)
	defer src.Close()
	wan, truth = new(bytes.Buffer), new(bytes.Buffer)
	if _, err := gateway.Emulate(context.Background(), src, home, cfg, wan, truth); err != nil {
		t.Fatalf("emulate %s: %v", lanPath, err)
	}
	return wan, truth
}

// emulateAndPair runs the emulator on a LAN capture and pairs the result
// back, returning the pairing and the ground truth.
func emulateAndPair(t *testing.T, lanPath string, home features.HomeConfig, gcfg gateway.Config, pcfg Config) (Result, []int64, []netip.Addr) {
	t.Helper()
	wan, truth := emulated(t, lanPath, home, gcfg)
	checkDecodes(t, lanPath, wan.Bytes())
	want, err := gateway.ReadTruth(truth, "truth")
	if err != nil {
		t.Fatal(err)
	}
	lan := capturetest.Open(t, lanPath)
	defer lan.Close()
	w, err := capture.NewReader(bytes.NewReader(wan.Bytes()), "wan")
	if err != nil {
		t.Fatal(err)
	}
	pcfg.Home = home
	res, err := Pair(context.Background(), lan, w, pcfg)
	if err != nil {
		t.Fatalf("pair %s: %v", lanPath, err)
	}
	return res, want, lanHosts(t, lanPath, home)
}

// lanHosts names, per LAN packet, its end inside the home.
func lanHosts(t *testing.T, path string, home features.HomeConfig) []netip.Addr {
	var out []netip.Addr
	for _, fr := range capturetest.Frames(t, path) {
		h, _ := gateway.ParseHeader(fr.LinkType, fr.Data)
		a := h.Src
		if !inNets(home.LANNets, a) {
			a = h.Dst
		}
		out = append(out, a)
	}
	return out
}

type scenario struct {
	name   string
	gw     gateway.Config
	pair   Config
	target float64
}

func scenarios() []scenario {
	return []scenario{
		{"napt", gateway.Config{Mode: gateway.NAPT}, Config{Mode: gateway.NAPT}, 0.999},
		{"vpn-gcm", gateway.Config{Mode: gateway.VPN, Cipher: gateway.AES256GCM}, Config{Mode: gateway.VPN}, 0.995},
		{"vpn-cbc", gateway.Config{Mode: gateway.VPN, Cipher: gateway.AES256CBC}, Config{Mode: gateway.VPN}, 0.995},
		// With reordering the jitter (1 ms) may swap packets of one
		// direction closer together than itself, and swapped packets of
		// the same size cannot be told apart by anything the tunnel
		// shows: the figure is reported, the floor only catches
		// regressions.
		{"vpn-gcm-reorder", gateway.Config{Mode: gateway.VPN, Cipher: gateway.AES256GCM, Reorder: true}, Config{Mode: gateway.VPN}, 0.75},
		{"vpn-cbc-reorder", gateway.Config{Mode: gateway.VPN, Cipher: gateway.AES256CBC, Reorder: true}, Config{Mode: gateway.VPN}, 0.75},
		// A gateway that loses 0.2 % of what it should send, and a tunnel
		// that sends keepalives of its own: both leave packets unpaired on
		// one side. A lost packet inside a burst of same-size packets
		// closer together than the jitter shifts the rest of the burst by
		// one, and nothing the tunnel shows tells which one was lost: the
		// VPN figures are reported, the floor only catches regressions.
		{"napt-lossy", gateway.Config{Mode: gateway.NAPT, Loss: 0.002}, Config{Mode: gateway.NAPT}, 0.999},
		{"vpn-gcm-lossy", gateway.Config{Mode: gateway.VPN, Cipher: gateway.AES256GCM, Loss: 0.002, VPNPing: 10 * time.Second}, Config{Mode: gateway.VPN}, 0.99},
		{"vpn-cbc-lossy", gateway.Config{Mode: gateway.VPN, Cipher: gateway.AES256CBC, Loss: 0.002, VPNPing: 10 * time.Second}, Config{Mode: gateway.VPN}, 0.99},
		// WireGuard: its transport data messages, one to one in the
		// counter's order, the port (51820) found in the WAN capture.
		{"vpn-wireguard", gateway.Config{Mode: gateway.VPN, Cipher: gateway.WireGuard}, Config{Mode: gateway.VPN}, 0.995},
		{"vpn-wireguard-reorder", gateway.Config{Mode: gateway.VPN, Cipher: gateway.WireGuard, Reorder: true}, Config{Mode: gateway.VPN}, 0.75},
		{"vpn-wireguard-lossy", gateway.Config{Mode: gateway.VPN, Cipher: gateway.WireGuard, Loss: 0.002, VPNPing: 10 * time.Second}, Config{Mode: gateway.VPN}, 0.99},
		// OpenVPN over TCP: records coalesced into and split across
		// segments, paired by record boundaries; a segment's truth is the
		// packet of the record its first byte is in.
		{"vpn-tcp-gcm", gateway.Config{Mode: gateway.VPN, Cipher: gateway.AES256GCM, VPNTCP: true}, Config{Mode: gateway.VPN}, 0.995},
		{"vpn-tcp-cbc", gateway.Config{Mode: gateway.VPN, Cipher: gateway.AES256CBC, VPNTCP: true}, Config{Mode: gateway.VPN}, 0.995},
		{"vpn-tcp-gcm-lossy", gateway.Config{Mode: gateway.VPN, Cipher: gateway.AES256GCM, VPNTCP: true, Loss: 0.002, VPNPing: 10 * time.Second}, Config{Mode: gateway.VPN}, 0.99},
		// An OpenVPN server on a port of its own, found in the WAN capture.
		{"vpn-gcm-port-4711", gateway.Config{Mode: gateway.VPN, Cipher: gateway.AES256GCM, VPNServer: netip.MustParseAddrPort("198.51.100.10:4711")}, Config{Mode: gateway.VPN}, 0.995},
	}
}

func TestPairingSentinel(t *testing.T) {
	pairScenarios(t, "sentinel", "files", sentinelFiles(t), features.PrivateHome(), 0)
}

func TestPairingGeneratedHome(t *testing.T) {
	h, home := homegentest.Generate(t, homegen.Config{Seed: 7}, t.TempDir())
	pairScenarios(t, "generated home", "sessions", h.Files, home, 100)
}

// pairScenarios sends every LAN capture of files through each scenario's
// gateway, the i-th seeded firstSeed+i, pairs the two sides and holds the
// scenario's accuracy over all of them to its target. Behind a VPN it also
// judges the paper's window rule and, where the tunnel reorders, pairing in
// capture order, and wants the emulated cipher and server port detected
// wherever anything was paired. source and unit name the captures in the
// log ("sentinel", "files").
func pairScenarios(t *testing.T, source, unit string, files []string, home features.HomeConfig, firstSeed uint64) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			var all, paper, timeOrder tally
			for i, f := range files {
				sc.gw.Seed = firstSeed + uint64(i)
				r, truth, hosts := emulateAndPair(t, f, home, sc.gw, sc.pair)
				all.add(r, truth, hosts)
				if sc.gw.Mode == gateway.VPN {
					if r.Cipher != sc.gw.Cipher && r.Paired > 0 {
						t.Errorf("%s: detected cipher %s, emulated %s", f, r.Cipher, sc.gw.Cipher)
					}
					port := map[bool]uint16{false: 1194, true: gateway.WireGuardPort}[sc.gw.Cipher == gateway.WireGuard]
					if sc.gw.VPNServer.IsValid() {
						port = sc.gw.VPNServer.Port()
					}
					if r.Paired > 0 && r.VPNPort != port {
						t.Errorf("%s: detected server port %d, emulated %d", f, r.VPNPort, port)
					}
					pc := sc.pair
					pc.Method = MethodWindow
					r, truth, hosts = emulateAndPair(t, f, home, sc.gw, pc)
					paper.add(r, truth, hosts)
					if sc.gw.Reorder {
						pc.Method, pc.TimeOrder = MethodExact, true
						r, truth, hosts = emulateAndPair(t, f, home, sc.gw, pc)
						timeOrder.add(r, truth, hosts)
					}
				}
			}
			t.Logf("%s %s: %d %s, %d WAN packets, paired %.4f, accuracy %.4f (target %.3f)",
				source, sc.name, len(files), unit, all.wan, float64(all.paired)/float64(max(all.wan, 1)), all.accuracy(), sc.target)
			if timeOrder.wan > 0 {
				t.Logf("%s %s, capture order instead of the tunnel's send order: accuracy %.4f", source, sc.name, timeOrder.accuracy())
			}
			if paper.wan > 0 {
				t.Logf("%s %s, the paper's window rule: accuracy %.4f, right LAN host %.4f", source, sc.name, paper.accuracy(), float64(paper.sameHost)/float64(paper.wan))
			}
			if all.wan == 0 {
				t.Fatal("no packet crossed the gateway")
			}
			if all.accuracy() < sc.target {
				t.Errorf("accuracy %.4f below %.3f", all.accuracy(), sc.target)
			}
		})
	}
}

func TestCSVRoundTrip(t *testing.T) {
	pairs := []int64{3, -1, 0, 7}
	var b bytes.Buffer
	if err := gateway.WriteTruth(&b, pairs); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != "wan_index,lan_index\n0,3\n1,\n2,0\n3,7\n" {
		t.Fatalf("CSV %q", got)
	}
	back, err := gateway.ReadTruth(&b, "pairs")
	if err != nil {
		t.Fatal(err)
	}
	if c, n := Score(back, pairs); c != n || n != 4 {
		t.Fatalf("round trip: %v", back)
	}
	if _, err := gateway.ReadTruth(bytes.NewBufferString("wan_index,lan_index\nx,1\n"), "bad.csv"); err == nil {
		t.Fatal("a bad row was accepted")
	}
}

// checkDecodes runs the feature decoder over a WAN capture: every packet
// must decode.
func checkDecodes(t *testing.T, name string, wan []byte) {
	t.Helper()
	dec := features.NewDecoder(features.HomeConfig{})
	var p schemas.Packet
	for _, fr := range capturetest.FramesOf(t, "WAN capture of "+name, wan) {
		if err := dec.Decode(fr.LinkType, fr.Data, fr.CI, fr.Offset, &p); err != nil {
			t.Fatalf("WAN capture of %s: %v", name, err)
		}
	}
}

// pairRewritten emulates the gateway in mode on a LAN capture, writes its
// WAN capture again as rewrite does (another link, another capture point)
// and pairs that with the LAN capture; it returns the pairing and the
// emulator's ground truth.
func pairRewritten(t *testing.T, lanPath string, home features.HomeConfig, mode gateway.Mode, rewrite func([]capture.Frame, *pcapgo.Writer)) (Result, []int64) {
	t.Helper()
	wan, truth := emulated(t, lanPath, home, gateway.Config{Mode: mode, Cipher: gateway.AES256CBC})
	var out bytes.Buffer
	w := pcapgo.NewWriterNanos(&out)
	rewrite(capturetest.FramesOf(t, "wan", wan.Bytes()), w)
	lan := capturetest.Open(t, lanPath)
	defer lan.Close()
	src, err := capture.NewReader(bytes.NewReader(out.Bytes()), "rewritten")
	if err != nil {
		t.Fatal(err)
	}
	res, err := Pair(context.Background(), lan, src, Config{Mode: mode, Home: home})
	if err != nil {
		t.Fatal(err)
	}
	want, err := gateway.ReadTruth(truth, "truth")
	if err != nil {
		t.Fatal(err)
	}
	return res, want
}

// writeFrame writes data as a frame with ci's time, whole.
func writeFrame(t *testing.T, w *pcapgo.Writer, ci gopacket.CaptureInfo, data []byte) {
	t.Helper()
	ci.CaptureLength, ci.Length = len(data), len(data)
	if err := w.WritePacket(ci, data); err != nil {
		t.Fatal(err)
	}
}

// TestRawIPWAN pairs a WAN capture taken as raw IP (as on a tunnel or
// router interface) instead of Ethernet.
func TestRawIPWAN(t *testing.T) {
	h, home := homegentest.Generate(t, homegen.Config{Seed: 4, Sessions: 1, SessionDuration: 2 * time.Minute}, t.TempDir())
	for _, mode := range []gateway.Mode{gateway.NAPT, gateway.VPN} {
		res, want := pairRewritten(t, h.Files[0], home, mode, func(frames []capture.Frame, w *pcapgo.Writer) {
			if err := w.WriteFileHeader(65535, layers.LinkTypeRaw); err != nil {
				t.Fatal(err)
			}
			for _, fr := range frames {
				ip := fr.Data[14:]
				// Ethernet padding is not part of the IP packet.
				if l := int(ip[2])<<8 | int(ip[3]); l < len(ip) {
					ip = ip[:l]
				}
				writeFrame(t, w, fr.CI, ip)
			}
		})
		if c, n := Score(res.Pairs, want); c != n || n == 0 {
			t.Errorf("%s over raw IP: %d of %d right", mode, c, n)
		}
	}
}

// TestMirroredWAN pairs a WAN capture a collector took of a mirror's TZSP
// stream (full-size frames in two fragments): every WAN packet is paired
// as in the capture itself, and the second fragments, the mirror's own
// packets to the collector, with none.
func TestMirroredWAN(t *testing.T) {
	h, home := homegentest.Generate(t, homegen.Config{Seed: 4, Sessions: 1, SessionDuration: 2 * time.Minute}, t.TempDir())
	for _, mode := range []gateway.Mode{gateway.NAPT, gateway.VPN} {
		var at []int // the mirrored capture's frame of each WAN frame
		rest := 0
		res, want := pairRewritten(t, h.Files[0], home, mode, func(frames []capture.Frame, w *pcapgo.Writer) {
			if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
				t.Fatal(err)
			}
			n := 0
			for i, fr := range frames {
				for k, piece := range tzsptest.Sniffed(fr.Data, uint16(i)) {
					if k == 0 {
						at = append(at, n)
					} else {
						rest++
					}
					writeFrame(t, w, fr.CI, piece)
					n++
				}
			}
		})
		if rest == 0 {
			t.Fatalf("%s: no WAN frame was sent in two fragments: the test checks none", mode)
		}
		pairs := make([]int64, len(at))
		for i, j := range at {
			pairs[i] = res.Pairs[j]
		}
		if c, n := Score(pairs, want); c != n || n == 0 || res.Paired != n {
			t.Errorf("%s mirrored: %d of %d right, %d paired; want every WAN packet paired right and nothing else", mode, c, n, res.Paired)
		}
	}
}

func readRecords(t *testing.T, path string, home features.HomeConfig) []schemas.Packet {
	t.Helper()
	return capturetest.Packets(t, path, home)
}

// readAgentRecords is readRecords as a capture agent of batch version 3
// reads a WAN tap: a TunnelTracker tells each TCP segment's records.
func readAgentRecords(t *testing.T, path string, home features.HomeConfig) []schemas.Packet {
	t.Helper()
	src, err := capture.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dec, tr := features.NewDecoder(home), NewTunnelTracker()
	var out []schemas.Packet
	var p schemas.Packet
	for {
		fr, err := src.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if dec.Decode(fr.LinkType, fr.Data, fr.CI, fr.Offset, &p) != nil {
			continue
		}
		tr.Observe(fr.LinkType, fr.Data, &p)
		out = append(out, p)
	}
}

// TestRecordsAgreeWithTruth pairs the records a capture agent would publish
// (not the frames) and scores them against the emulator's ground truth.
func TestRecordsAgreeWithTruth(t *testing.T) {
	dir := t.TempDir()
	g, home := homegentest.Generate(t, homegen.Config{Seed: 7, Sessions: 1, SessionDuration: 5 * time.Minute}, dir)
	lan := readRecords(t, g.Files[0], home)
	for _, tc := range []struct {
		mode   gateway.Mode
		cipher gateway.Cipher
		want   float64
		tcp    bool
	}{{gateway.NAPT, "", 0.999, false}, {gateway.VPN, gateway.AES256GCM, 0.995, false}, {gateway.VPN, gateway.AES256CBC, 0.995, false},
		{gateway.VPN, gateway.WireGuard, 0.995, false}, {gateway.VPN, gateway.AES256GCM, 0.995, true}, {gateway.VPN, gateway.AES256CBC, 0.995, true}} {
		gcfg := gateway.DefaultConfig()
		gcfg.Mode, gcfg.Cipher, gcfg.Seed, gcfg.VPNTCP = tc.mode, tc.cipher, 3, tc.tcp
		wanPath := filepath.Join(dir, string(tc.mode)+string(tc.cipher)+map[bool]string{true: "-tcp"}[tc.tcp]+".pcap")
		wf, err := os.Create(wanPath)
		if err != nil {
			t.Fatal(err)
		}
		truthBuf := new(bytes.Buffer)
		src, err := capture.OpenFile(g.Files[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := gateway.Emulate(context.Background(), src, home, gcfg, wf, truthBuf); err != nil {
			t.Fatal(err)
		}
		src.Close()
		wf.Close()
		truth, err := gateway.ReadTruth(truthBuf, "truth")
		if err != nil {
			t.Fatal(err)
		}
		wan := readRecords(t, wanPath, home)
		if tc.tcp {
			// Records carry no payload: without the tunnel records of
			// batch version 3, a TCP tunnel's records cannot be found,
			// which must be said rather than paired wrong.
			if _, err := Records(lan, wan, Config{Mode: tc.mode, Home: home}); !errors.Is(err, errNoTCPPayload) {
				t.Errorf("a TCP tunnel from version 2 records: %v, want %v", err, errNoTCPPayload)
			}
			wan = readAgentRecords(t, wanPath, home)
		}
		// Detection of the cipher is part of what is tested: leave it out.
		res, err := Records(lan, wan, Config{Mode: tc.mode, Home: home})
		if err != nil {
			t.Fatal(err)
		}
		byOffset := make([]int64, len(truth))
		for i := range byOffset {
			byOffset[i] = -1
		}
		for j, l := range res.Pairs {
			if l >= 0 {
				byOffset[wan[j].Offset] = int64(lan[l].Offset)
			}
		}
		correct, total := Score(byOffset, truth)
		acc := float64(correct) / float64(total)
		t.Logf("%s %s: %d WAN records, paired %.2f %%, agree with the truth %.3f %% (cipher %s)", tc.mode, tc.cipher, total, 100*res.Rate(), 100*acc, res.Cipher)
		if len(wan) != len(truth) {
			t.Errorf("%d WAN records, %d truth rows", len(wan), len(truth))
		}
		if acc < tc.want {
			t.Errorf("%s: accuracy %.4f below %.4f", tc.mode, acc, tc.want)
		}
		if tc.mode == gateway.VPN && res.Cipher != tc.cipher {
			t.Errorf("detected cipher %s, the gateway used %s", res.Cipher, tc.cipher)
		}
	}
}

// TestCookedGatewayCapture pairs one tcpdump -i any capture of a NAPT
// gateway with itself as people would: its LAN side is the LAN capture,
// and its WAN interface, cut out (a capture of one interface, which the
// view reads whole, as its LAN or its WAN side) or read with OpenWANSide,
// the WAN capture: every
// datagram pairs. Given whole as the WAN capture, it is refused with the
// cut to make.
func TestCookedGatewayCapture(t *testing.T) {
	const n = 10
	path := capturetest.GatewayAny(t, n)
	cfg := Config{Mode: gateway.NAPT, Home: features.HomeConfig{LANNets: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}}, WANName: "gw.pcap"}

	lan, wan := capturetest.Open(t, path), capturetest.Open(t, path)
	defer lan.Close()
	defer wan.Close()
	if _, err := Pair(context.Background(), lan, wan, cfg); !errors.Is(err, capture.ErrNotWAN) || !strings.Contains(err.Error(), "tcpdump -r gw.pcap -w wan.pcap ifindex N, N one of its other interfaces: 3") {
		t.Fatalf("the whole capture as the WAN: %v", err)
	}

	// tcpdump -r gw.pcap -w wan.pcap ifindex 3, done by hand: the
	// frames of interface 3, still SLL2.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cut := raw[:24]
	for off := 24; off < len(raw); {
		l := int(binary.LittleEndian.Uint32(raw[off+8:]))
		if binary.BigEndian.Uint32(raw[off+16+4:]) == 3 {
			cut = append(cut, raw[off:off+16+l]...)
		}
		off += 16 + l
	}
	wanPath := filepath.Join(t.TempDir(), "wan.pcap")
	if err := os.WriteFile(wanPath, cut, 0o644); err != nil {
		t.Fatal(err)
	}
	lan, wan = capturetest.Open(t, path), capturetest.Open(t, wanPath)
	defer lan.Close()
	defer wan.Close()
	allPaired(t, "WAN interface cut out", lan, wan, cfg, 2*n)

	// Or both sides from the one capture (pair --any).
	lan = capturetest.Open(t, path)
	defer lan.Close()
	if wan, err = capture.OpenWANSide(path); err != nil {
		t.Fatal(err)
	}
	defer wan.Close()
	allPaired(t, "OpenWANSide", lan, wan, cfg, 2*n)
	// A capture of one interface read as a WAN side is read whole.
	lan = capturetest.Open(t, path)
	defer lan.Close()
	if wan, err = capture.OpenFileSide(wanPath, capture.SideWAN); err != nil {
		t.Fatal(err)
	}
	defer wan.Close()
	allPaired(t, "the cut interface as the WAN side", lan, wan, cfg, 2*n)
	if _, err := capture.OpenWANSide(wanPath); !errors.Is(err, capture.ErrNotWAN) {
		t.Errorf("OpenWANSide of a capture with no LAN side: %v", err)
	}
}

// TestGatewayInterfacesCapture pairs a NAPT gateway captured on its LAN
// and WAN interfaces into one pcapng file (dumpcap -i br-lan -i eth1) with
// itself, as pair --any does: its LAN side is the LAN capture and
// OpenWANSide its WAN, told apart by the packets forwarded between them;
// every WAN packet pairs right. Given whole as the WAN capture it is
// refused, with the tshark cut to make.
func TestGatewayInterfacesCapture(t *testing.T) {
	h, home := homegentest.Generate(t, homegen.Config{Seed: 5, Sessions: 1, SessionDuration: 2 * time.Minute}, t.TempDir())
	wan, truth := emulated(t, h.Files[0], home, gateway.Config{Mode: gateway.NAPT})
	var frames []capturetest.OnInterface
	for _, f := range capturetest.Frames(t, h.Files[0]) {
		frames = append(frames, capturetest.OnInterface{Frame: f, Iface: 1})
	}
	for _, f := range capturetest.FramesOf(t, "wan", wan.Bytes()) {
		frames = append(frames, capturetest.OnInterface{Frame: f, Iface: 0})
	}
	path := filepath.Join(t.TempDir(), "gw.pcapng")
	if err := os.WriteFile(path, capturetest.Interfaces(t, capturetest.Ethernet("eth1", "br-lan"), frames, 100*time.Millisecond), 0o644); err != nil {
		t.Fatal(err)
	}
	want, err := gateway.ReadTruth(truth, "truth")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Mode: gateway.NAPT, Home: home, WANName: "gw.pcapng"}

	lan, whole := capturetest.Open(t, path), capturetest.Open(t, path)
	defer lan.Close()
	defer whole.Close()
	if _, err := Pair(context.Background(), lan, whole, cfg); !errors.Is(err, capture.ErrNotWAN) || !strings.Contains(err.Error(), `tshark -r gw.pcapng -w wan.pcapng -Y 'frame.interface_name == "eth1"'`) {
		t.Fatalf("the whole capture as the WAN: %v", err)
	}

	lan = capturetest.Open(t, path)
	defer lan.Close()
	ws, err := capture.OpenWANSide(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	res, err := Pair(context.Background(), lan, ws, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c, n := Score(res.Pairs, want); c != n || n < 100 || res.Paired != n {
		t.Errorf("pairs from one capture of both interfaces: %d of %d right, %d paired; want every WAN packet paired right", c, n, res.Paired)
	}
}

func allPaired(t *testing.T, what string, lan, wan capture.Source, cfg Config, n int) {
	t.Helper()
	res, err := Pair(context.Background(), lan, wan, cfg)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	paired := 0
	for _, p := range res.Pairs {
		if p >= 0 {
			paired++
		}
	}
	if len(res.Pairs) != n || paired != n {
		t.Errorf("%s: %d of %d WAN packets paired, want all %d", what, paired, len(res.Pairs), n)
	}
}
