package features

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/pcapgo"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/schemas"
)

// sentinelDir holds the IoT Sentinel captures: one folder per device, each
// with Setup-*.pcap files and the device's MAC in _iotdevice-mac.txt.
const sentinelDir = "../../../shared/data/iot-sentinel-dev"

// The captures' home: 10.10.10.0/24 behind a gateway at 10.10.10.1.
var sentinelHome = HomeConfig{
	LANNets:    []netip.Prefix{netip.MustParsePrefix("10.10.10.0/24")},
	GatewayMAC: schemas.MAC{0x00, 0xb5, 0x6d, 0x06, 0x08, 0xba},
}

type rawFrame struct {
	data []byte
	ci   gopacket.CaptureInfo
}

// readPcap loads a whole capture with gopacket's reader, independent of
// pipeline/capture so this package's tests stand on their own.
func readPcap(tb testing.TB, path string) (LinkType, []rawFrame) {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("open capture: %v", err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		tb.Fatalf("read %s: %v", path, err)
	}
	var frames []rawFrame
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			tb.Fatalf("read %s after %d packets: %v", path, len(frames), err)
		}
		frames = append(frames, rawFrame{data, ci})
	}
	return LinkType(r.LinkType()), frames
}

func sentinelFiles(tb testing.TB) map[string][]string {
	tb.Helper()
	sentineldata.Need(tb)
	dirs, err := os.ReadDir(sentinelDir)
	if err != nil {
		tb.Skipf("IoT Sentinel captures not available: %v", err)
	}
	byDevice := map[string][]string{}
	for _, d := range dirs {
		files, _ := filepath.Glob(filepath.Join(sentinelDir, d.Name(), "Setup-*.pcap"))
		if len(files) > 0 {
			byDevice[d.Name()] = files
		}
	}
	if len(byDevice) == 0 {
		tb.Skip("no IoT Sentinel captures found")
	}
	return byDevice
}

func deviceMAC(t *testing.T, device string) schemas.MAC {
	b, err := os.ReadFile(filepath.Join(sentinelDir, device, "_iotdevice-mac.txt"))
	if err != nil {
		t.Fatalf("read device MAC: %v", err)
	}
	m, err := schemas.ParseMAC(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("device %s: %v", device, err)
	}
	return m
}

// TestSentinelCaptures decodes every packet of every IoT Sentinel capture
// and checks what must hold of any real packet.
func TestSentinelCaptures(t *testing.T) {
	byDevice := sentinelFiles(t)
	bits := map[uint8]int{}
	dirs := map[int8]int{}
	total := 0
	for device, files := range byDevice {
		mac := deviceMAC(t, device)
		if testing.Short() {
			files = files[:1]
		}
		for _, path := range files {
			link, frames := readPcap(t, path)
			d := NewDecoder(sentinelHome)
			fromDevice := 0
			var p schemas.Packet
			for i, f := range frames {
				if err := d.Decode(link, f.data, f.ci, uint64(i), &p); err != nil {
					t.Fatalf("%s: %v", path, err)
				}
				if msg := checkInvariants(&p, f); msg != "" {
					t.Errorf("%s packet %d: %s: %+v", path, i, msg, p)
				}
				if p.SrcMAC == mac {
					fromDevice++
				}
				bits[p.ProtoBits]++
				dirs[p.Direction]++
			}
			total += len(frames)
			if fromDevice == 0 {
				t.Errorf("%s: no packet from the device's MAC %s", path, mac)
			}
		}
	}
	for _, want := range []string{"1010010", "1101000", "1100100", "1010001", "1100000", "0000001", "1000001", "1010100"} {
		if bits[bitsOf(want)] == 0 {
			t.Errorf("no packet with protocol bits %s among %d", want, total)
		}
	}
	if dirs[schemas.DirOutbound] == 0 || dirs[schemas.DirInbound] == 0 || dirs[schemas.DirLocal] == 0 {
		t.Errorf("directions %v: want all three", dirs)
	}
	t.Logf("%d packets from %d devices; directions %v", total, len(byDevice), dirs)
}

func bitsOf(s string) uint8 {
	var b uint8
	for _, c := range s {
		b = b<<1 | uint8(c-'0')
	}
	return b
}

// checkInvariants checks a packet decoded from a real capture: the
// structural rules plus what any honest capture's lengths satisfy.
func checkInvariants(p *schemas.Packet, f rawFrame) string {
	if msg := structural(p, f, true); msg != "" {
		return msg
	}
	isIP := p.ProtoBits&schemas.ProtoIP != 0
	switch {
	case isIP && (p.IPLen < 20 || p.Transport == 0):
		return "IP packet without IP length or protocol"
	case isIP && int(p.IPLen) > f.ci.Length-14:
		return "IP length beyond the Ethernet frame"
	case p.PayloadLen > uint32(p.IPLen):
		return "payload longer than the IP packet"
	}
	return ""
}

// structural checks what Decode guarantees for any frame it accepts,
// however its header fields lie. wire says FrameLen is the wire length (an
// 802.11 frame's is its bridged Ethernet frame's, no longer).
func structural(p *schemas.Packet, f rawFrame, wire bool) string {
	const app = schemas.ProtoTLS | schemas.ProtoHTTP | schemas.ProtoDNS | schemas.ProtoOther
	isIP := p.ProtoBits&schemas.ProtoIP != 0
	a := p.ProtoBits & app
	switch {
	case p.FrameLen > uint32(max(f.ci.Length, len(f.data))) || wire && p.FrameLen != uint32(max(f.ci.Length, len(f.data))):
		return "FrameLen is not the wire length"
	case p.TsNs != f.ci.Timestamp.UnixNano():
		return "timestamp differs"
	case p.ProtoBits == 0 || p.ProtoBits >= 1<<7:
		return "protocol bits out of range"
	case a&(a-1) != 0:
		return "more than one application bit"
	case !isIP && (p.ProtoBits != schemas.ProtoOther || p.Direction != schemas.DirLocal || p.DPort != schemas.NoPort || p.IPLen != 0 || p.Transport != 0):
		return "non-IP frame must be other-only, local, portless"
	case p.ProtoBits&schemas.ProtoTCP != 0 && p.Transport != 6:
		return "TCP bit without IP protocol 6"
	case p.ProtoBits&schemas.ProtoUDP != 0 && p.Transport != 17:
		return "UDP bit without IP protocol 17"
	case isIP && (p.Transport == 6 || p.Transport == 17) && p.ProtoBits&(schemas.ProtoTCP|schemas.ProtoUDP) == 0:
		return "TCP or UDP packet without its bit"
	case p.DPort < schemas.NoPort || p.DPort > 0xffff:
		return "port out of range"
	case p.DPort != schemas.NoPort && p.ProtoBits&(schemas.ProtoTCP|schemas.ProtoUDP) == 0:
		return "port without TCP or UDP"
	case isIP && a != 0 && p.PayloadLen == 0:
		return "application bit without payload"
	case p.ProtoBits&schemas.ProtoTCP == 0 && (p.TCPFlags != 0 || p.TCPWindow != 0 || p.TCPOptionsLen != 0):
		return "TCP fields on a non-TCP packet"
	case p.TCPFlags >= 1<<9 || p.TCPOptionsLen > 40:
		return "TCP flags or options out of range"
	case p.Direction < -1 || p.Direction > 1:
		return "direction out of range"
	}
	return ""
}

// TestSentinelGolden pins packets of one capture whose decoding was read off
// by hand (and agrees with tshark's dissection).
func TestSentinelGolden(t *testing.T) {
	sentineldata.Need(t)
	path := filepath.Join(sentinelDir, "Aria", "Setup-A-1-STA.pcap")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("capture not available: %v", err)
	}
	link, frames := readPcap(t, path)
	d := NewDecoder(sentinelHome)
	got := make([]schemas.Packet, len(frames))
	for i, f := range frames {
		if err := d.Decode(link, f.data, f.ci, uint64(i), &got[i]); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		frame int // tshark's 1-based frame number
		what  string
		len   uint32
		want  vec
	}{
		{1, "EAPOL key", 135, vec{"0000001", none, local, 0, 0, 0, 0, 0, 0, 0}},
		{3, "DHCP discover", 342, vec{"1010001", 67, local, 64, 328, 17, 0, 0, 0, 300}},
		{9, "ARP reply from the gateway", 42, vec{"0000001", none, local, 0, 0, 0, 0, 0, 0, 0}},
		{10, "DNS query to the gateway", 74, vec{"1010010", 53, out, 64, 60, 17, 0, 0, 0, 32}},
		{11, "DNS answer from the gateway", 153, vec{"1010010", 59904, in, 64, 139, 17, 0, 0, 0, 111}},
		{12, "SYN with MSS, WS, timestamps", 74, vec{"1100000", 80, out, 64, 60, 6, 0x002, 8688, 20, 0}},
		{13, "SYN-ACK", 62, vec{"1100000", 62997, in, 53, 48, 6, 0x012, 29200, 8, 0}},
		{15, "first segment of GET", 150, vec{"1100100", 80, out, 64, 136, 6, 0x018, 9660, 0, 96}},
		{16, "continuation of GET", 78, vec{"1100001", 80, out, 64, 64, 6, 0x018, 9660, 0, 24}},
		{19, "HTTP/1.1 200 OK", 659, vec{"1100100", 62997, in, 53, 645, 6, 0x018, 29, 0, 605}},
	}
	for _, tc := range tests {
		p := &got[tc.frame-1]
		if v := vecOf(p); v != tc.want || p.FrameLen != tc.len {
			t.Errorf("frame %d (%s):\n got %+v len %d\nwant %+v len %d", tc.frame, tc.what, v, p.FrameLen, tc.want, tc.len)
		}
	}
	// tshark: frame 9 at 1.134912 s, frame 10 at 1.161557 s, frame 11 at 1.161637 s.
	if g10, g11 := time.Duration(got[9].IntervalNs), time.Duration(got[10].IntervalNs); g10 != 26645*time.Microsecond || g11 != 80*time.Microsecond {
		t.Errorf("intervals of frames 10, 11 = %v, %v; want 26.645ms, 80µs", g10, g11)
	}
}
