package detect

import (
	"context"
	"fmt"
	"math"

	"github.com/homemole/homemole/pipeline/openset"
	"github.com/homemole/homemole/pipeline/seqprofile"
	"github.com/homemole/homemole/schemas"
)

// ScoreExplained is how the detector measures a window's confidence: the
// share of its packets that matches of the model's SPs account for, every
// match counted as its SP's length in packets (so a share above 1 is
// possible where SPs overlap). It is the per-window counterpart of the
// per-packet models' mean probability of a host's device
// (train.ScoreMeanProb): traffic of a device type the model never saw
// matches few SPs, while its packets still count.
const ScoreExplained = "explained-share"

// UnknownRule calls a window unknown when it holds traffic (the matcher
// counts every packet, matched or not) that the known types' SPs do not
// explain: its confidence is below Threshold. The threshold is
// openset.Threshold over held-out windows of known device types, so about
// Quantile of such windows are called unknown (FalseUnknown, measured on
// them).
type UnknownRule struct {
	Score     string  `json:"score"`
	Threshold float64 `json:"threshold"`
	Quantile  float64 `json:"quantile"`
	// Windows is how many held-out windows with traffic the threshold was
	// taken over, in Sessions held-out sessions.
	Windows      int     `json:"windows"`
	Sessions     int     `json:"sessions"`
	FalseUnknown float64 `json:"false_unknown"`
}

// IsUnknown says whether a window of this many packets and this confidence
// is unlike every device type; an empty window is silence, not unknown, and
// a model without a rule never says so.
func (r *UnknownRule) IsUnknown(packets uint64, confidence float64) bool {
	return r != nil && packets > 0 && confidence < r.Threshold
}

// check refuses a stored rule the detector could not apply.
func (r *UnknownRule) check() error {
	if r == nil {
		return nil
	}
	if r.Score != ScoreExplained {
		return fmt.Errorf("unknown-device score %q: this build knows %s", r.Score, ScoreExplained)
	}
	if math.IsNaN(r.Threshold) || r.Threshold < 0 {
		return fmt.Errorf("unknown-device threshold %v: want an explained share of at least 0", r.Threshold)
	}
	return nil
}

// explained is the confidence of the n bins from absolute bin first (see
// ScoreExplained) and their packet count.
func (m *Model) explained(arr *seqprofile.Arrays, first int64, n int) (share float64, packets uint64) {
	packets = arr.PacketsIn(first, n)
	if packets == 0 {
		return 0, 0
	}
	var used float64
	for b := range n {
		for s, sp := range m.sps {
			used += float64(arr.At(first+int64(b), s)) * float64(len(sp))
		}
	}
	return used / float64(packets), packets
}

// mark sets a window's packet count, confidence and unknown verdict from
// the n bins from absolute bin first.
func (m *Model) mark(w *schemas.SeenWindow, arr *seqprofile.Arrays, first int64, n int) {
	share, packets := m.explained(arr, first, n)
	w.Packets, w.Confidence = packets, share
	w.Unknown = m.Unknown.IsUnknown(packets, share)
}

// CalibrateUnknown takes the model's unknown-device rule from held-out
// sessions of its known device types (never the sessions it is tested on):
// each stream is matched whole, every CNN window ending at a bin that
// holds traffic is one sample, as the online detector judges them, and
// the threshold is the quantile of their confidences (openset.Threshold).
// It sets m.Unknown and returns it.
func (m *Model) CalibrateUnknown(ctx context.Context, streams [][]seqprofile.Stamped, quantile float64) (*UnknownRule, error) {
	var conf []float64
	sessions := 0
	w := int64(m.Config.WindowBins)
	for i, s := range streams {
		if len(s) == 0 {
			continue
		}
		arr, err := m.matchWhole(ctx, s)
		if err != nil {
			return nil, fmt.Errorf("detect: calibration session %d: %w", i, err)
		}
		for e := arr.FirstBin + 1; e <= arr.FirstBin+int64(arr.Bins()); e++ {
			if share, packets := m.explained(arr, e-w, int(w)); packets > 0 {
				conf = append(conf, share)
			}
		}
		sessions++
	}
	th, fu, err := openset.Threshold(conf, quantile)
	if err != nil {
		return nil, fmt.Errorf("detect: unknown-device threshold over %d held-out sessions: %w", sessions, err)
	}
	m.Unknown = &UnknownRule{Score: ScoreExplained, Threshold: th, Quantile: quantile, Windows: len(conf), Sessions: sessions, FalseUnknown: fu}
	return m.Unknown, nil
}
