package seqprofile

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// MatchConfig says how SPs are found in a stream.
type MatchConfig struct {
	// Bin is the width of one element of a time array. A CNN window of
	// 360 s is 36 bins of 10 s: fine enough to show a 30 s heartbeat's
	// rhythm, coarse enough that a few bins hold the paper's 360 s.
	Bin time.Duration
	// MaxGap is how long a started match waits for its next element before
	// it is given up: the burst gap, since an SP comes from one burst.
	MaxGap time.Duration
	// MaxPartials bounds the started matches that wait at one element of
	// one SP; beyond it the oldest is given up. It bounds memory when a
	// first element is common (a bare ACK) and allows that many devices of
	// one type to be mid-burst at the same moment.
	MaxPartials int
	// Span is how much stream time the time arrays hold, ending at the
	// stream's present; older bins are dropped as the present moves on.
	// It bounds the arrays to Span/Bin bins per SP whatever the
	// timestamps say. 0 takes DefaultSpan (model files written before it
	// existed carry none).
	Span time.Duration `json:",omitempty"`
	// Horizon is how far from the present a packet may be stamped and
	// still be matched. A packet further off (epoch 0 from a pcapng simple
	// packet block, a clock that jumped a year) is counted as an outlier
	// and dropped, unless it starts a run of jumpRun such packets in a row,
	// in time order: then the stream really moved (a capture resumed after
	// a pause), and the present moves there. 0 takes DefaultHorizon.
	Horizon time.Duration `json:",omitempty"`
}

// DefaultSpan holds a day of arrays: 8,640 bins of 10 s per SP, about
// 24 MB for 700 SPs, far more than the CNN window and its lag.
const DefaultSpan = 24 * time.Hour

// DefaultHorizon takes an hour's jump in a stream's clock as a timestamp
// error until the packets after it confirm it.
const DefaultHorizon = time.Hour

// jumpRun is how many consecutive packets, in time order, must be far
// from the present before the present moves to the first of them. They
// are held, not lost, and replayed once the jump is confirmed.
const jumpRun = 16

// DefaultMatchConfig is 10 s bins, a 1 s gap and 1024 partial matches.
func DefaultMatchConfig() MatchConfig {
	return MatchConfig{Bin: 10 * time.Second, MaxGap: DefaultBurstGap, MaxPartials: 1024, Span: DefaultSpan, Horizon: DefaultHorizon}
}

// span and horizon are Span and Horizon with their defaults applied; the
// default span is shorter than a day with bins narrower than 10 s.
func (c MatchConfig) span() time.Duration {
	switch {
	case c.Span != 0:
		return c.Span
	case c.Bin > DefaultSpan/maxSpanBins:
		return max(DefaultSpan, c.Bin)
	}
	return maxSpanBins * c.Bin
}
func (c MatchConfig) horizon() time.Duration { return cmp.Or(c.Horizon, DefaultHorizon) }

// MinBin is the narrowest time-array bin: an array holds a count per bin
// and SP, so a nanosecond bin (a damaged model file, a typo) would ask for
// a slot per nanosecond of traffic.
const MinBin = 100 * time.Millisecond

// Validate reports settings the matcher cannot work with.
func (c MatchConfig) Validate() error {
	if c.Bin < MinBin || c.MaxGap <= 0 || c.MaxPartials <= 0 {
		return fmt.Errorf("SP matching: bin %v, max gap %v, max partials %d: want bin >= %v and the others > 0 (defaults 10s, 1s, 1024)", c.Bin, c.MaxGap, c.MaxPartials, MinBin)
	}
	if c.Span < 0 || c.Horizon < 0 {
		return fmt.Errorf("SP matching: span %v, horizon %v: want >= 0 (0 takes the defaults %v and %v)", c.Span, c.Horizon, DefaultSpan, DefaultHorizon)
	}
	// The span bounds memory: a span of a year would undo the bound.
	if c.span() < c.Bin || c.span()/c.Bin > maxSpanBins {
		return fmt.Errorf("SP matching: span %v with %v bins: want between one bin and %d bins (default %v)", c.span(), c.Bin, maxSpanBins, DefaultSpan)
	}
	// A horizon inside the burst gap would cut matches that are in time.
	if c.horizon() < c.MaxGap {
		return fmt.Errorf("SP matching: horizon %v is shorter than the max gap %v; want at least the gap (default %v)", c.horizon(), c.MaxGap, DefaultHorizon)
	}
	return nil
}

// maxSpanBins caps Span/Bin: a week of 10 s bins.
const maxSpanBins = 60480

// LongestSpan is the longest Span the config allows: what a caller that
// needs whole streams in its arrays (offline detection) asks for.
func (c MatchConfig) LongestSpan() time.Duration { return maxSpanBins * c.Bin }

// Arrays holds one time array per SP: Counts[b*NumSP+s] is how many
// matches of SP s started in bin FirstBin+b, where bin i covers
// [i*BinNs, (i+1)*BinNs) in Unix nanoseconds. Bins are aligned to the
// epoch so that arrays from different streams line up.
//
// Packets[b] is how many packets of the stream fell in bin FirstBin+b,
// matched or not: traffic no SP explains (a device type the model never
// saw) must not look like silence. Arrays built without it (superposed
// training samples) leave it empty.
type Arrays struct {
	BinNs    int64
	FirstBin int64
	NumSP    int
	Counts   []uint32
	Packets  []uint32
}

// Bins is the number of bins held.
func (a *Arrays) Bins() int {
	if a.NumSP == 0 {
		return 0
	}
	return len(a.Counts) / a.NumSP
}

// At is the count of SP s in absolute bin b, 0 outside the held range.
func (a *Arrays) At(b int64, s int) uint32 {
	i := b - a.FirstBin
	if i < 0 || i >= int64(a.Bins()) {
		return 0
	}
	return a.Counts[int(i)*a.NumSP+s]
}

// PacketsIn is the number of packets in the n bins from absolute bin
// first.
func (a *Arrays) PacketsIn(first int64, n int) uint64 {
	var sum uint64
	for b := max(first-a.FirstBin, 0); b < first-a.FirstBin+int64(n) && b < int64(len(a.Packets)); b++ {
		sum += uint64(a.Packets[b])
	}
	return sum
}

// Window appends to dst, channel by channel, the counts of the SPs sps over
// the n bins from absolute bin first: the [len(sps)][n] input of a CNN.
func (a *Arrays) Window(dst []float32, first int64, n int, sps []int) []float32 {
	for _, s := range sps {
		for b := range n {
			dst = append(dst, float32(a.At(first+int64(b), s)))
		}
	}
	return dst
}

// AddTo adds a's counts into dst at the same absolute bins, growing dst,
// which must have the same bin width and SP count.
func (a *Arrays) AddTo(dst *Arrays) {
	if a.Bins() == 0 {
		return
	}
	if dst.Bins() == 0 {
		dst.FirstBin = a.FirstBin
	}
	dst.cover(a.FirstBin)
	dst.cover(a.FirstBin + int64(a.Bins()) - 1)
	off := int(a.FirstBin-dst.FirstBin) * a.NumSP
	for i, c := range a.Counts {
		dst.Counts[off+i] += c
	}
	if len(a.Packets) > 0 {
		dst.growPackets()
		off = int(a.FirstBin - dst.FirstBin)
		for i, c := range a.Packets {
			dst.Packets[off+i] += c
		}
	}
}

// growPackets gives Packets a slot per held bin.
func (a *Arrays) growPackets() {
	for len(a.Packets) < a.Bins() {
		a.Packets = append(a.Packets, 0)
	}
}

// cover grows the arrays so that absolute bin b is held.
func (a *Arrays) cover(b int64) {
	if a.NumSP == 0 {
		return
	}
	if a.Bins() == 0 && len(a.Counts) == 0 {
		a.FirstBin = b
	}
	if b < a.FirstBin {
		grow := int(a.FirstBin-b) * a.NumSP
		a.Counts = append(make([]uint32, grow, grow+len(a.Counts)), a.Counts...)
		if len(a.Packets) > 0 {
			a.Packets = append(make([]uint32, int(a.FirstBin-b), int(a.FirstBin-b)+len(a.Packets)), a.Packets...)
		}
		a.FirstBin = b
		return
	}
	for int64(a.Bins()) <= b-a.FirstBin {
		a.Counts = append(a.Counts, make([]uint32, a.NumSP)...)
	}
}

// elemRef names element pos of SP sp.
type elemRef struct {
	sp, pos int32
}

// maskGroup indexes the SP elements that have the same non-Any fields, by
// a hash of those fields' values.
type maskGroup struct {
	fields []int
	index  map[uint64][]elemRef
}

type partial struct{ start, last int64 }

// deque of partial matches, oldest first; since the stream's clock never
// goes back, the order by start is also the order by last advance.
type deque struct {
	buf  []partial
	head int
}

func (d *deque) len() int { return len(d.buf) - d.head }

func (d *deque) push(p partial, limit int) (dropped bool) {
	if d.len() >= limit {
		d.head++
		dropped = true
	}
	if d.head > 64 && d.head*2 > len(d.buf) {
		n := copy(d.buf, d.buf[d.head:])
		d.buf, d.head = d.buf[:n], 0
	}
	d.buf = append(d.buf, p)
	return dropped
}

func (d *deque) pop() partial {
	p := d.buf[d.head]
	d.head++
	return p
}

func (d *deque) expire(before int64) {
	for d.head < len(d.buf) && d.buf[d.head].last < before {
		d.head++
	}
}

type spState struct {
	elems []Vector
	// waiting[j] holds the matches that have matched elements 0..j-1 and
	// wait for element j; waiting[0] is unused (every packet may start one).
	waiting []deque
}

// cacheSlots is the size of the direct-mapped cache from a packet vector to
// the SP elements it matches. IoT traffic repeats its vectors (heartbeats,
// acks), so most packets cost one hash and one comparison.
const cacheSlots = 1 << 13

type cacheEntry struct {
	v    Vector
	ok   bool
	hits []elemRef // by SP ascending, position descending
}

// MatchStats counts what the Matcher did; per-packet events are counters,
// never log lines.
//
// Outliers are packets dropped for being stamped further than the Horizon
// from the present (held ones of a possible jump included); Jumps counts
// the times the present moved to a confirmed new time; SlidBins counts the
// bins the arrays dropped because they fell out of the Span.
type MatchStats struct {
	Packets, Matches, Dropped, Late, CacheMisses uint64
	Outliers, Jumps, SlidBins                    uint64
}

// Matcher finds every SP of a set in one stream and counts, per SP and time
// bin, the matches that start there. An SP matches a subsequence of the
// stream: its elements in order, other packets (other devices behind the
// same NAT) in between, at most MaxGap between consecutive elements. Several
// matches of one SP may be under way at once (n devices of one type), and a
// packet moves at most one of them on per element it matches (see advance).
//
// Cost per packet: one cache probe, on a miss one hash lookup per distinct
// set of non-Any fields, then O(hits) deque operations. The packet
// count times the SP length bounds it, as the paper's O(pq). A Matcher is
// not safe for concurrent use.
type Matcher struct {
	cfg    MatchConfig
	sps    []spState
	groups []maskGroup
	cache  []cacheEntry
	arr    Arrays
	nowNs  int64
	seeded bool
	stats  MatchStats
	// spanBins and horizonNs are the config's Span and Horizon.
	spanBins, horizonNs int64
	// pending is a run of packets far from the present, in time order,
	// held until jumpRun of them confirm the stream moved.
	pending []Stamped
	// accepted counts the packets matched since the stream began or last
	// jumped.
	accepted int
	// jumpFrom and jumpTo are the last confirmed jump (see LastJump).
	jumpFrom, jumpTo int64
}

// NewMatcher prepares the SPs (each a sequence of elements) for matching.
func NewMatcher(sps [][]Vector, cfg MatchConfig) (*Matcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Matcher{cfg: cfg, cache: make([]cacheEntry, cacheSlots),
		arr:      Arrays{BinNs: int64(cfg.Bin), NumSP: len(sps)},
		spanBins: int64(cfg.span() / cfg.Bin), horizonNs: int64(cfg.horizon())}
	byMask := map[uint8]int{}
	for s, elems := range sps {
		if len(elems) == 0 {
			return nil, fmt.Errorf("SP matching: SP %d is empty; drop it before matching", s)
		}
		st := spState{elems: slices.Clone(elems), waiting: make([]deque, len(elems))}
		m.sps = append(m.sps, st)
		for pos, e := range elems {
			var mask uint8
			for k, x := range e {
				if x != Any {
					mask |= 1 << k
				}
			}
			g, ok := byMask[mask]
			if !ok {
				g = len(m.groups)
				byMask[mask] = g
				var fields []int
				for k := range NumFields {
					if mask&(1<<k) != 0 {
						fields = append(fields, k)
					}
				}
				m.groups = append(m.groups, maskGroup{fields: fields, index: map[uint64][]elemRef{}})
			}
			h := hashFields(&e, m.groups[g].fields)
			m.groups[g].index[h] = append(m.groups[g].index[h], elemRef{int32(s), int32(pos)})
		}
	}
	return m, nil
}

func hashFields(v *Vector, fields []int) uint64 {
	h := uint64(14695981039346656037)
	for _, k := range fields {
		h ^= uint64(uint32(v[k])) | uint64(k)<<40
		h *= 1099511628211
		h ^= h >> 29
	}
	return h
}

func hashVector(v *Vector) uint64 {
	h := uint64(0x9e3779b97f4a7c15)
	for _, x := range v {
		h = (h ^ uint64(uint32(x))) * 0xbf58476d1ce4e5b9
	}
	return h ^ h>>31
}

// hits returns the elements v matches, from the cache or the index.
func (m *Matcher) hits(v *Vector) []elemRef {
	h := hashVector(v)
	e := &m.cache[h&(cacheSlots-1)]
	if e.ok && e.v == *v {
		return e.hits
	}
	m.stats.CacheMisses++
	e.v, e.ok, e.hits = *v, true, e.hits[:0]
	for gi := range m.groups {
		g := &m.groups[gi]
		for _, r := range g.index[hashFields(v, g.fields)] {
			if m.sps[r.sp].elems[r.pos].Matches(*v) {
				e.hits = append(e.hits, r)
			}
		}
	}
	slices.SortFunc(e.hits, func(a, b elemRef) int {
		if a.sp != b.sp {
			return int(a.sp - b.sp)
		}
		return int(b.pos - a.pos)
	})
	return e.hits
}

// Add feeds one packet. A timestamp earlier than one already seen counts
// as the latest seen: the stream's clock never goes back. A timestamp
// further than the Horizon from the present is an outlier (see
// MatchConfig.Horizon): it moves nothing and allocates nothing.
func (m *Matcher) Add(tsNs int64, v Vector) {
	m.stats.Packets++
	switch {
	case !m.seeded:
		m.nowNs, m.seeded = tsNs, true
	case farApart(tsNs, m.nowNs, m.horizonNs):
		m.far(tsNs, v)
		return
	case len(m.pending) > 0:
		// A packet near the present ends the run: the run was noise.
		m.pending = m.pending[:0]
	}
	m.nowNs = max(m.nowNs, tsNs)
	m.step(v)
	m.accepted++
}

// farApart says whether a and b are more than h apart, without the
// overflow a plain a-b would have at the ends of int64.
func farApart(a, b, h int64) bool {
	if a < b {
		a, b = b, a
	}
	return uint64(a)-uint64(b) > uint64(h)
}

// far holds or drops a packet stamped far from the present.
func (m *Matcher) far(tsNs int64, v Vector) {
	m.stats.Outliers++
	// A run goes forward in time: a sparse stream whose every packet is an
	// hour after the last moves on by runs, while a stray packet, which the
	// next one near the present or behind it undoes, never makes one.
	if len(m.pending) > 0 && tsNs < m.pending[len(m.pending)-1].TsNs {
		m.pending = m.pending[:0]
	}
	m.pending = append(m.pending, Stamped{tsNs, v})
	if len(m.pending) < jumpRun {
		return
	}
	// jumpRun packets in a row are far, in time order: the stream is there
	// now. Started matches belong to the old present and cannot continue
	// across the jump; arrays behind the new present slide out as the
	// span says.
	m.stats.Jumps++
	m.stats.Outliers -= uint64(len(m.pending))
	m.clearPartials()
	// Arrays from fewer packets than the run that outvoted them (a bad
	// first timestamp) were noise and go uncounted; arrays ahead of the
	// new present (a jump back) are dropped and counted.
	switch {
	case m.accepted < jumpRun:
		m.arr.Counts, m.arr.Packets = m.arr.Counts[:0], m.arr.Packets[:0]
	case m.pending[0].TsNs < m.nowNs:
		m.stats.SlidBins += uint64(m.arr.Bins())
		m.arr.Counts, m.arr.Packets = m.arr.Counts[:0], m.arr.Packets[:0]
	}
	m.accepted = 0
	m.jumpFrom, m.jumpTo = m.nowNs, m.pending[0].TsNs
	m.nowNs = m.pending[0].TsNs
	for _, p := range m.pending {
		m.nowNs = max(m.nowNs, p.TsNs)
		m.step(p.V)
		m.accepted++
	}
	m.pending = m.pending[:0]
}

// step matches one packet at the present.
func (m *Matcher) step(v Vector) {
	now := m.nowNs
	m.slide(now / m.arr.BinNs)
	m.arr.growPackets()
	if i := now/m.arr.BinNs - m.arr.FirstBin; i >= 0 && i < int64(len(m.arr.Packets)) {
		m.arr.Packets[i]++
	}
	hits := m.hits(&v)
	gap := int64(m.cfg.MaxGap)
	for i := 0; i < len(hits); {
		sp := hits[i].sp
		j := i
		for j < len(hits) && hits[j].sp == sp {
			j++
		}
		m.advance(&m.sps[sp], int(sp), hits[i:j], now, gap)
		i = j
	}
}

// slide makes the arrays hold absolute bin b, the present, dropping the
// bins that fall out of the span. It drops a quarter span more than it
// must, so that a stream longer than the span copies its arrays once per
// quarter span rather than once per bin.
func (m *Matcher) slide(b int64) {
	a := &m.arr
	if a.Bins() > 0 && b-a.FirstBin >= m.spanBins {
		m.stats.SlidBins += uint64(min(int64(a.Bins()), b-m.spanBins+1+m.spanBins/4-a.FirstBin))
		m.Trim(b - m.spanBins + 1 + m.spanBins/4)
	}
	a.cover(b)
}

// advance lets one packet take, for each SP element it matches, one step:
// from the furthest position down, it moves the oldest match waiting for
// that element on, and at the first element it starts a new one. Taking
// every step rather than the furthest one alone keeps counts additive: in
// "ACK PSH ACK" a second device's opening ACK may also be the first
// device's closing one, and were it used once only, one of the two
// devices' bursts would be lost whenever they interleave that way.
func (m *Matcher) advance(st *spState, sp int, hits []elemRef, now, gap int64) {
	n := len(st.elems)
	for _, h := range hits {
		pos := int(h.pos)
		if pos == 0 {
			if n == 1 {
				m.record(sp, now)
			} else if st.waiting[1].push(partial{now, now}, m.cfg.MaxPartials) {
				m.stats.Dropped++
			}
			continue
		}
		q := &st.waiting[pos]
		q.expire(now - gap)
		if q.len() == 0 {
			continue
		}
		p := q.pop()
		if pos+1 == n {
			m.record(sp, p.start)
			continue
		}
		p.last = now
		if st.waiting[pos+1].push(p, m.cfg.MaxPartials) {
			m.stats.Dropped++
		}
	}
}

func (m *Matcher) record(sp int, startNs int64) {
	b := startNs/m.arr.BinNs - m.arr.FirstBin
	if b < 0 {
		m.stats.Late++
		return
	}
	m.stats.Matches++
	m.arr.Counts[int(b)*m.arr.NumSP+sp]++
}

// Reset forgets the stream (clock, started matches, arrays, counters) and
// keeps the SP index and the cache, so that matching many short streams
// does not rebuild them.
func (m *Matcher) Reset() {
	m.clearPartials()
	m.arr.Counts, m.arr.Packets, m.arr.FirstBin = m.arr.Counts[:0], m.arr.Packets[:0], 0
	m.nowNs, m.seeded, m.stats, m.pending, m.accepted = 0, false, MatchStats{}, m.pending[:0], 0
	m.jumpFrom, m.jumpTo = 0, 0
}

func (m *Matcher) clearPartials() {
	for i := range m.sps {
		for j := range m.sps[i].waiting {
			m.sps[i].waiting[j].buf = m.sps[i].waiting[j].buf[:0]
			m.sps[i].waiting[j].head = 0
		}
	}
}

// Arrays is the time arrays so far. It is the Matcher's own: read it
// before the next Add, or copy it.
func (m *Matcher) Arrays() *Arrays { return &m.arr }

// Stats is what the Matcher counted so far.
func (m *Matcher) Stats() MatchStats { return m.stats }

// Now is the stream's present, in ns: the latest timestamp matched (0
// before the first packet). An outlier, dropped or held as part of a
// possible jump, does not move it; a confirmed jump does.
func (m *Matcher) Now() int64 { return m.nowNs }

// LastJump is the last time the present jumped (Stats().Jumps counts
// them): from is the present before, to the stamp of the first packet of
// the run that confirmed it, in ns; both 0 before the first jump. A
// consumer that reports the stream as it goes (the online detector) needs
// both ends: the bins between them are a pause in the capture, not quiet
// traffic, and after a forward jump within the span the arrays still hold
// them, zeroed, between the old present and the new.
func (m *Matcher) LastJump() (from, to int64) { return m.jumpFrom, m.jumpTo }

// Trim drops the bins before absolute bin b, for a long-running stream.
// A match that started there and completes later is counted as Late.
func (m *Matcher) Trim(b int64) {
	a := &m.arr
	drop := b - a.FirstBin
	if drop <= 0 {
		return
	}
	if drop >= int64(a.Bins()) {
		a.Counts, a.Packets = a.Counts[:0], a.Packets[:0]
		a.FirstBin = b
		return
	}
	n := copy(a.Counts, a.Counts[int(drop)*a.NumSP:])
	a.Counts = a.Counts[:n]
	if int(drop) < len(a.Packets) {
		n = copy(a.Packets, a.Packets[drop:])
		a.Packets = a.Packets[:n]
	} else {
		a.Packets = a.Packets[:0]
	}
	a.FirstBin = b
}

// Match runs a fresh Matcher over a whole stream and returns its arrays.
// They hold the whole stream: the span is the longest the bins allow (a
// week of 10 s bins; it caps, it does not allocate), and a longer stream
// is an error.
func Match(sps [][]Vector, pkts []Stamped, cfg MatchConfig) (*Arrays, error) {
	cfg.Span = cfg.LongestSpan()
	m, err := NewMatcher(sps, cfg)
	if err != nil {
		return nil, err
	}
	m.AddAll(pkts)
	if m.stats.SlidBins > 0 {
		return nil, fmt.Errorf("SP matching: the stream spans more than %v (%d bins slid out); split it", cfg.Span, m.stats.SlidBins)
	}
	return &m.arr, nil
}

// AddAll feeds a stream.
func (m *Matcher) AddAll(pkts []Stamped) {
	for i := range pkts {
		m.Add(pkts[i].TsNs, pkts[i].V)
	}
}
