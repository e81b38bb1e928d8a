package learn

import (
	"math/rand/v2"
	"slices"
	"strconv"

	"github.com/homemole/homemole/schemas"
)

// A stream is the windows one packet sequence was cut into, in order: one
// device's packets in one capture session (kind ind), or a session's
// merged stream (kind noise). Window IDs name it: every ID but the last
// "/seq" element.
type stream []*schemas.Window

// streamsOf groups windows into the streams they were cut from. Windows
// whose ID does not end in "/seq" (hand-made ones) stand alone. Streams
// keep their windows in sequence order and the order in which they first
// appear.
func streamsOf(ws []*schemas.Window) []stream {
	var out []stream
	index := map[string]int{}
	for _, w := range ws {
		key, _, ok := schemas.SplitWindowID(w.ID)
		if !ok {
			out = append(out, stream{w})
			continue
		}
		// Windows of one stream share a size; the size in the key keeps a
		// stream built twice at two sizes from being mixed.
		key += "#" + strconv.Itoa(len(w.Label))
		i, seen := index[key]
		if !seen {
			i = len(out)
			index[key] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], w)
	}
	for _, s := range out {
		if len(s) > 1 {
			slices.SortStableFunc(s, func(a, b *schemas.Window) int {
				_, x, _ := schemas.SplitWindowID(a.ID)
				_, y, _ := schemas.SplitWindowID(b.ID)
				return x - y
			})
		}
	}
	return out
}

// contexts is what the stream context needs of a set of windows: each
// window's own kinds of packet and the streams the windows form.
type contexts struct {
	own     [][]int32 // per window: its real packets' kinds, distinct
	streams [][]int   // indices of each stream's windows, in order
	kinds   [][]int32 // per stream: the kinds of all its windows
}

// contextsOf gathers the contexts of ws (windows given twice count once
// per appearance; each appearance gets its stream's context).
func (f *features) contextsOf(ws []*schemas.Window) contexts {
	c := contexts{own: make([][]int32, len(ws))}
	at := make(map[*schemas.Window][]int, len(ws))
	for i, w := range ws {
		at[w] = append(at[w], i)
		seen := map[int32]bool{}
		for j := range w.Len {
			if k := f.kindOf(w, j); !seen[k] {
				seen[k] = true
				c.own[i] = append(c.own[i], k)
			}
		}
	}
	used := make(map[*schemas.Window]int, len(ws))
	for _, s := range streamsOf(ws) {
		idx := make([]int, len(s))
		for k, w := range s {
			idx[k] = at[w][used[w]]
			used[w]++
		}
		c.streams = append(c.streams, idx)
		c.kinds = append(c.kinds, c.union(idx))
	}
	return c
}

// union is the distinct kinds of windows idx.
func (c contexts) union(idx []int) []int32 {
	seen := make(map[int32]bool)
	var out []int32
	for _, i := range idx {
		for _, k := range c.own[i] {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out
}

// whole gives every window its whole stream's kinds: what inference sees.
func (c contexts) whole() [][]int32 {
	out := make([][]int32, len(c.own))
	for k, s := range c.streams {
		for _, i := range s {
			out[i] = c.kinds[k]
		}
	}
	return out
}

// sample is one training epoch's contexts: half of the windows get their
// whole stream's kinds, the others those of a random run of their stream
// that holds them. The model so learns to name a device from part of its
// stream too (a capture that starts late, a detector that has seen a
// minute of it), not only from whole setup sessions.
func (c contexts) sample(rng *rand.Rand) [][]int32 {
	out := make([][]int32, len(c.own))
	for k, s := range c.streams {
		for pos, i := range s {
			if len(s) == 1 || rng.IntN(2) == 0 {
				out[i] = c.kinds[k]
				continue
			}
			n := 1 + rng.IntN(len(s))
			lo := max(0, pos-n+1) + rng.IntN(min(pos, len(s)-n)-max(0, pos-n+1)+1)
			out[i] = c.union(s[lo : lo+n])
		}
	}
	return out
}
