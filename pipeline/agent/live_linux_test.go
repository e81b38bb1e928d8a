package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/internal/netnstest"
)

// TestLiveGatewayRotation captures a real gateway live: a device namespace
// sends UDP through a gateway namespace (routing between a LAN and a WAN
// veth) to an internet namespace, while the agent reads the gateway's LAN
// and WAN interfaces with a 1 s rotation. Every datagram is captured once
// on each tap; both taps publish the same sessions, each ended by a final
// batch; and a datagram's WAN copy is in its LAN copy's session, or in the
// next when the LAN copy came within the grace before the edge.
func TestLiveGatewayRotation(t *testing.T) {
	g := netnstest.NewGateway(t, false)
	gw, lanIf, wanIf := g.GW, g.LANIf, g.WANIf

	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, false)
	home := &campaign.Home{Name: "h", Gateway: campaign.Gateway{LANNets: []string{"10.78.1.0/24"}},
		Taps: []campaign.Tap{{Name: "lan", Interface: lanIf}, {Name: "wan", Interface: wanIf}},
		Live: campaign.Live{Rotation: time.Second}}
	cfg := testConfig(home, "", testLog(t))
	cfg.BatchSize, cfg.BatchBytes, cfg.Window, cfg.MaxBatchAge = 256, 16<<10, 32, 50*time.Millisecond
	ag, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]capture.Source{}
	var inputs []Input
	for tap, iface := range map[string]string{"lan": lanIf, "wan": wanIf} {
		netnstest.Do(t, gw, "capture "+iface, func() (err error) {
			sources[tap], err = capture.OpenLive(iface, capture.LiveOptions{PollTimeout: 10 * time.Millisecond, BufferBytes: 16 << 20})
			return err
		})
		src := sources[tap]
		inputs = append(inputs, Input{Tap: tap, Name: iface, Live: true, Open: func() (capture.Source, error) { return src, nil }})
	}
	done := make(chan error, 1)
	go func() { done <- ag.Run(context.Background(), conn, inputs) }()

	// 3.5 s of datagrams, one every 5 ms, each to a port of its own.
	const n = 700
	g.SendUDP(t, n, 30000, 5*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	kernel := map[string]capture.LiveStats{}
	for tap, s := range sources {
		kernel[tap], _ = s.(*capture.LiveSource).Stats()
		s.Close() // the interfaces go away: the last sessions end
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not stop after its sources closed")
	}

	st := readStream(t, conn)
	type copyAt struct {
		session string
		ts      int64
	}
	seen := map[string]map[int32][]copyAt{"lan": {}, "wan": {}}
	sessions := map[string]map[string]int{"lan": {}, "wan": {}} // base name -> final batches
	for _, b := range st.batches {
		base := strings.TrimPrefix(b.Session, b.Tap+"-")
		if _, ok := sessions[b.Tap][base]; !ok {
			sessions[b.Tap][base] = 0
		}
		if b.Final {
			sessions[b.Tap][base]++
		}
		for _, p := range b.Packets {
			if p.Transport == 17 && p.DPort >= 30000 && p.DPort < 30000+n && p.DstIP.String() == "10.78.2.2" {
				seen[b.Tap][p.DPort] = append(seen[b.Tap][p.DPort], copyAt{base, p.TsNs})
			}
		}
	}
	if len(sessions["lan"]) < 3 || len(sessions["lan"]) != len(sessions["wan"]) {
		t.Fatalf("sessions: lan %v, wan %v; want the same three or more", sessions["lan"], sessions["wan"])
	}
	for base, finals := range sessions["lan"] {
		if wf, ok := sessions["wan"][base]; !ok || finals != 1 || wf != 1 {
			t.Errorf("session %s: %d LAN and %d WAN final batches (WAN session there: %v)", base, finals, wf, ok)
		}
	}
	grace := int64(100 * time.Millisecond)
	moved := 0
	for port := int32(30000); port < 30000+n; port++ {
		lan, wan := seen["lan"][port], seen["wan"][port]
		if len(lan) != 1 || len(wan) != 1 {
			t.Fatalf("datagram to port %d captured %d times on the LAN, %d on the WAN: want once each (kernel: lan %+v, wan %+v)",
				port, len(lan), len(wan), kernel["lan"], kernel["wan"])
		}
		if lan[0].session == wan[0].session {
			continue
		}
		// The WAN edge is a grace earlier: only a datagram sent within the
		// grace before the LAN edge may have its WAN copy in the next session.
		edge := sessionStart(t, "x-"+wan[0].session)
		if !(wan[0].session > lan[0].session && lan[0].ts >= edge-grace-int64(10*time.Millisecond)) {
			t.Errorf("datagram to port %d: LAN copy at %d in %s, WAN copy in %s", port, lan[0].ts, lan[0].session, wan[0].session)
		}
		moved++
	}
	t.Logf("%d datagrams captured once on each tap in %d sessions per tap; %d WAN copies in the next slot's session", n, len(sessions["lan"]), moved)
	if moved == 0 {
		t.Error("no datagram crossed a WAN edge: with a datagram every 5 ms and a 100 ms grace, some must")
	}
}
