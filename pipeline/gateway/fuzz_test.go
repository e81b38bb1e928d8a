package gateway

import (
	"encoding/binary"
	"testing"

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
