package build

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/agent"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/internal/netnstest"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
)

// TestLiveGatewayPipeline runs a live campaign through a real NAPT gateway:
// a device sends UDP through a gateway namespace that masquerades it
// (iptables) to an internet namespace, for 5 rotation periods of 1 s, while
// the agent reads the gateway's LAN and WAN interfaces live, the labeler
// pairs and the windower writes. Every packet captured is labeled once and
// windowed once, no session is held at the end, and at least 99.5 % of the
// datagrams' WAN copies carry the device's label (a datagram is known on
// both sides by its port: ground truth).
func TestLiveGatewayPipeline(t *testing.T) {
	g := netnstest.NewGateway(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := &campaign.Campaign{Name: "live", Homes: []*campaign.Home{{
		Name: "gw", Gateway: campaign.Gateway{Mode: "napt", MAC: g.GWLMAC, LANNets: []string{"10.78.1.0/24"}},
		Taps:      []campaign.Tap{{Name: "lan", Interface: g.LANIf}, {Name: "wan", Interface: g.WANIf}},
		Inventory: []campaign.Device{{MAC: g.DevMAC, Name: "sender", Category: campaign.CategoryIoT}},
		Live:      campaign.Live{Rotation: time.Second},
	}}}
	spec := window.Spec{Dataset: "live", Version: "v1", Kind: schemas.KindNoise, Size: 20, FlushWindows: 8}
	r := startLiveRig(t, ctx, c, spec, 0)

	ag, err := agent.New(agent.Config{Campaign: c.Name, Home: c.Homes[0], BatchSize: 256, Log: r.log})
	if err != nil {
		t.Fatal(err)
	}
	var sources []capture.Source
	var inputs []agent.Input
	for _, tap := range c.Homes[0].Taps {
		var src capture.Source
		netnstest.Do(t, g.GW, "capture "+tap.Interface, func() (err error) {
			src, err = capture.OpenLive(tap.Interface, capture.LiveOptions{PollTimeout: 10 * time.Millisecond, BufferBytes: 16 << 20})
			return err
		})
		sources = append(sources, src)
		inputs = append(inputs, agent.Input{Tap: tap.Name, Name: tap.Interface, Live: true, Open: func() (capture.Source, error) { return src, nil }})
	}
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx, r.conn, inputs) }()
	const n, base = 1000, 30000
	g.SendUDP(t, n, base, 5*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	for _, s := range sources {
		s.Close()
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := ag.Stats()
	for r.windowed.Load() < int64(st.Packets) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // anything windowed twice would show now
	r.stop()

	// Ground truth: each datagram's WAN copy, by its port, in LABELED.
	labeled := map[int32]int{}
	inLabeled := 0
	wanLabeled := 0
	for _, b := range embeddedtest.Batches(t, r.conn, schemas.StreamLabeled) {
		for i, p := range b.Packets {
			if b.View == "napt" && p.Transport == 17 && p.DPort >= base && p.DPort < base+n {
				labeled[p.DPort]++
				if b.Labels[i] >= 0 && b.Devices[b.Labels[i]].Name == "sender" {
					wanLabeled++
				}
			}
		}
		inLabeled += len(b.Packets)
	}
	ls := r.lab.Stats()["gw"]
	r.mu.Lock()
	defer r.mu.Unlock()
	dups := 0
	for _, k := range r.count {
		if k != 1 {
			dups++
		}
	}
	lost := st.Packets - int(r.windowed.Load())
	line := fmt.Sprintf("live: %d packets captured, %d labeled, %d windowed, %d lost, %d duplicated, %d sessions, peak RSS %.0f MiB (one process: agent, embedded NATS and S3, labeler, windower); WAN datagrams labeled %d of %d (%.2f %%)",
		st.Packets, ls.Packets, r.windowed.Load(), lost, dups, st.Sessions, peakRSS(t), wanLabeled, n, 100*float64(wanLabeled)/n)
	t.Log(line)
	if ls.Packets != st.Packets || lost != 0 || dups != 0 || inLabeled != st.Packets {
		t.Errorf("%d captured, %d labeled (%d in LABELED), %d windowed, %d sessions written twice", st.Packets, ls.Packets, inLabeled, r.windowed.Load(), dups)
	}
	if len(labeled) != n {
		t.Errorf("%d of %d datagrams have a WAN copy in LABELED", len(labeled), n)
	}
	if float64(wanLabeled) < 0.995*n {
		t.Errorf("%d of %d WAN datagrams carry the device's label: want at least 99.5 %%", wanLabeled, n)
	}
	if r.lab.Held() != 0 || r.w.Held() != 0 {
		t.Errorf("at the end the labeler holds %d session pairs, the windower %d sessions", r.lab.Held(), r.w.Held())
	}
	if st.Sessions < 2*4 {
		t.Errorf("%d sessions over 5 s of a 1 s rotation on two taps", st.Sessions)
	}
}
