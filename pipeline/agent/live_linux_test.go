package agent

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/internal/netnstest"
	"github.com/homemole/homemole/schemas"
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

// TestLiveGatewayAny runs the agent as a campaign whose lan and wan taps
// are both `interface: any` asks: one live capture on every interface of a
// bridged NAPT gateway (netnstest.BridgedGateway: two devices on the
// bridge's ports, WAN, ISP router, internet hosts over IPv4 and IPv6) for
// both taps. The lan tap publishes the LAN's frames: every datagram the
// devices exchange with the internet and with each other, once, between
// the device's MAC and its LAN address, none of the WAN's translated
// copies. The wan tap publishes the WAN's: every datagram with the
// internet once, translated, between the gateway's and the ISP router's
// MACs, none between the devices. The copies left out are counted.
func TestLiveGatewayAny(t *testing.T) {
	g := netnstest.NewBridgedGateway(t)
	macs := deviceMACs(t, g)
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, false)
	home := &campaign.Home{Name: "h", Gateway: campaign.Gateway{Mode: "napt", MAC: campaign.GatewayAuto},
		Taps: []campaign.Tap{{Name: "lan", Interface: capture.AnyInterface}, {Name: "wan", Interface: capture.AnyInterface}}}
	cfg := testConfig(home, "", testLog(t))
	cfg.BatchSize, cfg.BatchBytes, cfg.Window, cfg.MaxBatchAge = 256, 16<<10, 32, 50*time.Millisecond
	ag, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The agent's own inputs, opened in the gateway's namespace: the
	// first opens the one capture, the second gets its other side.
	runGatewayLive(t, ag, conn, g, 2)

	// The datagrams: UDP 5353 with each internet host (4 queries and 4
	// echoes per device and address) and UDP 7000 between the devices
	// (5 and 5 per IP version).
	internet, local := 0, 0
	wanInternet, wanLocal := 0, 0
	var gwWAN, isp schemas.MAC
	for _, b := range readStream(t, conn).batches {
		for _, p := range b.Packets {
			if p.Transport != 17 {
				continue
			}
			src, dst := p.SrcIP.String(), p.DstIP.String()
			if b.Tap == "wan" {
				switch {
				case p.SrcPort == 7000 || p.DPort == 7000:
					wanLocal++
				case p.SrcPort == 5353 || p.DPort == 5353:
					wanInternet++
					// The gateway's WAN MAC and the ISP router's, the same
					// pair for every datagram.
					from, to := p.SrcMAC, p.DstMAC
					if p.SrcPort == 5353 { // an echo, from the internet
						from, to = to, from
					}
					if gwWAN == (schemas.MAC{}) {
						gwWAN, isp = from, to
					}
					if from != gwWAN || to != isp || from == macs[g.Dev1] || from == macs[g.Dev2] || from == to {
						t.Errorf("a WAN datagram %s -> %s goes %v -> %v", src, dst, p.SrcMAC, p.DstMAC)
					}
					if strings.HasPrefix(src, "192.168.50.") || strings.HasPrefix(dst, "192.168.50.") {
						t.Errorf("a WAN datagram %s -> %s carries a LAN address: not translated", src, dst)
					}
				}
				continue
			}
			switch {
			case p.SrcPort == 5353 || p.DPort == 5353:
				internet++
				dev, devMAC := dst, p.DstMAC // an echo, to the device
				if p.DPort == 5353 {
					dev, devMAC = src, p.SrcMAC
				}
				if !strings.HasPrefix(dev, "192.168.50.") && !strings.HasPrefix(dev, "2001:db8:50::") {
					t.Errorf("a datagram with the internet has %s for the device's address: not the LAN's copy", dev)
				}
				if devMAC != macs[g.Dev1] && devMAC != macs[g.Dev2] {
					t.Errorf("a datagram of %s has MAC %v for the device, not a device's", dev, devMAC)
				}
			case p.SrcPort == 7000 || p.DPort == 7000:
				local++
				if p.SrcMAC != macs[g.Dev1] && p.SrcMAC != macs[g.Dev2] || p.DstMAC != macs[g.Dev1] && p.DstMAC != macs[g.Dev2] {
					t.Errorf("a datagram between the devices goes %v -> %v", p.SrcMAC, p.DstMAC)
				}
			}
		}
	}
	st := ag.Stats()
	t.Logf("lan tap on any: %d datagrams with the internet, %d between the devices; %d frames left out (%s)", internet, local, st.OtherViews, capture.OtherViewKinds)
	if want := 2 * (len(netnstest.Inet4) + len(netnstest.Inet6)) * 4 * 2; internet != want {
		t.Errorf("%d datagrams with the internet in the lan tap, want %d: each once", internet, want)
	}
	if local != 2*5*2 {
		t.Errorf("%d datagrams between the devices, want %d: each once, though the bridge shows each on two ports and itself", local, 2*5*2)
	}
	if st.OtherViews == 0 {
		t.Error("no frame left out: the bridge's copies should have been")
	}
	t.Logf("wan tap on any: %d datagrams with the internet, %d between the devices", wanInternet, wanLocal)
	if want := 2 * (len(netnstest.Inet4) + len(netnstest.Inet6)) * 4 * 2; wanInternet != want || wanLocal != 0 {
		t.Errorf("%d datagrams with the internet and %d between the devices in the wan tap, want %d and 0", wanInternet, wanLocal, want)
	}
}

// TestLiveGatewayNFLOG runs the agent on a router that logs its LAN with
// netfilter (iptables NFLOG in the mangle table, both IP versions) and
// taps the log live (interface nflog:9): every datagram with the internet
// is published once, with the device's LAN address, its MAC and
// direction. The devices' datagrams to each other, bridged, reach the log
// only through br_netfilter: without it none is published; with it each
// is, once (the log holds it twice), with both devices' MACs.
func TestLiveGatewayNFLOG(t *testing.T) {
	for _, brnf := range []bool{false, true} {
		name := "without br_netfilter"
		if brnf {
			name = "with br_netfilter"
		}
		t.Run(name, func(t *testing.T) { liveGatewayNFLOG(t, brnf) })
	}
}

func liveGatewayNFLOG(t *testing.T, brnf bool) {
	g := netnstest.NewBridgedGateway(t)
	g.BridgeNetfilter(t, brnf)
	g.LogLAN(t, "9", false)
	macs := deviceMACs(t, g)
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, false)
	home := &campaign.Home{Name: "h", Gateway: campaign.Gateway{Mode: "napt", LANNets: []string{"192.168.50.0/24", "2001:db8:50::/64"}},
		Taps: []campaign.Tap{{Name: "lan", Interface: "nflog:9"}}}
	cfg := testConfig(home, "", testLog(t))
	cfg.BatchSize, cfg.BatchBytes, cfg.Window, cfg.MaxBatchAge = 256, 16<<10, 32, 50*time.Millisecond
	ag, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runGatewayLive(t, ag, conn, g, 1)
	internet, local, out, in := 0, 0, 0, 0
	for _, b := range readStream(t, conn).batches {
		for _, p := range b.Packets {
			if p.Transport != 17 {
				continue
			}
			src, dst := p.SrcIP.String(), p.DstIP.String()
			switch {
			case p.SrcPort == 7000 || p.DPort == 7000:
				local++
				if !(p.SrcMAC == macs[g.Dev1] && p.DstMAC == macs[g.Dev2] || p.SrcMAC == macs[g.Dev2] && p.DstMAC == macs[g.Dev1]) {
					t.Errorf("a datagram between the devices goes %v -> %v, not between their MACs", p.SrcMAC, p.DstMAC)
				}
			case p.SrcPort == 5353 || p.DPort == 5353:
				internet++
				dev, devMAC, dir := dst, p.DstMAC, schemas.DirInbound // an echo, to the device
				if p.DPort == 5353 {
					dev, devMAC, dir = src, p.SrcMAC, schemas.DirOutbound
				}
				if !strings.HasPrefix(dev, "192.168.50.") && !strings.HasPrefix(dev, "2001:db8:50::") {
					t.Errorf("a datagram with the internet has %s for the device's address: not the LAN's copy", dev)
				}
				if devMAC != macs[g.Dev1] && devMAC != macs[g.Dev2] {
					t.Errorf("a datagram of %s has MAC %v for the device, not a device's", dev, devMAC)
				}
				if p.Direction != dir {
					t.Errorf("a datagram %s -> %s has direction %d, want %d", src, dst, p.Direction, dir)
				}
				out += btoi(dir == schemas.DirOutbound)
				in += btoi(dir == schemas.DirInbound)
			}
		}
	}
	t.Logf("lan tap on nflog:9: %d datagrams with the internet (%d out, %d in), %d between the devices", internet, out, in, local)
	if want := 2 * (len(netnstest.Inet4) + len(netnstest.Inet6)) * 4 * 2; internet != want || out != in {
		t.Errorf("%d datagrams with the internet in the lan tap (%d out, %d in), want %d: each once", internet, out, in, want)
	}
	// dev1 sends dev2 5 datagrams, each echoed, over each IP version.
	if want := 20 * btoi(brnf); local != want {
		t.Errorf("%d datagrams between the devices, want %d (br_netfilter %v)", local, want, brnf)
	}
}

// deviceMACs reads the gateway's devices' MACs, by namespace.
func deviceMACs(t *testing.T, g *netnstest.BridgedGateway) map[string]schemas.MAC {
	t.Helper()
	macs := map[string]schemas.MAC{}
	for _, ns := range []string{g.Dev1, g.Dev2} {
		netnstest.Do(t, ns, "read the device's MAC", func() error {
			i, err := net.InterfaceByName("eth0")
			if err == nil {
				macs[ns] = schemas.MAC(i.HardwareAddr)
			}
			return err
		})
	}
	return macs
}

// runGatewayLive opens the agent's n live inputs in the gateway's
// namespace, runs the agent while the home's traffic runs, closes the
// captures and waits for the agent to stop. A capture the kernel dropped
// packets of skips the test: the machine was too busy for it.
func runGatewayLive(t *testing.T, ag *Agent, conn *bus.Conn, g *netnstest.BridgedGateway, n int) {
	t.Helper()
	inputs := ag.Inputs(true)
	if len(inputs) != n {
		t.Fatalf("inputs %+v, want %d", inputs, n)
	}
	srcs := make([]capture.Source, n)
	for i := range inputs {
		netnstest.Do(t, g.GW, "open "+inputs[i].Name, func() (err error) {
			srcs[i], err = inputs[i].Open()
			return err
		})
		inputs[i].Open = func() (capture.Source, error) { return srcs[i], nil }
	}
	done := make(chan error, 1)
	go func() { done <- ag.Run(context.Background(), conn, inputs) }()
	g.Traffic(t)
	time.Sleep(300 * time.Millisecond)
	kernel, _ := srcs[0].(interface {
		Stats() (capture.LiveStats, error)
	}).Stats()
	for _, src := range srcs {
		src.Close()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not stop after its source closed")
	}
	if kernel.Dropped > 0 {
		t.Skipf("the kernel dropped %d packets of the live capture: the machine is too busy for this test", kernel.Dropped)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
