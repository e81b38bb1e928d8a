package identify_test

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"testing"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/identify"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/schemas"
)

// oneDevice names every packet the model's first device: enough to see
// which host rows predict makes and which packets each holds.
type oneDevice struct{}

func (oneDevice) Predict(ws []*schemas.Window) ([][]int32, error) {
	out := make([][]int32, len(ws))
	for i, w := range ws {
		out[i] = make([]int32, w.Len)
	}
	return out, nil
}
func (oneDevice) Save(io.Writer) error { return nil }
func (oneDevice) Device() string       { return "cpu" }
func (oneDevice) Close()               {}

// predict runs File as `homemole predict` does without flags: the home
// side inferred from the capture, hosts by MAC.
func predict(t *testing.T, fs []capturetest.IPFrame) *identify.Result {
	t.Helper()
	var raw [][]byte
	for _, f := range fs {
		raw = append(raw, f.Bytes(t))
	}
	path := capturetest.WriteEthernet(t, raw)
	r, err := capture.InferHome(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("inferred: %s", r)
	res, err := identify.File(t.Context(), oneDevice{}, train.Meta{Model: "stub", Labels: []string{"SmartPlug"}, Window: 4}, path, r.Home, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gateway %s (%d packets left out); host rows %v", res.Gateway, res.GatewayPackets, hostRows(res))
	return res
}

func hostRows(res *identify.Result) map[string]int {
	out := map[string]int{}
	for _, h := range res.Hosts {
		out[h.Host] = h.Packets
	}
	return out
}

// TestFileSecondIPv6Router: predict on a home whose IPv4 leaves through
// the NAT gateway A and whose IPv6 is routed by another MAC B. B is no
// host (were the remote /64s it forwards taken for the home's, it would be
// a host row holding every IPv6 packet from the internet, named a device),
// and the host holds all its packets, IPv4 and IPv6, both ways.
func TestFileSecondIPv6Router(t *testing.T) {
	const (
		a  = "02:aa:00:00:00:01"
		b  = "02:bb:00:00:00:02"
		h1 = "02:00:00:00:00:11"
	)
	var fs []capturetest.IPFrame
	for i := range 20 {
		r4 := fmt.Sprintf("52.1.2.%d", i%4+1)
		r6 := fmt.Sprintf("2600:1f18:%x::10", i%4+1)
		fs = append(fs,
			capturetest.IPFrame{SrcMAC: h1, DstMAC: a, Src: "192.168.1.11", Dst: r4, SrcPort: 40000, DstPort: 443, TCP: true},
			capturetest.IPFrame{SrcMAC: a, DstMAC: h1, Src: r4, Dst: "192.168.1.11", SrcPort: 443, DstPort: 40000, TCP: true, TTL: 50},
			capturetest.IPFrame{SrcMAC: h1, DstMAC: b, Src: "2001:db8:1::11", Dst: r6, SrcPort: 40001, DstPort: 443, TCP: true},
			capturetest.IPFrame{SrcMAC: b, DstMAC: h1, Src: r6, Dst: "2001:db8:1::11", SrcPort: 443, DstPort: 40001, TCP: true, TTL: 50})
	}
	res := predict(t, fs)
	rows := hostRows(res)
	if n, ok := rows[b]; ok {
		t.Errorf("the MAC that routes the home's IPv6 (%s) is a host row of %d packets", b, n)
	}
	if rows[h1] != 80 {
		t.Errorf("host %s holds %d of its 80 packets", h1, rows[h1])
	}
}

// TestFileNAT64Home: predict on an IPv6-only home with NAT64 whose hub
// polls five local devices and talks to twice as many MACs as the router.
// The router is the gateway, left out and never a host row; the hub, a
// device, is one.
func TestFileNAT64Home(t *testing.T) {
	const (
		router = "02:aa:00:00:00:01"
		hub    = "02:cc:00:00:00:03"
		hubIP  = "2001:db8:1::3"
	)
	devs := []string{"02:00:00:00:00:11", "02:00:00:00:00:12", "02:00:00:00:00:13", "02:00:00:00:00:14", "02:00:00:00:00:15"}
	ip := func(i int) string { return fmt.Sprintf("2001:db8:1::%x", 0x11+i) }
	cloud := func(i int) string { return fmt.Sprintf("64:ff9b::52.%d.3.4", 10+i%10) }
	var fs []capturetest.IPFrame
	for round := range 6 {
		for i, d := range devs[:2] {
			fs = append(fs,
				capturetest.IPFrame{SrcMAC: d, DstMAC: router, Src: ip(i), Dst: cloud(round + i), SrcPort: 40000, DstPort: 443, TCP: true},
				capturetest.IPFrame{SrcMAC: router, DstMAC: d, Src: cloud(round + i), Dst: ip(i), SrcPort: 443, DstPort: 40000, TCP: true, TTL: 47})
		}
		fs = append(fs,
			capturetest.IPFrame{SrcMAC: hub, DstMAC: router, Src: hubIP, Dst: cloud(round + 5), SrcPort: 40000, DstPort: 443, TCP: true},
			capturetest.IPFrame{SrcMAC: router, DstMAC: hub, Src: cloud(round + 5), Dst: hubIP, SrcPort: 443, DstPort: 40000, TCP: true, TTL: 47})
		for i, d := range devs {
			fs = append(fs,
				capturetest.IPFrame{SrcMAC: hub, DstMAC: d, Src: hubIP, Dst: ip(i), SrcPort: 50000, DstPort: 80, TCP: true},
				capturetest.IPFrame{SrcMAC: d, DstMAC: hub, Src: ip(i), Dst: hubIP, SrcPort: 80, DstPort: 50000, TCP: true})
		}
	}
	res := predict(t, fs)
	rows := hostRows(res)
	if res.Gateway != router {
		t.Errorf("predict's gateway is %s, want the router %s", res.Gateway, router)
	}
	if n, ok := rows[router]; ok {
		t.Errorf("the router %s is a host row of %d packets", router, n)
	}
	if _, ok := rows[hub]; !ok {
		t.Errorf("the hub %s, a device, is no host row", hub)
	}
}

// TestFileIPv6OnlyOneCloud: predict on the capture of one device of an
// IPv6-only home and its router, the device talking to one cloud from
// more addresses (link-local, stable, temporary) than the router shows.
// The device is the host row, holding all its packets; the router is the
// gateway.
func TestFileIPv6OnlyOneCloud(t *testing.T) {
	fs, router, dev := capturetest.IPv6OnlyOneCloud(0)
	res := predict(t, fs)
	if res.Gateway != router {
		t.Errorf("predict's gateway is %s, want the router %s", res.Gateway, router)
	}
	if rows := hostRows(res); rows[dev] != 80 || len(rows) != 1 {
		t.Errorf("host rows %v, want the device %s with its 80 packets", rows, dev)
	}
}

// TestFileBehindRepeater: predict on a home where two devices sit behind a
// MAC-NAT Wi-Fi repeater (a range extender in client mode gives their
// frames its own MAC) and a third is on the LAN itself. The repeater's MAC
// is found as the host counter finds it (homecount.ReadRelayed): each
// device behind it is a host row of its own, named by its address at the
// repeater and holding its packets both ways; the repeater, whose own
// frames (IPv6 link-local, as a dual-stack device's IPv6 would be) name no
// device, is no host row, its packets left out and counted. Split by MAC
// alone, the two devices were one host row, named one device.
func TestFileBehindRepeater(t *testing.T) {
	const (
		gw  = "02:aa:00:00:00:01"
		rep = "02:dd:00:00:00:04"
		h3  = "02:00:00:00:00:13"
	)
	ips := []string{"192.168.1.11", "192.168.1.12"}
	var fs []capturetest.IPFrame
	for i := range 20 {
		for j, ip := range ips {
			r := fmt.Sprintf("52.%d.2.3", 10*j+i%3)
			fs = append(fs,
				capturetest.IPFrame{SrcMAC: rep, DstMAC: gw, Src: ip, Dst: r, SrcPort: 40000, DstPort: 443 + uint16(j*1000), TCP: true},
				capturetest.IPFrame{SrcMAC: gw, DstMAC: rep, Src: r, Dst: ip, SrcPort: 443 + uint16(j*1000), DstPort: 40000, TCP: true, TTL: 50})
		}
		fs = append(fs,
			capturetest.IPFrame{SrcMAC: h3, DstMAC: gw, Src: "192.168.1.13", Dst: "52.30.2.3", SrcPort: 40000, DstPort: 8883, TCP: true},
			capturetest.IPFrame{SrcMAC: gw, DstMAC: h3, Src: "52.30.2.3", Dst: "192.168.1.13", SrcPort: 8883, DstPort: 40000, TCP: true, TTL: 50})
		if i%5 == 0 {
			fs = append(fs, capturetest.IPFrame{SrcMAC: rep, DstMAC: "33:33:00:00:00:01", Src: "fe80::dd:4", Dst: "ff02::1", SrcPort: 5353, DstPort: 5353})
		}
	}
	res := predict(t, fs)
	if res.Gateway != gw {
		t.Fatalf("predict's gateway is %s, want %s", res.Gateway, gw)
	}
	want := map[string]int{ips[0] + "@" + rep: 40, ips[1] + "@" + rep: 40, h3: 40}
	if rows := hostRows(res); !maps.Equal(rows, want) {
		t.Errorf("host rows %v, want %v", rows, want)
	}
	for _, h := range res.Hosts {
		if h.Host == h3 {
			if h.Repeater != "" || h.Addr != "" {
				t.Errorf("host %s, on the LAN itself, is behind repeater %q at %q", h3, h.Repeater, h.Addr)
			}
		} else if h.Repeater != rep || h.Host != h.Addr+"@"+rep {
			t.Errorf("host %s is behind repeater %q at %q, want %s", h.Host, h.Repeater, h.Addr, rep)
		}
	}
	if !slices.Equal(res.Repeaters, []string{rep}) || res.RepeaterPackets != 4 {
		t.Errorf("repeaters %v with %d packets of their own left out, want [%s] with its 4", res.Repeaters, res.RepeaterPackets, rep)
	}
}

// TestFileNoRepeater: the control of TestFileBehindRepeater, an ordinary
// home with no repeater, host rows by MAC as before. A device whose lease
// changes half way (it never goes back to the old address) and one that
// keeps two addresses in two networks at once (as an Edimax plug of IoT
// Sentinel's does) are each one host row of its MAC, with all its
// packets; nothing is left out but the gateway's.
func TestFileNoRepeater(t *testing.T) {
	const (
		gw     = "02:aa:00:00:00:01"
		moved  = "02:00:00:00:00:11"
		twoNet = "02:00:00:00:00:12"
		plain  = "02:00:00:00:00:13"
	)
	var fs []capturetest.IPFrame
	for i := range 20 {
		lease := "192.168.1.11"
		if i >= 10 {
			lease = "192.168.1.21"
		}
		second := "192.168.1.12"
		if i%2 == 1 {
			second = "10.10.10.186"
		}
		for _, d := range []struct{ mac, ip string }{{moved, lease}, {twoNet, second}, {plain, "192.168.1.13"}} {
			r := fmt.Sprintf("52.1.2.%d", i%3+1)
			fs = append(fs,
				capturetest.IPFrame{SrcMAC: d.mac, DstMAC: gw, Src: d.ip, Dst: r, SrcPort: 40000, DstPort: 443, TCP: true},
				capturetest.IPFrame{SrcMAC: gw, DstMAC: d.mac, Src: r, Dst: d.ip, SrcPort: 443, DstPort: 40000, TCP: true, TTL: 50})
		}
	}
	res := predict(t, fs)
	want := map[string]int{moved: 40, twoNet: 40, plain: 40}
	if rows := hostRows(res); !maps.Equal(rows, want) {
		t.Errorf("host rows %v, want %v", rows, want)
	}
	for _, h := range res.Hosts {
		if h.Repeater != "" || h.Addr != "" {
			t.Errorf("host %s is behind repeater %q at %q in a home with none", h.Host, h.Repeater, h.Addr)
		}
	}
	if res.Repeaters != nil || res.RepeaterPackets != 0 {
		t.Errorf("repeaters %v with %d packets left out in a home with none", res.Repeaters, res.RepeaterPackets)
	}
}
