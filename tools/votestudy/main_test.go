package main

import (
	"math"
	"testing"

	"github.com/homemole/homemole/schemas"
)

// TestRechunk: a stream's windows, given out of order, are joined in
// sequence and cut again; every packet lands once, in order.
func TestRechunk(t *testing.T) {
	win := func(seq, n, first int) *schemas.Window {
		w := schemas.NewWindow(4)
		w.ID, w.Group, w.Len = "lan/h/s/ind/plug/"+string(rune('0'+seq)), "h/s", n
		for i := range n {
			w.FrameLen[i], w.Label[i] = int32(first+i), 0
		}
		return w
	}
	ws := []*schemas.Window{win(1, 2, 104), win(0, 4, 100)}
	for _, c := range []struct{ size, windows int }{{3, 2}, {-1, 1}} {
		got := rechunk(ws, c.size)
		if len(got) != c.windows {
			t.Fatalf("size %d: %d windows, want %d", c.size, len(got), c.windows)
		}
		next := int32(100)
		for _, w := range got {
			if w.Group != "h/s" {
				t.Errorf("window %s lost its group", w.ID)
			}
			for i := range w.Len {
				if w.FrameLen[i] != next {
					t.Fatalf("size %d: window %s slot %d holds packet %d, want %d", c.size, w.ID, i, w.FrameLen[i], next)
				}
				next++
			}
		}
		if next != 106 {
			t.Errorf("size %d: %d packets, want 6", c.size, next-100)
		}
	}
}

// TestScoreRules: three look-alike packets lean to the sibling, one is
// sure of the device: the majority misses, summed log-probabilities hit.
func TestScoreRules(t *testing.T) {
	labels := []string{"plug-a", "plug-b"}
	w := schemas.NewWindow(4)
	w.ID, w.Len = "lan/h/s/ind/plug-a/0", 4
	var lp []float32
	for i, p := range []float64{0.45, 0.45, 0.45, 0.98} {
		w.Label[i] = 0
		lp = append(lp, float32(math.Log(p)), float32(math.Log(1-p)))
	}
	got := map[string]float64{}
	for _, r := range score(labels, []*schemas.Window{w}, [][]float32{lp}) {
		got[r.name] = r.value
	}
	if got["per packet"] != 0.25 || got["sessions, majority of packet labels"] != 0 || got["sessions, summed log-probability"] != 1 {
		t.Errorf("scores %v", got)
	}
}
