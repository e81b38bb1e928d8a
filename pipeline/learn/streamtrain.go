package learn

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	ts "github.com/sugarme/gotch/ts"

	"github.com/homemole/homemole/schemas"
)

// Source reads a training set once per call, window by window, in an order
// that may change with pass (0 and 1 are the trainer's preparing passes,
// 2 and on its epochs). It must give the same windows every pass. An error
// from yield stops it and is returned.
type Source func(ctx context.Context, pass int, yield func(*schemas.Window) error) error

// TrainStream is Train over windows it never holds at once: one pass fits
// the features and class weights, a second the streams' contexts (for the
// stream context), and each epoch reads the source again, batching
// windows as they come. Memory is the source's (its shuffle buffer) plus
// a few batches plus the stream index (IndexBytes a window at most).
func TrainStream(ctx context.Context, cfg Config, src Source, numClasses int, progress func(EpochStats)) (*Model, error) {
	if err := checkTrainArgs(cfg, numClasses); err != nil {
		return nil, err
	}
	var stats featureStats
	counts := make([]float64, numClasses)
	n, total, labeled := -1, 0, 0
	err := src(ctx, 0, func(w *schemas.Window) error {
		if err := checkWindow(w, numClasses, cfg.HeaderFeatures); err != nil {
			return fmt.Errorf("learn: training window %q: %w", w.ID, err)
		}
		if n < 0 {
			n = len(w.Label)
		}
		if len(w.Label) != n {
			return fmt.Errorf("learn: training window %q has %d slots, the first has %d; train one window size at a time", w.ID, len(w.Label), n)
		}
		stats.add(w)
		countLabels(w, counts)
		total++
		if hasLabel(w) {
			labeled++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("learn: first pass over the training windows: %w", err)
	}
	if total == 0 {
		return nil, errors.New("learn: no training windows")
	}
	if labeled == 0 {
		return nil, errors.New("learn: the training windows hold no labeled packet")
	}
	fitFeat := func() *features { return stats.fit(cfg.MaxPorts, cfg.lensToFit(), cfg.PortSessions) }
	return trainNew(cfg, numClasses, fitFeat, func(m *Model) error { return m.fitStream(ctx, src, n, counts, labeled, progress) })
}

func (m *Model) fitStream(ctx context.Context, src Source, n int, counts []float64, labeled int, progress func(EpochStats)) error {
	var index *streamIndex
	if m.streamW != nil {
		var err error
		if index, err = m.indexStreams(ctx, src, n); err != nil {
			return err
		}
	}
	weights := ts.None
	var hostWeights []float32
	if m.cfg.Balance {
		w, err := classWeightsOf(counts, m.device)
		if err != nil {
			return fmt.Errorf("learn: class weights: %w", err)
		}
		defer w.MustDrop()
		weights, hostWeights = w, balancedWeights(counts)
	}
	return m.steps(ctx, weights, hostWeights, labeled, progress, func(out chan<- batchOf, stop <-chan struct{}) {
		m.streamBatches(ctx, src, n, index, out, stop)
	})
}

// errStopped ends a pass when training no longer wants batches.
var errStopped = errors.New("training stopped")

// streamBatches encodes each epoch's windows in the order the source
// gives them; a batch is sent once the next is full, so the epoch's last
// one can be marked.
func (m *Model) streamBatches(ctx context.Context, src Source, n int, index *streamIndex, out chan<- batchOf, stop <-chan struct{}) {
	seed := uint64(m.cfg.Seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	drop := m.newDropper()
	send := func(b batchOf) bool {
		select {
		case out <- b:
			return true
		case <-stop:
			return false
		}
	}
	var seen []bool
	if index != nil {
		seen = make([]bool, m.feat.bagRows())
	}
	for epoch := 1; epoch <= m.cfg.Epochs; epoch++ {
		key := rng.Uint64() // the epoch's stream contexts
		var pending *batchOf
		var spent time.Duration
		var batch []*schemas.Window
		var batchKinds [][]int32
		lo := 0
		flush := func() bool {
			t := time.Now()
			b := batchOf{epoch: epoch, lo: lo, e: m.withMask(drop, m.feat.encode(batch, n, batchKinds))}
			spent += time.Since(t)
			lo += len(batch)
			batch, batchKinds = nil, nil
			if pending != nil && !send(*pending) {
				return false
			}
			pending = &b
			return true
		}
		err := src(ctx, epoch+1, func(w *schemas.Window) error {
			if !hasLabel(w) {
				return nil
			}
			batch = append(batch, w)
			if index != nil {
				i, ok := index.window(w.ID)
				if !ok {
					return fmt.Errorf("window %q was not in the first passes: the source must give the same windows every pass", w.ID)
				}
				batchKinds = append(batchKinds, index.contextOf(i, key, seen))
			}
			if len(batch) == m.stepWindows() && !flush() {
				return errStopped
			}
			return nil
		})
		if errors.Is(err, errStopped) {
			return
		}
		if err == nil && len(batch) > 0 && !flush() {
			return
		}
		if err == nil && pending == nil {
			err = errors.New("no labeled window in this pass")
		}
		if err != nil {
			send(batchOf{epoch: epoch, err: fmt.Errorf("read the training windows: %w", err)})
			return
		}
		pending.last = true
		pending.prepare = spent
		if !send(*pending) {
			return
		}
	}
}
