package defensestudy

import (
	"context"
	"os"
	"testing"

	"github.com/homemole/homemole/pipeline/forest"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/gateway/defense"
)

const sentinelDir = "../../../shared/data/iot-sentinel-dev"

// TestStudyRF runs the forest on four IoT Sentinel devices, five captures
// each, under NAPT, undefended and under three defences: the undefended
// attack must beat always guessing one device (0.25), the costs must be
// those of each defence (none free but the undefended view).
func TestStudyRF(t *testing.T) {
	if _, err := os.Stat(sentinelDir); err != nil {
		t.Skipf("IoT Sentinel captures not at %s: %v", sentinelDir, err)
	}
	var specs []defense.Spec
	for _, s := range []string{"none", "pad:mtu", "cbr:20", "pad:mtu+cbr:20"} {
		sp, err := defense.ParseSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		specs = append(specs, sp)
	}
	fc := forest.DefaultConfig()
	fc.Trees, fc.Workers = 20, 1
	rows, err := Run(context.Background(), Config{Dir: sentinelDir, Devices: []string{"Aria", "D-LinkCam", "HueBridge", "TP-LinkPlugHS100"},
		MaxFiles: 5, Defenses: specs, Gateway: gateway.Config{Mode: gateway.NAPT}, Folds: 5, Window: 20, Seed: 1, Forest: fc})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(specs) {
		t.Fatalf("%d rows for %d defences", len(rows), len(specs))
	}
	for _, r := range rows {
		t.Logf("%+v", r)
		if r.Sessions != 20 {
			t.Errorf("%s: %d test sessions, want 20 (every capture held out once)", r.Defense, r.Sessions)
		}
	}
	if rows[0].SessionAccuracy <= 0.25 || rows[0].ByteOverhead != 0 || rows[0].LatencyMsMean != 0 {
		t.Errorf("undefended: %+v: want session accuracy above 0.25 and no cost", rows[0])
	}
	if rows[1].ByteOverhead <= 0 || rows[1].PacketOverhead != 0 {
		t.Errorf("pad:mtu: %+v: want bytes, no packets added", rows[1])
	}
	if rows[2].PacketOverhead <= 0 || rows[2].LatencyMsP99 <= 0 || rows[3].ByteOverhead <= rows[2].ByteOverhead {
		t.Errorf("cbr:20 %+v, pad:mtu+cbr:20 %+v: want dummies, waits, and padding to cost more", rows[2], rows[3])
	}
}
