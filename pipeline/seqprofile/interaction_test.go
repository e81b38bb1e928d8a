package seqprofile

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/schemas"
)

// TestInteractionDetection is the paper's Section III-C on a generated
// home: its smart plug is switched from the app at random times (about
// every 4 minutes); the first fifth of the switchings train the action's
// SP (the paper's 1:4 split), the rest are to be found in the home's whole
// LAN stream (every device, the plug's heartbeats included), where every
// other match is a false alarm.
func TestInteractionDetection(t *testing.T) {
	dir := t.TempDir()
	home, err := homegen.Generate(homegen.Config{Seed: 5, Sessions: 6, SessionDuration: 40 * time.Minute}, dir)
	if err != nil {
		t.Fatal(err)
	}
	var plug schemas.MAC
	for _, d := range home.Inventory {
		if d.Name == "smart-plug" {
			if plug, err = schemas.ParseMAC(d.MAC); err != nil {
				t.Fatal(err)
			}
		}
	}
	var actions []int64
	for _, a := range home.Interactions {
		if a.Device == "smart-plug" && a.Kind == homegen.InteractionSwitch {
			actions = append(actions, a.At.UnixNano())
		}
	}
	if len(actions) < 25 {
		t.Fatalf("%d switchings generated, want at least 25", len(actions))
	}
	ctx := context.Background()
	var plugPkts []Stamped
	var streams [][]Stamped
	packets := 0
	for _, f := range home.Files {
		s, err := LoadSession(ctx, f, plug)
		if err != nil {
			t.Fatal(err)
		}
		plugPkts = append(plugPkts, s.Device...)
		all, err := LoadCapture(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, all)
		packets += len(all)
	}
	train, test := actions[:len(actions)/5], actions[len(actions)/5:]
	cfg := DefaultInteractionConfig()
	// Every training switching starts a burst of the plug.
	if b := ActionBursts(plugPkts, train, cfg.Gap, cfg.MaxLen); len(b) != len(train) {
		t.Fatalf("%d of %d training switchings start a burst of the plug", len(b), len(train))
	}
	sp, score, err := JudgeInteraction(plugPkts, train, streams, test, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SP of %q from %d repetitions: %d elements: %v", homegen.InteractionSwitch, len(train), len(sp.Elems), sp.String())
	p, r, f1 := score.Precision(), score.Recall(), score.F1()
	t.Logf("%d held-out switchings in %d packets of 6 x 40 min: found %d, %d detections, %d false alarms: precision %.3f, recall %.3f, F %.3f",
		score.Actions, packets, score.Found, score.Detections, score.FalseAlarms, p, r, f1)
	if p < 0.95 || r < 0.95 {
		t.Errorf("precision %.3f, recall %.3f: want both >= 0.95", p, r)
	}
	// Without repetitions there is nothing to fold.
	if _, _, err := JudgeInteraction(plugPkts, train[:1], streams, test, cfg); !errors.Is(err, ErrNoInteractionSP) {
		t.Errorf("an SP from one repetition: %v, want ErrNoInteractionSP", err)
	}
}

// TestActionBursts cuts handmade streams: a burst starts at the first
// packet at or after the action, ends at a pause or at MaxLen packets,
// and an action with no packet within a second has none.
func TestActionBursts(t *testing.T) {
	ms := int64(time.Millisecond)
	v := func(n int32) Vector { return Vector{FieldIPLen: n} }
	pkts := []Stamped{{0, v(1)}, {100 * ms, v(2)}, {5000 * ms, v(3)}, {5100 * ms, v(4)}, {5200 * ms, v(5)}, {5300 * ms, v(6)}, {9000 * ms, v(7)}}
	got := ActionBursts(pkts, []int64{-5 * ms, 4995 * ms, 7000 * ms, 8500 * ms}, time.Second, 3)
	want := []Burst{{v(1), v(2)}, {v(3), v(4), v(5)}, {v(7)}}
	if len(got) != len(want) {
		t.Fatalf("%d bursts, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("burst %d: %v, want %v", i, got[i], want[i])
		}
	}
	s := ScoreInteraction([]int64{0, 10 * ms}, []int64{0, 5000 * ms}, time.Second)
	if s.Found != 1 || s.FalseAlarms != 0 || s.F1() != 2*1*0.5/1.5 {
		t.Errorf("score %+v, F1 %v: want 1 found, no false alarm, F1 2/3", s, s.F1())
	}
}
