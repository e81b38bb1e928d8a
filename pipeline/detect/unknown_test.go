package detect

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/homemole/homemole/pipeline/detect/scene"
	"github.com/homemole/homemole/pipeline/learn/modelfiletest"
	"github.com/homemole/homemole/pipeline/openset"
	"github.com/homemole/homemole/pipeline/seqprofile"
)

// TestUnknownRuleStoredAndApplied calibrates the rule on held-out streams
// of the small model's two types, checks that the model file keeps it,
// that a model file without one (written before it existed) still loads
// and never says unknown, that a damaged rule is refused, and that noise
// traffic (no trained type in it) is called unknown in Detect's windows
// while the known types' windows are not.
func TestUnknownRuleStoredAndApplied(t *testing.T) {
	m := smallModel(t)
	ctx := context.Background()
	beat, beacon, _ := synthetic(41, 1.9e18)
	r, err := m.CalibrateUnknown(ctx, [][]seqprofile.Stamped{beat, beacon}, openset.DefaultQuantile)
	if err != nil {
		t.Fatal(err)
	}
	if r.Windows < 100 || r.Sessions != 2 || r.FalseUnknown > openset.DefaultQuantile || r.Score != ScoreExplained {
		t.Errorf("rule %+v: want over 100 windows of 2 sessions, false unknown at most %g", r, openset.DefaultQuantile)
	}
	back, file := saveAndLoad(t, m)
	if back.Unknown == nil || *back.Unknown != *r {
		t.Fatalf("loaded rule %+v, saved %+v", back.Unknown, r)
	}

	// Held-out streams: the known types together, and noise alone.
	b2, c2, n2 := synthetic(77, 2.0e18)
	for name, c := range map[string]struct {
		stream      []seqprofile.Stamped
		wantUnknown bool
	}{"known types": {scene.Superpose(b2, c2), false}, "noise only": {n2, true}} {
		ws, err := back.Detect(ctx, c.stream, 0)
		if err != nil {
			t.Fatal(err)
		}
		unknown := 0
		for _, w := range ws {
			if w.Packets == 0 {
				t.Errorf("%s: window [%d, %d) holds no packet", name, w.StartNs, w.EndNs)
			}
			if w.Unknown {
				unknown++
			}
		}
		t.Logf("%s: %d of %d windows unknown", name, unknown, len(ws))
		if c.wantUnknown && unknown != len(ws) || !c.wantUnknown && unknown != 0 {
			t.Errorf("%s: %d of %d windows unknown, want %v", name, unknown, len(ws), c.wantUnknown)
		}
	}

	old := modelfiletest.EditMeta(t, file, len(modelFile.Magic), func(meta map[string]any) { delete(meta, "unknown") })
	om, err := Load(bytes.NewReader(old))
	if err != nil {
		t.Fatalf("a model file without an unknown-device rule: %v", err)
	}
	defer om.Close()
	ws, err := om.Detect(ctx, n2, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if w.Unknown || w.Packets == 0 {
			t.Errorf("a model without a rule: window %+v", w)
		}
	}
	for _, edit := range []func(map[string]any){
		func(meta map[string]any) { meta["unknown"].(map[string]any)["score"] = "vibes" },
		func(meta map[string]any) { delete(meta["unknown"].(map[string]any), "score") },
	} {
		bad := modelfiletest.EditMeta(t, file, len(modelFile.Magic), edit)
		if _, err := Load(bytes.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "unknown-device") {
			t.Errorf("a damaged unknown-device rule: %v, want it refused", err)
		}
	}
	if _, err := m.CalibrateUnknown(ctx, nil, openset.DefaultQuantile); err == nil || !strings.Contains(err.Error(), "hold out") {
		t.Errorf("calibration without held-out streams: %v", err)
	}
}
