package homecount

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/pipeline/realhome/realhometest"
)

// TestHeartbeatCountOnRealUnits learns heartbeats from the early half of the
// IoT Sentinel captures and counts 1..5 units of each type that has one in
// homes assembled from the later, held-out half, beyond the emulated NAPT.
func TestHeartbeatCountOnRealUnits(t *testing.T) {
	devs := realhometest.Devices(t)
	ctx := context.Background()
	var all []float64
	typesWith := 0
	for _, d := range devs {
		ps, err := LearnEarly(ctx, d, realhome.EarlySessions)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) == 0 {
			continue
		}
		late := len(realhome.LateSessions.Pick(d.Files))
		var units []int
		for n := 1; n <= late; n++ {
			units = append(units, n)
		}
		pts, err := Run(ctx, devs, ps, nil, Config{Device: d.Name, Units: units, Homes: 3, Others: 3, Duration: 100 * time.Second,
			Sessions: realhome.LateSessions, View: gateway.NAPT, Seed: 1, Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		typesWith++
		var line strings.Builder
		for _, p := range pts {
			e, exact := Err(p.HB, p.Truth())
			all = append(all, e)
			fmt.Fprintf(&line, " n=%d active %v said %v err %.0f%% (%d/%d exact);", p.N, p.Active, p.HB, 100*e, exact, p.Homes)
			if len(p.HB) != 3 || p.Homes != 3 {
				t.Fatalf("%s n=%d: %d estimates of %d homes, want 3", d.Name, p.N, len(p.HB), p.Homes)
			}
		}
		t.Logf("%s (%s every %s):%s", d.Name, ps[0].Key, ps[0].Period.Round(time.Millisecond), line.String())
	}
	if typesWith == 0 {
		t.Fatal("no device type showed a heartbeat in its early captures")
	}
	mean := 0.0
	for _, e := range all {
		mean += e
	}
	mean /= float64(len(all))
	t.Logf("%d types with a heartbeat; mean count error over types and n: %.1f %%", typesWith, 100*mean)
	// Measured 25 % (README): a guard against the estimator getting worse,
	// not a target; the captures are short setups with few heartbeats.
	if mean > 0.35 {
		t.Fatalf("mean heartbeat count error %.1f %%, was 25 %%", 100*mean)
	}
}
