// Package evaluate judges per-packet predictions the way the HomeMole paper
// does (overall accuracy, category accuracy per device, confusion matrices)
// and writes the report people read: report.json and a self-contained
// report.html with plots.
package evaluate

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sort"
)

// Confusion counts packets by true class (row) and predicted class (column).
type Confusion struct {
	Labels []string `json:"labels"`
	Counts [][]int  `json:"counts"`
}

// NewConfusion makes an empty matrix over labels.
func NewConfusion(labels []string) *Confusion {
	c := &Confusion{Labels: labels, Counts: make([][]int, len(labels))}
	for i := range c.Counts {
		c.Counts[i] = make([]int, len(labels))
	}
	return c
}

// Add counts one packet. Unlabeled packets (truth < 0) are not judged.
func (c *Confusion) Add(truth, pred int) error {
	if truth < 0 {
		return nil
	}
	if truth >= len(c.Labels) || pred < 0 || pred >= len(c.Labels) {
		return fmt.Errorf("class out of range: truth %d, prediction %d, %d classes", truth, pred, len(c.Labels))
	}
	c.Counts[truth][pred]++
	return nil
}

// Merge adds another matrix over the same labels.
func (c *Confusion) Merge(o *Confusion) {
	for i := range c.Counts {
		for j := range c.Counts[i] {
			c.Counts[i][j] += o.Counts[i][j]
		}
	}
}

// Total is the number of judged packets.
func (c *Confusion) Total() int {
	n := 0
	for _, row := range c.Counts {
		for _, v := range row {
			n += v
		}
	}
	return n
}

// Accuracy is the seed's overall accuracy: correctly labeled packets over all packets.
func (c *Confusion) Accuracy() float64 {
	ok := 0
	for i := range c.Counts {
		ok += c.Counts[i][i]
	}
	if t := c.Total(); t > 0 {
		return float64(ok) / float64(t)
	}
	return math.NaN()
}

// ClassMetrics are one device's figures.
type ClassMetrics struct {
	Device  string `json:"device"`
	Packets int    `json:"packets"`
	// Accuracy is the seed's category accuracy: the share of this device's
	// packets labeled as this device (its recall).
	Accuracy  float64 `json:"accuracy"`
	Precision float64 `json:"precision"`
	F1        float64 `json:"f1"`
}

// PerClass computes each device's figures; devices without packets in the
// evaluated data are left out rather than reported as zero.
func (c *Confusion) PerClass() []ClassMetrics {
	var out []ClassMetrics
	for i, name := range c.Labels {
		support, predicted := 0, 0
		for j := range c.Counts {
			support += c.Counts[i][j]
			predicted += c.Counts[j][i]
		}
		if support == 0 {
			continue
		}
		tp := float64(c.Counts[i][i])
		rec := tp / float64(support)
		prec := 0.0
		if predicted > 0 {
			prec = tp / float64(predicted)
		}
		f1 := 0.0
		if prec+rec > 0 {
			f1 = 2 * prec * rec / (prec + rec)
		}
		out = append(out, ClassMetrics{Device: name, Packets: support, Accuracy: rec, Precision: prec, F1: f1})
	}
	return out
}

// MacroF1 averages F1 over the devices present in the evaluated data.
func (c *Confusion) MacroF1() float64 {
	pc := c.PerClass()
	if len(pc) == 0 {
		return math.NaN()
	}
	s := 0.0
	for _, m := range pc {
		s += m.F1
	}
	return s / float64(len(pc))
}

// Session vote rules: how the packets of a session name its device.
const (
	// VoteMajority names the device most of its packets are labeled as:
	// for models that give no probabilities.
	VoteMajority = "majority"
	// VoteLogProb names the device of highest summed log-probability over
	// its packets, the session's likeliest device if packets were
	// independent evidence. A majority throws away how sure each packet
	// is: siblings of one vendor share most of their traffic, each shared
	// packet splits its probability between them and casts a near coin
	// flip, while the few packets only one of them sends are sure. Summed,
	// the coin flips cancel and the sure packets decide.
	VoteLogProb = "log-probability"
)

// SessionVote is the device a whole capture session is named as, by Rule
// over its packets' predictions, beside the majority of its labels. Every
// session, capture and host vote in HomeMole is decided through a Voter,
// so a change to how a session is named lands in one place.
type SessionVote struct {
	Group     string `json:"group"`
	Truth     string `json:"truth"`
	Predicted string `json:"predicted"`
	Packets   int    `json:"packets"`
	Rule      string `json:"rule,omitempty"`
	// Majority is what VoteMajority names, kept beside a VoteLogProb
	// verdict so that a report shows where the two rules part.
	Majority string `json:"majority,omitempty"`
	// Share is the share of the packets predicted as Predicted.
	Share float64 `json:"share,omitempty"`
	// Votes counts the packets predicted as each device; what a family
	// vote (Family) needs when the model cannot tell members apart.
	Votes map[string]int `json:"votes,omitempty"`
}

// Family is the vendor family (FamilyOf) of the predicted device, or the
// device itself outside any, and the share of the session's packets
// predicted as a member of it.
func (v SessionVote) Family(family map[string]string) (string, float64) {
	fam := familyIn(family, v.Predicted)
	in := 0
	for d, n := range v.Votes {
		if familyIn(family, d) == fam {
			in += n
		}
	}
	return fam, float64(in) / float64(max(v.Packets, 1))
}

// Voter tallies predictions per session.
type Voter struct {
	labels []string
	truth  map[string][]int
	pred   map[string][]int
	// logp sums each session's packets' log-probabilities; scored counts
	// the packets that came with them.
	logp   map[string][]float64
	scored map[string]int
}

// NewVoter makes a voter over labels.
func NewVoter(labels []string) *Voter {
	return &Voter{labels: labels, truth: map[string][]int{}, pred: map[string][]int{}, logp: map[string][]float64{}, scored: map[string]int{}}
}

// Add counts one judged packet of group; a packet of no device (truth -1,
// the gateway's own) has no say.
func (v *Voter) Add(group string, truth, pred int) {
	v.AddScored(group, truth, pred, nil)
}

// AddScored counts one judged packet of group with its row of class
// log-probabilities (nil for a model without them; a model of fewer
// classes than labels gives the first ones). A session all of
// whose packets came with a row is named by VoteLogProb, any other by
// VoteMajority.
func (v *Voter) AddScored(group string, truth, pred int, logProbs []float32) {
	if truth < 0 || truth >= len(v.labels) || pred < 0 || pred >= len(v.labels) {
		return
	}
	if v.truth[group] == nil {
		v.truth[group] = make([]int, len(v.labels))
		v.pred[group] = make([]int, len(v.labels))
	}
	v.truth[group][truth]++
	v.pred[group][pred]++
	if len(logProbs) == 0 || len(logProbs) > len(v.labels) {
		return
	}
	sum := v.logp[group]
	if sum == nil {
		sum = make([]float64, len(v.labels))
		// Labels past the model's classes (devices only the test side
		// has) are ones it can never name.
		for c := len(logProbs); c < len(sum); c++ {
			sum[c] = math.Inf(-1)
		}
		v.logp[group] = sum
	}
	for c, lp := range logProbs {
		sum[c] += float64(lp)
	}
	v.scored[group]++
}

// Votes returns one vote per group, sorted by group. Ties go to the class
// listed first.
func (v *Voter) Votes() []SessionVote {
	var out []SessionVote
	for g, t := range v.truth {
		n := 0
		for _, x := range t {
			n += x
		}
		pred := v.pred[g]
		majority := Commonest(pred)
		best := majority
		votes := map[string]int{}
		for c, x := range pred {
			if x > 0 {
				votes[v.labels[c]] = x
			}
		}
		vote := SessionVote{Group: g, Truth: v.labels[Commonest(t)], Packets: n, Votes: votes}
		if v.scored[g] == n && !slices.ContainsFunc(v.logp[g], math.IsNaN) {
			best = Argmax(v.logp[g])
			vote.Rule, vote.Majority = VoteLogProb, v.labels[majority]
		} else {
			vote.Rule = VoteMajority
		}
		vote.Predicted, vote.Share = v.labels[best], float64(pred[best])/float64(max(n, 1))
		out = append(out, vote)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	return out
}

// Commonest is the class most packets were given (counts by class), the
// lower class on a tie: the rule that names a session, a capture or a host.
func Commonest(counts []int) int { return Argmax(counts) }

// Argmax is the index of the largest of xs, the first on a tie (0 when
// xs is empty).
func Argmax[T cmp.Ordered](xs []T) int {
	b := 0
	for i, x := range xs {
		if x > xs[b] {
			b = i
		}
	}
	return b
}

// SessionAccuracy is the share of votes naming the right device, and the
// right device type (TypeOf).
func SessionAccuracy(votes []SessionVote) (devices, types float64) {
	if len(votes) == 0 {
		return 0, 0
	}
	var d, t int
	for _, v := range votes {
		if v.Truth == v.Predicted {
			d++
		}
		if TypeOf(v.Truth) == TypeOf(v.Predicted) {
			t++
		}
	}
	return float64(d) / float64(len(votes)), float64(t) / float64(len(votes))
}

// MajorityAccuracy is SessionAccuracy had every session been named by
// VoteMajority: what the sessions' votes say beside the rule that named
// them, so a report can show what the log-probability vote changed.
func MajorityAccuracy(votes []SessionVote) (devices, types float64) {
	maj := make([]SessionVote, len(votes))
	for i, v := range votes {
		maj[i] = v
		if v.Majority != "" {
			maj[i].Predicted = v.Majority
		}
	}
	return SessionAccuracy(maj)
}
