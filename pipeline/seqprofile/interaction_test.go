package seqprofile

import (
	"context"
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
	var plugPkts, stream []Stamped
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
		stream = append(stream, all...)
	}
	train, test := actions[:len(actions)/5], actions[len(actions)/5:]

	// A training sample is the plug's burst that starts with the action.
	bursts := Bursts(plugPkts, DefaultBurstGap)
	starts := make([]int64, len(bursts))
	for i, at := 0, 0; i < len(bursts); i++ {
		starts[i] = plugPkts[at].TsNs
		at += len(bursts[i])
	}
	var samples []Burst
	for _, at := range train {
		i, _ := slices.BinarySearch(starts, at-int64(10*time.Millisecond))
		if i == len(starts) || starts[i] > at+int64(time.Second) {
			t.Fatalf("no burst of the plug starts at the switching at %d", at)
		}
		samples = append(samples, bursts[i])
	}
	dist := DefaultDistance()
	sp, err := InteractionProfile(samples, &dist)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SP of %q from %d repetitions: %d elements: %v", homegen.InteractionSwitch, len(samples), len(sp.Elems), sp.String())

	found, err := FindInteraction(sp, stream, time.Second, DefaultBurstGap)
	if err != nil {
		t.Fatal(err)
	}
	// Detections of the training repetitions are not judged.
	var judged []int64
	for _, d := range found {
		if !slices.ContainsFunc(train, func(a int64) bool { return d >= a-int64(2*time.Second) && d <= a+int64(2*time.Second) }) {
			judged = append(judged, d)
		}
	}
	score := ScoreInteraction(judged, test, 2*time.Second)
	p, r := score.Precision(), score.Recall()
	f1 := 2 * p * r / max(p+r, 1e-9)
	t.Logf("%d held-out switchings in %d packets of 6 x 40 min: found %d, %d detections, %d false alarms: precision %.3f, recall %.3f, F %.3f",
		score.Actions, len(stream), score.Found, score.Detections, score.FalseAlarms, p, r, f1)
	if p < 0.95 || r < 0.95 {
		t.Errorf("precision %.3f, recall %.3f: want both >= 0.95", p, r)
	}
	// Without repetitions there is nothing to fold.
	if _, err := InteractionProfile(samples[:1], &dist); err == nil {
		t.Error("an SP from one repetition was accepted")
	}
}
