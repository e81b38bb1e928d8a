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
	Actions     int `json:"actions"`
	Found       int `json:"found"`
	Detections  int `json:"detections"`
	FalseAlarms int `json:"false_alarms"`
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

// F1 is the harmonic mean of precision and recall (0 without detections).
func (s InteractionScore) F1() float64 {
	p, r := s.Precision(), s.Recall()
	if p+r == 0 {
		return 0
	}
	return 2 * p * r / (p + r)
}

// Add sums two scores, as folds are summed.
func (s InteractionScore) Add(o InteractionScore) InteractionScore {
	return InteractionScore{Actions: s.Actions + o.Actions, Found: s.Found + o.Found,
		Detections: s.Detections + o.Detections, FalseAlarms: s.FalseAlarms + o.FalseAlarms}
}

// InteractionConfig says how an action's SP is learnt and judged.
type InteractionConfig struct {
	// Gap cuts bursts (DefaultBurstGap); MaxLen caps a training burst, as
	// a stream that never pauses (constant-rate shaping) has no burst end.
	Gap    time.Duration
	MaxLen int
	// Bin is FindInteraction's bin; Tolerance how far a detection may be
	// from a true action and still find it.
	Bin, Tolerance time.Duration
	Dist           Distance
}

// DefaultInteractionConfig is the burst gap, bursts of at most 64 packets,
// 1 s bins and 2 s of tolerance, the default distance.
func DefaultInteractionConfig() InteractionConfig {
	return InteractionConfig{Gap: DefaultBurstGap, MaxLen: 64, Bin: time.Second, Tolerance: 2 * time.Second, Dist: DefaultDistance()}
}

// ActionBursts cuts, for every action time (sorted), the burst of pkts (in
// time order) that the action starts: from its first packet at or after
// the action (10 ms of clock slack), starting within a second of it, up to
// a pause of gap or maxLen packets. Actions without such a packet have no
// burst.
func ActionBursts(pkts []Stamped, at []int64, gap time.Duration, maxLen int) []Burst {
	var out []Burst
	for _, a := range at {
		i, _ := slices.BinarySearchFunc(pkts, a-int64(10*time.Millisecond), func(p Stamped, t int64) int {
			switch {
			case p.TsNs < t:
				return -1
			case p.TsNs > t:
				return 1
			}
			return 0
		})
		if i == len(pkts) || pkts[i].TsNs > a+int64(time.Second) {
			continue
		}
		b := Burst{pkts[i].V}
		for j := i + 1; j < len(pkts) && len(b) < maxLen && pkts[j].TsNs-pkts[j-1].TsNs < int64(gap); j++ {
			b = append(b, pkts[j].V)
		}
		out = append(out, b)
	}
	return out
}

// ErrNoInteractionSP says the training repetitions of an action share no
// SP: the attacker has nothing to look for.
var ErrNoInteractionSP = errors.New("no interaction SP")

// JudgeInteraction is Ma et al.'s interaction detection as an attack: the
// action's SP is folded from the bursts of own (the device's packets) at
// the training action times, then found in the streams (each in time
// order) and judged against the held-out action times; detections within
// the tolerance of a training action are not judged. An SP that cannot be
// folded (fewer than two bursts, or none shared) finds nothing: the
// error wraps ErrNoInteractionSP, beside the score of no detections.
func JudgeInteraction(own []Stamped, trainAt []int64, streams [][]Stamped, testAt []int64, cfg InteractionConfig) (Profile, InteractionScore, error) {
	none := InteractionScore{Actions: len(testAt)}
	sp, err := InteractionProfile(ActionBursts(own, trainAt, cfg.Gap, cfg.MaxLen), &cfg.Dist)
	if err != nil {
		return Profile{}, none, fmt.Errorf("%w: %v", ErrNoInteractionSP, err)
	}
	var found []int64
	for _, s := range streams {
		f, err := FindInteraction(sp, s, cfg.Bin, cfg.Gap)
		if err != nil {
			return sp, none, err
		}
		found = append(found, f...)
	}
	slices.Sort(found)
	judged := found[:0]
	for _, d := range found {
		if !slices.ContainsFunc(trainAt, func(a int64) bool { return d >= a-int64(cfg.Tolerance) && d <= a+int64(cfg.Tolerance) }) {
			judged = append(judged, d)
		}
	}
	return sp, ScoreInteraction(judged, testAt, cfg.Tolerance), nil
}
