package homecount

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"testing"

	"github.com/homemole/homemole/pipeline/heartbeat"
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

// BenchmarkClassify is the cost of judging one host with the IoT Sentinel
// model (277 captures): real hosts (every capture's own keys), and a
// hostile one that sent the most distinct keys a host may hold, none of
// them any capture's. A home whose 512 hosts send new keys every window
// has them all judged again each window.
func BenchmarkClassify(b *testing.B) {
	hc, err := NewHostCounter(context.Background(), realhometest.Devices(b))
	if err != nil {
		b.Fatal(err)
	}
	m := hc.Model(nil)
	var real []map[heartbeat.Key]bool
	for _, f := range hc.sim.files {
		real = append(real, hc.ck.keys[f])
	}
	hostile := map[heartbeat.Key]bool{}
	for i := range DefaultLiveConfig().MaxHostKeys {
		hostile[heartbeat.Key{Transport: 17, Port: int32(20000 + i), IPLen: uint16(100 + i%900)}] = true
	}
	b.Run("real", func(b *testing.B) {
		for i := range b.N {
			m.Classify(real[i%len(real)])
		}
	})
	b.Run("hostile", func(b *testing.B) {
		for range b.N {
			m.Classify(hostile)
		}
	})
}

// TestClassifyIsJaccard: Classify, which counts shared keys through each
// key's captures, names every host as the plain rule does: the first unit
// whose signature holds a DHCP name the host gave, if that unit's nearest
// capture is at least half as near as the nearest of all; or else the
// unit of the nearest capture by Jaccard similarity over every capture, if
// the host
// sent a key of its signature (ties to the first such unit). Hosts: every
// capture's keys, every two captures' together (some with two names), and
// each with a key no capture shows.
func TestClassifyIsJaccard(t *testing.T) {
	hc, err := NewHostCounter(context.Background(), realhometest.Devices(t))
	if err != nil {
		t.Fatal(err)
	}
	var skip []string
	for i, f := range hc.sim.files {
		if i%4 == 1 {
			skip = append(skip, f)
		}
	}
	m := hc.Model(skip)
	plain := func(keys map[heartbeat.Key]bool) int {
		best := make([]float64, len(m.Units))
		for _, c := range m.Captures {
			set := map[heartbeat.Key]bool{}
			for _, k := range c.Keys {
				set[heartbeat.Key(k)] = true
			}
			best[c.Unit] = max(best[c.Unit], similarity(keys, set))
		}
		top := slices.Max(best)
		for u := range m.Units {
			for k := range keys {
				if k.Port >= DHCPOption && m.sigs[u][k] {
					if 2*best[u] >= top {
						return u
					}
					goto nearest
				}
			}
		}
	nearest:
		for u, b := range best {
			for k := range keys {
				if b == top && m.sigs[u][k] {
					return u
				}
			}
		}
		return -1
	}
	counted := 0
	for i, f := range hc.sim.files {
		g := hc.sim.files[(i*7+3)%len(hc.sim.files)]
		both := maps.Clone(hc.ck.keys[f])
		maps.Copy(both, hc.ck.keys[g])
		odd := maps.Clone(hc.ck.keys[f])
		odd[heartbeat.Key{Transport: 17, Port: 4, IPLen: 9999}] = true
		for _, keys := range []map[heartbeat.Key]bool{hc.ck.keys[f], both, odd} {
			got, want := m.Classify(keys), plain(keys)
			if got != want {
				t.Fatalf("%s (%d keys): Classify says unit %d, the plain rule %d", f, len(keys), got, want)
			}
			if got >= 0 {
				counted++
			}
		}
	}
	if counted < len(hc.sim.files) {
		t.Errorf("%d of %d hosts counted: the check wants most hosts to be some unit", counted, 3*len(hc.sim.files))
	}
}
