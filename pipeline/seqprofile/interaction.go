package seqprofile

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// InteractionProfile is the SP of one user action (Ma et al., Section
// III-C): repeated many times, the action makes its device send about the
// same burst each time, and folding those bursts with the LCS of eq. 4
// leaves the packets they all share, the fields that vary among them
// abstracted to Any. Folding rather than the pairwise SPs of Generate: an
// action's burst is short and nearly the same every time, and one SP per
// action is what detection matches.
func InteractionProfile(bursts []Burst, dist *Distance) (Profile, error) {
	if len(bursts) < 2 {
		return Profile{}, fmt.Errorf("interaction SP: %d bursts, want at least 2 repetitions of the action", len(bursts))
	}
	sp := slices.Clone([]Vector(bursts[0]))
	for i, b := range bursts[1:] {
		if sp = LCS(Burst(sp), b, dist); len(sp) == 0 {
			return Profile{}, fmt.Errorf("interaction SP: repetition %d shares no packet with the ones before it", i+2)
		}
	}
	return Profile{Elems: sp, Count: len(bursts), Importance: Importance(sp, len(bursts))}, nil
}

// FindInteraction reports when an interaction's SP matches in a stream (in
// time order): the start of every bin of width bin where a match starts.
func FindInteraction(sp Profile, stream []Stamped, bin time.Duration, gap time.Duration) ([]int64, error) {
	if len(sp.Elems) == 0 {
		return nil, errors.New("interaction SP is empty")
	}
	m, err := NewMatcher([][]Vector{sp.Elems}, MatchConfig{Bin: bin, MaxGap: gap, MaxPartials: 1024})
	if err != nil {
		return nil, err
	}
	// The matcher holds only a span of bins, so the bins a match can no
	// longer start in (settle bins behind the present) are read and
	// trimmed as the stream goes.
	arr := m.Arrays()
	var out []int64
	harvest := func(upTo int64) {
		for b := arr.FirstBin; b < min(upTo, arr.FirstBin+int64(arr.Bins())); b++ {
			if arr.At(b, 0) > 0 {
				out = append(out, b*arr.BinNs)
			}
		}
		m.Trim(upTo)
	}
	settle := int64(len(sp.Elems))*int64(gap)/int64(bin) + 2
	chunk := max(2*settle, 1024)
	for _, p := range stream {
		m.Add(p.TsNs, p.V)
		if int64(arr.Bins()) > chunk+settle {
			harvest(arr.FirstBin + int64(arr.Bins()) - settle)
		}
	}
	harvest(arr.FirstBin + int64(arr.Bins()))
	return out, nil
}

// InteractionScore compares detections with the true times of the action
// (both Unix ns, sorted): a detection within tol of a true time finds it,
// one far from every true time is a false alarm.
type InteractionScore struct {
	Actions, Found, Detections, FalseAlarms int
}

// ScoreInteraction matches detections to true action times.
func ScoreInteraction(detected, truth []int64, tol time.Duration) InteractionScore {
	near := func(t int64, xs []int64) bool {
		i, _ := slices.BinarySearch(xs, t-int64(tol))
		return i < len(xs) && xs[i] <= t+int64(tol)
	}
	s := InteractionScore{Actions: len(truth), Detections: len(detected)}
	for _, t := range truth {
		if near(t, detected) {
			s.Found++
		}
	}
	for _, d := range detected {
		if !near(d, truth) {
			s.FalseAlarms++
		}
	}
	return s
}

// Precision is the share of detections near a true action.
func (s InteractionScore) Precision() float64 {
	if s.Detections == 0 {
		return 0
	}
	return float64(s.Detections-s.FalseAlarms) / float64(s.Detections)
}

// Recall is the share of true actions detected.
func (s InteractionScore) Recall() float64 {
	if s.Actions == 0 {
		return 0
	}
	return float64(s.Found) / float64(s.Actions)
}
