package seqprofile

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// TestSecurityMatcherFarTimestamps feeds the matcher what an untrusted
// capture agent or a damaged capture can send: epoch 0 (a pcapng simple
// packet block), the ends of int64, two packets a year apart. Memory must
// stay bounded by the span, not by the timestamps, and the honest packets
// around the bad ones must still be matched.
func TestSecurityMatcherFarTimestamps(t *testing.T) {
	const budget = 256 << 20
	const now = int64(1_780_000_000e9) // 2026
	year := int64(365 * 24 * time.Hour)
	// 64 one-element SPs, so every honest packet is exactly one match.
	var sps [][]Vector
	for i := range 64 {
		sps = append(sps, []Vector{udp(64, int32(i))})
	}
	honest := func(from int64) []Stamped {
		var out []Stamped
		for i := range 6000 { // 10 minutes, a packet every 100 ms
			out = append(out, Stamped{from + int64(i)*100e6, udp(64, int32(i%64))})
		}
		return out
	}
	with := func(at int, bad []Stamped, s []Stamped) []Stamped {
		return append(append(append([]Stamped{}, s[:at]...), bad...), s[at:]...)
	}
	odd := udp(64, 7)
	cases := []struct {
		name           string
		stream         []Stamped
		matches        uint64 // kept in the arrays at the end
		outliers, jump uint64
	}{
		{"two packets a year apart", []Stamped{{now, odd}, {now + year, odd}}, 1, 1, 0},
		{"epoch 0 first", with(0, []Stamped{{0, odd}}, honest(now)), 6000, 0, 1},
		{"epoch 0 inside", with(3000, []Stamped{{0, odd}}, honest(now)), 6000, 1, 0},
		{"far future inside", with(3000, []Stamped{{math.MaxInt64, odd}, {now + 50*year, odd}}, honest(now)), 6000, 2, 0},
		{"far future first", with(0, []Stamped{{math.MaxInt64 - 1, odd}}, honest(now)), 6000, 0, 1},
		{"int64 min first", with(0, []Stamped{{math.MinInt64, odd}}, honest(now)), 6000, 0, 1},
		// A real pause in a capture: the stream moves, nothing is lost.
		{"capture resumed after a day", append(honest(now), honest(now+int64(26*time.Hour))...), 6000, 0, 1},
	}
	var most uint64
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			m, err := NewMatcher(sps, DefaultMatchConfig())
			if err != nil {
				t.Fatal(err)
			}
			m.AddAll(c.stream)
			runtime.ReadMemStats(&after)
			used := after.TotalAlloc - before.TotalAlloc
			if used > budget {
				t.Fatalf("the matcher allocated %d MiB, want under %d MiB", used>>20, budget>>20)
			}
			t.Logf("allocated %.1f MiB", float64(used)/(1<<20))
			most = max(most, used)
			total := heldMatches(t, m)
			st := m.Stats()
			// Only a real pause slides honest bins out; a bad first packet's do not count.
			if slid := st.SlidBins > 0; slid != (c.name == "capture resumed after a day") {
				t.Errorf("%d bins slid out", st.SlidBins)
			}
			if total != c.matches || st.Outliers != c.outliers || st.Jumps != c.jump {
				t.Errorf("%d matches held, %d outliers, %d jumps; want %d, %d, %d (stats %+v)", total, st.Outliers, st.Jumps, c.matches, c.outliers, c.jump, st)
			}
			// The present is the last honest packet's: an outlier never
			// moves it (the online detector holds batches by it).
			present := c.stream[len(c.stream)-1].TsNs
			if c.outliers == 1 && len(c.stream) == 2 {
				present = c.stream[0].TsNs
			}
			if m.Now() != present {
				t.Errorf("present %d, want %d", m.Now(), present)
			}
		})
	}
	t.Logf("attack: packets stamped epoch 0, int64's ends, a year or 50 years off, fed to the sequence-profile matcher | expected: under 256 MiB, honest matches kept | observed: at most %.1f MiB allocated over %d cases", float64(most)/(1<<20), len(cases))
}

func TestMatchConfigSpanHorizon(t *testing.T) {
	ok := DefaultMatchConfig()
	old := MatchConfig{Bin: 10 * time.Second, MaxGap: time.Second, MaxPartials: 8} // a model file from before Span
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := old.Validate(); err != nil || old.span() != DefaultSpan || old.horizon() != DefaultHorizon {
		t.Fatalf("a config without span and horizon: %v, span %v, horizon %v", err, old.span(), old.horizon())
	}
	for _, bad := range []func(*MatchConfig){
		func(c *MatchConfig) { c.Span = -1 },
		func(c *MatchConfig) { c.Horizon = -1 },
		func(c *MatchConfig) { c.Span = 365 * 24 * time.Hour },
		func(c *MatchConfig) { c.Span = time.Second },
		func(c *MatchConfig) { c.Horizon = time.Millisecond },
	} {
		c := ok
		bad(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%+v was accepted", c)
		}
	}
	fine := MatchConfig{Bin: MinBin, MaxGap: time.Second, MaxPartials: 8}
	if err := fine.Validate(); err != nil {
		t.Errorf("the narrowest bin with the default span: %v", err)
	}
}

// TestMatchHoldsWholeStreams: Match serves callers that read a whole
// stream's arrays (training), so it holds up to a week, and refuses more
// rather than hand back arrays missing their start.
func TestMatchHoldsWholeStreams(t *testing.T) {
	v := udp(64, 10)
	day := int64(24 * time.Hour)
	const t0 = int64(1.8e18)
	var two, eight []Stamped
	for i := range 2 * 48 {
		two = append(two, Stamped{t0 + int64(i)*day/48, v})
	}
	for i := range 8 * 48 {
		eight = append(eight, Stamped{t0 + int64(i)*day/48, v})
	}
	arr, err := Match([][]Vector{{v}}, two, DefaultMatchConfig())
	if err != nil {
		t.Fatal(err)
	}
	if arr.FirstBin != t0/int64(10*time.Second) || arr.At(arr.FirstBin, 0) != 1 {
		t.Errorf("two days: arrays start at bin %d with %d matches, want the first packet's bin", arr.FirstBin, arr.At(arr.FirstBin, 0))
	}
	if _, err := Match([][]Vector{{v}}, eight, DefaultMatchConfig()); err == nil {
		t.Error("eight days of stream matched without an error")
	}
}

// TestMatcherSparseStream: a device that speaks every two hours is a
// stream whose every packet is past the horizon; it moves on by runs.
// What it loses: the first packet's match, outvoted by the first run, and
// the last run, still held when the stream ends.
func TestMatcherSparseStream(t *testing.T) {
	v := udp(64, 10)
	m, err := NewMatcher([][]Vector{{v}}, DefaultMatchConfig())
	if err != nil {
		t.Fatal(err)
	}
	at := func(i int) int64 { return 1.8e18 + int64(i)*int64(2*time.Hour) }
	for i := range 40 {
		if from, to := m.LastJump(); i == 16 && (from != 0 || to != 0) {
			t.Errorf("before the first jump: jumped from %d to %d, want 0 and 0", from, to)
		}
		m.Add(at(i), v)
	}
	st := m.Stats()
	// 1 anchors, two runs of 16 move the present, 7 wait.
	if st.Matches != 33 || st.Jumps != 2 || st.Outliers != 7 {
		t.Errorf("%+v: want 33 matches, 2 jumps, 7 outliers", st)
	}
	// The second run: from the first run's last packet to its own first.
	if from, to := m.LastJump(); from != at(16) || to != at(17) {
		t.Errorf("last jump from %d to %d, want %d to %d", from, to, at(16), at(17))
	}
}

// FuzzMatcherTimestamps feeds streams with any timestamps, the ends of
// int64 included: the matcher never panics, never holds more bins than
// its span, and never counts more matches than packets.
func FuzzMatcherTimestamps(f *testing.F) {
	f.Add(uint64(1), int64(0), int64(1_780_000_000e9), uint8(40))
	f.Add(uint64(2), int64(math.MinInt64), int64(math.MaxInt64), uint8(200))
	f.Add(uint64(3), int64(1e18), int64(365*24*3600e9), uint8(255))
	f.Fuzz(func(t *testing.T, seed uint64, base, spread int64, n uint8) {
		rng := rand.New(rand.NewPCG(seed, 5))
		alphabet := []Vector{udp(64, 10), udp(64, 20), tcp(64, 0, ack, 100, 0)}
		m, err := NewMatcher([][]Vector{{alphabet[0]}, {alphabet[1], alphabet[2]}}, DefaultMatchConfig())
		if err != nil {
			t.Fatal(err)
		}
		// Jumps land anywhere in [base, base+|spread|], wrapping at the
		// ends of int64; the rest of the stream moves by up to 2 s.
		reach := spread
		if reach < 0 {
			reach = -reach // MinInt64 stays negative, and the mask fixes it
		}
		reach = reach&math.MaxInt64 | 1
		ts := base
		for range int(n) * 8 {
			if rng.IntN(4) == 0 {
				ts = base + rng.Int64N(reach)
			} else {
				ts += rng.Int64N(2e9)
			}
			m.Add(ts, alphabet[rng.IntN(len(alphabet))])
		}
		total := heldMatches(t, m)
		if st := m.Stats(); total > st.Packets || st.Matches > st.Packets {
			t.Fatalf("%d matches held, %+v", total, st)
		}
	})
}

// heldMatches is how many matches m's arrays hold, after checking that
// they hold no more bins than the default span, whatever times the
// packets carried.
func heldMatches(t *testing.T, m *Matcher) uint64 {
	t.Helper()
	arr := m.Arrays()
	if max := int(DefaultSpan / DefaultMatchConfig().Bin); arr.Bins() > max {
		t.Fatalf("%d bins held, want at most the span's %d", arr.Bins(), max)
	}
	var total uint64
	for _, n := range arr.Counts {
		total += uint64(n)
	}
	return total
}
