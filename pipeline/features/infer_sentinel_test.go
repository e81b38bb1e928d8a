package features

import (
	"strings"
	"testing"

	"github.com/homemole/homemole/schemas"
)

// TestInferHomeSentinel infers the home side of every IoT Sentinel capture
// with nothing configured and compares the directions it gives with those
// of the captures' known home (10.10.10.0/24 behind 00:b5:6d:06:08:ba).
func TestInferHomeSentinel(t *testing.T) {
	byDevice := sentinelFiles(t)
	var files, rightGW, noGW, other, packets, agree int
	for _, paths := range byDevice {
		for _, path := range paths {
			link, frames := readPcap(t, path)
			h := NewHomeInference()
			for _, f := range frames {
				h.Observe(link, f.data)
			}
			r := h.Result()
			files++
			truth, got := NewDecoder(sentinelHome), NewDecoder(r.Home)
			var a, b schemas.Packet
			gatewayTalks := false
			for i, f := range frames {
				if err := truth.Decode(link, f.data, f.ci, uint64(i), &a); err != nil {
					t.Fatal(err)
				}
				if err := got.Decode(link, f.data, f.ci, uint64(i), &b); err != nil {
					t.Fatal(err)
				}
				packets++
				if a.Direction == b.Direction {
					agree++
				}
				if a.ProtoBits&schemas.ProtoIP != 0 && a.DstMAC[0]&1 == 0 && (a.SrcMAC == sentinelHome.GatewayMAC || a.DstMAC == sentinelHome.GatewayMAC) {
					gatewayTalks = true
				}
			}
			switch {
			case r.Home.GatewayMAC == sentinelHome.GatewayMAC:
				rightGW++
			case r.Home.GatewayMAC.IsZero() && !gatewayTalks:
				// Nothing in the capture to find it by.
				noGW++
			case strings.HasPrefix(r.Gateway, "the Ethernet peer of") && !gatewayTalks:
				// A few captures were taken behind another router, which
				// carries all their public traffic.
				other++
				t.Logf("%s: %s", path, r)
			default:
				t.Errorf("%s: %s; want %s", path, r, sentinelHome.GatewayMAC)
			}
		}
	}
	share := float64(agree) / float64(packets)
	t.Logf("%d captures: gateway %s inferred in %d; none in %d, which hold no unicast IP frame of it; another router in %d; direction agrees on %d of %d packets (%.2f %%)",
		files, sentinelHome.GatewayMAC, rightGW, noGW, other, agree, packets, 100*share)
	if share < 0.99 {
		t.Errorf("direction agrees on %.2f %% of packets, want >= 99 %%", 100*share)
	}
}
