package detect

import (
	"context"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/detect/scene"
	"github.com/homemole/homemole/schemas"
)

// TestSecurityOnlineFarTimestamps sends the online detector a home whose
// batches carry one packet stamped epoch 0, the end of int64 or a year
// ahead. The detector must neither allocate for the gap nor judge and
// publish a window for every step across it: it reports the honest half
// hour as if the bad packet were not there.
func TestSecurityOnlineFarTimestamps(t *testing.T) {
	const budget = 256 << 20
	const t0 = int64(1.9e18)
	m := smallModel(t)
	beat, _, noise := synthetic(5, t0)
	honest := packetsOf(scene.Superpose(beat, noise))
	bad := func(ts int64) schemas.Packet { p := honest[0]; p.TsNs = ts; return p }
	year := int64(365 * 24 * time.Hour)
	var most uint64
	for _, c := range []struct {
		name string
		at   int
		ts   int64
	}{
		{"epoch 0 first", 0, 0},
		{"int64 max inside", len(honest) / 2, math.MaxInt64},
		{"a year ahead inside", len(honest) / 2, t0 + year},
		{"epoch 0 inside", len(honest) / 2, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			pkts := slices.Insert(slices.Clone(honest), c.at, bad(c.ts))
			var reports int
			var stray []schemas.Seen
			o := &Online{Model: m, Step: 3, Lag: 1, Publish: func(_ context.Context, _, _ string, data []byte) error {
				s, err := schemas.DecodeSeen(data)
				if err != nil {
					return err
				}
				reports++
				if s.EndNs < t0 || s.StartNs > t0+1800e9 {
					stray = append(stray, s)
				}
				return nil
			}}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			done := make(chan error, 1)
			go func() { done <- handleAll(o, pkts) }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(2 * time.Minute):
				t.Fatal("the detector still works on the stream after 2 min")
			}
			runtime.ReadMemStats(&after)
			used := after.TotalAlloc - before.TotalAlloc
			if used > budget {
				t.Errorf("the detector allocated %d MiB, want under %d MiB", used>>20, budget>>20)
			}
			most = max(most, used)
			if reports < 55 || reports > 65 || len(stray) > 0 {
				t.Errorf("%d reports (%d outside the honest half hour, first %+v), want about 60 over 30 min every 30 s", reports, len(stray), firstOr(stray))
			}
		})
	}
	t.Logf("attack: one packet stamped epoch 0, int64 max or a year ahead in a home's live stream to the online detector | expected: under 256 MiB, the honest half hour's reports only | observed: at most %.1f MiB allocated over 4 cases", float64(most)/(1<<20))
}

func firstOr(s []schemas.Seen) schemas.Seen {
	if len(s) == 0 {
		return schemas.Seen{}
	}
	return s[0]
}

// TestDetectRefusesStreamLongerThanSpan: Detect reports every window of a
// stream, so it holds a week of bins, and a longer stream, whose first
// bins slid out, is an error rather than a report that silently starts
// late.
func TestDetectRefusesStreamLongerThanSpan(t *testing.T) {
	m := smallModel(t)
	beat, _, _ := synthetic(5, 1.9e18)
	later, _, _ := synthetic(6, 1.9e18+int64(8*24*time.Hour))
	// Two half hours two days apart: longer than the matcher's default
	// span of a day, within what Detect holds.
	twoDays, _, _ := synthetic(6, 1.9e18+int64(48*time.Hour))
	ws, err := m.Detect(context.Background(), append(slices.Clone(beat), twoDays...), 0)
	if err != nil {
		t.Fatalf("two half hours two days apart: %v", err)
	}
	if first := ws[0].StartNs; first > beat[0].TsNs {
		t.Errorf("the windows start at %d, after the stream's first packet at %d", first, beat[0].TsNs)
	}
	_, err = m.Detect(context.Background(), append(slices.Clone(beat), later...), 0)
	if err == nil || !strings.Contains(err.Error(), "more than a week") {
		t.Fatalf("a stream over 8 days: %v, want an error about the span", err)
	}
}
