package dataset

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"unsafe"

	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/schemas/windowfile"
)

// ReadOptions say which windows a trainer reads and in what order.
type ReadOptions struct {
	// Keep picks the groups read, one side of a fold (nil reads every group).
	Keep func(group string) bool
	// ShuffleBuffer is how many windows are held back to shuffle the
	// stream: each window read takes the place of one drawn at random from
	// the buffer. Objects are read in an order shuffled too, so windows of
	// one session spread over the stream. 0 reads in manifest order.
	ShuffleBuffer int
	// Seed fixes the object order and the draws: one seed, one order.
	Seed uint64
	// Uncapped reads every window, ignoring the manifest's per-device cap
	// (for inspecting what the windower wrote rather than what trainers see).
	Uncapped bool
}

// streamSalt keeps the reader's draws apart from other uses of the same
// seed (folds, model initialisation), which would otherwise correlate.
const streamSalt = 0x686d2d7265616472 // "hm-readr"

// Stream reads the windows opt selects and passes each to yield, holding at
// most opt.ShuffleBuffer windows plus one object's at a time: objects are
// fetched, checked against the manifest's size and SHA-256, and decoded
// one by one, never all at once. A window is yielded exactly once. An
// error from yield stops the stream and is returned.
func Stream(ctx context.Context, st store.Store, m *Manifest, opt ReadOptions, yield func(*schemas.Window) error) error {
	var objs []store.ObjectInfo
	for _, p := range m.Parts {
		if opt.Keep == nil || opt.Keep(window.GroupOf(p.Home, p.Session)) {
			objs = append(objs, p.Objects...)
		}
	}
	var rng *rand.Rand
	if opt.ShuffleBuffer > 0 {
		rng = rand.New(rand.NewPCG(opt.Seed, streamSalt))
		rng.Shuffle(len(objs), func(i, j int) { objs[i], objs[j] = objs[j], objs[i] })
	}
	kept := func(w *schemas.Window) bool {
		if opt.Uncapped || len(m.CapThresholds) == 0 {
			return true
		}
		th, capped := m.CapThresholds[window.DeviceOf(m.Labels, w)]
		// Scores are 64-bit hashes of distinct IDs: a tie at the threshold,
		// which would keep one window too many, is as likely as a collision.
		return !capped || window.CapScore(m.CapSeed, w.ID) <= th
	}
	buf := make([]*schemas.Window, 0, max(opt.ShuffleBuffer, 0))
	for _, o := range objs {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := st.Get(ctx, o.Key)
		if err != nil {
			return fmt.Errorf("read dataset %s/%s: %w", m.Dataset, m.Version, err)
		}
		if err := checkObject(st, o, data); err != nil {
			return fmt.Errorf("read dataset %s/%s: %w", m.Dataset, m.Version, err)
		}
		ws, err := windowfile.Decode(data)
		if err != nil {
			return fmt.Errorf("read dataset %s/%s: %s: %w", m.Dataset, m.Version, st.Location(o.Key), err)
		}
		for _, w := range ws {
			if !kept(w) {
				continue
			}
			if rng == nil {
				if err := yield(w); err != nil {
					return err
				}
				continue
			}
			if len(buf) < opt.ShuffleBuffer {
				buf = append(buf, w)
				continue
			}
			j := rng.IntN(len(buf))
			out := buf[j]
			buf[j] = w
			if err := yield(out); err != nil {
				return err
			}
		}
	}
	if rng != nil {
		rng.Shuffle(len(buf), func(i, j int) { buf[i], buf[j] = buf[j], buf[i] })
	}
	for _, w := range buf {
		if err := yield(w); err != nil {
			return err
		}
	}
	return nil
}

// All is Stream as an iterator: ranging over it reads the windows, and
// breaking out stops reading. A read error is the last pair it yields.
func All(ctx context.Context, st store.Store, m *Manifest, opt ReadOptions) iter.Seq2[*schemas.Window, error] {
	return func(yield func(*schemas.Window, error) bool) {
		errStop := errors.New("stopped by the caller")
		err := Stream(ctx, st, m, opt, func(w *schemas.Window) error {
			if !yield(w, nil) {
				return errStop
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			yield(nil, err)
		}
	}
}

// WindowBytes estimates the memory one decoded window holds: its slices'
// backing arrays, its strings and the struct itself, which is what a
// memory budget counts windows by.
func WindowBytes(w *schemas.Window) int64 {
	n := int64(cap(w.TsNs))*8 + int64(cap(w.Interval)+cap(w.DPort)+cap(w.FrameLen)+cap(w.IPLen)+cap(w.TCPFlags)+cap(w.TCPWindow)+cap(w.PayloadLen))*4 +
		int64(cap(w.Label))*2 + int64(cap(w.ProtoBits)+cap(w.Direction)+cap(w.TTL)+cap(w.Transport)+cap(w.TCPOptLen))
	n += int64(len(w.ID) + len(w.Home) + len(w.Session) + len(w.View) + len(w.Kind) + len(w.Group))
	return n + int64(unsafe.Sizeof(*w))
}
