package learn

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/homemole/homemole/schemas"
)

// A stream is the windows one packet sequence was cut into, in order: one
// device's packets in one capture session (kind ind), or a session's
// merged stream (kind noise). Window IDs name it: every ID but the last
// "/seq" element.
type stream []*schemas.Window

// streamsOf groups windows for the model's context. Without a stream
// context every window is a stream of its own. Windows whose ID does not
// end in "/seq" (hand-made ones) stand alone too. Streams keep their
// windows in sequence order and the order in which they first appear.
func (c Config) streamsOf(ws []*schemas.Window) []stream {
	var out []stream
	if c.Context != ContextStream {
		out = make([]stream, len(ws))
		for i, w := range ws {
			out[i] = stream{w}
		}
		return out
	}
	index := map[string]int{}
	for _, w := range ws {
		key, _, ok := splitSeq(w.ID)
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
				_, x, _ := splitSeq(a.ID)
				_, y, _ := splitSeq(b.ID)
				return x - y
			})
		}
	}
	return out
}

// splitSeq splits "prefix/seq" into its prefix and sequence number.
func splitSeq(id string) (prefix string, seq int, ok bool) {
	i := strings.LastIndexByte(id, '/')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(id[i+1:])
	if err != nil || n < 0 {
		return "", 0, false
	}
	return id[:i], n, true
}

// contexts is what the stream context needs of a set of windows: each
// window's own kinds of packet and the streams the windows form.
type contexts struct {
	own     [][]int32 // per window: its real packets' kinds, distinct
	streams [][]int   // indices of each stream's windows, in order
}

// contextsOf gathers the contexts of ws (windows given twice count once
// per appearance; each appearance gets its stream's context).
func (f *features) contextsOf(cfg Config, ws []*schemas.Window) contexts {
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
	for _, s := range cfg.streamsOf(ws) {
		idx := make([]int, len(s))
		for k, w := range s {
			idx[k] = at[w][used[w]]
			used[w]++
		}
		c.streams = append(c.streams, idx)
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
	for _, s := range c.streams {
		u := c.union(s)
		for _, i := range s {
			out[i] = u
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
	for _, s := range c.streams {
		whole := c.union(s)
		for pos, i := range s {
			if len(s) == 1 || rng.IntN(2) == 0 {
				out[i] = whole
				continue
			}
			n := 1 + rng.IntN(len(s))
			lo := max(0, pos-n+1) + rng.IntN(min(pos, len(s)-n)-max(0, pos-n+1)+1)
			out[i] = c.union(s[lo : lo+n])
		}
	}
	return out
}
