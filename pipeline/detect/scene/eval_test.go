package scene

import (
	"cmp"
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
