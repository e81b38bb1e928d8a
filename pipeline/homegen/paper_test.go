package homegen

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/schemas"
)

// TestPaperHousehold generates the paper's household and checks what the
// paper says of each device (seeds/004, Tables 1 and 2, Sections 3.1 and
// 4.4) in the traffic that crosses the gateway.
func TestPaperHousehold(t *testing.T) {
	h, _ := generate(t, Config{Seed: 1, Sessions: 1, SessionDuration: 10 * time.Minute, Household: HouseholdPaper})
	var names []string
	for _, d := range h.Inventory {
		names = append(names, d.Name)
		want := campaign.CategoryIoT
		if slices.Contains(PaperNonIoT, d.Name) {
			want = campaign.CategoryNonIoT
		}
		if d.Category != want {
			t.Errorf("%s is %s, want %s", d.Name, d.Category, want)
		}
	}
	if want := append(slices.Clone(PaperIoT), PaperNonIoT...); !slices.Equal(names, want) {
		t.Fatalf("inventory %v, want %v", names, want)
	}
	hc, err := h.HomeConfig()
	if err != nil {
		t.Fatal(err)
	}
	idx, err := (&campaign.Home{Inventory: h.Inventory}).MACIndex()
	if err != nil {
		t.Fatal(err)
	}
	type stats struct {
		packets, udp, tcp, tls, http int
		out, in                      map[uint32]int // frame lengths crossing the gateway
	}
	per := map[string]*stats{}
	for _, n := range names {
		per[n] = &stats{out: map[uint32]int{}, in: map[uint32]int{}}
	}
	total := 0
	if _, err := capture.ReadFile(context.Background(), h.Files[0], hc, func(p *schemas.Packet) error {
		total++
		d, ok := idx[p.SrcMAC]
		if !ok {
			d, ok = idx[p.DstMAC]
		}
		if !ok {
			t.Fatalf("packet %d belongs to no device", p.Offset)
		}
		if p.Direction == schemas.DirLocal {
			return nil
		}
		s := per[d.Name]
		s.packets++
		for bit, n := range map[uint8]*int{schemas.ProtoUDP: &s.udp, schemas.ProtoTCP: &s.tcp, schemas.ProtoTLS: &s.tls, schemas.ProtoHTTP: &s.http} {
			if p.ProtoBits&bit != 0 {
				*n++
			}
		}
		if p.Direction == schemas.DirOutbound {
			s.out[p.FrameLen]++
		} else {
			s.in[p.FrameLen]++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	share := func(n, of int) float64 { return float64(n) / float64(max(of, 1)) }
	for _, n := range names {
		s := per[n]
		t.Logf("%-16s %6d packets  udp %.2f tcp %.2f tls %.2f http %.3f", n, s.packets, share(s.udp, s.packets), share(s.tcp, s.packets), share(s.tls, s.packets), share(s.http, s.packets))
		if s.packets == 0 {
			t.Errorf("%s: no packets cross the gateway", n)
		}
	}
	t.Logf("%d packets in all", total)

	// Table 1: the UDP devices and the TCP ones.
	for _, n := range []string{"360-camera", "broadlink-plug", "xiaomi-hub"} {
		if s := per[n]; share(s.udp, s.packets) < 0.95 {
			t.Errorf("%s: %.2f of its packets UDP, the paper has 99 %% or more", n, share(s.udp, s.packets))
		}
	}
	for _, n := range []string{"echo-dot", "google-home", "tmall-assistant", "orvibo-plug", "tplink-plug"} {
		if s := per[n]; share(s.tcp, s.packets) < 0.95 {
			t.Errorf("%s: %.2f of its packets TCP, the paper has 98 %% or more", n, share(s.tcp, s.packets))
		}
	}
	if s := per["orvibo-plug"]; s.tls != 0 {
		t.Errorf("orvibo-plug sends %d TLS packets; the paper has none", s.tls)
	}
	if s := per["tplink-plug"]; share(s.tls, s.packets) < 0.4 || share(s.tls, s.packets) > 0.6 {
		t.Errorf("tplink-plug: %.2f TLS, the paper has 50.9 %%", share(s.tls, s.packets))
	}
	if s := per["tmall-assistant"]; s.http == 0 {
		t.Error("tmall-assistant sends no HTTP; the paper has 5.5 %")
	}
	// Sections 3.1 and 4.4: heartbeats and signature sizes.
	for _, c := range []struct {
		dev  string
		out  bool
		size uint32
		min  int
	}{
		{"echo-dot", true, 95, 15},        // every 30 s
		{"echo-dot", false, 1388, 10},     // answers
		{"google-home", true, 135, 8},     // every 60 s
		{"google-home", true, 104, 8},     //
		{"google-home", false, 108, 1},    // streaming results
		{"orvibo-plug", true, 224, 15},    // the three-packet sequence
		{"orvibo-plug", false, 60, 15},    // the paper's 54, padded to the Ethernet minimum
		{"orvibo-plug", false, 240, 15},   //
		{"360-camera", true, 224, 1000},   // twice a second
		{"xiaobai-camera", true, 1514, 1}, // clip uploads
	} {
		m := per[c.dev].in
		if c.out {
			m = per[c.dev].out
		}
		if m[c.size] < c.min {
			t.Errorf("%s: %d frames of %d bytes (outbound %v), want at least %d", c.dev, m[c.size], c.size, c.out, c.min)
		}
	}
	// The plugs and the hub are the sparse devices; cameras and voice
	// assistants the busy ones.
	for _, sparse := range []string{"tplink-plug", "orvibo-plug", "broadlink-plug", "xiaomi-hub"} {
		for _, busy := range []string{"echo-dot", "google-home", "tmall-assistant", "360-camera", "xiaobai-camera", "mitu-story"} {
			if per[sparse].packets*3 > per[busy].packets {
				t.Errorf("%s sends %d packets, %s %d: the plugs and the hub should be sparse", sparse, per[sparse].packets, busy, per[busy].packets)
			}
		}
	}
}

func TestHouseholds(t *testing.T) {
	if _, err := Generate(Config{Sessions: 1, SessionDuration: time.Minute, Household: "castle"}, t.TempDir()); err == nil {
		t.Error("Generate accepted an unknown household")
	}
	for _, hh := range []string{"", HouseholdDemo, HouseholdPaper} {
		classes, err := HouseholdClasses(hh)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range classes {
			if classBuilders[c] == nil {
				t.Errorf("household %q: class %s has no builder", hh, c)
			}
		}
	}
	if _, err := newHome(1, []string{"phone", "phone"}); err == nil {
		t.Error("a class given twice was accepted")
	}
}

func TestPaperHouseholdSameSeedSameBytes(t *testing.T) {
	cfg := Config{Seed: 5, Sessions: 2, SessionDuration: 2 * time.Minute, Household: HouseholdPaper}
	_, dirA := generate(t, cfg)
	_, dirB := generate(t, cfg)
	a, b := readDir(t, dirA), readDir(t, dirB)
	for name, data := range a {
		if !bytes.Equal(data, b[name]) {
			t.Errorf("%s differs between two runs with the same seed", name)
		}
	}
	cfg.Seed = 6
	_, dirC := generate(t, cfg)
	if c := readDir(t, dirC); bytes.Equal(a["session-01.pcap"], c["session-01.pcap"]) {
		t.Error("seeds 5 and 6 gave the same capture")
	}
}
