package learn

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"strconv"

	"github.com/homemole/homemole/internal/splitmix"
	"github.com/homemole/homemole/schemas"
)

// streamIndex is what the stream context keeps of a streamed training set,
// in flat arrays a few tens of bytes a window, so that a trainer under a
// memory budget can count it (IndexBytes) and hold a dataset many times
// the budget: every window's place in its stream, found again each epoch
// by a 64-bit hash of its ID, and its distinct kinds of packet.
type streamIndex struct {
	seed maphash.Seed
	ids  []idSlot // sorted by hash
	// own[ownAt[i]:ownAt[i+1]] are window i's distinct kinds of packet.
	own   []uint16
	ownAt []int32
	// windows[streamAt[s]:streamAt[s+1]] are stream s's windows in order;
	// window i is at position pos[i] of stream streamOf[i].
	windows  []int32
	streamAt []int32
	streamOf []int32
	pos      []int32
	// kinds[kindsAt[s]:kindsAt[s+1]] are stream s's kinds, all windows'.
	kinds   []uint16
	kindsAt []int32
}

type idSlot struct {
	hash   uint64
	window int32
}

// IndexBytes is what the stream context's index holds for w, at most:
// what a streaming trainer's budget keeps back per training window.
func IndexBytes(w *schemas.Window) int64 {
	seen := make(map[[2]int32]struct{}, w.Len)
	for i := range w.Len {
		seen[[2]int32{int32(w.Direction[i]), w.FrameLen[i]}] = struct{}{}
	}
	// An ID slot (16), its stream and sequence number while the index is
	// built (8), four int32s of offsets and places, two bytes a kind here
	// and at most two in its stream's union; large slices grow by a
	// quarter at a time while the index is built.
	return (16 + 8 + 16 + 4*int64(len(seen))) * 5 / 4
}

func (m *Model) indexStreams(ctx context.Context, src Source, n int) (*streamIndex, error) {
	if rows := m.feat.bagRows(); rows > 1<<16 {
		return nil, fmt.Errorf("learn: %d kinds of packet do not fit the stream index's 16 bits", rows)
	}
	x := &streamIndex{seed: maphash.MakeSeed(), ownAt: []int32{0}}
	type place struct{ stream, seq int32 }
	var places []place
	streams := map[uint64]int32{} // stream key's hash -> stream
	seen := make([]bool, m.feat.bagRows())
	err := src(ctx, 1, func(w *schemas.Window) error {
		i := int32(len(places))
		x.ids = append(x.ids, idSlot{hash: maphash.String(x.seed, w.ID), window: i})
		for j := range w.Len {
			if k := m.feat.kindOf(w, j); !seen[k] {
				seen[k] = true
				x.own = append(x.own, uint16(k))
			}
		}
		for _, k := range x.own[x.ownAt[i]:] {
			seen[k] = false
		}
		x.ownAt = append(x.ownAt, int32(len(x.own)))
		// As streamsOf groups them: by the ID less its "/seq", and size.
		key, seq, ok := schemas.SplitWindowID(w.ID)
		s := int32(len(streams))
		if ok {
			h := maphash.String(x.seed, key+"#"+strconv.Itoa(len(w.Label)))
			if got, found := streams[h]; found {
				s = got
			} else {
				streams[h] = s
			}
		} else {
			// A hand-made ID stands alone.
			streams[maphash.String(x.seed, "\x00"+w.ID)] = s
		}
		if seq > math.MaxInt32 {
			return fmt.Errorf("window %q: sequence number past %d", w.ID, math.MaxInt32)
		}
		places = append(places, place{stream: s, seq: int32(seq)})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("learn: second pass over the training windows: %w", err)
	}
	slices.SortFunc(x.ids, func(a, b idSlot) int { return cmp.Compare(a.hash, b.hash) })
	for k := 1; k < len(x.ids); k++ {
		if x.ids[k].hash == x.ids[k-1].hash {
			return nil, errors.New("learn: second pass over the training windows: a window ID read twice in one pass")
		}
	}
	// Counting sort of the windows by stream, then by sequence within.
	x.streamAt = make([]int32, len(streams)+1)
	for _, p := range places {
		x.streamAt[p.stream+1]++
	}
	for s := range len(streams) {
		x.streamAt[s+1] += x.streamAt[s]
	}
	x.windows = make([]int32, len(places))
	fill := slices.Clone(x.streamAt[:len(streams)])
	for i, p := range places {
		x.windows[fill[p.stream]] = int32(i)
		fill[p.stream]++
	}
	x.streamOf, x.pos = make([]int32, len(places)), make([]int32, len(places))
	x.kindsAt = []int32{0}
	for s := range len(streams) {
		ws := x.windows[x.streamAt[s]:x.streamAt[s+1]]
		slices.SortStableFunc(ws, func(a, b int32) int { return cmp.Compare(places[a].seq, places[b].seq) })
		for k, i := range ws {
			x.streamOf[i], x.pos[i] = int32(s), int32(k)
		}
		x.kinds = x.unionInto(x.kinds, ws, seen)
		x.kindsAt = append(x.kindsAt, int32(len(x.kinds)))
	}
	return x, nil
}

// window finds a window's index by its ID.
func (x *streamIndex) window(id string) (int, bool) {
	h := maphash.String(x.seed, id)
	k, ok := slices.BinarySearchFunc(x.ids, h, func(s idSlot, h uint64) int { return cmp.Compare(s.hash, h) })
	if !ok {
		return 0, false
	}
	return int(x.ids[k].window), true
}

// unionInto appends to dst the distinct kinds of windows ws; seen is
// all false on entry and on return.
func (x *streamIndex) unionInto(dst []uint16, ws []int32, seen []bool) []uint16 {
	from := len(dst)
	for _, i := range ws {
		for _, k := range x.own[x.ownAt[i]:x.ownAt[i+1]] {
			if !seen[k] {
				seen[k] = true
				dst = append(dst, k)
			}
		}
	}
	for _, k := range dst[from:] {
		seen[k] = false
	}
	return dst
}

// contextOf is window i's stream context in an epoch, as contexts.sample
// draws it: its whole stream's kinds, or (half of the time, in a stream of
// more than one window) those of a random run of its stream that holds
// it. The draws follow from the epoch's key and i alone, so they do not
// depend on the order the source gives the windows in.
func (x *streamIndex) contextOf(i int, key uint64, seen []bool) []int32 {
	s := x.streamOf[i]
	ws := x.windows[x.streamAt[s]:x.streamAt[s+1]]
	r := splitmix.Mix(key ^ uint64(i)*0x9e3779b97f4a7c15)
	var run []uint16
	if len(ws) == 1 || r&1 == 0 {
		run = x.kinds[x.kindsAt[s]:x.kindsAt[s+1]]
	} else {
		pos, l := int(x.pos[i]), len(ws)
		r2 := splitmix.Mix(r)
		n := 1 + int(r2%uint64(l))
		first := max(0, pos-n+1)
		lo := first + int(splitmix.Mix(r2)%uint64(min(pos, l-n)-first+1))
		run = x.unionInto(nil, ws[lo:lo+n], seen)
	}
	out := make([]int32, len(run))
	for k, v := range run {
		out[k] = int32(v)
	}
	return out
}

// bytes is what the index's arrays hold.
func (x *streamIndex) bytes() int64 {
	return int64(cap(x.ids))*16 + int64(cap(x.own)+cap(x.kinds))*2 +
		4*int64(cap(x.ownAt)+cap(x.windows)+cap(x.streamAt)+cap(x.streamOf)+cap(x.pos)+cap(x.kindsAt))
}
