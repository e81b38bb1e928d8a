package homecount

import (
	"context"
	"fmt"
	"time"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// LongResult is one device's later captures played one after another
// through the live counter under its one MAC: a unit set up again and
// again, as near a long session as setup captures come. Its key set grows
// with every session, as a host's does over weeks.
type LongResult struct {
	Folder   string
	Unit     string // the unit the device is counted as
	Sessions int
	// Windows are those the device sent a frame in; Right those where the
	// counter said one unit of its unit (the device, and no other host
	// taken for one).
	Windows, Right int
	// Keys is how many distinct keys the device's host held after each
	// session, and Saturated says it passed the counter's bound (never a
	// unit).
	Keys      []int
	Saturated bool
	// Signed says the unit has a signature (without one it is never
	// counted).
	Signed bool
}

// Long plays, for every device folder, its later half of captures (by
// sequence number, campaign.SplitByTime without dates) back to back through a LiveHome
// with the model learned from every other capture, gap apart, each whole
// (the phone and the lab's router too: the gateway is not named).
func (hc *HostCounter) Long(ctx context.Context, cfg LiveConfig, gap time.Duration) ([]LongResult, error) {
	if cfg == (LiveConfig{}) {
		cfg = DefaultLiveConfig()
	}
	var out []LongResult
	for _, d := range hc.devs {
		_, later := campaign.SplitByTime(d.Files, nil)
		if len(later) == 0 {
			continue
		}
		hm := hc.Model(later)
		unit := hm.UnitOf(d.Name)
		res := LongResult{Folder: d.Name, Unit: hm.Units[unit].Name, Sessions: len(later), Signed: len(hm.Units[unit].Signature) > 0}
		lh, err := NewLiveHome(hm, cfg)
		if err != nil {
			return nil, err
		}
		var sent []int64 // the device's frames, on the played clock
		judge := func(ws []schemas.SeenWindow) {
			for _, w := range ws {
				if !anyIn(sent, w.StartNs, w.EndNs) {
					continue
				}
				res.Windows++
				if countOf(w, res.Unit) == 1 {
					res.Right++
				}
			}
		}
		var at int64 // where the next capture starts
		for _, f := range later {
			var first, last int64 = -1, 0
			if _, err := capture.ReadFile(ctx, f, features.PrivateHome(), func(p *schemas.Packet) error {
				if first < 0 {
					first = p.TsNs
				}
				p.TsNs += at - first
				last = max(last, p.TsNs)
				if p.SrcMAC == d.MAC {
					sent = append(sent, p.TsNs)
				}
				judge(lh.Add(p))
				return nil
			}); err != nil {
				return nil, fmt.Errorf("long session of %s: %w", d.Name, err)
			}
			at = last + int64(gap)
			keys := 0
			if host := lh.hosts[d.MAC]; host != nil {
				keys, res.Saturated = len(host.keys), host.saturated
			}
			res.Keys = append(res.Keys, keys)
		}
		judge(lh.Flush())
		out = append(out, res)
	}
	return out, nil
}

// anyIn says a time of the ascending ts is in [from, to).
func anyIn(ts []int64, from, to int64) bool {
	for i := len(ts) - 1; i >= 0 && ts[i] >= from; i-- {
		if ts[i] < to {
			return true
		}
	}
	return false
}

// countOf is how many units of unit a window counted.
func countOf(w schemas.SeenWindow, unit string) int {
	for _, d := range w.Detections {
		if d.Device == unit {
			return d.Count
		}
	}
	return 0
}
