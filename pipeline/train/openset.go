package train

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"

	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/openset"
	"github.com/homemole/homemole/schemas"
)

// Unknown is the device name a host gets when it is unlike every device a
// model was trained on.
const Unknown = openset.Unknown

// DefaultUnknownQuantile is the share of held-out hosts of known devices
// that the open-set threshold is allowed to call unknown (openset.Threshold).
const DefaultUnknownQuantile = openset.DefaultQuantile

// CalibrationFolds is how many models CalibrateBySplit fits to score every
// training session once as held out.
const CalibrationFolds = 5

// Scores name how a host's confidence is measured (OpenSet.Score).
const (
	// ScoreMeanProb is the mean, over the host's packets, of the
	// probability the model gives the host's device (LSTM and BLSTM:
	// softmax; Random Forest: mean tree probability).
	ScoreMeanProb = "mean-probability"
	// ScoreVoteShare is the share of the host's packets labeled as its
	// device, for models that give no probabilities.
	ScoreVoteShare = "vote-share"
)

// OpenSet is a model's rule for saying "unknown": a host whose confidence
// is below Threshold is unlike every trained device. It is calibrated on
// held-out sessions of the training data (never on the data a model is
// tested on), so FalseUnknown is about Quantile.
type OpenSet struct {
	Score     string  `json:"score"`
	Threshold float64 `json:"threshold"`
	Quantile  float64 `json:"quantile"`
	// Hosts is how many held-out (session, device) pairs the threshold
	// was taken over; FalseUnknown the share of them it calls unknown.
	Hosts        int     `json:"hosts"`
	FalseUnknown float64 `json:"false_unknown"`
	// Sessions are the held-out capture sessions it was calibrated on.
	Sessions []string `json:"sessions,omitempty"`
	// Familiarity is the second test: a host is unknown when either says
	// so. Threshold and Familiarity.Threshold are each taken at half of
	// Quantile, so FalseUnknown, the share of held-out hosts either calls
	// unknown, stays at most Quantile. Models saved before it have none
	// and judge by confidence alone.
	Familiarity *Familiarity `json:"familiarity,omitempty"`
}

// Tally sums one host's packets up: the votes of its packets' labels and,
// when the model gives them, the probabilities of every class.
type Tally struct {
	Votes   map[int]int
	Packets int
	prob    []float64
	kinds   map[uint64]int
}

// Add counts one packet labeled pred, of kind (PacketKind); logProbs is
// its row of class log-probabilities, nil for a model without them.
func (t *Tally) Add(pred int, logProbs []float32, kind uint64) {
	if t.Votes == nil {
		t.Votes, t.kinds = map[int]int{}, map[uint64]int{}
	}
	t.Votes[pred]++
	t.kinds[kind]++
	t.Packets++
	if logProbs == nil {
		return
	}
	if t.prob == nil {
		t.prob = make([]float64, len(logProbs))
	}
	for c, lp := range logProbs {
		t.prob[c] += math.Exp(float64(lp))
	}
}

// Decide is the host's device (the majority of its packets' labels, the
// lower class on a tie), the share of its packets labeled so, and its
// confidence under score (see ScoreOf).
func (t *Tally) Decide() (best int, share, confidence float64, score string) {
	if t.Packets == 0 {
		return -1, 0, 0, ScoreVoteShare
	}
	counts := []int{}
	for c, v := range t.Votes {
		if c < 0 {
			continue // no class: a model never gives one
		}
		if c >= len(counts) {
			counts = append(counts, make([]int, c+1-len(counts))...)
		}
		counts[c] = v
	}
	if len(counts) == 0 {
		return -1, 0, 0, ScoreVoteShare
	}
	best = evaluate.Commonest(counts)
	share = float64(counts[best]) / float64(t.Packets)
	if t.prob == nil || best >= len(t.prob) {
		return best, share, share, ScoreVoteShare
	}
	return best, share, t.prob[best] / float64(t.Packets), ScoreMeanProb
}

// Familiarity is the share of the host's packets of a kind the training
// windows of class holds (see Familiarity), or 1 when f is nil: a model
// without the test finds every host familiar.
func (t *Tally) Familiarity(f *Familiarity, class int) float64 {
	if f == nil {
		return 1
	}
	if class < 0 || class >= len(f.Kinds) {
		return 0
	}
	return familiarity(t.kinds, f.Kinds[class])
}

// check refuses a stored rule predict could not apply to a model of
// classes classes.
func (o *OpenSet) check(classes int) error {
	if o == nil {
		return nil
	}
	if err := o.Familiarity.check(classes); err != nil {
		return err
	}
	if o.Score != ScoreMeanProb && o.Score != ScoreVoteShare {
		return fmt.Errorf("unknown-device score %q: want %s or %s", o.Score, ScoreMeanProb, ScoreVoteShare)
	}
	if math.IsNaN(o.Threshold) || o.Threshold < 0 || o.Threshold > 1 {
		return fmt.Errorf("unknown-device threshold %v: want a confidence between 0 and 1", o.Threshold)
	}
	return nil
}

// IsUnknown says whether a host of this confidence and familiarity (see
// Tally.Familiarity) is unlike every trained device; a model without a
// calibrated rule never says so.
func (o *OpenSet) IsUnknown(confidence, familiarity float64) bool {
	if o == nil {
		return false
	}
	return confidence < o.Threshold || (o.Familiarity != nil && familiarity < o.Familiarity.Threshold)
}

// classProbModel is a model that gives class probabilities rather than
// their logarithms (the Random Forest's mean tree probabilities).
type classProbModel interface {
	ClassProbs(ws []*schemas.Window) ([][]float32, error)
}

// Label labels the windows' packets and, where the model gives them, their
// class log-probabilities (lp[i] holds ws[i].Len rows; nil otherwise).
func Label(m Model, ws []*schemas.Window) (preds [][]int32, lp [][]float32, err error) {
	switch pm := m.(type) {
	case probModel:
		if lp, err = pm.LogProbs(ws); err != nil {
			return nil, nil, err
		}
	case classProbModel:
		if lp, err = pm.ClassProbs(ws); err != nil {
			return nil, nil, err
		}
		for _, row := range lp {
			for c, p := range row {
				// A class no tree reached gets a floor, not -Inf.
				row[c] = float32(math.Log(max(float64(p), 1e-9)))
			}
		}
	default:
		preds, err = m.Predict(ws)
		return preds, nil, err
	}
	preds = make([][]int32, len(ws))
	for i, w := range ws {
		preds[i] = make([]int32, w.Len)
		if w.Len == 0 {
			continue
		}
		k := len(lp[i]) / w.Len
		for j := range w.Len {
			row := lp[i][j*k : (j+1)*k]
			best := 0
			for c := range row {
				if row[c] > row[best] {
					best = c
				}
			}
			preds[i][j] = int32(best)
		}
	}
	return preds, lp, nil
}

// Row is packet j's log-probabilities of window i, nil without them.
func Row(lp [][]float32, ws []*schemas.Window, i, j int) []float32 {
	if lp == nil || ws[i].Len == 0 {
		return nil
	}
	k := len(lp[i]) / ws[i].Len
	return lp[i][j*k : (j+1)*k]
}

// HeldOut is what a model about to be saved learns from held-out sessions
// of its known devices: the open-set rule, and which devices it takes for
// one another (the families predict names beside a device).
type HeldOut struct {
	Unknown *OpenSet
	// Confusion counts the held-out packets, truth by prediction, over
	// the model's classes.
	Confusion [][]int
}

// Families are the devices of labels that the held-out sessions show the
// model cannot tell apart (evaluate.Families at evaluate.FamilyShare), or of one
// hardware type: learned from sessions the judging model never trained on,
// as cv learns them from its other folds.
func (h *HeldOut) Families(labels []string) ([][]string, error) {
	if len(h.Confusion) != len(labels) {
		return nil, fmt.Errorf("held-out confusion over %d classes for %d labels", len(h.Confusion), len(labels))
	}
	return evaluate.Families(&evaluate.Confusion{Labels: labels, Counts: h.Confusion}, evaluate.FamilyShare), nil
}

// Calibrate sets the open-set rule from held-out windows of known
// devices: every (session, device) pair is one host, scored as predict
// scores a host, against trained, the packet kinds of the windows m was
// trained on; each test's threshold is the quantile/2 of the hosts'
// scores, so that about quantile of known hosts would be called unknown.
// m has classes outputs.
func Calibrate(m Model, ws []*schemas.Window, trained *KindSets, classes int, quantile float64) (*HeldOut, error) {
	if _, _, err := openset.Threshold([]float64{0}, quantile); err != nil {
		return nil, err // refused before labeling a single window
	}
	h := newHeldOutHosts(classes)
	kinds := trained.Sorted()
	if err := h.add(m, ws, kinds); err != nil {
		return nil, err
	}
	return h.heldOut(quantile, kinds)
}

// heldOutHosts gathers the confidences and familiarities of known hosts,
// and the confusion of their packets, over one set of held-out windows or
// several (one per calibration fold).
type heldOutHosts struct {
	score     string
	conf, fam []float64
	sessions  []string
	confusion [][]int
}

func newHeldOutHosts(classes int) *heldOutHosts {
	h := &heldOutHosts{confusion: make([][]int, classes)}
	for i := range h.confusion {
		h.confusion[i] = make([]int, classes)
	}
	return h
}

// add labels ws with m and keeps each (session, device) pair's confidence,
// and its familiarity against kinds, the packet kinds of m's training
// windows by class.
func (h *heldOutHosts) add(m Model, ws []*schemas.Window, kinds [][]uint64) error {
	preds, lp, err := Label(m, ws)
	if err != nil {
		return fmt.Errorf("label the calibration windows: %w", err)
	}
	classes := len(h.confusion)
	for i, w := range ws {
		for j := range w.Len {
			truth, pred := int(w.Label[j]), int(preds[i][j])
			// A device the model has no class for (a test-only one) is
			// no member of a family of the model's classes.
			if truth >= 0 && truth < classes && pred >= 0 && pred < classes {
				h.confusion[truth][pred]++
			}
		}
	}
	hosts, sessions := ScoreHosts(preds, lp, ws, &Familiarity{Kinds: kinds})
	if len(hosts) == 0 {
		return fmt.Errorf("%d calibration windows hold no labeled packet: the open-set threshold needs held-out sessions of known devices", len(ws))
	}
	for _, hs := range hosts {
		h.score = hs.Score
		h.conf = append(h.conf, hs.Confidence)
		h.fam = append(h.fam, hs.Familiarity)
	}
	h.sessions = append(h.sessions, sessions...)
	return nil
}

// HostScore is one host of labeled windows, a (capture session, device)
// pair: the packets the windows label as the device, scored as predict
// scores a host.
type HostScore struct {
	Session string // the windows' group
	Device  int16  // the true device's label
	Named   int    // the device its packets' labels name
	// Confidence (under Score) and Familiarity are the open-set rule's
	// two scores; Unknown is set by the caller that applies a rule.
	Confidence, Familiarity float64
	Score                   string
	Unknown                 bool
}

// ScoreHosts tallies the labeled packets of ws per (session, device) pair
// from a model's labels preds and log-probabilities lp (nil for a model
// without them), and scores each host's familiarity against f (1 when f
// is nil). Hosts come in session, device order; sessions lists the
// sessions they are of.
func ScoreHosts(preds [][]int32, lp [][]float32, ws []*schemas.Window, f *Familiarity) (hosts []HostScore, sessions []string) {
	type key struct {
		group string
		label int16
	}
	tallies := map[key]*Tally{}
	for i, w := range ws {
		for j := range w.Len {
			if w.Label[j] < 0 {
				continue
			}
			k := key{w.Group, w.Label[j]}
			t := tallies[k]
			if t == nil {
				t = &Tally{}
				tallies[k] = t
			}
			t.Add(int(preds[i][j]), Row(lp, ws, i, j), PacketKind(w, j))
		}
	}
	seen := map[string]bool{}
	for k, t := range tallies {
		best, _, c, score := t.Decide()
		hosts = append(hosts, HostScore{Session: k.group, Device: k.label, Named: best, Confidence: c, Familiarity: t.Familiarity(f, best), Score: score})
		if !seen[k.group] {
			seen[k.group] = true
			sessions = append(sessions, k.group)
		}
	}
	slices.SortFunc(hosts, func(a, b HostScore) int {
		if a.Session != b.Session {
			return strings.Compare(a.Session, b.Session)
		}
		return int(a.Device) - int(b.Device)
	})
	slices.Sort(sessions)
	return hosts, sessions
}

// heldOut takes both tests' thresholds, each at half of quantile; kinds
// are what the saved model's familiarity is judged against.
func (h *heldOutHosts) heldOut(quantile float64, kinds [][]uint64) (*HeldOut, error) {
	o := &OpenSet{Score: h.score, Quantile: quantile, Hosts: len(h.conf), Familiarity: &Familiarity{Kinds: kinds}}
	var err error
	if o.Threshold, _, err = openset.Threshold(h.conf, quantile/2); err != nil {
		return nil, err
	}
	if o.Familiarity.Threshold, _, err = openset.Threshold(h.fam, quantile/2); err != nil {
		return nil, err
	}
	unknown := 0
	for i := range h.conf {
		if o.IsUnknown(h.conf[i], h.fam[i]) {
			unknown++
		}
	}
	o.FalseUnknown = float64(unknown) / float64(len(h.conf))
	o.Sessions = slices.Clone(h.sessions)
	sort.Strings(o.Sessions)
	return &HeldOut{Unknown: o, Confusion: h.confusion}, nil
}

// CalibrateBySplit calibrates the open-set rule of a model about to be
// trained on ws when no held-out sessions come with it (experiment
// --save), by cross-validation over its sessions: each device's sessions
// are dealt to folds, a model of the same configuration is fitted on every
// fold's complement, and each fold's hosts are scored by the model that
// never saw them. Every session of a device with two or more is held out
// once, so the threshold is a quantile over all of them rather than over
// one session a device, where the weakest held-out host alone set it; and
// the held-out confusion then spans every device too. A device with a
// single session keeps it in training. It returns nil when no device has
// two sessions.
func CalibrateBySplit(ctx context.Context, spec Spec, ws []*schemas.Window, numClasses, folds int, quantile float64, log *slog.Logger) (*HeldOut, error) {
	if folds < 2 {
		return nil, fmt.Errorf("open-set calibration folds %d: want 2 or more", folds)
	}
	if _, _, err := openset.Threshold([]float64{0}, quantile); err != nil {
		return nil, err
	}
	byDevice := map[int16][]string{}
	seen := map[string]bool{}
	for _, w := range ws {
		if seen[w.Group] {
			continue
		}
		for j := range w.Len {
			if w.Label[j] >= 0 {
				seen[w.Group] = true
				byDevice[w.Label[j]] = append(byDevice[w.Label[j]], w.Group)
				break
			}
		}
	}
	fold := map[string]int{}
	r := rand.New(rand.NewPCG(uint64(spec.Learn.Seed), 0x756e6b6e6f776e))
	devices := make([]int16, 0, len(byDevice))
	for d := range byDevice {
		devices = append(devices, d)
	}
	slices.Sort(devices)
	next := 0 // where the next device's deal starts, so small devices spread over the folds
	for _, d := range devices {
		g := byDevice[d]
		if len(g) < 2 {
			continue
		}
		sort.Strings(g)
		r.Shuffle(len(g), func(i, j int) { g[i], g[j] = g[j], g[i] })
		// Dealt round-robin, a fold holds at most ceil(len/folds) of the
		// device's sessions, fewer than all of them when len >= 2.
		for i, s := range g {
			fold[s] = (next + i) % folds
		}
		next = (next + len(g)) % folds
	}
	if len(fold) == 0 {
		log.Warn("no device has two training sessions: the model is saved without an unknown-device threshold")
		return nil, nil
	}
	h := newHeldOutHosts(numClasses)
	for f := range folds {
		var fitW, calW []*schemas.Window
		for _, w := range ws {
			if k, held := fold[w.Group]; held && k == f {
				calW = append(calW, w)
			} else {
				fitW = append(fitW, w)
			}
		}
		if len(calW) == 0 {
			continue
		}
		log.Info("calibrating the unknown-device threshold", "fold", f+1, "folds", folds, "fit_windows", len(fitW), "held_out_windows", len(calW))
		m, err := spec.Fit(ctx, fitW, numClasses, nil, log)
		if err != nil {
			return nil, fmt.Errorf("calibration model of fold %d: %w", f+1, err)
		}
		fitKinds := NewKindSets(numClasses)
		fitKinds.Add(fitW...)
		err = h.add(m, calW, fitKinds.Sorted())
		m.Close()
		if err != nil {
			return nil, fmt.Errorf("calibration fold %d: %w", f+1, err)
		}
	}
	all := NewKindSets(numClasses)
	all.Add(ws...)
	return h.heldOut(quantile, all.Sorted())
}
