package window

import (
	"slices"
	"strconv"

	"github.com/homemole/homemole/schemas"
)

// DeviceOf names the device most of a window's packets belong to, the
// device a window counts for (and is capped under); "(unlabeled)" when
// unlabeled packets are the most. Ties go to the lowest label.
func DeviceOf(labels []string, win *schemas.Window) string {
	// A window holds few distinct labels (one in ind windows): a short list
	// beats a map.
	type count struct {
		label int16
		n     int
	}
	var buf [8]count
	counts := buf[:0]
next:
	for _, l := range win.Label[:win.Len] {
		for i := range counts {
			if counts[i].label == l {
				counts[i].n++
				continue next
			}
		}
		counts = append(counts, count{l, 1})
	}
	best, bestN := int16(-1), 0
	for _, c := range counts {
		if c.n > bestN || c.n == bestN && c.label < best {
			best, bestN = c.label, c.n
		}
	}
	if best < 0 || int(best) >= len(labels) {
		return Unlabeled
	}
	return labels[best]
}

// Unlabeled is the device name windows of mostly unlabeled packets count under.
const Unlabeled = "(unlabeled)"

// Cut turns one session's packets into windows. Kind ind cuts each
// device's own sequence (packets of no device are left out); kind noise cuts
// the merged stream. The interval feature is recomputed inside the stream a
// window is cut from, and a short tail is padded, never dropped.
func Cut(spec Spec, home, view, sess string, pkts []schemas.Packet, labels []int16) []*schemas.Window {
	return cut(spec, home, view, sess, [][]schemas.Packet{pkts}, labels)
}

// cut is Cut over a session kept as its batches' packet slices.
func cut(spec Spec, home, view, sess string, chunks [][]schemas.Packet, labels []int16) []*schemas.Window {
	n := len(labels)
	all := make([]*schemas.Packet, 0, n)
	for _, c := range chunks {
		for i := range c {
			all = append(all, &c[i])
		}
	}
	var (
		out    []*schemas.Window
		free   []*schemas.Window // allocated for the session at once, taken in turn
		group  = GroupOf(home, sess)
		prefix = view + "/" + home + "/" + sess + "/" + spec.Kind + "/"
	)
	emit := func(stream string, pkts []*schemas.Packet, label func(j int) int16) {
		id := prefix + stream + "/"
		for lo := 0; lo < len(pkts); lo += spec.Size {
			hi := min(lo+spec.Size, len(pkts))
			win := free[0]
			free = free[1:]
			win.ID = id + strconv.Itoa(lo/spec.Size)
			win.Home, win.Session, win.View, win.Kind, win.Group = home, sess, view, spec.Kind, group
			win.Len = hi - lo
			for j := lo; j < hi; j++ {
				var gap float32
				if j > 0 {
					gap = float32(pkts[j].TsNs-pkts[j-1].TsNs) / 1e9
				}
				win.Set(j-lo, pkts[j], gap, int32(label(j)))
			}
			out = append(out, win)
		}
	}
	if spec.Kind == schemas.KindNoise {
		free = schemas.NewWindows((n+spec.Size-1)/spec.Size, spec.Size)
		emit("all", all, func(j int) int16 { return labels[j] })
		return out
	}
	// Group each device's packets with a counting sort: devices in label
	// order, packets in capture order within each.
	start := make([]int, len(spec.Labels)+1)
	for _, l := range labels {
		if l >= 0 {
			start[l+1]++
		}
	}
	for l := 1; l < len(start); l++ {
		start[l] += start[l-1]
	}
	byDev := make([]*schemas.Packet, start[len(start)-1])
	next := slices.Clone(start[:len(start)-1])
	for i, l := range labels {
		if l >= 0 {
			byDev[next[l]] = all[i]
			next[l]++
		}
	}
	k := 0
	for l := range spec.Labels {
		k += (start[l+1] - start[l] + spec.Size - 1) / spec.Size
	}
	free = schemas.NewWindows(k, spec.Size)
	out = make([]*schemas.Window, 0, k)
	for l := range spec.Labels {
		if start[l+1] > start[l] {
			emit(spec.Labels[l], byDev[start[l]:start[l+1]], func(int) int16 { return int16(l) })
		}
	}
	return out
}
