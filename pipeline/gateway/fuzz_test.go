package gateway

import (
	"context"
	"encoding/binary"
	"io"
	"slices"
	"testing"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/features"
)

// FuzzParseHeader: any frame is refused or parsed, never a panic, and a
// parsed header's offsets lie inside the frame, so that the emulator and
// the pairing may slice by them.
func FuzzParseHeader(f *testing.F) {
	eth := func(et uint16, ip []byte) []byte {
		b := make([]byte, 14, 14+len(ip))
		binary.BigEndian.PutUint16(b[12:], et)
		return append(b, ip...)
	}
	v4 := make([]byte, 40)
	v4[0], v4[9] = 0x45, ProtoTCP
	binary.BigEndian.PutUint16(v4[2:], 40)
	udp4 := append([]byte(nil), v4[:28]...)
	udp4[9] = ProtoUDP
	v6 := make([]byte, 48)
	v6[0], v6[6] = 0x60, 0 // hop-by-hop, then UDP
	v6[40] = ProtoUDP
	f.Add(uint16(features.LinkTypeEthernet), eth(0x0800, v4))
	f.Add(uint16(features.LinkTypeEthernet), eth(0x86dd, v6))
	f.Add(uint16(features.LinkTypeRaw), udp4)
	f.Add(uint16(features.LinkTypeLinuxSLL), append(make([]byte, 16), v4...))
	f.Add(uint16(features.LinkTypeEthernet), eth(0x8100, append([]byte{0, 1, 0x08, 0}, v4...)))
	f.Fuzz(func(t *testing.T, lt uint16, data []byte) {
		h, err := ParseHeader(features.LinkType(lt), data)
		if err != nil {
			return
		}
		if h.IPStart < 0 || h.IPStart > len(data) {
			t.Fatalf("IP starts at %d of a %d-byte frame", h.IPStart, len(data))
		}
		if h.Later {
			return
		}
		ip := data[h.IPStart:]
		if h.L4 > len(ip) || h.HdrLen > len(ip) {
			t.Fatalf("transport at %d, header %d bytes, of %d IP bytes", h.L4, h.HdrLen, len(ip))
		}
		if h.HasPorts && (h.Proto == ProtoTCP || h.Proto == ProtoUDP) && h.L4+8 > len(ip) {
			t.Fatalf("ports read past the frame: transport at %d of %d", h.L4, len(ip))
		}
	})
}

// frames is a Source over frames in memory.
type frames struct{ fs []capture.Frame }

func (s *frames) Next() (capture.Frame, error) {
	if len(s.fs) == 0 {
		return capture.Frame{}, io.EOF
	}
	f := s.fs[0]
	s.fs = s.fs[1:]
	return f, nil
}
func (s *frames) Close() error { return nil }

// FuzzEmulateFrame puts one fuzzed frame among a generated home's first
// packets and emulates the gateway on them, under NAPT and VPN: the
// emulator slices frames by the parsed header's lengths, and a frame whose
// IP length is shorter than its header must be refused or forwarded,
// never a panic.
func FuzzEmulateFrame(f *testing.F) {
	path, home := generated(f)
	all := capturetest.Frames(f, path)
	base := all[:min(len(all), 64)]
	for _, fr := range base[:8] {
		f.Add(fr.Data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, mode := range []Mode{NAPT, VPN} {
			fs := slices.Clone(base)
			at := len(data) % len(fs)
			fs[at].Data = data
			fs[at].CI.CaptureLength, fs[at].CI.Length = len(data), len(data)
			_, _ = Emulate(context.Background(), &frames{fs}, home, Config{Mode: mode}, io.Discard, io.Discard)
		}
	})
}

// TestSecurityGatewayShortIPLength: an IPv4 packet whose total length is
// shorter than its headers (0 under segmentation offload) made the
// emulator slice past the packet and panic. It is now counted as
// undecodable and the rest of the capture goes through.
func TestSecurityGatewayShortIPLength(t *testing.T) {
	path, home := generated(t)
	base := capturetest.Frames(t, path)[:64]
	before := map[Mode]Stats{}
	for _, mode := range []Mode{NAPT, VPN} {
		st, err := Emulate(context.Background(), &frames{slices.Clone(base)}, home, Config{Mode: mode}, io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		before[mode] = st
	}
	refused := 0
	for i := range base {
		if d := base[i].Data; len(d) < 34 || d[14]>>4 != 4 {
			continue
		}
		for _, n := range []uint16{0, 10, 20, 27} {
			fs := slices.Clone(base)
			d := slices.Clone(fs[i].Data)
			binary.BigEndian.PutUint16(d[16:], n)
			fs[i].Data = d
			for _, mode := range []Mode{NAPT, VPN} {
				st, err := Emulate(context.Background(), &frames{fs}, home, Config{Mode: mode}, io.Discard, io.Discard)
				if err != nil {
					t.Fatalf("packet %d with IP length %d, %s: %v", i, n, mode, err)
				}
				b := before[mode]
				if st.Undecodable < b.Undecodable || st.Crossing > b.Crossing || st.Crossing+st.Local+st.Undecodable != st.LANPackets {
					t.Errorf("packet %d with IP length %d, %s: %+v, untouched %+v: a packet went missing from the counts", i, n, mode, st, b)
				}
				if st.Undecodable > b.Undecodable {
					refused++
				}
			}
		}
	}
	if refused == 0 {
		t.Error("no packet with a short IP length was counted as undecodable")
	}
	t.Logf("attack: IPv4 total lengths 0, 10, 20 and 27 (shorter than the headers) through the gateway emulator | expected: counted undecodable, no panic, no packet lost from the counts | observed: %d emulations counted the packet undecodable, none panicked", refused)
}
