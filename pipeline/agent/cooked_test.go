package agent

import (
	"context"
	"testing"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
)

// TestCookedCaptureTaps: one tcpdump -i any capture of a gateway given as
// both taps of a home. The lan tap publishes its LAN side, each datagram
// once, with the device's MAC; the wan tap refuses it (it is no WAN
// capture, and read as one it would publish the LAN's packets as the
// WAN's), publishes none of its packets, ends its session and counts a read
// error.
func TestCookedCaptureTaps(t *testing.T) {
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, false)
	const n = 10
	path := capturetest.GatewayAny(t, n)
	home := &campaign.Home{Name: "h", Gateway: campaign.Gateway{Mode: "napt", LANNets: []string{"192.168.1.0/24"}},
		Taps: []campaign.Tap{{Name: "lan", Files: []string{path}}, {Name: "wan", Files: []string{path}}}}
	ag, err := New(testConfig(home, "", testLog(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := ag.RunFiles(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	packets, finals := map[string]int{}, map[string]int{}
	for _, b := range readStream(t, conn).batches {
		packets[b.Tap] += len(b.Packets)
		if b.Final {
			finals[b.Tap]++
		}
		for _, p := range b.Packets {
			if b.Tap == "lan" && p.SrcMAC != (capturetest.DeviceMAC) && p.DstMAC != (capturetest.DeviceMAC) {
				t.Errorf("a LAN packet %v -> %v is not the device's", p.SrcMAC, p.DstMAC)
			}
		}
	}
	st := ag.Stats()
	t.Logf("lan %d packets, wan %d; stats %+v", packets["lan"], packets["wan"], st)
	if packets["lan"] != 2*n || packets["wan"] != 0 || finals["lan"] != 1 || finals["wan"] != 1 {
		t.Errorf("published lan %d packets and %d final batches, wan %d and %d: want %d, 1, 0 and 1", packets["lan"], finals["lan"], packets["wan"], finals["wan"], 2*n)
	}
	if st.ReadErrors != 1 || st.OtherViews != 2*n {
		t.Errorf("%d read errors and %d frames left out, want 1 and %d", st.ReadErrors, st.OtherViews, 2*n)
	}
}
