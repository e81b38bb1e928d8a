// Package forest is the seed's Random Forest baseline: a per-packet
// classifier over the HomeMole packet vector, with the destination port
// one-hot coded and reduced by PCA (50 components in the paper), grown as
// CART trees with Gini impurity on bootstrap samples, sqrt(features)
// candidate columns per split, as scikit-learn's RandomForestClassifier.
package forest

import (
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"

	"github.com/homemole/homemole/internal/fieldcheck"
	"github.com/homemole/homemole/schemas"
)

// Config holds the forest's shape. The defaults are the seed's (100 trees,
// 50 port components) with scikit-learn's defaults for the rest.
type Config struct {
	Trees       int
	MaxFeatures int // columns tried per split; 0 = sqrt(columns)
	MinLeaf     int // rows a leaf must keep
	MaxDepth    int // 0 = grow until leaves are pure
	Seed        uint64
	Workers     int // trees built at once; 0 = GOMAXPROCS
	// PCAComponents is how many principal components of the port one-hot
	// the model keeps (fewer when the vocabulary is smaller).
	PCAComponents int
	MaxPorts      int // most frequent training ports that get a one-hot column
}

// DefaultConfig returns the seed's settings.
func DefaultConfig() Config {
	return Config{Trees: 100, MinLeaf: 1, Seed: 1, PCAComponents: 50, MaxPorts: 512}
}

// Validate reports every field that cannot produce a model.
func (c Config) Validate() error {
	var errs fieldcheck.Errors
	errs.Positive("Trees", c.Trees)
	errs.NotNegative("MaxFeatures", c.MaxFeatures)
	errs.Positive("MinLeaf", c.MinLeaf)
	errs.NotNegative("MaxDepth", c.MaxDepth)
	errs.NotNegative("Workers", c.Workers)
	errs.Positive("PCAComponents", c.PCAComponents)
	errs.NotNegative("MaxPorts", c.MaxPorts)
	return errs.Err("forest config")
}

func (c Config) workers() int {
	if c.Workers == 0 {
		return runtime.GOMAXPROCS(0)
	}
	return c.Workers
}

// Model is a trained forest with the feature coding it was trained on.
type Model struct {
	cfg        Config
	numClasses int
	enc        *encoder
	trees      []*tree
	importance []float64 // per column, mean over trees of each tree's normalised decrease
}

// Train fits the forest on the labeled packets of train; unlabeled packets
// still shape the port vocabulary and PCA, which do not read labels.
// progress, when not nil, is called after each tree.
func Train(ctx context.Context, cfg Config, train []*schemas.Window, numClasses int, progress func(done, total int)) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if numClasses <= 0 || numClasses > math.MaxInt16 {
		return nil, fmt.Errorf("forest: %d classes, want 1..%d", numClasses, math.MaxInt16)
	}
	for i, w := range train {
		if err := checkWindow(w, numClasses); err != nil {
			return nil, fmt.Errorf("forest: training window %d: %w", i, err)
		}
	}
	enc, err := fitEncoder(train, cfg.MaxPorts, cfg.PCAComponents)
	if err != nil {
		return nil, fmt.Errorf("forest: fit features: %w", err)
	}
	rows := enc.encode(train, true)
	if rows.Len() == 0 {
		return nil, errors.New("forest: no labeled packets to train on")
	}
	m := &Model{cfg: cfg, numClasses: numClasses, enc: enc}
	if err := m.grow(ctx, newDataset(rows, numClasses, cfg.workers()), progress); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Model) grow(ctx context.Context, d *dataset, progress func(done, total int)) error {
	cfg := m.cfg
	mtry := cfg.MaxFeatures
	if mtry == 0 {
		mtry = max(1, int(math.Sqrt(float64(d.cols))))
	}
	mtry = min(mtry, d.cols)
	workers := min(cfg.workers(), cfg.Trees)

	m.trees = make([]*tree, cfg.Trees)
	imps := make([][]float64, cfg.Trees)
	next := make(chan int)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		done     int
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := newBuilder(d, cfg, mtry)
			for t := range next {
				tr, imp, err := b.grow(ctx, t)
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					cancel()
				} else {
					m.trees[t], imps[t] = tr, imp
					done++
					if progress != nil {
						progress(done, cfg.Trees)
					}
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for t := range cfg.Trees {
		select {
		case next <- t:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return fmt.Errorf("forest: train: %w", firstErr)
	}
	m.importance = make([]float64, d.cols)
	for _, imp := range imps {
		for c, v := range imp {
			m.importance[c] += v / float64(len(imps))
		}
	}
	return nil
}

// Encode returns the feature rows of the real packets of ws as the model
// sees them, so that another implementation can be trained and scored on
// the very same inputs.
func (m *Model) Encode(ws []*schemas.Window) (Rows, error) {
	for i, w := range ws {
		if err := checkWindow(w, -1); err != nil {
			return Rows{}, fmt.Errorf("forest: window %d: %w", i, err)
		}
	}
	return m.enc.encode(ws, false), nil
}

// encodeTrained is Encode for the model's readers, which need its trees:
// op names the reader in the error of a model that has none.
func (m *Model) encodeTrained(op string, ws []*schemas.Window) (Rows, error) {
	if m == nil || len(m.trees) == 0 {
		return Rows{}, fmt.Errorf("forest: %s on an untrained model", op)
	}
	return m.Encode(ws)
}

// Predict labels every real packet (slots before Len) of each window,
// labeled or not, with the class of highest mean tree probability.
func (m *Model) Predict(ws []*schemas.Window) ([][]int32, error) {
	rows, err := m.encodeTrained("Predict", ws)
	if err != nil {
		return nil, err
	}
	pred := m.PredictRows(rows)
	out := make([][]int32, len(ws))
	j := 0
	for i, w := range ws {
		out[i] = pred[j : j+w.Len : j+w.Len]
		j += w.Len
	}
	return out, nil
}

// PredictRows labels rows in the model's column layout (see Encode).
func (m *Model) PredictRows(r Rows) []int32 {
	out := make([]int32, r.Len())
	m.sumTrees(r, func(i int, acc []float32) {
		best := 0
		for c, v := range acc {
			if v > acc[best] {
				best = c
			}
		}
		out[i] = int32(best)
	})
	return out
}

// Importance returns the mean impurity decrease of each feature group
// ("dport", "protocol", "direction", "frame_length", "time_interval"),
// summing to 1 as the seed reports it.
func (m *Model) Importance() map[string]float64 {
	out := map[string]float64{"dport": 0, "protocol": 0, "direction": 0, "frame_length": 0, "time_interval": 0}
	for c, v := range m.importance {
		out[m.enc.group(c)] += v
	}
	return out
}

// ExplainedVariance is the share of the port one-hot's variance the kept
// principal components carry.
func (m *Model) ExplainedVariance() float64 { return m.enc.Explained }

// NumClasses is the number of classes the model was trained for.
func (m *Model) NumClasses() int { return m.numClasses }

// checkpointFormat changes whenever the saved layout does.
const checkpointFormat = 1

type checkpoint struct {
	Magic      string
	Format     int
	Config     Config
	NumClasses int
	Encoder    *encoder
	Trees      []*tree
	Importance []float64
}

const checkpointMagic = "homemole-forest"

// Save writes the model with gob.
func (m *Model) Save(w io.Writer) error {
	if m == nil || len(m.trees) == 0 {
		return errors.New("forest: Save of an untrained model")
	}
	c := checkpoint{Magic: checkpointMagic, Format: checkpointFormat, Config: m.cfg, NumClasses: m.numClasses,
		Encoder: m.enc, Trees: m.trees, Importance: m.importance}
	if err := gob.NewEncoder(w).Encode(&c); err != nil {
		return fmt.Errorf("forest: write model: %w", err)
	}
	return nil
}

// Load reads a model written by Save.
func Load(r io.Reader) (*Model, error) {
	var c checkpoint
	if err := gob.NewDecoder(r).Decode(&c); err != nil {
		return nil, fmt.Errorf("forest: read model: %w", err)
	}
	if c.Magic != checkpointMagic {
		return nil, errors.New("forest: not a HomeMole forest model")
	}
	if c.Format != checkpointFormat {
		return nil, fmt.Errorf("forest: model format %d, this build reads format %d", c.Format, checkpointFormat)
	}
	if c.Encoder == nil || len(c.Trees) == 0 || c.NumClasses <= 0 {
		return nil, errors.New("forest: model file holds no trees")
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("forest: corrupt model: %w", err)
	}
	c.Encoder.buildIndex()
	return &Model{cfg: c.Config, numClasses: c.NumClasses, enc: c.Encoder, trees: c.Trees, importance: c.Importance}, nil
}

// check makes sure prediction cannot index out of range on a damaged file.
func (c *checkpoint) check() error {
	e := c.Encoder
	if e.Components < 0 || len(e.Proj) != e.oneHotRows()*e.Components {
		return fmt.Errorf("port projection of %d values for %d rows of %d components", len(e.Proj), e.oneHotRows(), e.Components)
	}
	cols := int32(e.cols())
	for ti, t := range c.Trees {
		if t == nil || len(t.Nodes) == 0 {
			return fmt.Errorf("tree %d is empty", ti)
		}
		for ni, n := range t.Nodes {
			switch {
			case n.Feature < 0:
				if n.Left < 0 || n.Left > n.Right || int(n.Right) > len(t.Probs) {
					return fmt.Errorf("tree %d leaf %d: bad distribution range", ti, ni)
				}
			case n.Feature >= cols:
				return fmt.Errorf("tree %d node %d: column %d of %d", ti, ni, n.Feature, cols)
			case n.Left <= int32(ni) || n.Right <= int32(ni) || int(n.Left) >= len(t.Nodes) || int(n.Right) >= len(t.Nodes):
				// Children always follow their parent, so a walk ends.
				return fmt.Errorf("tree %d node %d: bad children", ti, ni)
			}
		}
		for _, p := range t.Probs {
			if p.Class < 0 || int(p.Class) >= c.NumClasses {
				return fmt.Errorf("tree %d: class %d of %d", ti, p.Class, c.NumClasses)
			}
		}
	}
	return nil
}
