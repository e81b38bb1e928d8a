package build

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/homegen/homegentest"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
)

// gatewayHome generates a home and, for each LAN session, the WAN capture
// its gateway would have seen (same base name) and the ground truth.
func gatewayHome(t *testing.T, mode gateway.Mode) (*campaign.Campaign, map[string][]int64) {
	return plannedGatewayHome(t, mode, homegen.PlanIPv4, false, false)
}

// plannedGatewayHome is gatewayHome under an address plan, with the
// campaign's gateway given or left to inference (`gateway: auto`), and
// under VPN with the tunnel over TCP where tcp says so.
func plannedGatewayHome(t *testing.T, mode gateway.Mode, plan string, auto, tcp bool) (*campaign.Campaign, map[string][]int64) {
	t.Helper()
	dir := t.TempDir()
	g, hc := homegentest.Generate(t, homegen.Config{Seed: 11, Sessions: 2, SessionDuration: 4 * time.Minute, AddressPlan: plan}, filepath.Join(dir, "lan"))
	truth := map[string][]int64{}
	var wanFiles []string
	if err := os.MkdirAll(filepath.Join(dir, "wan"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, f := range g.Files {
		wanPath := filepath.Join(dir, "wan", filepath.Base(f))
		gcfg := gateway.DefaultConfig()
		gcfg.Mode, gcfg.Seed, gcfg.VPNTCP = mode, uint64(i+1), tcp
		// A gateway that loses packets and a tunnel that sends keepalives
		// leave LAN packets without WAN packets and WAN packets without
		// LAN packets: the pairing must leave both unpaired.
		gcfg.Loss, gcfg.VPNPing = 0.002, 10*time.Second
		truthPath := wanPath + ".truth.csv"
		if _, err := gateway.EmulateFile(context.Background(), f, wanPath, truthPath, hc, gcfg); err != nil {
			t.Fatal(err)
		}
		tb, err := os.ReadFile(truthPath)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := gateway.ReadTruth(bytes.NewReader(tb), wanPath)
		if err != nil {
			t.Fatal(err)
		}
		truth[campaign.SessionName("wan", wanPath)] = tr
		wanFiles = append(wanFiles, wanPath)
	}
	gw := campaign.Gateway{Mode: string(mode), MAC: g.GatewayMAC, LANNets: []string{g.LANNet}}
	if g.LANNet6 != "" {
		gw.LANNets = append(gw.LANNets, g.LANNet6)
	}
	if auto {
		gw = campaign.Gateway{Mode: string(mode), MAC: campaign.GatewayAuto}
	}
	c := &campaign.Campaign{Name: "gw-" + string(mode), Homes: []*campaign.Home{{
		Name:    "home-1",
		Gateway: gw,
		Taps: []campaign.Tap{
			{Name: "lan", Files: g.Files},
			{Name: "wan", Files: wanFiles},
		},
		Inventory: g.Inventory,
	}}}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c, truth
}

// lanLabels labels a LAN capture's packets by ordinal from the inventory,
// as indexes into labels: the reference WAN labels are derived from.
func lanLabels(t *testing.T, home *campaign.Home, file string, labels []string) map[uint64]int16 {
	t.Helper()
	hc, err := features.HomeFromCampaign(home)
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := home.MACIndex()
	pos := map[string]int16{}
	for i, n := range labels {
		pos[n] = int16(i)
	}
	out := map[uint64]int16{}
	if _, err := capture.ReadFile(context.Background(), file, hc, func(p *schemas.Packet) error {
		l := int16(-1)
		if d, ok := idx[p.SrcMAC]; ok {
			l = pos[d.Name]
		} else if d, ok := idx[p.DstMAC]; ok {
			l = pos[d.Name]
		}
		out[p.Offset] = l
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBuildWANViews builds a home with a LAN and a WAN tap and checks that
// the WAN view's windows carry the labels the ground truth implies.
func TestBuildWANViews(t *testing.T) {
	for _, tc := range []struct {
		mode gateway.Mode
		want float64
		plan string
		auto bool
		tcp  bool
	}{
		{gateway.NAPT, 0.999, homegen.PlanIPv4, false, false},
		{gateway.VPN, 0.995, homegen.PlanIPv4, false, false},
		// gateway: auto on a dual-stack home: the LAN side's IPv6 from
		// the home's global prefix crosses only if the prefix is inferred.
		{gateway.VPN, 0.995, homegen.PlanDual, true, false},
		// OpenVPN over TCP: the labeler finds the records by what the
		// capture agent told of each segment (batch version 3).
		{gateway.VPN, 0.995, homegen.PlanIPv4, false, true},
	} {
		t.Run(string(tc.mode)+"-"+tc.plan+map[bool]string{true: "-auto"}[tc.auto]+map[bool]string{true: "-tcp"}[tc.tcp], func(t *testing.T) {
			h := start(t)
			c, truth := plannedGatewayHome(t, tc.mode, tc.plan, tc.auto, tc.tcp)
			home := c.Homes[0]
			spec := window.Spec{Dataset: "gw", Version: "v1", Kind: schemas.KindNoise, Size: 100, Labels: LabelsOf(c)}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := (&Build{Campaign: c, Spec: spec, Bus: h.bus, Store: h.store, Log: h.log, Timeout: time.Minute}).Run(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ws, err := dataset.Windows(ctx, h.store, res.Manifest, nil)
			if err != nil {
				t.Fatal(err)
			}
			// The WAN view's packets in order, per session: noise windows
			// cut the whole stream, window k holding packets k*size on.
			type seqWin struct {
				k int
				w *schemas.Window
			}
			bySession := map[string][]seqWin{}
			views := map[string]int{}
			for _, w := range ws {
				views[w.View]++
				if w.View != string(tc.mode) {
					continue
				}
				k, err := strconv.Atoi(w.ID[strings.LastIndexByte(w.ID, '/')+1:])
				if err != nil {
					t.Fatalf("window id %s", w.ID)
				}
				bySession[w.Session] = append(bySession[w.Session], seqWin{k, w})
			}
			if views["lan"] == 0 || views[string(tc.mode)] == 0 {
				t.Fatalf("windows per view %v: want lan and %s", views, tc.mode)
			}
			agree, total := 0, 0
			for i, lanFile := range home.Taps[0].Files {
				wanSession := campaign.SessionName("wan", home.Taps[1].Files[i])
				tr := truth[wanSession]
				want := lanLabels(t, home, lanFile, spec.Labels)
				sw := bySession[wanSession]
				sort.Slice(sw, func(a, b int) bool { return sw[a].k < sw[b].k })
				var got []int16
				for _, s := range sw {
					got = append(got, s.w.Label[:s.w.Len]...)
				}
				if len(got) != len(tr) {
					t.Errorf("session %s: %d packets in WAN windows, %d in the WAN capture", wanSession, len(got), len(tr))
				}
				for j, l := range tr {
					w := int16(-1)
					if l >= 0 {
						w = want[uint64(l)]
					}
					if j < len(got) && got[j] == w {
						agree++
					}
					total++
				}
			}
			acc := float64(agree) / float64(max(total, 1))
			st := res.Labels[home.Name].PerTap["wan"]
			t.Logf("%s: %d WAN packets, pairing rate %.3f %%, labels agree with the ground truth for %.3f %% (%d unpaired)",
				tc.mode, total, 100*st.PairingRate(), 100*acc, st.Unpaired)
			if acc < tc.want {
				t.Errorf("%s: %.4f of WAN labels agree with the ground truth, want at least %.4f", tc.mode, acc, tc.want)
			}
			if st.Packets != total {
				t.Errorf("labeler counted %d WAN packets, the captures hold %d", st.Packets, total)
			}
		})
	}
}

// TestBuildLANSessionWithoutWAN: a LAN session no WAN file pairs with is
// labeled without waiting, and the build completes.
func TestBuildLANSessionWithoutWAN(t *testing.T) {
	h := start(t)
	c, _ := gatewayHome(t, gateway.NAPT)
	home := c.Homes[0]
	home.Taps[1].Files = home.Taps[1].Files[:1]
	spec := window.Spec{Dataset: "gw", Version: "v1", Kind: schemas.KindNoise, Size: 100, Labels: LabelsOf(c)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := (&Build{Campaign: c, Spec: spec, Bus: h.bus, Store: h.store, Log: h.log, Timeout: 30 * time.Second}).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	views := map[string]int{}
	for _, p := range res.Manifest.Parts {
		views[p.View]++
	}
	if views["lan"] != 2 || views["napt"] != 1 {
		t.Errorf("sessions per view %v: want 2 lan and 1 napt", views)
	}
}

// TestBuildOneViewFromEmulatedWAN builds only the napt view of a home that
// has LAN captures alone: EmulateWAN makes its WAN tap, and the build waits
// for, and windows, the WAN sessions only.
func TestBuildOneViewFromEmulatedWAN(t *testing.T) {
	h := start(t)
	dir := t.TempDir()
	g, err := homegen.Generate(homegen.Config{Seed: 5, Sessions: 2, SessionDuration: 4 * time.Minute}, filepath.Join(dir, "lan"))
	if err != nil {
		t.Fatal(err)
	}
	c := g.Campaign("oneview", "home-1")
	if err := EmulateWAN(context.Background(), c, gateway.NAPT, gateway.Config{}, filepath.Join(dir, "wan")); err != nil {
		t.Fatal(err)
	}
	if len(c.Homes[0].Taps) != 2 || len(c.Homes[0].Taps[1].Files) != len(g.Files) || c.Homes[0].Gateway.Mode != "napt" {
		t.Fatalf("emulated taps %+v", c.Homes[0].Taps)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := window.Spec{Dataset: "oneview", Version: "v1", Kind: schemas.KindNoise, Size: 50, Labels: LabelsOf(c), Views: []string{"napt"}}
	res, err := (&Build{Campaign: c, Spec: spec, Bus: h.bus, Store: h.store, Log: h.log, Timeout: time.Minute}).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := res.Manifest
	if len(m.WindowsPerView) != 1 || m.WindowsPerView["napt"] == 0 || len(m.Parts) != len(g.Files) {
		t.Fatalf("windows per view %v from %d sessions: want napt windows from %d WAN sessions only", m.WindowsPerView, len(m.Parts), len(g.Files))
	}
	if labeled := m.Packets - m.UnlabeledPackets; labeled < m.Packets*9/10 {
		t.Errorf("only %d of %d WAN packets got a label from their LAN packet", labeled, m.Packets)
	}
}

// TestEmulateWANKeepsRealGateways: a home captured at its real WAN side
// keeps its gateway's mode when the others get emulated ones, since the
// labeler pairs its WAN packets by that mode.
func TestEmulateWANKeepsRealGateways(t *testing.T) {
	dir := t.TempDir()
	g, err := homegen.Generate(homegen.Config{Seed: 5, Sessions: 1, SessionDuration: time.Minute}, filepath.Join(dir, "lan"))
	if err != nil {
		t.Fatal(err)
	}
	c := g.Campaign("mixed", "emulated")
	real := g.CampaignHome("real")
	real.Gateway.Mode = "vpn"
	real.Taps = append(real.Taps, campaign.Tap{Name: "wan", Files: []string{filepath.Join(dir, "real-wan.pcap")}})
	c.Homes = append(c.Homes, real)
	if err := EmulateWAN(context.Background(), c, gateway.NAPT, gateway.Config{}, filepath.Join(dir, "wan")); err != nil {
		t.Fatal(err)
	}
	if m := c.Homes[0].Gateway.Mode; m != "napt" || len(c.Homes[0].Taps) != 2 {
		t.Errorf("emulated home: mode %s, %d taps; want napt and an emulated wan tap", m, len(c.Homes[0].Taps))
	}
	if m := c.Homes[1].Gateway.Mode; m != "vpn" || len(c.Homes[1].Taps) != 2 {
		t.Errorf("home with a real WAN tap: mode %s, %d taps; want its own vpn and its own two taps", m, len(c.Homes[1].Taps))
	}
}
