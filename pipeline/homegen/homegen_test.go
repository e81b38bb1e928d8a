package homegen

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

func generate(t testing.TB, cfg Config) (*Home, string) {
	t.Helper()
	dir := t.TempDir()
	h, err := Generate(cfg, dir)
	if err != nil {
		t.Fatal(err)
	}
	return h, dir
}

func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

func TestSameSeedSameBytes(t *testing.T) {
	cfg := Config{Seed: 7, Sessions: 2, SessionDuration: 3 * time.Minute}
	_, dirA := generate(t, cfg)
	_, dirB := generate(t, cfg)
	a, b := readDir(t, dirA), readDir(t, dirB)
	if len(a) != 3 {
		t.Fatalf("wrote %d files, want 2 captures and the inventory", len(a))
	}
	for name, data := range a {
		if !bytes.Equal(data, b[name]) {
			t.Errorf("%s differs between two runs with the same seed", name)
		}
	}

	cfg.Seed = 8
	_, dirC := generate(t, cfg)
	c := readDir(t, dirC)
	for name, data := range a {
		if bytes.Equal(data, c[name]) {
			t.Errorf("%s is the same for seeds 7 and 8", name)
		}
	}
}

func TestDefaults(t *testing.T) {
	got := Config{Seed: 3}.withDefaults()
	want := DefaultConfig()
	want.Seed = 3
	if got != want {
		t.Errorf("defaults %+v, want %+v", got, want)
	}
	if _, err := Generate(Config{Sessions: 1000}, t.TempDir()); err == nil {
		t.Error("Generate accepted 1000 sessions")
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	if _, err := Generate(Config{Sessions: 1}, filepath.Join(file, "sub")); err == nil {
		t.Error("Generate wrote under a regular file")
	}
}

// TestGeneratedHomeDecodes runs the default home through the capture and
// feature pipeline and checks what the demo relies on.
func TestGeneratedHomeDecodes(t *testing.T) {
	start := time.Now()
	h, _ := generate(t, DefaultConfig())
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("generating the default home took %v", took)
	}
	if len(h.Files) != 6 || !strings.HasSuffix(h.Files[0], "session-01.pcap") {
		t.Fatalf("files %v", h.Files)
	}

	inv, err := campaign.LoadInventory(h.InventoryFile)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(inv, h.Inventory) {
		t.Errorf("inventory file reads back as %v, want %v", inv, h.Inventory)
	}
	idx, err := (&campaign.Home{Inventory: inv}).MACIndex()
	if err != nil {
		t.Fatal(err)
	}
	withGW, err := h.HomeConfig()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := idx[withGW.GatewayMAC]; ok {
		t.Error("the gateway is in the inventory")
	}
	names := map[schemas.MAC]string{}
	for m, d := range idx {
		names[m] = d.Name
	}

	lanOnly := features.HomeConfig{LANNets: withGW.LANNets}
	total := 0
	bits := map[string]map[string]int{} // device -> bits of the packets it sends
	for i, path := range h.Files {
		perDevice := map[string]int{}
		src, err := capture.OpenFile(path)
		if err != nil {
			t.Fatal(err)
		}
		decGW, decLAN := features.NewDecoder(withGW), features.NewDecoder(lanOnly)
		var p, q schemas.Packet
		n := 0
		for ; ; n++ {
			f, err := src.Next()
			if err != nil {
				break
			}
			if err := decGW.Decode(f.LinkType, f.Data, f.CI, f.Offset, &p); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if err := decLAN.Decode(f.LinkType, f.Data, f.CI, f.Offset, &q); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			name, fromDevice := names[p.SrcMAC]
			if !fromDevice {
				name = names[p.DstMAC]
			}
			if name == "" {
				t.Fatalf("%s packet %d: neither %s nor %s is in the inventory", path, f.Offset, p.SrcMAC, p.DstMAC)
			}
			perDevice[name]++
			if fromDevice {
				if bits[name] == nil {
					bits[name] = map[string]int{}
				}
				bits[name][schemas.ProtoBitsString(p.ProtoBits)]++
			}
			// Packets between a device and the internet must have a direction,
			// whichever way the home is described.
			srcIP, dstIP := netip.AddrFrom4([4]byte(f.Data[26:30])), netip.AddrFrom4([4]byte(f.Data[30:34]))
			srcIn, dstIn := withGW.LANNets[0].Contains(srcIP), withGW.LANNets[0].Contains(dstIP)
			if srcIn != dstIn && !dstIP.IsMulticast() {
				want := schemas.DirInbound
				if srcIn {
					want = schemas.DirOutbound
				}
				if p.Direction != want || q.Direction != want {
					t.Fatalf("%s packet %d %s -> %s: direction %d (gateway MAC) %d (LAN only), want %d",
						path, f.Offset, srcIP, dstIP, p.Direction, q.Direction, want)
				}
			}
			if binary.BigEndian.Uint16(f.Data[12:14]) != 0x0800 {
				t.Fatalf("%s packet %d is not IPv4", path, f.Offset)
			}
		}
		src.Close()
		st, err := capture.ReadFile(context.Background(), path, withGW, func(*schemas.Packet) error { return nil })
		if err != nil || st.DecodeErrors != 0 || st.Packets != uint64(n) {
			t.Fatalf("%s: ReadFile = %+v, %v", path, st, err)
		}
		if d := st.LastTs.Sub(st.FirstTs); d > 10*time.Minute || d < 9*time.Minute {
			t.Errorf("%s spans %v, want about the 10-minute session", path, d)
		}
		for _, d := range h.Inventory {
			if perDevice[d.Name] == 0 {
				t.Errorf("session %d: no packets of %s", i+1, d.Name)
			}
		}
		total += n
	}
	if total < 20_000 || total > 60_000 {
		t.Errorf("%d packets in the default home, want 20k-60k", total)
	}
	t.Logf("%d packets; protocol bits of what each device sends: %v", total, bits)

	// What each device's traffic must show.
	want := map[string][]string{
		"smart-plug":      {"1101000", "1010010", "1010001", "1100000"}, // TLS, DNS, NTP, bare ACKs
		"smart-plug-mqtt": {"1100001", "1010010"},                       // MQTT in the clear
		"camera":          {"1010001", "1101000", "1010010"},            // UDP video, TLS control
		"voice-assistant": {"1101000", "1010010", "1010001"},
		"hub":             {"1101000", "1010100", "1010010"}, // TLS on 8883, SSDP, mDNS
		"phone":           {"1101000", "1010001", "1010010", "1010100"},
		"story-teller":    {"1100100", "1010010"}, // plain HTTP, DNS
	}
	for dev, list := range want {
		for _, b := range list {
			if bits[dev][b] == 0 {
				t.Errorf("%s sends no %s packets", dev, b)
			}
		}
	}
	if bits["smart-plug-mqtt"]["1101000"] != 0 {
		t.Error("the MQTT plug sends TLS")
	}
	if c := bits["camera"]["1010001"]; c < total/4 {
		t.Errorf("camera sends %d UDP payload packets of %d, want the camera to dominate", c, total)
	}
}

func BenchmarkGenerate(b *testing.B) {
	dir := b.TempDir()
	var packets int
	for b.Loop() {
		h, err := Generate(DefaultConfig(), dir)
		if err != nil {
			b.Fatal(err)
		}
		hc, err := h.HomeConfig()
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range h.Files {
			st, err := capture.ReadFile(context.Background(), f, hc, func(*schemas.Packet) error { return nil })
			if err != nil {
				b.Fatal(err)
			}
			packets += int(st.Packets)
		}
	}
	b.ReportMetric(float64(packets)/float64(b.N), "packets/op")
}
