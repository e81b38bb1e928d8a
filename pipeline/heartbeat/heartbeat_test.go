package heartbeat

import (
	"math/rand/v2"
	"testing"
	"time"
)

// units beats n units of one key at the period, each at a phase of its own
// and a clock that drifts by up to drift per beat, over span.
func units(rng *rand.Rand, n int, k Key, period, drift, span time.Duration) []Beat {
	var out []Beat
	for range n {
		t := time.Duration(rng.Int64N(int64(period)))
		skew := 1 + (rng.Float64()*2-1)*float64(drift)/float64(period)
		for t < span {
			out = append(out, Beat{TsNs: int64(t), Key: k})
			t += time.Duration(float64(period) * skew)
		}
	}
	return out
}

func TestLearnFindsTheHeartbeat(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	hb := Key{Transport: 6, Port: 50443, IPLen: 862}
	var sessions [][]Beat
	for range 3 {
		s := units(rng, 1, hb, 7*time.Second, 50*time.Millisecond, time.Minute)
		// A burst of one key packets 100 ms apart is no heartbeat.
		for i := range 6 {
			s = append(s, Beat{TsNs: int64(i) * 1e8, Key: Key{Transport: 6, Port: 443, IPLen: 1500}})
		}
		sessions = append(sessions, s)
	}
	ps := Learn("plug", sessions, DefaultConfig())
	if len(ps) != 1 || ps[0].Key != hb || ps[0].Sessions != 3 || ps[0].Period < 6900*time.Millisecond || ps[0].Period > 7100*time.Millisecond {
		t.Fatalf("learned %+v, want one heartbeat %s every 7 s in 3 sessions", ps, hb)
	}
	// One session alone is not enough.
	if ps := Learn("plug", sessions[:1], DefaultConfig()); len(ps) != 0 {
		t.Fatalf("one session gave %+v, want none", ps)
	}
}

// TestTrainsCountsDriftingUnits: n units with random phases and drifting
// clocks are counted by their trains; a stray packet of the key is not a
// unit, and a unit that pauses is one unit, not two.
func TestTrainsCountsDriftingUnits(t *testing.T) {
	k := Key{Transport: 17, Port: 80, IPLen: 68}
	p := Profile{Key: k, Period: 10 * time.Second, Jitter: 100 * time.Millisecond}
	right, total := 0, 0
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		for n := 1; n <= 5; n++ {
			beats := units(rng, n, k, p.Period, 100*time.Millisecond, 5*time.Minute)
			beats = append(beats, Beat{TsNs: int64(rng.Int64N(int64(5 * time.Minute))), Key: k})
			got := Trains(beats, p, 0.25, 0, int64(5*time.Minute))
			total++
			if got == n {
				right++
			}
		}
	}
	// Random phases collide now and then (two units within the spread of
	// each other): most, not all, counts are exact.
	if right*10 < total*8 {
		t.Fatalf("%d of %d counts exact, want at least 80 %%", right, total)
	}
	t.Logf("%d of %d counts exact", right, total)
	var paused []Beat
	for i := range 30 {
		if i < 10 || i > 15 {
			paused = append(paused, Beat{TsNs: int64(i) * int64(p.Period), Key: k})
		}
	}
	if got := Trains(paused, p, 0.25, 0, int64(time.Hour)); got != 1 {
		t.Fatalf("a unit pausing for 5 beats counted as %d", got)
	}
	if got := Trains(paused, Profile{Key: Key{Transport: 6}, Period: p.Period, Jitter: p.Jitter}, 0.25, 0, int64(time.Hour)); got != 0 {
		t.Fatalf("beats of another key counted as %d units", got)
	}
}
