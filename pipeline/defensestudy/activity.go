package defensestudy

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/homemole/homemole/pipeline/seqprofile"
)

// judgeActivity is the user-activity attack (seqprofile.JudgeInteraction)
// in the study's folds: the action's SP is folded from the defended
// training sessions of the acting device at their actions, and found in
// its defended held-out sessions, where every detection far from an action
// is a false alarm. The counts are summed over the folds. A fold where the
// defence leaves no SP to fold finds nothing there: that is the defence
// working, not an error.
func judgeActivity(cfg Config, names []string, sessions []session, fold []int) (seqprofile.InteractionScore, error) {
	var total seqprofile.InteractionScore
	dev := slices.Index(names, cfg.Actions.Device)
	if dev < 0 {
		return total, fmt.Errorf("the acting device %s is not among the devices studied", cfg.Actions.Device)
	}
	ic := seqprofile.DefaultInteractionConfig()
	// in is the actions inside one session's span.
	in := func(s session) []int64 {
		var out []int64
		for _, a := range cfg.Actions.At {
			if a >= s.start-int64(ic.Tolerance) && a <= s.end {
				out = append(out, a)
			}
		}
		return out
	}
	for f := range cfg.Folds {
		var own []seqprofile.Stamped
		var trainAt, testAt []int64
		var streams [][]seqprofile.Stamped
		for i, s := range sessions {
			if s.device != dev {
				continue
			}
			if fold[i] == f {
				streams = append(streams, s.pkts)
				testAt = append(testAt, in(s)...)
			} else {
				// Sessions are apart in time, so their packets join in order.
				own = append(own, s.pkts...)
				trainAt = append(trainAt, in(s)...)
			}
		}
		if len(streams) == 0 || len(trainAt) == 0 {
			continue
		}
		slices.SortStableFunc(own, func(a, b seqprofile.Stamped) int { return cmp.Compare(a.TsNs, b.TsNs) })
		slices.Sort(trainAt)
		slices.Sort(testAt)
		_, sc, err := seqprofile.JudgeInteraction(own, trainAt, streams, testAt, ic)
		if err != nil && !errors.Is(err, seqprofile.ErrNoInteractionSP) {
			return total, fmt.Errorf("fold %d: %w", f, err)
		}
		total = total.Add(sc)
	}
	if total.Actions == 0 {
		return total, fmt.Errorf("no held-out session of %s holds a %s action with one before it in training", cfg.Actions.Device, cfg.Actions.Kind)
	}
	return total, nil
}
