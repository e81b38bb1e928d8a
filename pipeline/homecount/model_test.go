package homecount

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/homemole/homemole/pipeline/realhome/realhometest"
)

// TestHostModelIsTheHomeRule: the saved model counts a host as the unit the
// per-home rule (typeModel.isModel, what `home hosts` measures) does, and
// names most held-out captures by their own unit.
func TestHostModelIsTheHomeRule(t *testing.T) {
	hc, err := NewHostCounter(context.Background(), realhometest.Devices(t))
	if err != nil {
		t.Fatal(err)
	}
	// Hold out every third capture.
	var skip []string
	for i, f := range hc.sim.files {
		if i%3 == 0 {
			skip = append(skip, f)
		}
	}
	var b bytes.Buffer
	if err := hc.Model(skip).Write(&b); err != nil {
		t.Fatal(err)
	}
	t.Logf("model of %d captures: %d bytes", len(hc.sim.files)-len(skip), b.Len())
	m, err := ReadHostModel(&b)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Captures) != len(hc.sim.files)-len(skip) {
		t.Fatalf("model holds %d captures, want the %d not held out", len(m.Captures), len(hc.sim.files)-len(skip))
	}
	own, counted := 0, 0
	for _, f := range skip {
		got := m.Classify(hc.ck.keys[f])
		for u, unit := range m.Units {
			tm := typeModel{sig: hc.ck.signature(unit.Members, skip), ck: hc.ck, model: unit.Members, skip: skip}
			if is := tm.isModel(hc.ck.keys[f]); (got == u && !is) || (got < 0 && is) {
				t.Errorf("%s: classified as unit %d, the home rule says %s is %v", f, got, unit.Name, is)
			}
		}
		if got >= 0 {
			counted++
			if slices.Contains(m.Units[got].Members, hc.ck.typ[f]) {
				own++
			}
		}
	}
	t.Logf("%d held-out captures: %d counted, %d as their own unit", len(skip), counted, own)
	if own < len(skip)*3/4 || counted-own > len(skip)/20 {
		t.Errorf("%d of %d held-out captures counted as their own unit and %d as another: want three quarters and at most 5 %% wrong", own, len(skip), counted-own)
	}
}
