//go:build torch

package main

import (
	"context"

	"github.com/homemole/homemole/pipeline/detect"
	"github.com/homemole/homemole/pipeline/homecount"
)

// spCounterLinked says this build can load a sequence-profile model.
const spCounterLinked = true

// loadSPCounter loads a sequence-profile model's counter, and what closes
// it.
func loadSPCounter(path string) (homecount.Counter, func(), error) {
	m, err := detect.LoadFile(path)
	if err != nil {
		return nil, nil, err
	}
	return spCounter{m}, m.Close, nil
}

// spCounter counts with a sequence-profile model: the count of its most
// confident window over the span, 0 where the detector does not fire.
type spCounter struct{ m *detect.Model }

func (c spCounter) Count(ctx context.Context, path, device string, fromNs, toNs int64) (int, error) {
	windows, _, err := c.m.DetectFile(ctx, path, 0)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, w := range windows {
		if w.EndNs <= fromNs || w.StartNs >= toNs {
			continue
		}
		for _, d := range w.Detections {
			if d.Device == device {
				n = max(n, d.Count)
			}
		}
	}
	return n, nil
}
