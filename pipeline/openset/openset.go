// Package openset is the rule by which a model says "unknown": a host (or
// a time window) whose confidence is below a threshold taken on held-out
// data of known devices is unlike every device the model was trained on.
// The per-packet models (pipeline/train) and the sequence-profile detector
// (pipeline/detect) measure confidence differently and share this rule.
package openset

import (
	"fmt"
	"math"
	"slices"
)

// Unknown is the device name a host gets when it is unlike every device a
// model was trained on.
const Unknown = "unknown"

// DefaultQuantile is the share of held-out known hosts that the threshold
// is allowed to call unknown: the threshold is this quantile of their
// confidences.
const DefaultQuantile = 0.05

// Threshold is the lower empirical quantile of the held-out confidences
// conf (each a known host's or window's), and the share of them strictly
// below it: the false-unknown rate on the data it was taken on. The
// threshold is one of the confidences, so a quantile below 1/len(conf)
// calls none unknown. conf is not changed.
func Threshold(conf []float64, quantile float64) (threshold, falseUnknown float64, err error) {
	if !(quantile > 0 && quantile < 1) {
		return 0, 0, fmt.Errorf("open-set quantile %g: want one between 0 and 1", quantile)
	}
	if len(conf) == 0 {
		return 0, 0, fmt.Errorf("open-set threshold: no held-out confidence to take it on; hold out sessions of known devices")
	}
	sorted := slices.Clone(conf)
	for _, c := range sorted {
		if math.IsNaN(c) {
			return 0, 0, fmt.Errorf("open-set threshold: a held-out confidence is NaN; the model's scores are broken")
		}
	}
	slices.Sort(sorted)
	threshold = sorted[int(math.Floor(quantile*float64(len(sorted))))]
	below := 0
	for _, c := range sorted {
		if c < threshold {
			below++
		}
	}
	return threshold, float64(below) / float64(len(sorted)), nil
}
