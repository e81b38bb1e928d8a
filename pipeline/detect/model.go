// Package detect is the second half of Ma et al.'s method (seeds/003): per
// device type, a CNN that reads the time arrays of the type's sequence
// profiles over a window and says whether the type is there (softmax,
// cross-entropy), and a second CNN, run only after a detection, that says
// how many there are (ReLU output, MSE). Training samples are built as in
// the paper: background traffic is a negative; background plus n
// superposed, time-shifted copies of the device's traffic is a positive
// with count n.
//
// This is the only package of the method that needs libtorch (gotch).
package detect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/sugarme/gotch/nn"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/detect/scene"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/pipeline/seqprofile"
	"github.com/homemole/homemole/schemas"
)

// Config is everything training decides.
type Config struct {
	Gen      seqprofile.GenConfig   `json:"gen"`
	Match    seqprofile.MatchConfig `json:"match"`
	BurstGap time.Duration          `json:"burst_gap"`
	// WindowBins is the CNN's time window in bins of Match.Bin: 36 x 10 s is
	// the paper's 360 s.
	WindowBins int `json:"window_bins"`
	// MaxCount is the largest number of devices of one type the counter is
	// trained for (the paper: 100); beyond it the count is unreliable.
	MaxCount int `json:"max_count"`
	// DetectorSamples and CounterSamples are the training samples per
	// device type; half the detector's are negatives.
	DetectorSamples int `json:"detector_samples"`
	CounterSamples  int `json:"counter_samples"`
	// MaxBackground is how many background streams (other devices' captures,
	// non-IoT traffic) at most are superposed under one sample.
	MaxBackground int       `json:"max_background"`
	CNN           CNNConfig `json:"cnn"`
	// Threshold is the detector probability from which a type counts as
	// present.
	Threshold float64 `json:"threshold"`
	Seed      uint64  `json:"seed"`
	// Threads caps libtorch's threads; 0 leaves libtorch's default.
	Threads int `json:"-"`
	// Device is where the CNNs train and run: cpu, cuda, cuda:N or auto
	// ("" too). Not part of the model file.
	Device string `json:"-"`
}

// DefaultConfig trains on 10 s bins in 360 s windows, up to 100 devices.
func DefaultConfig() Config {
	return Config{
		Gen: seqprofile.DefaultGenConfig(), Match: seqprofile.DefaultMatchConfig(), BurstGap: seqprofile.DefaultBurstGap,
		WindowBins: 36, MaxCount: 100, DetectorSamples: 1600, CounterSamples: 1200, MaxBackground: 4,
		CNN: DefaultCNN(), Threshold: 0.5, Seed: 1,
	}
}

// Validate says what is wrong before any work is done.
func (c Config) Validate() error {
	if err := learn.CheckDevice(c.Device); err != nil {
		return fmt.Errorf("detect: %w", err)
	}
	if c.WindowBins < 8 {
		return fmt.Errorf("detect: window of %d bins: want >= 8 (three poolings of 2)", c.WindowBins)
	}
	if c.MaxCount < 1 || c.DetectorSamples < 2 || c.CounterSamples < 1 || c.MaxBackground < 1 {
		return fmt.Errorf("detect: max count %d, detector samples %d, counter samples %d, max background %d: want >= 1, >= 2, >= 1, >= 1",
			c.MaxCount, c.DetectorSamples, c.CounterSamples, c.MaxBackground)
	}
	if !(c.Threshold > 0 && c.Threshold < 1) {
		return fmt.Errorf("detect: threshold %v: want a probability in (0, 1)", c.Threshold)
	}
	if c.Gen.MaxProfiles <= 0 {
		return fmt.Errorf("detect: max profiles %d: want > 0 (the paper: 10)", c.Gen.MaxProfiles)
	}
	if err := c.Match.Validate(); err != nil {
		return fmt.Errorf("detect: %w", err)
	}
	return c.CNN.validate()
}

// Window is how long one CNN window lasts.
func (c Config) Window() time.Duration { return time.Duration(c.WindowBins) * c.Match.Bin }

// DeviceModel is one device type's part of a model.
type DeviceModel struct {
	Name     string               `json:"name"`
	Profiles []seqprofile.Profile `json:"profiles"`
	// Scale is, per SP, the mean matches per bin of one device: inputs are
	// divided by it so that n devices read as about n.
	Scale []float64 `json:"scale"`
	// DetectorLoss and CounterLoss are the last training epoch's mean losses.
	DetectorLoss float64 `json:"detector_loss"`
	CounterLoss  float64 `json:"counter_loss"`
}

// Model is the SPs and the two CNNs of every device type. It holds libtorch
// memory: Close it. Not safe for concurrent use.
type Model struct {
	Config  Config        `json:"config"`
	Devices []DeviceModel `json:"devices"`
	// Skipped names device types without a usable SP, and why.
	Skipped []string `json:"skipped,omitempty"`
	// Unknown is the rule that calls a window's traffic unlike every
	// device type (see CalibrateUnknown); models saved without it never
	// do.
	Unknown *UnknownRule `json:"unknown,omitempty"`

	vs       *nn.VarStore
	det, cnt []*cnn
	sps      [][]seqprofile.Vector
	channels [][]int
}

// Close frees the networks' libtorch memory.
func (m *Model) Close() {
	if m == nil || m.vs == nil {
		return
	}
	for _, t := range m.vs.Variables() {
		_ = t.Drop()
	}
	m.vs, m.det, m.cnt = nil, nil, nil
}

// Bin is the width of one time bin of SP matching (scene.Detector).
func (m *Model) Bin() time.Duration { return m.Config.Match.Bin }

// WindowBins is how many bins a CNN window spans (scene.Detector).
func (m *Model) WindowBins() int { return m.Config.WindowBins }

// DeviceNames are the model's device types, in its order (scene.Detector).
func (m *Model) DeviceNames() []string {
	out := make([]string, len(m.Devices))
	for i, d := range m.Devices {
		out[i] = d.Name
	}
	return out
}

// SPs lists every SP of every device type for a Matcher; Channels(d) are
// device d's indexes in that list.
func (m *Model) SPs() [][]seqprofile.Vector { return m.sps }

// NewMatcher is a Matcher for this model's SPs.
func (m *Model) NewMatcher() (*seqprofile.Matcher, error) {
	return seqprofile.NewMatcher(m.sps, m.Config.Match)
}

func (m *Model) index() {
	set := seqprofile.DeviceSet{}
	for _, d := range m.Devices {
		set.Devices = append(set.Devices, seqprofile.DeviceProfiles{Device: d.Name, Profiles: d.Profiles})
	}
	m.sps, m.channels = set.Flat()
}

// build creates the networks (fresh weights) for the devices in m.
// paramCount is how many float32 weights build creates, in float64 so
// that absurd sizes cannot overflow.
func (m *Model) paramCount() float64 {
	in, bins := float64(m.Config.Gen.MaxProfiles), float64(m.Config.WindowBins)
	return float64(len(m.Devices)) * (cnnParams(m.Config.CNN, in, bins, 2) + cnnParams(m.Config.CNN, in, bins, 1))
}

func (m *Model) build() error {
	dev, err := learn.ResolveDevice(m.Config.Device)
	if err != nil {
		return fmt.Errorf("detect: %w", err)
	}
	m.vs = nn.NewVarStore(dev.Device())
	root := m.vs.Root()
	in := int64(m.Config.Gen.MaxProfiles)
	bins := int64(m.Config.WindowBins)
	for i := range m.Devices {
		p := root.Sub(fmt.Sprintf("d%03d", i))
		det, err := newCNN(p.Sub("det"), m.Config.CNN, in, bins, 2)
		if err != nil {
			return fmt.Errorf("detect: device %s: detector: %w", m.Devices[i].Name, err)
		}
		cnt, err := newCNN(p.Sub("cnt"), m.Config.CNN, in, bins, 1)
		if err != nil {
			return fmt.Errorf("detect: device %s: counter: %w", m.Devices[i].Name, err)
		}
		m.det, m.cnt = append(m.det, det), append(m.cnt, cnt)
	}
	return nil
}

// Train learns every device type's SPs from its sessions, matches all SPs
// against every training stream once, then trains each type's detector
// and counter on windows superposed from those time arrays.
//
// Superposing arrays rather than packets is what makes a hundred devices
// affordable (a sample costs its window's bins, not its packets); it
// assumes matches of interleaved devices add up, which the Matcher's
// concurrent partial matches make nearly true. The evaluation does not
// assume it: it mixes packets and matches the mixture.
func Train(ctx context.Context, c *scene.Corpus, cfg Config, log *slog.Logger) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(c.Devices) == 0 {
		return nil, errors.New("detect: no device types to train: give at least one device folder")
	}
	m := &Model{Config: cfg}
	var kept []seqprofile.DeviceTraffic
	for _, d := range c.Devices {
		dp, err := seqprofile.LearnDevice(d.Device, d.Sessions, cfg.BurstGap, cfg.Gen)
		if err != nil {
			m.Skipped = append(m.Skipped, err.Error())
			log.Warn("device type skipped", "device", d.Device, "err", err)
			continue
		}
		m.Devices = append(m.Devices, DeviceModel{Name: d.Device, Profiles: dp.Profiles})
		kept = append(kept, d)
		log.Info("sequence profiles", "device", d.Device, "bursts", dp.Stats.Bursts, "pairs", dp.Stats.Pairs,
			"distinct", dp.Stats.DistinctSPs, "kept", len(dp.Profiles))
	}
	if len(m.Devices) == 0 {
		return nil, fmt.Errorf("detect: no device type yielded a sequence profile: %v", m.Skipped)
	}
	m.index()

	// One match per training stream, every SP at once.
	devArr := make([][]*seqprofile.Arrays, len(kept))
	devPkts := make([][][]seqprofile.Stamped, len(kept))
	var bgArr []*seqprofile.Arrays
	var bgPkts [][]seqprofile.Stamped
	match := func(pkts []seqprofile.Stamped) (*seqprofile.Arrays, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return seqprofile.Match(m.sps, pkts, cfg.Match)
	}
	for d, dt := range kept {
		for _, s := range dt.Sessions {
			if len(s.Device) > 0 {
				a, err := match(s.Device)
				if err != nil {
					return nil, fmt.Errorf("detect: match %s: %w", s.File, err)
				}
				devArr[d] = append(devArr[d], a)
				devPkts[d] = append(devPkts[d], s.Device)
			}
			if len(s.Background) > 0 {
				a, err := match(s.Background)
				if err != nil {
					return nil, fmt.Errorf("detect: match %s: %w", s.File, err)
				}
				bgArr = append(bgArr, a)
				bgPkts = append(bgPkts, s.Background)
			}
		}
	}
	for _, b := range c.Background {
		if len(b) == 0 {
			continue
		}
		a, err := match(b)
		if err != nil {
			return nil, fmt.Errorf("detect: match background: %w", err)
		}
		bgArr = append(bgArr, a)
		bgPkts = append(bgPkts, b)
	}

	runtime.LockOSThread() // libtorch's grad mode and gotch's error slot are per thread
	defer runtime.UnlockOSThread()
	if cfg.Threads > 0 {
		if err := learn.SetTorchThreads(cfg.Threads); err != nil {
			return nil, fmt.Errorf("detect: set libtorch threads: %w", err)
		}
	}
	if err := learn.SeedTorch(int64(cfg.Seed)); err != nil {
		return nil, fmt.Errorf("detect: seed libtorch: %w", err)
	}
	if err := m.build(); err != nil {
		return nil, err
	}
	for d := range m.Devices {
		// Background for type d: the non-device streams and every other
		// type's captures.
		pool := append([]*seqprofile.Arrays(nil), bgArr...)
		poolPkts := append([][]seqprofile.Stamped(nil), bgPkts...)
		for e := range devArr {
			if e != d {
				pool = append(pool, devArr[e]...)
				poolPkts = append(poolPkts, devPkts[e]...)
			}
		}
		if len(devArr[d]) == 0 {
			m.Close()
			return nil, fmt.Errorf("detect: device %s has no packets in its captures", m.Devices[d].Name)
		}
		t0 := time.Now()
		gen := newSampler(m, d, devArr[d], pool, cfg.Seed+uint64(d)*7919)
		gen.ownPkts, gen.poolPkts = devPkts[d], poolPkts
		m.Devices[d].Scale = gen.scale
		det := gen.detectorSet(cfg.DetectorSamples)
		loss, err := m.det[d].fit(ctx, m.det[d].vars(), det, cfg.Seed+uint64(d))
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("detect: train detector of %s: %w", m.Devices[d].Name, err)
		}
		m.Devices[d].DetectorLoss = loss
		cnt, err := gen.counterSet(cfg.CounterSamples)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("detect: counter samples of %s: %w", m.Devices[d].Name, err)
		}
		if loss, err = m.cnt[d].fit(ctx, m.cnt[d].vars(), cnt, cfg.Seed+uint64(d)+1); err != nil {
			m.Close()
			return nil, fmt.Errorf("detect: train counter of %s: %w", m.Devices[d].Name, err)
		}
		m.Devices[d].CounterLoss = loss
		log.Info("CNNs trained", "device", m.Devices[d].Name, "detector_loss", m.Devices[d].DetectorLoss,
			"counter_loss", m.Devices[d].CounterLoss, "took", time.Since(t0).Round(time.Millisecond))
	}
	return m, nil
}

// sampler superposes time arrays into CNN inputs for one device type.
type sampler struct {
	m     *Model
	dev   int
	own   []*seqprofile.Arrays
	pool  []*seqprofile.Arrays
	ch    []int
	in, w int
	scale []float64
	rng   *rand.Rand
	buf   []float32
	// The packets behind own and pool, for the counter's samples.
	ownPkts, poolPkts [][]seqprofile.Stamped
}

func newSampler(m *Model, dev int, own, pool []*seqprofile.Arrays, seed uint64) *sampler {
	s := &sampler{m: m, dev: dev, own: own, pool: pool, ch: m.channels[dev], in: m.Config.Gen.MaxProfiles,
		w: m.Config.WindowBins, rng: rand.New(rand.NewPCG(seed, 0xd37))}
	s.buf = make([]float32, s.in*s.w)
	// Scale: one device's mean matches per bin over its captures. A floor
	// keeps an SP that matched rarely from blowing its channel up.
	s.scale = make([]float64, len(s.ch))
	var bins float64
	for _, a := range own {
		bins += float64(a.Bins())
		for b := a.FirstBin; b < a.FirstBin+int64(a.Bins()); b++ {
			for i, c := range s.ch {
				s.scale[i] += float64(a.At(b, c))
			}
		}
	}
	for i := range s.scale {
		s.scale[i] = max(s.scale[i]/max(bins, 1), 0.05)
	}
	return s
}

// place picks where a source's arrays sit in a window: a source shorter
// than the window falls wholly inside it, a longer one covers it.
func (s *sampler) place(a *seqprofile.Arrays) int64 {
	l := a.Bins()
	if l <= s.w {
		return a.FirstBin - int64(s.rng.IntN(s.w-l+1))
	}
	return a.FirstBin + int64(s.rng.IntN(l-s.w+1))
}

// add superposes a at start into the raw window, from bin `from` on.
func (s *sampler) add(a *seqprofile.Arrays, start int64, from int) {
	for i, c := range s.ch {
		row := s.buf[i*s.w : (i+1)*s.w]
		for b := from; b < s.w; b++ {
			row[b] += float32(a.At(start+int64(b), c))
		}
	}
}

// background fills the raw window with 1..MaxBackground background streams.
func (s *sampler) background() {
	clear(s.buf)
	if len(s.pool) == 0 {
		return
	}
	k := 1 + s.rng.IntN(s.m.Config.MaxBackground)
	for range k {
		a := s.pool[s.rng.IntN(len(s.pool))]
		s.add(a, s.place(a), 0)
	}
}

// copies superposes n time-shifted copies of the device's traffic; with
// from > 0 they appear only from that bin on (a device that just joined).
func (s *sampler) copies(n, from int) {
	for range n {
		a := s.own[s.rng.IntN(len(s.own))]
		s.add(a, s.place(a), from)
	}
}

// drawCount draws n in 1..max: half uniform, half log-uniform, so both the
// many large counts and the few small ones are learned.
func (s *sampler) drawCount(maxN int) int {
	if s.rng.IntN(2) == 0 {
		return 1 + s.rng.IntN(maxN)
	}
	return min(maxN, max(1, int(math.Exp(s.rng.Float64()*math.Log(float64(maxN)+1)))))
}

func (s *sampler) detectorSet(n int) *samples {
	out := &samples{size: s.in * s.w}
	for i := range n {
		s.background()
		y := float32(0)
		if i%2 == 1 {
			y = 1
			count := 1
			if s.rng.IntN(3) == 0 {
				count = s.drawCount(s.m.Config.MaxCount)
			}
			from := 0
			// A quarter of the positives show a device that joined late in
			// the window, so that a detector over sliding windows answers
			// within minutes of its arrival.
			if s.rng.IntN(4) == 0 {
				from = s.w/2 + s.rng.IntN(s.w/2)
			}
			s.copies(count, from)
		}
		out.X = appendDetectorInput(out.X, s.buf, s.scale, s.in, s.w)
		out.Y = append(out.Y, y)
	}
	return out
}

// counterSet superposes packets, not arrays, and matches the mixture: a
// hundred devices' packets interleave so densely that SP matches stop
// adding up (partial matches of different devices combine), and the
// counter must learn the counts the matcher really produces. Only the
// type's own SPs are matched, which keeps a sample at the cost of its
// packets times ten SPs.
func (s *sampler) counterSet(n int) (*samples, error) {
	// Samples are drawn in parallel, each worker with its own generator
	// seeded from s's, so the set does not depend on scheduling.
	workers := max(1, min(runtime.GOMAXPROCS(0), 4, n))
	parts := make([]*samples, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for wi := range workers {
		share := n / workers
		if wi < n%workers {
			share++
		}
		sub := *s
		sub.rng = rand.New(rand.NewPCG(s.rng.Uint64(), uint64(wi)))
		sub.buf = make([]float32, len(s.buf))
		wg.Add(1)
		go func() {
			defer wg.Done()
			parts[wi], errs[wi] = sub.counterPart(share)
		}()
	}
	wg.Wait()
	out := &samples{size: s.in * s.w}
	for wi, p := range parts {
		if errs[wi] != nil {
			return nil, errs[wi]
		}
		out.X = append(out.X, p.X...)
		out.Y = append(out.Y, p.Y...)
		out.W = append(out.W, p.W...)
	}
	return out, nil
}

func (s *sampler) counterPart(n int) (*samples, error) {
	out := &samples{size: s.in * s.w}
	bin := s.m.Config.Match.Bin.Nanoseconds()
	w := int64(s.w) * bin
	// Any aligned origin will do: arrays are read relative to it.
	const origin = int64(1 << 60)
	at := origin / bin * bin
	sps := make([][]seqprofile.Vector, len(s.ch))
	for i, c := range s.ch {
		sps[i] = s.m.sps[c]
	}
	chans := make([]int, len(s.ch))
	for i := range chans {
		chans[i] = i
	}
	mt, err := seqprofile.NewMatcher(sps, s.m.Config.Match)
	if err != nil {
		return nil, err
	}
	var streams [][]seqprofile.Stamped
	for range n {
		streams = streams[:0]
		k := 1 + s.rng.IntN(s.m.Config.MaxBackground)
		for range k {
			if len(s.poolPkts) > 0 {
				streams = append(streams, s.cutInto(s.poolPkts[s.rng.IntN(len(s.poolPkts))], at, w, bin))
			}
		}
		count := s.drawCount(s.m.Config.MaxCount)
		for range count {
			streams = append(streams, s.cutInto(s.ownPkts[s.rng.IntN(len(s.ownPkts))], at, w, bin))
		}
		mt.Reset()
		mt.AddAll(scene.Superpose(streams...))
		raw := mt.Arrays().Window(s.buf[:0], at/bin, s.w, chans)
		out.X = appendCounterInput(out.X, padTo(raw, s.in*s.w), s.scale, s.in, s.w)
		out.Y = append(out.Y, float32(count))
		out.W = append(out.W, float32(1/float64(count*count)))
	}
	return out, nil
}

// cutInto takes a window's worth of a stream, placed as place does for
// arrays (a short capture wholly inside, a long one covering the window),
// and moves it onto [at, at+w) with a random phase within a bin.
func (s *sampler) cutInto(pkts []seqprofile.Stamped, at, w, bin int64) []seqprofile.Stamped {
	if len(pkts) == 0 {
		return nil
	}
	first, last := pkts[0].TsNs, pkts[len(pkts)-1].TsNs
	var from int64
	if span := last - first; span <= w {
		from = first - s.rng.Int64N(w-span+1)
	} else {
		from = first + s.rng.Int64N(span-w+1)
	}
	// Matches starting in the window may end up to a few gaps after it.
	return scene.Cut(pkts, from, from+w+bin, at-from)
}

// appendDetectorInput compresses counts with log1p(count/scale): the
// detector must answer the same for one device and a hundred.
func appendDetectorInput(dst, raw []float32, scale []float64, in, w int) []float32 {
	for c := range in {
		for b := range w {
			v := float32(0)
			if c < len(scale) {
				v = float32(math.Log1p(float64(raw[c*w+b]) / scale[c]))
			}
			dst = append(dst, v)
		}
	}
	return dst
}

// counterScale keeps the counter's inputs near 1 for a tenth of MaxCount
// devices; the counter's output is the count itself.
const counterScale = 10

// appendCounterInput keeps counts linear (n devices read as about n/10 in
// every channel): the count is what the counter must recover.
func appendCounterInput(dst, raw []float32, scale []float64, in, w int) []float32 {
	for c := range in {
		for b := range w {
			v := float32(0)
			if c < len(scale) {
				v = float32(float64(raw[c*w+b]) / (scale[c] * counterScale))
			}
			dst = append(dst, v)
		}
	}
	return dst
}

// Assess runs the model over the CNN windows ending at the given absolute
// bins (exclusive ends) of arr and returns, per window, every device type
// detected with its count.
func (m *Model) Assess(arr *seqprofile.Arrays, ends []int64) ([][]schemas.SeenDetection, error) {
	if m.vs == nil {
		return nil, errors.New("detect: Assess on a closed model")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	w, in := m.Config.WindowBins, m.Config.Gen.MaxProfiles
	out := make([][]schemas.SeenDetection, len(ends))
	raw := make([]float32, in*w)
	for d, dm := range m.Devices {
		// window is the type's SP counts of the CNN window ending at end,
		// zeroed beyond its SPs (padTo), in raw's reused memory.
		window := func(end int64) []float32 {
			raw = arr.Window(raw[:0], end-int64(w), w, m.channels[d])
			return padTo(raw, in*w)
		}
		var x []float32
		for _, end := range ends {
			x = appendDetectorInput(x, window(end), dm.Scale, in, w)
		}
		p, err := m.det[d].predict(x, in*w)
		if err != nil {
			return nil, fmt.Errorf("detect: detector of %s: %w", dm.Name, err)
		}
		var hit []int
		var cx []float32
		for i, end := range ends {
			if float64(p[i]) >= m.Config.Threshold {
				hit = append(hit, i)
				cx = appendCounterInput(cx, window(end), dm.Scale, in, w)
			}
		}
		// The counter runs only where the detector fired, as in the paper.
		counts, err := m.cnt[d].predict(cx, in*w)
		if err != nil {
			return nil, fmt.Errorf("detect: counter of %s: %w", dm.Name, err)
		}
		for j, i := range hit {
			out[i] = append(out[i], schemas.SeenDetection{Device: dm.Name, Count: max(1, int(math.Round(float64(counts[j])))), Score: float64(p[i])})
		}
	}
	return out, nil
}

func padTo(raw []float32, n int) []float32 {
	for len(raw) < n {
		raw = append(raw, 0)
	}
	return raw
}

// Detect matches a whole stream and reports the device types of every
// window of the given length (a multiple of the bin; 0 takes the CNN
// window), windows aligned to the stream's first bin. A reported window
// longer than the CNN's is assessed by CNN windows ending every quarter
// CNN window inside it, and a type counts when one of them finds it (with
// the count of its most confident one); a shorter one by the CNN window
// that ends where it ends, which reaches back into the traffic before it.
func (m *Model) Detect(ctx context.Context, pkts []seqprofile.Stamped, window time.Duration) ([]schemas.SeenWindow, error) {
	arr, err := m.matchWhole(ctx, pkts)
	if err != nil {
		return nil, err
	}
	return m.Windows(arr, window)
}

// matchWhole matches a whole stream (see wholeStreamMatcher).
func (m *Model) matchWhole(ctx context.Context, pkts []seqprofile.Stamped) (*seqprofile.Arrays, error) {
	mt, err := m.wholeStreamMatcher()
	if err != nil {
		return nil, err
	}
	for i := range pkts {
		if i%65536 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		mt.Add(pkts[i].TsNs, pkts[i].V)
	}
	if err := whole(mt); err != nil {
		return nil, err
	}
	return mt.Arrays(), nil
}

// wholeStreamMatcher holds the longest span the bins allow (a week of
// 10 s bins): Detect reports every window of a stream at the end, so its
// arrays must hold the whole stream, as they did before the matcher had a
// span.
func (m *Model) wholeStreamMatcher() (*seqprofile.Matcher, error) {
	cfg := m.Config.Match
	cfg.Span = cfg.LongestSpan()
	return seqprofile.NewMatcher(m.sps, cfg)
}

// whole refuses arrays that no longer hold their whole stream: a stream
// longer than the span has had its first bins slid out.
func whole(mt *seqprofile.Matcher) error {
	if st := mt.Stats(); st.SlidBins > 0 {
		return fmt.Errorf("detect: the stream spans more than a week of bins (%d bins of it were dropped, %d clock jumps); split the capture into pieces of under a week (editcap -i) and detect on each", st.SlidBins, st.Jumps)
	}
	return nil
}

// DetectFile is Detect over a capture file, streamed: packets go straight
// into the Matcher, so memory holds the time arrays, not the capture.
func (m *Model) DetectFile(ctx context.Context, path string, window time.Duration) (windows []schemas.SeenWindow, packets uint64, err error) {
	mt, err := m.wholeStreamMatcher()
	if err != nil {
		return nil, 0, err
	}
	st, err := capture.ReadFile(ctx, path, features.HomeConfig{}, func(p *schemas.Packet) error {
		mt.Add(p.TsNs, seqprofile.VectorOf(p))
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("detect: %s: %w", path, err)
	}
	if err := whole(mt); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	windows, err = m.Windows(mt.Arrays(), window)
	return windows, st.Decoded(), err
}

// Windows reports the windows over all bins arr holds; see Detect.
func (m *Model) Windows(arr *seqprofile.Arrays, window time.Duration) ([]schemas.SeenWindow, error) {
	bin := m.Config.Match.Bin
	if window == 0 {
		window = m.Config.Window()
	}
	if window < bin || window%bin != 0 {
		return nil, fmt.Errorf("detect: window %v: want a multiple of the model's %v bins (e.g. %v)", window, bin, m.Config.Window())
	}
	wb := int64(window / bin)
	if arr.Bins() == 0 {
		return nil, nil
	}
	step := max(1, int64(m.Config.WindowBins)/4)
	var out []schemas.SeenWindow
	var ends []int64
	var owner []int
	for start := arr.FirstBin; start < arr.FirstBin+int64(arr.Bins()); start += wb {
		end := start + wb
		out = append(out, schemas.SeenWindow{StartNs: start * int64(bin), EndNs: end * int64(bin), Detections: []schemas.SeenDetection{}})
		for e := end; ; e -= step {
			ends = append(ends, e)
			owner = append(owner, len(out)-1)
			if e-step <= start || wb <= int64(m.Config.WindowBins) {
				break
			}
		}
	}
	found, err := m.Assess(arr, ends)
	if err != nil {
		return nil, err
	}
	for i, dets := range found {
		w := &out[owner[i]]
		for _, d := range dets {
			merged := false
			for k := range w.Detections {
				if w.Detections[k].Device == d.Device {
					if d.Score > w.Detections[k].Score {
						w.Detections[k] = d
					}
					merged = true
				}
			}
			if !merged {
				w.Detections = append(w.Detections, d)
			}
		}
	}
	for i := range out {
		m.mark(&out[i], arr, out[i].StartNs/int64(bin), int(wb))
	}
	return out, nil
}
