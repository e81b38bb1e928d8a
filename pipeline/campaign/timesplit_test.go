package campaign_test

import (
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
)

// TestSplitByTimeOfRealCaptures: on the IoT Sentinel captures, every
// capture of a device's earlier half began before every capture of its
// later half when the captures are dated by their first packets; ordered by
// the number in Setup-X-N-STA, they are not (Setup-A and Setup-C captures
// of one device were taken weeks apart, numbered apart).
func TestSplitByTimeOfRealCaptures(t *testing.T) {
	devs, err := campaign.DeviceDirs(sentineldata.Need(t))
	if err != nil {
		t.Fatal(err)
	}
	began := func(f string) int64 {
		ns, ok := capture.FirstPacketTime(f)
		if !ok {
			t.Fatalf("%s: no first packet", f)
		}
		return ns
	}
	// laterBefore counts the devices with a later-half capture that began
	// before one of the earlier half.
	laterBefore := func(at campaign.CaptureTime) (n int) {
		for _, d := range devs {
			early, late := campaign.SplitByTime(d.Files, at)
			var lastEarly int64
			for _, f := range early {
				lastEarly = max(lastEarly, began(f))
			}
			for _, f := range late {
				if began(f) < lastEarly {
					n++
					break
				}
			}
		}
		return n
	}
	if n := laterBefore(capture.FirstPacketTime); n != 0 {
		t.Errorf("dated by their first packets, %d devices have a later capture that began before an earlier one", n)
	}
	n := laterBefore(nil)
	if n == 0 {
		t.Error("ordered by number, every device's halves are in time order: the numbers would do")
	}
	t.Logf("ordered by the number in their names, %d of %d devices have a later-half capture taken before an earlier-half one; dated by first packets, none", n, len(devs))
}
