package agent

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/schemas"
)

// directionsOf reads the direction of every packet the stream holds, by
// source and offset.
func directionsOf(t *testing.T, c *bus.Conn) map[key]int8 {
	t.Helper()
	out := map[key]int8{}
	eachBatch(t, c, func(b *schemas.Batch) {
		for _, p := range b.Packets {
			out[key{b.Source, p.Offset}] = p.Direction
		}
	})
	return out
}

// TestGatewayAuto: a home whose campaign says `gateway: auto` has the
// direction of its IPv6-only LAN capture inferred, from a file and from a
// live tap (whose first frames are held back to infer it), and agrees with
// the ground truth: the same home generated over IPv4 and decoded with its
// true gateway.
func TestGatewayAuto(t *testing.T) {
	dir := t.TempDir()
	gen := func(plan string) *homegen.Home {
		h, err := homegen.Generate(homegen.Config{Seed: 4, Sessions: 1, SessionDuration: 3 * time.Minute, AddressPlan: plan}, dir+"/"+plan)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	v4, v6 := gen(homegen.PlanIPv4), gen(homegen.PlanIPv6)
	truthHome, err := v4.HomeConfig()
	if err != nil {
		t.Fatal(err)
	}
	var truth []int8
	if _, err := capture.ReadFile(context.Background(), v4.Files[0], truthHome, func(p *schemas.Packet) error {
		truth = append(truth, p.Direction)
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	for _, live := range []bool{false, true} {
		srv := startNATS(t, t.TempDir())
		conn := connect(t, srv.NATSURL, false)
		home := &campaign.Home{Name: "h", Gateway: campaign.Gateway{MAC: campaign.GatewayAuto}, Taps: []campaign.Tap{{Name: "lan", Files: v6.Files}}}
		c := &campaign.Campaign{Name: "c", Homes: []*campaign.Home{home}}
		c.Defaults()
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		ag, err := New(testConfig(home, "", testLog(t)))
		if err != nil {
			t.Fatal(err)
		}
		inputs := ag.Inputs(false)
		source := "c/h/lan/session-01.pcap"
		if live {
			inputs = []Input{{Tap: "lan", Name: "eth0@test", Live: true, Open: func() (capture.Source, error) { return capture.OpenFile(v6.Files[0]) }}}
			source = "" // a live session is named after its rotation slot: found below
		}
		if err := ag.Run(context.Background(), conn, inputs); err != nil {
			t.Fatal(err)
		}
		got := directionsOf(t, conn)
		if source == "" {
			for k := range got {
				source = k.source // the capture spans one slot: one session
			}
		}
		agree := 0
		for i, d := range truth {
			if g, ok := got[key{source, uint64(i)}]; ok && g == d {
				agree++
			}
		}
		share := float64(agree) / float64(len(truth))
		t.Logf("live %v: %d packets stored, direction agrees with the truth on %d of %d (%.2f %%)", live, len(got), agree, len(truth), 100*share)
		if len(got) != len(truth) || share < 0.99 {
			t.Errorf("live %v: %d of %d packets stored, direction agrees on %.2f %%; want all, >= 99 %%", live, len(got), len(truth), 100*share)
		}
		// Without inference, the IPv6 home's global addresses are not
		// the home's and its outbound packets would count as local.
		plain := 0
		if _, err := capture.ReadFile(context.Background(), v6.Files[0], features.HomeConfig{LANNets: mustNets(t, home)}, func(p *schemas.Packet) error {
			if p.Direction == truth[p.Offset] {
				plain++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if plain >= agree {
			t.Errorf("the private ranges alone agree on %d packets, inference on %d: the test shows nothing", plain, agree)
		}
		conn.Close()
		srv.Close()
	}
}

func mustNets(t *testing.T, h *campaign.Home) []netip.Prefix {
	nets, err := h.LANPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	return nets
}
