package scene

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/homemole/homemole/pipeline/seqprofile"
	"github.com/homemole/homemole/schemas"
)

// Detector is what judging a sequence-profile model needs of it: its time
// grid, its device types, and what it finds at given window ends. The
// CNNs behind it (pipeline/detect, libtorch) stay out of this package, so
// scenes, scores and reports build and test without cgo.
type Detector interface {
	// Bin is the width of one time bin of SP matching.
	Bin() time.Duration
	// WindowBins is how many bins one judged window spans.
	WindowBins() int
	// DeviceNames are the device types, in the model's order.
	DeviceNames() []string
	// NewMatcher matches every profile of the model.
	NewMatcher() (*seqprofile.Matcher, error)
	// Assess reports, per window ending at each of ends (in bins), the
	// device types found and how many.
	Assess(arr *seqprofile.Arrays, ends []int64) ([][]schemas.SeenDetection, error)
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// Superpose merges time-ordered streams into one, in time order; equal
// timestamps keep the order of the streams given. It merges rather than
// sorts: a hundred devices' windows are a hundred sorted runs.
func Superpose(streams ...[]seqprofile.Stamped) []seqprofile.Stamped {
	n := 0
	var runs [][]seqprofile.Stamped
	for _, s := range streams {
		if len(s) > 0 {
			n += len(s)
			runs = append(runs, s)
		}
	}
	out := make([]seqprofile.Stamped, 0, n)
	if len(runs) == 1 {
		return append(out, runs[0]...)
	}
	// A binary heap of run indexes by head timestamp, then index.
	h := make([]int, len(runs))
	for i := range h {
		h[i] = i
	}
	less := func(a, b int) bool {
		ta, tb := runs[h[a]][0].TsNs, runs[h[b]][0].TsNs
		return ta < tb || ta == tb && h[a] < h[b]
	}
	down := func(i int) {
		for {
			l := 2*i + 1
			if l >= len(h) {
				return
			}
			m := l
			if r := l + 1; r < len(h) && less(r, l) {
				m = r
			}
			if !less(m, i) {
				return
			}
			h[i], h[m] = h[m], h[i]
			i = m
		}
	}
	for i := len(h)/2 - 1; i >= 0; i-- {
		down(i)
	}
	for len(h) > 0 {
		r := &runs[h[0]]
		out = append(out, (*r)[0])
		*r = (*r)[1:]
		if len(*r) == 0 {
			h[0] = h[len(h)-1]
			h = h[:len(h)-1]
		}
		down(0)
	}
	if !slices.IsSortedFunc(out, func(a, b seqprofile.Stamped) int { return cmp.Compare(a.TsNs, b.TsNs) }) {
		// A run that was not in time order (merged taps): sort what came out.
		slices.SortStableFunc(out, func(a, b seqprofile.Stamped) int { return cmp.Compare(a.TsNs, b.TsNs) })
	}
	return out
}

// Cut returns the packets in [from, to), moved by shift.
func Cut(s []seqprofile.Stamped, from, to, shift int64) []seqprofile.Stamped {
	lo, _ := slices.BinarySearchFunc(s, from, func(p seqprofile.Stamped, t int64) int { return cmp.Compare(p.TsNs, t) })
	hi, _ := slices.BinarySearchFunc(s, to, func(p seqprofile.Stamped, t int64) int { return cmp.Compare(p.TsNs, t) })
	out := make([]seqprofile.Stamped, hi-lo)
	for i, p := range s[lo:hi] {
		out[i] = seqprofile.Stamped{TsNs: p.TsNs + shift, V: p.V}
	}
	return out
}

// Score counts one device type's window verdicts.
type Score struct {
	Device         string `json:"device"`
	TP, FP, FN, TN int
}

// Precision is TP / (TP + FP), 1 when nothing was detected.
func (s Score) Precision() float64 {
	if s.TP+s.FP == 0 {
		return 1
	}
	return float64(s.TP) / float64(s.TP+s.FP)
}

// Recall is TP / (TP + FN), 1 when the type was never there.
func (s Score) Recall() float64 {
	if s.TP+s.FN == 0 {
		return 1
	}
	return float64(s.TP) / float64(s.TP+s.FN)
}

// F is the harmonic mean of precision and recall.
func (s Score) F() float64 {
	p, r := s.Precision(), s.Recall()
	if p+r == 0 {
		return 0
	}
	return 2 * p * r / (p + r)
}

// Add counts one window: whether the type was there and whether it was found.
func (s *Score) Add(present, detected bool) {
	switch {
	case present && detected:
		s.TP++
	case present:
		s.FN++
	case detected:
		s.FP++
	default:
		s.TN++
	}
}

// sessionSpan is the bins a home session covers, aligned to bin.
func sessionSpan(s HomeSession, bin int64) (first, last int64) {
	first, last = math.MaxInt64, math.MinInt64
	for _, st := range append(slices.Collect(maps.Values(s.ByDevice)), s.Rest) {
		if len(st) > 0 {
			first, last = min(first, st[0].TsNs), max(last, st[len(st)-1].TsNs)
		}
	}
	return (first + bin - 1) / bin * bin, last / bin * bin
}

// without is a session's stream without one device type.
func without(s HomeSession, dev string) []seqprofile.Stamped {
	streams := [][]seqprofile.Stamped{s.Rest}
	for _, name := range sortedKeys(s.ByDevice) {
		if name != dev {
			streams = append(streams, s.ByDevice[name])
		}
	}
	return Superpose(streams...)
}

// copiesInto cuts n windows of a device type's traffic from random
// sessions and offsets and shifts them onto [at, at+w): n devices of one
// type behind the NAT, each with its own phase.
func copiesInto(rng *rand.Rand, sessions []HomeSession, dev string, n int, at, w, bin int64) [][]seqprofile.Stamped {
	var out [][]seqprofile.Stamped
	for range n {
		s := sessions[rng.IntN(len(sessions))]
		first, last := sessionSpan(s, bin)
		from := first + rng.Int64N(max(1, (last-first-w)/bin))*bin
		jitter := rng.Int64N(bin)
		out = append(out, Cut(s.ByDevice[dev], from, from+w+bin, at-from+jitter))
	}
	return out
}

// EvaluateNAT judges a model on held-out sessions of a generated home seen
// beyond its NAPT gateway: per device type and aligned CNN window of every
// session, one scene without the type (the home's other devices and
// non-IoT traffic) and one per n in counts with n devices of the type
// superposed, packet by packet, from random held-out sessions and phases.
// Scenes are matched as mixtures; nothing adds arrays.
func EvaluateNAT(ctx context.Context, m Detector, test []HomeSession, counts []int, seed uint64) (*Report, error) {
	bin := int64(m.Bin())
	w := int64(m.WindowBins()) * bin
	rng := rand.New(rand.NewPCG(seed, 0xe7a1))
	mt, err := m.NewMatcher()
	if err != nil {
		return nil, err
	}
	r := &Report{Window: (time.Duration(m.WindowBins()) * m.Bin()).String()}
	type acc struct{ est, err, n float64 }
	byN := map[int]*acc{}
	for _, dev := range m.DeviceNames() {
		sc := Score{Device: dev}
		var errSum float64
		var errN int
		for _, s := range test {
			first, last := sessionSpan(s, bin)
			bg := without(s, dev)
			for at := first; at+w <= last; at += w {
				for _, n := range append([]int{0}, counts...) {
					if err := ctx.Err(); err != nil {
						return nil, err
					}
					streams := append([][]seqprofile.Stamped{Cut(bg, at, at+w+bin, 0)}, copiesInto(rng, test, dev, n, at, w, bin)...)
					mt.Reset()
					mt.AddAll(Superpose(streams...))
					found, err := m.Assess(mt.Arrays(), []int64{(at + w) / bin})
					if err != nil {
						return nil, err
					}
					est := 0
					for _, d := range found[0] {
						if d.Device == dev {
							est = d.Count
						}
					}
					sc.Add(n > 0, est > 0)
					r.Windows++
					if n > 0 {
						e := math.Abs(float64(est-n)) / float64(n)
						errSum += e
						errN++
						a := byN[n]
						if a == nil {
							a = &acc{}
							byN[n] = a
						}
						a.est += float64(est)
						a.err += e
						a.n++
					}
				}
			}
		}
		dr := FromScore(sc)
		if errN > 0 {
			dr.CountError = Ratio(errSum / float64(errN))
		}
		r.PerDevice = append(r.PerDevice, dr)
	}
	for _, n := range slices.Sorted(maps.Keys(byN)) {
		a := byN[n]
		r.CountByN = append(r.CountByN, CountPoint{N: n, MeanEstimate: a.est / a.n, MeanError: a.err / a.n, Windows: int(a.n)})
	}
	return r, nil
}

// ResponseTimes fills, per device type of r, how long after a device
// appears the detector names it: in every held-out session the type's
// traffic is removed until a random moment at least one CNN window in,
// and CNN windows sliding by one bin are judged from then on until
// horizon. Windows before the moment that name the type are false alarms.
func ResponseTimes(ctx context.Context, m Detector, test []HomeSession, horizon time.Duration, seed uint64, r *Report) error {
	bin := int64(m.Bin())
	w := int64(m.WindowBins()) * bin
	rng := rand.New(rand.NewPCG(seed, 0x7e5))
	mt, err := m.NewMatcher()
	if err != nil {
		return err
	}
	for _, dev := range m.DeviceNames() {
		var times []float64
		alarms := 0
		for _, s := range test {
			if err := ctx.Err(); err != nil {
				return err
			}
			first, last := sessionSpan(s, bin)
			if last-first < 2*w {
				continue
			}
			appear := first + w + rng.Int64N(max(1, last-first-2*w-int64(horizon)))
			stream := Superpose(without(s, dev), Cut(s.ByDevice[dev], appear, last+bin, 0))
			mt.Reset()
			mt.AddAll(stream)
			var ends []int64
			for e := (first + w) / bin; e*bin <= min(last, appear+int64(horizon)); e++ {
				ends = append(ends, e)
			}
			found, err := m.Assess(mt.Arrays(), ends)
			if err != nil {
				return err
			}
			resp := math.Inf(1)
			for k, e := range ends {
				named := slices.ContainsFunc(found[k], func(d schemas.SeenDetection) bool { return d.Device == dev })
				if !named {
					continue
				}
				if e*bin <= appear {
					alarms++
					continue
				}
				resp = float64(e*bin-appear) / 1e9
				break
			}
			times = append(times, resp)
		}
		if k := slices.IndexFunc(r.PerDevice, func(d DeviceResult) bool { return d.Device == dev }); k >= 0 && len(times) > 0 {
			slices.Sort(times)
			r.PerDevice[k].ResponseSeconds = Ratio(times[len(times)/2])
			r.PerDevice[k].ResponseMax = Ratio(times[len(times)-1])
			r.PerDevice[k].FalseAlarms = alarms
		}
	}
	return nil
}

// EvaluateCaptures judges a model on held-out captures laid out like the
// IoT Sentinel data (short captures of one device each, plus whatever else
// the capture holds): each scene is one CNN window into which 1 to 4
// random held-out captures of different device types are superposed at
// random offsets, as devices behind one address; per device type, a scene
// is a positive when one of its captures is in it. Captures longer than
// the window are cut.
func EvaluateCaptures(ctx context.Context, m Detector, test []seqprofile.DeviceTraffic, scenes int, seed uint64) (*Report, error) {
	bin := int64(m.Bin())
	w := int64(m.WindowBins()) * bin
	rng := rand.New(rand.NewPCG(seed, 0xca9))
	type capt struct {
		dev  string
		pkts []seqprofile.Stamped
	}
	var caps []capt
	for _, d := range test {
		for _, s := range d.Sessions {
			if all := Superpose(s.Device, s.Background); len(all) > 0 {
				caps = append(caps, capt{d.Device, all})
			}
		}
	}
	if len(caps) == 0 {
		return nil, fmt.Errorf("detect: no held-out captures to judge")
	}
	mt, err := m.NewMatcher()
	if err != nil {
		return nil, err
	}
	names := m.DeviceNames()
	scores := make([]Score, len(names))
	for i, name := range names {
		scores[i].Device = name
	}
	const at = int64(1<<60) / int64(time.Second) * int64(time.Second)
	for range scenes {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		k := 1 + rng.IntN(4)
		present := map[string]bool{}
		var streams [][]seqprofile.Stamped
		for range k {
			c := caps[rng.IntN(len(caps))]
			if present[c.dev] {
				continue
			}
			present[c.dev] = true
			first, last := c.pkts[0].TsNs, c.pkts[len(c.pkts)-1].TsNs
			var from int64
			if span := last - first; span < w {
				from = first - rng.Int64N(w-span)
			} else {
				from = first + rng.Int64N(span-w+1)
			}
			streams = append(streams, Cut(c.pkts, from, from+w, at/bin*bin-from))
		}
		mt.Reset()
		mt.AddAll(Superpose(streams...))
		found, err := m.Assess(mt.Arrays(), []int64{at/bin + int64(m.WindowBins())})
		if err != nil {
			return nil, err
		}
		for i, name := range names {
			named := slices.ContainsFunc(found[0], func(x schemas.SeenDetection) bool { return x.Device == name })
			scores[i].Add(present[name], named)
		}
	}
	r := &Report{Window: (time.Duration(m.WindowBins()) * m.Bin()).String(), Windows: scenes}
	judged := map[string]bool{}
	for _, c := range caps {
		judged[c.dev] = true
	}
	for _, s := range scores {
		r.PerDevice = append(r.PerDevice, FromScore(s))
		if !judged[s.Device] {
			r.Notes = append(r.Notes, s.Device+": no held-out capture, so no positive scene: its recall means nothing, its false positives do")
		}
	}
	return r, nil
}
