package scene

import (
	"cmp"
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/homemole/homemole/pipeline/seqprofile"
)

func TestSuperposeMergesInOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var streams [][]seqprofile.Stamped
	var all []seqprofile.Stamped
	for i := range 17 {
		var s []seqprofile.Stamped
		ts := int64(0)
		for range rng.IntN(50) {
			ts += rng.Int64N(5)
			s = append(s, seqprofile.Stamped{TsNs: ts, V: seqprofile.Vector{int32(i)}})
		}
		streams = append(streams, s)
		all = append(all, s...)
	}
	got := Superpose(streams...)
	slices.SortStableFunc(all, func(a, b seqprofile.Stamped) int { return cmp.Compare(a.TsNs, b.TsNs) })
	if !slices.Equal(got, all) {
		t.Fatal("merge differs from a stable sort of the concatenation")
	}
	if len(Superpose()) != 0 || len(Superpose(nil, streams[1])) != len(streams[1]) {
		t.Error("empty inputs mishandled")
	}
}

func TestScore(t *testing.T) {
	var s Score
	for _, c := range [][2]bool{{true, true}, {true, true}, {true, false}, {false, true}, {false, false}} {
		s.Add(c[0], c[1])
	}
	if s.Precision() != 2.0/3 || s.Recall() != 2.0/3 || s.F() != 2.0/3 {
		t.Errorf("P %v R %v F %v, want 2/3 each", s.Precision(), s.Recall(), s.F())
	}
}

// TestRatioRoundTrip: a figure with nothing to judge is null in the JSON
// report and NaN again when read back, never 0.
func TestRatioRoundTrip(t *testing.T) {
	in := DeviceResult{Device: "plug", CountError: Ratio(math.NaN()), ResponseSeconds: Ratio(math.Inf(1)), ResponseMax: 12.5}
	js, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out DeviceResult
	if err := json.Unmarshal(js, &out); err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	if !math.IsNaN(float64(out.CountError)) || !math.IsNaN(float64(out.ResponseSeconds)) || out.ResponseMax != 12.5 {
		t.Fatalf("read back %+v from %s", out, js)
	}
}
