package seqprofile

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// tcp builds a TCP packet vector.
func tcp(ttl, payload, flags, window, opts int32) Vector {
	return Vector{ttl, 40 + opts + payload, 6, flags, window, opts, payload}
}

func udp(ttl, payload int32) Vector { return Vector{ttl, 28 + payload, 17, 0, 0, 0, payload} }

const (
	ack    = 0x10
	pshAck = 0x18
	syn    = 0x02
)

func TestDistance(t *testing.T) {
	d := DefaultDistance()
	a := tcp(64, 120, pshAck, 29200, 12)
	for _, c := range []struct {
		name  string
		b     Vector
		close bool
	}{
		{"same packet", a, true},
		{"NAPT took a hop", tcp(63, 120, pshAck, 29200, 12), true},
		{"TLS record 15 bytes longer", tcp(64, 135, pshAck, 29200, 12), true},
		{"window drifted", tcp(64, 120, pshAck, 28000, 12), true},
		{"another stack's TTL", tcp(255, 120, pshAck, 29200, 12), false},
		{"a bare ACK, not data", tcp(64, 120, ack, 29200, 12), false},
		{"another message (300 bytes more)", tcp(64, 420, pshAck, 29200, 12), false},
		{"UDP of the same size", udp(64, 120), false},
	} {
		got := d.Of(a, c.b)
		if (got < d.Threshold) != c.close {
			t.Errorf("%s: D = %.2f, threshold %.0f: want close = %v", c.name, got, d.Threshold, c.close)
		}
		if back := d.Of(c.b, a); back != got && !(math.IsInf(back, 1) && math.IsInf(got, 1)) {
			t.Errorf("%s: D not symmetric: %v vs %v", c.name, got, back)
		}
	}
	if err := (Distance{}).Validate(); err == nil {
		t.Error("a zero threshold validated")
	}
}

func TestLCSAbstracts(t *testing.T) {
	d := DefaultDistance()
	hs := tcp(64, 0, syn, 5840, 4)
	a := Burst{hs, tcp(64, 120, pshAck, 5840, 0), udp(64, 48), tcp(64, 0, ack, 5840, 0)}
	b := Burst{hs, udp(64, 300), tcp(64, 126, pshAck, 5840, 0), tcp(64, 0, ack, 5840, 0)}
	got := LCS(a, b, &d)
	want := []Vector{hs, {64, Any, 6, pshAck, 5840, 0, Any}, tcp(64, 0, ack, 5840, 0)}
	if !slices.Equal(got, want) {
		t.Fatalf("LCS = %v\nwant %v", got, want)
	}
	if LCS(a, nil, &d) != nil || LCS(Burst{udp(64, 1)}, Burst{tcp(64, 1, ack, 1, 0)}, &d) != nil {
		t.Error("LCS of bursts with nothing in common is not empty")
	}
}

func TestBursts(t *testing.T) {
	s := func(sec float64) Stamped { return Stamped{TsNs: int64(sec * 1e9), V: udp(64, 1)} }
	pkts := []Stamped{s(0), s(0.5), s(1.49), s(2.49), s(2.6), s(2.5), s(10)}
	got := Bursts(pkts, 0)
	var lens []int
	for _, b := range got {
		lens = append(lens, len(b))
	}
	// 1.49 -> 2.49 is exactly 1 s: a new burst; 2.6 -> 2.5 goes back in time: not a pause.
	if want := []int{3, 3, 1}; !slices.Equal(lens, want) {
		t.Fatalf("burst lengths %v, want %v", lens, want)
	}
	if got := Bursts(pkts, 20*time.Second); len(got) != 1 {
		t.Errorf("a 20 s gap cut %d bursts, want 1", len(got))
	}
}

func TestGenerateRanksAndCaps(t *testing.T) {
	beat := Burst{tcp(255, 0, syn, 5840, 4), tcp(255, 117, pshAck, 5840, 0), tcp(255, 0, ack, 5840, 0)}
	var bursts []Burst
	for i := range 30 {
		b := slices.Clone(beat)
		b[1][FieldPayload] += int32(i % 3) // record sizes jitter: payload becomes Any
		b[1][FieldIPLen] += int32(i % 3)
		bursts = append(bursts, b)
	}
	bursts = append(bursts, Burst{udp(255, 48)}, Burst{udp(255, 48)})
	cfg := DefaultGenConfig()
	cfg.MaxBursts = 20
	ps, st, err := Generate(bursts, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if st.SampledBursts != 20 || st.Pairs != 190 {
		t.Errorf("sampled %d bursts, %d pairs; want 20, 190", st.SampledBursts, st.Pairs)
	}
	if len(ps) == 0 || len(ps[0].Elems) != 3 {
		t.Fatalf("best SP %v, want the 3-packet heartbeat", ps)
	}
	for i := 1; i < len(ps); i++ {
		if ps[i].Importance > ps[i-1].Importance {
			t.Errorf("SP %d more important than SP %d", i, i-1)
		}
	}
	for _, p := range ps {
		if want := Importance(p.Elems, p.Count); p.Importance != want {
			t.Errorf("V(S) = %v, eq. 6 gives %v", p.Importance, want)
		}
	}
	cfg.MaxProfiles = 1
	if ps, _, _ := Generate(bursts, cfg); len(ps) != 1 {
		t.Errorf("max 1 profile kept %d", len(ps))
	}
	if _, _, err := Generate(bursts, GenConfig{Distance: DefaultDistance()}); err == nil {
		t.Error("zero bounds accepted")
	}
}

// stream interleaves n copies of a burst (each device 2 ms after the
// previous) with unrelated packets, starting at sec.
func stream(burst Burst, n int, sec float64, noise Vector) []Stamped {
	var out []Stamped
	base := int64(sec * 1e9)
	for i, v := range burst {
		for dev := range n {
			ts := base + int64(i)*100e6 + int64(dev)*2e6
			out = append(out, Stamped{ts, v}, Stamped{ts + 1e6, noise})
		}
	}
	return out
}

func TestMatcherCountsInterleavedDevices(t *testing.T) {
	beat := Burst{tcp(64, 0, syn, 5840, 4), tcp(64, 117, pshAck, 5840, 0), udp(64, 33)}
	noise := tcp(64, 500, pshAck, 65535, 12)
	cfg := DefaultMatchConfig()
	for _, n := range []int{1, 3, 50} {
		pkts := append(stream(beat, n, 5, noise), stream(beat, n, 25, noise)...)
		arr, err := Match([][]Vector{beat, {noise}}, pkts, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := arr.At(0, 0); got != uint32(n) {
			t.Errorf("n=%d: bin [0,10s) has %d matches of the heartbeat, want %d", n, got, n)
		}
		if got := arr.At(2, 0); got != uint32(n) {
			t.Errorf("n=%d: bin [20,30s) has %d matches, want %d", n, got, n)
		}
		if got := arr.At(0, 1) + arr.At(2, 1); got != uint32(6*n) {
			t.Errorf("n=%d: single-packet SP matched %d times, want %d", n, got, 6*n)
		}
		if arr.Bins() != 3 {
			t.Errorf("n=%d: %d bins, want 3 (0 to 30 s)", n, arr.Bins())
		}
	}
	// Elements further apart than the gap are two unrelated packets.
	slow := []Stamped{{0, beat[0]}, {2e9, beat[1]}, {2.1e9, beat[2]}}
	arr, _ := Match([][]Vector{beat}, slow, cfg)
	if arr.At(0, 0) != 0 {
		t.Error("a match spanning a 2 s pause was counted")
	}
	if _, err := NewMatcher([][]Vector{{}}, cfg); err == nil {
		t.Error("an empty SP was accepted")
	}
	if _, err := NewMatcher(nil, MatchConfig{}); err == nil {
		t.Error("a zero MatchConfig was accepted")
	}
}

func TestMatcherTrimAndWindow(t *testing.T) {
	v := udp(64, 10)
	m, _ := NewMatcher([][]Vector{{v}}, DefaultMatchConfig())
	for s := range 100 {
		m.Add(int64(s)*1e9+1e18, v)
	}
	a := m.Arrays()
	first := a.FirstBin
	if a.Bins() != 10 {
		t.Fatalf("%d bins for 100 s, want 10", a.Bins())
	}
	m.Trim(first + 4)
	if a.FirstBin != first+4 || a.Bins() != 6 || a.At(first+4, 0) != 10 || a.At(first, 0) != 0 {
		t.Errorf("after trim: first %d bins %d", a.FirstBin-first, a.Bins())
	}
	w := a.Window(nil, first+8, 4, []int{0})
	if !slices.Equal(w, []float32{10, 10, 0, 0}) {
		t.Errorf("window past the end = %v", w)
	}
}

// naive is the matching rule without the index and the cache, to check
// them against.
func naive(sps [][]Vector, pkts []Stamped, cfg MatchConfig) map[[2]int64]uint32 {
	type part struct{ start, last int64 }
	waiting := make([][][]part, len(sps))
	for i, s := range sps {
		waiting[i] = make([][]part, len(s))
	}
	out := map[[2]int64]uint32{}
	var now int64
	for i, p := range pkts {
		if i == 0 || p.TsNs > now {
			now = p.TsNs
		}
		for s, sp := range sps {
			for pos := len(sp) - 1; pos >= 0; pos-- {
				if !sp[pos].Matches(p.V) {
					continue
				}
				if pos == 0 {
					if len(sp) == 1 {
						out[[2]int64{now / int64(cfg.Bin), int64(s)}]++
					} else {
						w := &waiting[s][1]
						if len(*w) >= cfg.MaxPartials {
							*w = (*w)[1:]
						}
						*w = append(*w, part{now, now})
					}
					continue
				}
				w := &waiting[s][pos]
				for len(*w) > 0 && (*w)[0].last < now-int64(cfg.MaxGap) {
					*w = (*w)[1:]
				}
				if len(*w) == 0 {
					continue
				}
				pt := (*w)[0]
				*w = (*w)[1:]
				if pos+1 == len(sp) {
					out[[2]int64{pt.start / int64(cfg.Bin), int64(s)}]++
				} else {
					pt.last = now
					nx := &waiting[s][pos+1]
					if len(*nx) >= cfg.MaxPartials {
						*nx = (*nx)[1:]
					}
					*nx = append(*nx, pt)
				}
			}
		}
	}
	return out
}

// FuzzMatcher checks the indexed, cached Matcher against the plain rule on
// streams drawn from a small alphabet (so that matches happen), with Any
// fields and out-of-order timestamps.
func FuzzMatcher(f *testing.F) {
	f.Add(uint64(1), uint8(5), uint16(300))
	f.Add(uint64(7), uint8(1), uint16(2000))
	f.Add(uint64(42), uint8(12), uint16(50))
	f.Fuzz(func(t *testing.T, seed uint64, nsp uint8, npkt uint16) {
		rng := rand.New(rand.NewPCG(seed, 3))
		alphabet := []Vector{udp(64, 10), udp(64, 20), tcp(64, 0, ack, 100, 0), tcp(64, 50, pshAck, 100, 0), tcp(63, 50, pshAck, 100, 0)}
		var sps [][]Vector
		for range int(nsp)%16 + 1 {
			sp := make([]Vector, 1+rng.IntN(5))
			for i := range sp {
				sp[i] = alphabet[rng.IntN(len(alphabet))]
				for k := range NumFields {
					if k != FieldProto && rng.IntN(4) == 0 {
						sp[i][k] = Any
					}
				}
			}
			sps = append(sps, sp)
		}
		pkts := make([]Stamped, int(npkt)%3000)
		var ts int64 = 1e15
		for i := range pkts {
			ts += rng.Int64N(700e6)
			t := ts
			if rng.IntN(20) == 0 {
				t -= rng.Int64N(3e9)
			}
			pkts[i] = Stamped{t, alphabet[rng.IntN(len(alphabet))]}
		}
		cfg := DefaultMatchConfig()
		cfg.MaxPartials = 1 + rng.IntN(8)
		m, err := NewMatcher(sps, cfg)
		if err != nil {
			t.Fatal(err)
		}
		// A reused Matcher must forget the first stream entirely.
		m.AddAll(pkts[len(pkts)/2:])
		m.Reset()
		m.AddAll(pkts)
		arr := m.Arrays()
		want := naive(sps, pkts, cfg)
		var total uint32
		for b := arr.FirstBin; b < arr.FirstBin+int64(arr.Bins()); b++ {
			for s := range sps {
				got := arr.At(b, s)
				total += got
				if got != want[[2]int64{b, int64(s)}] {
					t.Fatalf("bin %d SP %d: %d matches, the plain rule finds %d", b, s, got, want[[2]int64{b, int64(s)}])
				}
			}
		}
		var wantTotal uint32
		for _, c := range want {
			wantTotal += c
		}
		if total != wantTotal {
			t.Fatalf("%d matches in the arrays, %d by the plain rule", total, wantTotal)
		}
	})
}

// FuzzLCS checks that an SP is no longer than either burst and that every
// element matches a packet of each burst, in order.
func FuzzLCS(f *testing.F) {
	f.Add(uint64(1), uint8(10), uint8(12))
	f.Fuzz(func(t *testing.T, seed uint64, na, nb uint8) {
		rng := rand.New(rand.NewPCG(seed, 9))
		mk := func(n int) Burst {
			b := make(Burst, n%40)
			for i := range b {
				if rng.IntN(3) == 0 {
					b[i] = udp(int32(60+rng.IntN(6)), int32(rng.IntN(80)))
				} else {
					b[i] = tcp(int32(60+rng.IntN(6)), int32(rng.IntN(80)), []int32{ack, pshAck}[rng.IntN(2)], int32(1000+rng.IntN(2000)), 0)
				}
			}
			return b
		}
		a, b := mk(int(na)), mk(int(nb))
		d := DefaultDistance()
		s := LCS(a, b, &d)
		if len(s) > min(len(a), len(b)) {
			t.Fatalf("SP of %d elements from bursts of %d and %d", len(s), len(a), len(b))
		}
		for _, burst := range []Burst{a, b} {
			e := 0
			for _, v := range burst {
				if e < len(s) && s[e].Matches(v) {
					e++
				}
			}
			if e < len(s) {
				t.Fatalf("SP %v is not a subsequence of burst %v", s, burst)
			}
		}
	})
}

// TestArraysCountEveryPacket checks that the arrays count every packet per
// bin, matched or not, and that trimming keeps the counts on their bins:
// traffic no SP explains is not silence.
func TestArraysCountEveryPacket(t *testing.T) {
	sp := [][]Vector{{{64, 100, 6, 0x18, 512, 0, 60}}}
	m, err := NewMatcher(sp, DefaultMatchConfig())
	if err != nil {
		t.Fatal(err)
	}
	bin := int64(10e9)
	t0 := 1_700_000_000 * int64(1e9) / bin * bin
	other := Vector{50, 1400, 17, 0, 0, 0, 1372}
	for i := range 5 { // bin 0: 5 unmatched packets
		m.Add(t0+int64(i)*1e9, other)
	}
	m.Add(t0+bin, sp[0][0]) // bin 1: one matched, two not
	m.Add(t0+bin+1, other)
	m.Add(t0+bin+2, other)
	m.Add(t0+3*bin, other) // bin 3: one; bin 2 empty
	a := m.Arrays()
	first := t0 / bin
	for _, c := range []struct {
		from int64
		n    int
		want uint64
	}{{first, 1, 5}, {first + 1, 1, 3}, {first + 2, 1, 0}, {first + 3, 1, 1}, {first, 4, 9}, {first - 5, 100, 9}} {
		if got := a.PacketsIn(c.from, c.n); got != c.want {
			t.Errorf("PacketsIn(%d, %d) = %d, want %d", c.from-first, c.n, got, c.want)
		}
	}
	if got := a.At(first+1, 0); got != 1 {
		t.Errorf("SP matches in bin 1 = %d, want 1", got)
	}
	m.Trim(first + 1)
	if got, want := a.PacketsIn(first, 4), uint64(4); got != want {
		t.Errorf("after Trim: PacketsIn = %d, want %d (bins 1 and 3)", got, want)
	}
	var sum Arrays
	sum.BinNs, sum.NumSP = a.BinNs, a.NumSP
	a.AddTo(&sum)
	a.AddTo(&sum)
	if got := sum.PacketsIn(first, 4); got != 8 {
		t.Errorf("AddTo twice: PacketsIn = %d, want 8", got)
	}
}
