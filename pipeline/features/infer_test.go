package features_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/schemas"
)

func directions(t *testing.T, home features.HomeConfig, frames []capture.Frame) []int8 {
	t.Helper()
	d := features.NewDecoder(home)
	out := make([]int8, len(frames))
	var p schemas.Packet
	for i, f := range frames {
		if err := d.Decode(f.LinkType, f.Data, f.CI, uint64(i), &p); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		out[i] = p.Direction
	}
	return out
}

func infer(frames []capture.Frame) features.InferredHome {
	h := features.NewHomeInference()
	for _, f := range frames {
		h.Observe(f.LinkType, f.Data)
	}
	return h.Result()
}

// agreement is the share of packets whose direction is the truth's.
func agreement(got, truth []int8) float64 {
	n := 0
	for i := range got {
		if got[i] == truth[i] {
			n++
		}
	}
	return float64(n) / float64(len(got))
}

// generated writes one home under every address plan from one seed: the
// same devices, packets and order, so the IPv4 capture decoded with the
// home's true configuration is the direction ground truth of all of them.
func generated(t *testing.T, household string, plans ...string) (*homegen.Home, map[string][]capture.Frame) {
	t.Helper()
	out := map[string][]capture.Frame{}
	var home *homegen.Home
	for _, plan := range append([]string{homegen.PlanIPv4}, plans...) {
		cfg := homegen.DefaultConfig()
		cfg.Sessions, cfg.SessionDuration, cfg.Household, cfg.AddressPlan = 1, 15*time.Minute, household, plan
		h, err := homegen.Generate(cfg, filepath.Join(t.TempDir(), plan))
		if err != nil {
			t.Fatal(err)
		}
		if plan == homegen.PlanIPv4 {
			home = h
		}
		out[plan] = capturetest.Frames(t, h.Files[0])
	}
	for _, plan := range plans {
		if len(out[plan]) != len(out[homegen.PlanIPv4]) {
			t.Fatalf("plan %s: %d packets, IPv4 %d: the plans must differ in addresses only", plan, len(out[plan]), len(out[homegen.PlanIPv4]))
		}
	}
	return home, out
}

// TestInferHome: with no configuration, the gateway MAC and the home's
// prefixes come out right on a home behind an access point that NATs remote
// servers to private addresses, an IPv6-only home and a dual-stack one,
// and direction agrees with the ground truth on at least 99 % of packets.
func TestInferHome(t *testing.T) {
	for _, household := range []string{homegen.HouseholdDemo, homegen.HouseholdPaper} {
		home, frames := generated(t, household, homegen.PlanIPv6, homegen.PlanDual, homegen.PlanPrivateRemotes)
		truthHome, err := home.HomeConfig()
		if err != nil {
			t.Fatal(err)
		}
		truth := directions(t, truthHome, frames[homegen.PlanIPv4])
		for _, plan := range []string{homegen.PlanIPv4, homegen.PlanIPv6, homegen.PlanDual, homegen.PlanPrivateRemotes} {
			r := infer(frames[plan])
			t.Logf("%s home, %s: %s", household, plan, r)
			if r.Raw {
				t.Errorf("%s: an Ethernet capture taken as raw", plan)
			}
			if r.Home.GatewayMAC.String() != home.GatewayMAC {
				t.Errorf("%s %s: gateway %s, want %s", household, plan, r.Home.GatewayMAC, home.GatewayMAC)
			}
			var global []netip.Prefix
			for _, p := range r.Home.LANNets {
				if p.Addr().Is6() && p.Addr().IsGlobalUnicast() && !p.Addr().IsPrivate() {
					global = append(global, p)
				}
			}
			wantGlobal := []netip.Prefix(nil)
			if plan == homegen.PlanIPv6 || plan == homegen.PlanDual {
				wantGlobal = []netip.Prefix{homegen.LANPrefix6}
			}
			if !slices.Equal(global, wantGlobal) {
				t.Errorf("%s %s: global home prefixes %v, want %v", household, plan, global, wantGlobal)
			}
			got := directions(t, r.Home, frames[plan])
			if a := agreement(got, truth); a < 0.99 {
				t.Errorf("%s %s: direction agrees with the truth on %.2f %% of %d packets, want >= 99 %%", household, plan, 100*a, len(got))
			} else {
				t.Logf("%s %s: direction agrees on %.3f %% of %d packets", household, plan, 100*a, len(got))
			}
		}
	}
}

// TestInferHomeTun: a raw-IP capture of the crossing traffic (a tun device
// on the home side of a VPN, IPv4 and IPv6 inside) has every unicast
// packet crossing, the home's own addresses as its home side, and the
// truth's direction.
func TestInferHomeTun(t *testing.T) {
	home, frames := generated(t, homegen.HouseholdDemo, homegen.PlanDual)
	truthHome, err := home.HomeConfig()
	if err != nil {
		t.Fatal(err)
	}
	truth := directions(t, truthHome, frames[homegen.PlanIPv4])
	for _, link := range []features.LinkType{features.LinkTypeRaw, features.LinkTypeRawDLT} {
		var tun []capture.Frame
		var tunTruth []int8
		for i, f := range frames[homegen.PlanDual] {
			if truth[i] == schemas.DirLocal {
				continue
			}
			l, err := features.ParseLink(f.LinkType, f.Data)
			if err != nil || !l.IsIP() {
				t.Fatalf("packet %d: %v", i, err)
			}
			ip := f.Data[l.Offset:]
			ci := f.CI
			ci.CaptureLength, ci.Length = len(ip), len(ip)
			tun, tunTruth = append(tun, capture.Frame{LinkType: link, Data: ip, CI: ci}), append(tunTruth, truth[i])
		}
		r := infer(tun)
		t.Logf("tun as link type %d: %s", link, r)
		if !r.Raw || !r.Home.GatewayMAC.IsZero() {
			t.Fatalf("raw capture not taken as one: %+v", r)
		}
		for _, p := range r.Home.LANNets {
			if !(p.Addr().Is4() && netip.MustParsePrefix(home.LANNet).Contains(p.Addr())) && p != homegen.LANPrefix6 {
				t.Errorf("home side holds %s, which is no home address", p)
			}
		}
		if !slices.Contains(r.Home.LANNets, homegen.LANPrefix6) {
			t.Errorf("home side %v lacks the home's IPv6 prefix %s", r.Home.LANNets, homegen.LANPrefix6)
		}
		got := directions(t, r.Home, tun)
		if a := agreement(got, tunTruth); a < 0.99 {
			t.Errorf("direction agrees with the truth on %.2f %% of %d packets, want >= 99 %%", 100*a, len(got))
		}
		if n := countLocal(got); n > 0 {
			t.Errorf("%d of %d tun packets local; every packet crosses", n, len(got))
		}
	}
}

func countLocal(dirs []int8) int {
	n := 0
	for _, d := range dirs {
		if d == schemas.DirLocal {
			n++
		}
	}
	return n
}

// TestInferHomeFile reads a capture through the capture package, as the
// commands do.
func TestInferHomeFile(t *testing.T) {
	cfg := homegen.DefaultConfig()
	cfg.Sessions, cfg.SessionDuration = 1, 5*time.Minute
	h, err := homegen.Generate(cfg, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := capture.InferHome(context.Background(), h.Files[0])
	if err != nil {
		t.Fatal(err)
	}
	if r.Home.GatewayMAC.String() != h.GatewayMAC || r.Frames == 0 {
		t.Errorf("inferred %s from %d frames, want gateway %s", r, r.Frames, h.GatewayMAC)
	}
	if _, err := capture.InferHome(context.Background(), filepath.Join(t.TempDir(), "none.pcap")); err == nil {
		t.Error("a missing capture inferred without error")
	}
}

// laidOut reads the frames of a home a test laid out by hand as a capture
// file holds them.
func laidOut(t *testing.T, fs []capturetest.IPFrame, extra ...[]byte) []capture.Frame {
	t.Helper()
	raw := slices.Clone(extra)
	for _, f := range fs {
		raw = append(raw, f.Bytes(t))
	}
	return capturetest.Frames(t, capturetest.WriteEthernet(t, raw))
}

// homeHolds lists the addresses of addrs that the inferred home prefixes
// hold.
func homeHolds(r features.InferredHome, addrs ...string) []string {
	var in []string
	for _, s := range addrs {
		if slices.ContainsFunc(r.Home.LANNets, func(p netip.Prefix) bool { return p.Contains(netip.MustParseAddr(s)) }) {
			in = append(in, s)
		}
	}
	return in
}

// checkCrossing requires every frame of fs to cross the gateway: outbound,
// or inbound when sent by one of routers.
func checkCrossing(t *testing.T, r features.InferredHome, fs []capturetest.IPFrame, frames []capture.Frame, routers ...string) {
	t.Helper()
	wrong := 0
	for i, d := range directions(t, r.Home, frames) {
		want := schemas.DirOutbound
		if slices.Contains(routers, fs[i].SrcMAC) {
			want = schemas.DirInbound
		}
		if d != want {
			if wrong == 0 {
				t.Errorf("packet %d (%s to %s): direction %d, want %d", i, fs[i].Src, fs[i].Dst, d, want)
			}
			wrong++
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d packets with the wrong direction", wrong, len(frames))
	}
}

// TestInferHomeSecondIPv6Router: a dual-stack home whose IPv4 leaves
// through the NAT router A and whose IPv6 is routed by another MAC B (an
// ISP box beside the user's router, a mesh node that routes). A is the
// gateway, and the remote /64s that B forwards are not the home's: the
// home's IPv6 traffic with the internet crosses (outbound to B, inbound
// from it) instead of decoding as local. B is told by the hop limits of
// what it forwards (below a host's initial 64, 128 or 255), which also
// tells a single remote server; and, in a capture whose hop limits say
// nothing (all 64), by the many remote /64s behind it.
func TestInferHomeSecondIPv6Router(t *testing.T) {
	const (
		a    = "02:aa:00:00:00:01" // IPv4 NAT gateway
		b    = "02:bb:00:00:00:02" // routes IPv6
		home = "2001:db8:1::/64"
	)
	hosts := []struct{ mac, v4, v6 string }{
		{"02:00:00:00:00:11", "192.168.1.11", "2001:db8:1::11"},
		{"02:00:00:00:00:12", "192.168.1.12", "2001:db8:1::12"},
	}
	remotes4 := []string{"52.1.2.3", "34.5.6.7", "104.16.1.1"}
	for _, c := range []struct {
		name     string
		remotes6 []string
		hopLimit uint8 // of the remote servers' packets as B forwards them
	}{
		{"three servers, hop limits as on the wire", []string{"2600:1f18:1::10", "2a00:1450:4001::5", "2606:4700::6810:1"}, 52},
		{"one server, hop limits as on the wire", []string{"2600:1f18:1::10"}, 115},
		{"three servers, every hop limit 64", []string{"2600:1f18:1::10", "2a00:1450:4001::5", "2606:4700::6810:1"}, 64},
	} {
		t.Run(c.name, func(t *testing.T) {
			var fs []capturetest.IPFrame
			for i := range 10 {
				for j, h := range hosts {
					r4, r6 := remotes4[(i+j)%len(remotes4)], c.remotes6[(i+j)%len(c.remotes6)]
					fs = append(fs,
						capturetest.IPFrame{SrcMAC: h.mac, DstMAC: a, Src: h.v4, Dst: r4, SrcPort: 40000, DstPort: 443, TCP: true},
						capturetest.IPFrame{SrcMAC: a, DstMAC: h.mac, Src: r4, Dst: h.v4, SrcPort: 443, DstPort: 40000, TCP: true, TTL: 50},
						capturetest.IPFrame{SrcMAC: h.mac, DstMAC: b, Src: h.v6, Dst: r6, SrcPort: 40001, DstPort: 443, TCP: true},
						capturetest.IPFrame{SrcMAC: b, DstMAC: h.mac, Src: r6, Dst: h.v6, SrcPort: 443, DstPort: 40001, TCP: true, TTL: c.hopLimit})
				}
			}
			frames := laidOut(t, fs)
			r := infer(frames)
			t.Log(r)
			if r.Home.GatewayMAC.String() != a {
				t.Errorf("gateway %s, want %s", r.Home.GatewayMAC, a)
			}
			if in := homeHolds(r, c.remotes6...); len(in) > 0 {
				t.Errorf("remote IPv6 servers %v are in the home prefixes", in)
			}
			if !slices.Contains(r.Home.LANNets, netip.MustParsePrefix(home)) {
				t.Errorf("home prefixes lack the hosts' %s", home)
			}
			checkCrossing(t, r, fs, frames, a, b)
		})
	}
}

// hubHome lays out a home whose router is the gateway to clouds: two
// devices and a hub reach them through the router (remote servers' packets
// arrive with ttl), and the hub polls five local devices, so that it talks
// to twice as many MACs as the router does. The home is IPv6 (2001:db8:1::/64)
// or, with v4, IPv4 (192.168.1.0/24). No router advertisement or DHCP: a
// capture shorter than their intervals holds none.
func hubHome(clouds []string, v4 bool, ttl uint8) []capturetest.IPFrame {
	ip := func(i int) string { return fmt.Sprintf("2001:db8:1::%x", 0x11+i) }
	hubIP := "2001:db8:1::3"
	if v4 {
		ip = func(i int) string { return fmt.Sprintf("192.168.1.%d", 11+i) }
		hubIP = "192.168.1.3"
	}
	var fs []capturetest.IPFrame
	for round := range 6 {
		for i, d := range hubDevices[:2] {
			c := clouds[(round+i)%len(clouds)]
			fs = append(fs,
				capturetest.IPFrame{SrcMAC: d, DstMAC: hubRouter, Src: ip(i), Dst: c, SrcPort: 40000, DstPort: 443, TCP: true},
				capturetest.IPFrame{SrcMAC: hubRouter, DstMAC: d, Src: c, Dst: ip(i), SrcPort: 443, DstPort: 40000, TCP: true, TTL: ttl})
		}
		c := clouds[(round+5)%len(clouds)]
		fs = append(fs,
			capturetest.IPFrame{SrcMAC: hubMAC, DstMAC: hubRouter, Src: hubIP, Dst: c, SrcPort: 40000, DstPort: 443, TCP: true},
			capturetest.IPFrame{SrcMAC: hubRouter, DstMAC: hubMAC, Src: c, Dst: hubIP, SrcPort: 443, DstPort: 40000, TCP: true, TTL: ttl})
		for i, d := range hubDevices {
			fs = append(fs,
				capturetest.IPFrame{SrcMAC: hubMAC, DstMAC: d, Src: hubIP, Dst: ip(i), SrcPort: 50000, DstPort: 80, TCP: true},
				capturetest.IPFrame{SrcMAC: d, DstMAC: hubMAC, Src: ip(i), Dst: hubIP, SrcPort: 80, DstPort: 50000, TCP: true})
		}
	}
	return fs
}

// checkHubHome requires the router of hubHome's frames fs to be the
// gateway, and every packet with a cloud to cross.
func checkHubHome(t *testing.T, fs []capturetest.IPFrame, frames []capture.Frame, r features.InferredHome) {
	t.Helper()
	if r.Home.GatewayMAC.String() != hubRouter {
		t.Errorf("gateway %s, want the router %s", r.Home.GatewayMAC, hubRouter)
	}
	wrong := 0
	for i, d := range directions(t, r.Home, frames) {
		want := int8(schemas.DirLocal)
		switch {
		case fs[i].DstMAC == hubRouter:
			want = schemas.DirOutbound
		case fs[i].SrcMAC == hubRouter:
			want = schemas.DirInbound
		}
		if d != want {
			wrong++
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d packets with the wrong direction", wrong, len(frames))
	}
}

const (
	hubRouter = "02:aa:00:00:00:01"
	hubMAC    = "02:cc:00:00:00:03"
)

var hubDevices = []string{"02:00:00:00:00:11", "02:00:00:00:00:12", "02:00:00:00:00:13", "02:00:00:00:00:14", "02:00:00:00:00:15"}

// TestInferHomeNAT64: in an IPv6-only home with NAT64 (64:ff9b::/96, as
// 464XLAT and DNS64 ISPs run it), every IPv4-only cloud lies in the one
// /64 64:ff9b::/64. Counted by their embedded IPv4 addresses, the ten
// clouds behind the router make it the gateway, as ten native IPv6 clouds
// do; the hub, which talks to twice as many MACs, is not. NAT64 addresses
// are never home prefixes, and every packet with a cloud crosses.
func TestInferHomeNAT64(t *testing.T) {
	var nat64, native []string
	for i := range 10 {
		nat64 = append(nat64, fmt.Sprintf("64:ff9b::52.%d.3.4", 10+i))
		native = append(native, fmt.Sprintf("2600:1f18:%x::10", i+1))
	}
	for _, c := range []struct {
		name     string
		clouds   []string
		hopLimit uint8
	}{
		{"NAT64, hop limits as on the wire", nat64, 47},
		{"NAT64, every hop limit 64", nat64, 64},
		{"native IPv6", native, 64},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := hubHome(c.clouds, false, c.hopLimit)
			frames := laidOut(t, fs)
			r := infer(frames)
			t.Log(r)
			checkHubHome(t, fs, frames, r)
			if in := homeHolds(r, c.clouds...); len(in) > 0 {
				t.Errorf("clouds %v are in the home prefixes", in)
			}
			for _, p := range r.Home.LANNets {
				if p.Overlaps(netip.MustParsePrefix("64:ff9b::/96")) {
					t.Errorf("home prefix %s overlaps NAT64's", p)
				}
			}
			// A router advertisement names the router whatever the rest.
			withRA := infer(laidOut(t, fs, capturetest.RouterAdvertisement(t, hubRouter, "fe80::1")))
			if withRA.Home.GatewayMAC.String() != hubRouter {
				t.Errorf("with a router advertisement: %s", withRA)
			}
		})
	}
}

// TestInferHomeBusyHub: with no public traffic to tell (an access point
// that translates remote servers to private addresses) and no DHCP answer
// or router advertisement in the capture, the MAC most hosts talk to must
// have more than twice the runner-up's peers to be the gateway, as every
// winner here: a hub that polls the home's devices talks to twice as many
// as the router, and is not taken for it.
func TestInferHomeBusyHub(t *testing.T) {
	var clouds []string
	for i := range 10 {
		clouds = append(clouds, fmt.Sprintf("10.200.0.%d", 10+i))
	}
	// With TTLs as on the wire, the translated servers' packets arrive
	// lower than any host's; with every TTL 64, the router is behind the
	// most servers of other networks.
	for _, ttl := range []uint8{64, 49} {
		fs := hubHome(clouds, true, ttl)
		frames := laidOut(t, fs)
		r := infer(frames)
		t.Logf("servers' TTL %d: %s", ttl, r)
		checkHubHome(t, fs, frames, r)
	}
}

// TestInferHomeIPv6OnlyOneCloud: the capture of one device of an
// IPv6-only home and its router (as IoT Sentinel's are), with no router
// advertisement. The device talks to one cloud server, from its stable
// and then its temporary address, and to the router's resolver at the
// router's link-local address from its own. Behind each MAC lies one
// global /64 and one peer, and the device has more addresses (three) than
// the router (two): the router is told by the servers of other networks
// behind it, or by the hop limits of what it forwards, and every packet
// crosses.
func TestInferHomeIPv6OnlyOneCloud(t *testing.T) {
	for _, hopLimit := range []uint8{64, 51} {
		fs, router, _ := capturetest.IPv6OnlyOneCloud(hopLimit)
		frames := laidOut(t, fs)
		r := infer(frames)
		t.Logf("cloud's hop limit %d: %s", hopLimit, r)
		if r.Home.GatewayMAC.String() != router {
			t.Errorf("cloud's hop limit %d: gateway %s, want the router %s", hopLimit, r.Home.GatewayMAC, router)
		}
		checkCrossing(t, r, fs, frames, router)
	}
}

// publicLAN lays out a home whose ISP routes the LAN's addresses to it
// (lan is a format for the last byte, the gateway at 1): two hosts ask the
// gateway's resolver on its LAN address and talk to five servers, whose
// packets arrive with ttl.
func publicLAN(lan string, ttl uint8) []capturetest.IPFrame {
	const gw = "02:aa:00:00:00:01"
	var fs []capturetest.IPFrame
	for i := range 10 {
		for j, h := range []string{"02:00:00:00:00:11", "02:00:00:00:00:12"} {
			me, gwIP := fmt.Sprintf(lan, 11+j), fmt.Sprintf(lan, 1)
			r := fmt.Sprintf("52.1.2.%d", (i+j)%5+1)
			fs = append(fs,
				capturetest.IPFrame{SrcMAC: h, DstMAC: gw, Src: me, Dst: gwIP, SrcPort: 33000, DstPort: 53},
				capturetest.IPFrame{SrcMAC: gw, DstMAC: h, Src: gwIP, Dst: me, SrcPort: 53, DstPort: 33000},
				capturetest.IPFrame{SrcMAC: h, DstMAC: gw, Src: me, Dst: r, SrcPort: 40000, DstPort: 443, TCP: true},
				capturetest.IPFrame{SrcMAC: gw, DstMAC: h, Src: r, Dst: me, SrcPort: 443, DstPort: 40000, TCP: true, TTL: ttl})
		}
	}
	return fs
}

// TestInferHomePublicIPv4LAN: a LAN numbered in public addresses (an ISP
// that routes a /24 to the home, no NAT) or in the ISPs' shared space
// (100.64.0.0/10) has no private-public traffic to find the gateway by; it
// is the MAC behind the most public addresses, and the LAN's /24, which
// the hosts source, is a home prefix, as the private ranges are, so that
// the gateway's own LAN address is the home's. The remote servers' is not.
func TestInferHomePublicIPv4LAN(t *testing.T) {
	for _, lan := range []string{"192.168.1.%d", "85.10.20.%d", "100.64.3.%d"} {
		net := fmt.Sprintf(lan, 0) + "/24"
		for _, ttl := range []uint8{50, 64} {
			fs := publicLAN(lan, ttl)
			frames := laidOut(t, fs)
			r := infer(frames)
			t.Logf("LAN %s, servers' TTL %d: %s", net, ttl, r)
			if r.Home.GatewayMAC.String() != fs[1].SrcMAC {
				t.Errorf("LAN %s, servers' TTL %d: gateway %s, want %s", net, ttl, r.Home.GatewayMAC, fs[1].SrcMAC)
			}
			if in := homeHolds(r, fmt.Sprintf(lan, 1), fmt.Sprintf(lan, 11), fmt.Sprintf(lan, 12)); len(in) != 3 {
				t.Errorf("LAN %s, servers' TTL %d: of the gateway's and hosts' addresses, the home prefixes hold only %v", net, ttl, in)
			}
			if in := homeHolds(r, "52.1.2.1", "52.1.2.5"); len(in) > 0 {
				t.Errorf("LAN %s, servers' TTL %d: remote servers %v are in the home prefixes", net, ttl, in)
			}
			checkCrossing(t, r, fs, frames, fs[1].SrcMAC)
		}
	}
}
