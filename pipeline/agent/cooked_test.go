package agent

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
)

// TestCookedCaptureTaps: one tcpdump -i any capture of a gateway (or one
// dumpcap capture of its interfaces) given as both taps of a home. The lan tap publishes its LAN side, each datagram
// once, with the device's MAC; the wan tap its WAN side, each datagram
// once, translated, from the gateway's WAN MAC or to it. Each tap counts
// the other's frames as left out.
func TestCookedCaptureTaps(t *testing.T) {
	const n = 10
	t.Run("tcpdump-any", func(t *testing.T) { gatewayTaps(t, capturetest.GatewayAny(t, n), n) })
	// The same gateway's LAN and WAN interfaces in one pcapng file
	// (dumpcap -i br-lan -i eth1): read so too.
	t.Run("dumpcap-interfaces", func(t *testing.T) { gatewayTaps(t, capturetest.GatewayInterfaces(t, n), n) })
}

func gatewayTaps(t *testing.T, path string, n int) {
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, false)
	home := &campaign.Home{Name: "h", Gateway: campaign.Gateway{Mode: "napt", LANNets: []string{"192.168.1.0/24"}},
		Taps: []campaign.Tap{{Name: "lan", Files: []string{path}}, {Name: "wan", Files: []string{path}}}}
	ag, err := New(testConfig(home, "", testLog(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := ag.RunFiles(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	packets, finals := sidesPublished(t, conn)
	st := ag.Stats()
	t.Logf("lan %d packets, wan %d; stats %+v", packets["lan"], packets["wan"], st)
	if packets["lan"] != 2*n || packets["wan"] != 2*n || finals["lan"] != 1 || finals["wan"] != 1 {
		t.Errorf("published lan %d packets and %d final batches, wan %d and %d: want %d and 1 each", packets["lan"], finals["lan"], packets["wan"], finals["wan"], 2*n)
	}
	if st.ReadErrors != 0 || st.OtherViews != 4*n {
		t.Errorf("%d read errors and %d frames left out, want 0 and %d", st.ReadErrors, st.OtherViews, 4*n)
	}
}

// TestWatchedGatewayInterfaces: dumpcap's ring buffer of a gateway's LAN
// and WAN interfaces (dumpcap -b duration:900 -i br-lan -i eth1 -w
// gw.pcapng) in one folder, which both taps of a home watch. Each file is
// a session of each tap: the lan tap publishes its LAN side, the wan tap
// its WAN side, every datagram once.
func TestWatchedGatewayInterfaces(t *testing.T) {
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, false)
	const n = 5
	dir := t.TempDir()
	t0 := time.Now().Add(-time.Hour)
	for i, name := range []string{"gw_00001_20261207100000.pcapng", "gw_00002_20261207101500.pcapng"} {
		raw, err := os.ReadFile(capturetest.GatewayInterfaces(t, n))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		at := t0.Add(time.Duration(i) * 15 * time.Minute)
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
	home := &campaign.Home{Name: "h", Gateway: campaign.Gateway{Mode: "napt", LANNets: []string{"192.168.1.0/24"}},
		Taps: []campaign.Tap{{Name: "lan", Watch: dir}, {Name: "wan", Watch: dir}}}
	cfg := testConfig(home, t.TempDir(), testLog(t))
	cfg.WatchPoll, cfg.WatchSettle = 20*time.Millisecond, time.Minute
	stop := runWatching(t, conn, cfg)
	// Each tap ends a session per file.
	ended := func() int {
		n := 0
		for _, b := range readStream(t, conn).batches {
			if b.Final {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(20 * time.Second); ended() < 4 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	packets, finals := sidesPublished(t, conn)
	if packets["lan"] != 2*2*n || packets["wan"] != 2*2*n || finals["lan"] != 2 || finals["wan"] != 2 {
		t.Errorf("lan %d packets in %d sessions, wan %d in %d: want %d in 2 each", packets["lan"], finals["lan"], packets["wan"], finals["wan"], 4*n)
	}
}

// sidesPublished counts the packets and the sessions ended per tap of
// GatewayAny's home, and requires the lan tap's packets to be the
// device's, with its MAC and LAN address, and the wan tap's to carry
// neither.
func sidesPublished(t *testing.T, conn *bus.Conn) (packets, finals map[string]int) {
	t.Helper()
	packets, finals = map[string]int{}, map[string]int{}
	lanNet := netip.MustParsePrefix("192.168.1.0/24")
	for _, b := range readStream(t, conn).batches {
		packets[b.Tap] += len(b.Packets)
		if b.Final {
			finals[b.Tap]++
		}
		for _, p := range b.Packets {
			dev := p.SrcMAC == capturetest.DeviceMAC || p.DstMAC == capturetest.DeviceMAC
			lanAddr := lanNet.Contains(p.SrcIP) || lanNet.Contains(p.DstIP)
			switch {
			case b.Tap == "lan" && (!dev || !lanAddr):
				t.Errorf("a LAN packet %v -> %v (%v -> %v) is not the device's", p.SrcMAC, p.DstMAC, p.SrcIP, p.DstIP)
			case b.Tap == "wan" && (dev || lanAddr):
				t.Errorf("a WAN packet %v -> %v (%v -> %v) is the LAN's", p.SrcMAC, p.DstMAC, p.SrcIP, p.DstIP)
			}
		}
	}
	return packets, finals
}
