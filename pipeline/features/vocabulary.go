package features

import (
	"cmp"
	"slices"
)

// Vocabulary ranks the values (ports, frame lengths) seen at least minCount
// times by frequency and keeps the first max of them. Negative values
// (schemas.NoPort) never enter. Ties go to the lower value, so that the
// embedding rows or columns a model gives them do not depend on map order
// and a model is the same from run to run.
func Vocabulary(counts map[int32]int, max, minCount int) []int32 {
	type vc struct {
		value int32
		count int
	}
	var ranked []vc
	for v, c := range counts {
		if v >= 0 && c >= minCount {
			ranked = append(ranked, vc{v, c})
		}
	}
	slices.SortFunc(ranked, func(a, b vc) int {
		if c := cmp.Compare(b.count, a.count); c != 0 {
			return c
		}
		return cmp.Compare(a.value, b.value)
	})
	if len(ranked) > max {
		ranked = ranked[:max]
	}
	out := make([]int32, len(ranked))
	for i, r := range ranked {
		out[i] = r.value
	}
	return out
}
