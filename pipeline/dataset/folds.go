package dataset

import (
	"fmt"
	"math/rand/v2"
	"slices"
)

// foldSalt keeps fold assignment independent of the reader's shuffle
// under the same seed.
const foldSalt = 0x686d2d666f6c6473 // "hm-folds"

// Folds deals groups into k test folds for grouped k-fold cross-validation:
// every group is in exactly one fold, so no capture session is ever on both
// sides of a split, and fold sizes differ by at most one group. The deal
// depends on the seed and the set of groups only, not on their order.
func Folds(groups []string, k int, seed uint64) ([][]string, error) {
	gs := slices.Clone(groups)
	slices.Sort(gs)
	gs = slices.Compact(gs)
	if k < 2 || k > len(gs) {
		return nil, fmt.Errorf("%d-fold cross-validation over %d groups: want 2 <= k <= groups", k, len(gs))
	}
	rng := rand.New(rand.NewPCG(seed, foldSalt))
	rng.Shuffle(len(gs), func(i, j int) { gs[i], gs[j] = gs[j], gs[i] })
	folds := make([][]string, k)
	for i, g := range gs {
		folds[i%k] = append(folds[i%k], g)
	}
	for _, f := range folds {
		slices.Sort(f)
	}
	return folds, nil
}

// FoldKeep returns ReadOptions.Keep filters for fold i: train keeps the
// groups of every other fold, test the groups of fold i.
func FoldKeep(folds [][]string, i int) (train, test func(group string) bool) {
	in := map[string]bool{}
	for _, g := range folds[i] {
		in[g] = true
	}
	return func(g string) bool { return !in[g] }, func(g string) bool { return in[g] }
}
