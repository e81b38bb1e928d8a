package forest

import (
	"context"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync"
)

// node is one tree node. A split sends a row left when its value of
// Feature is at most Thresh. A leaf has Feature -1 and its class
// distribution in the tree's Probs[Left:Right].
type node struct {
	Feature int32
	Thresh  float32
	Left    int32
	Right   int32
}

type classProb struct {
	Class int32
	P     float32
}

type tree struct {
	Nodes []node
	Probs []classProb
}

// leafProbs walks x (one row) to its leaf.
func (t *tree) leafProbs(x []float32) []classProb {
	i := int32(0)
	for {
		n := &t.Nodes[i]
		if n.Feature < 0 {
			return t.Probs[n.Left:n.Right]
		}
		if x[n.Feature] <= n.Thresh {
			i = n.Left
		} else {
			i = n.Right
		}
	}
}

// dataset is the training matrix as the builder reads it, shared by every
// tree. Each column is replaced by the ranks of its values among the
// column's distinct values: a split is then a rank cut, nodes sort small
// integers instead of floats, and low-cardinality columns (protocol bits,
// direction, port components, frame length) are split from a per-rank
// histogram without sorting at all.
type dataset struct {
	n, cols, classes int
	codes            [][]uint32  // [col][row] rank of the row's value
	uniq             [][]float32 // [col] distinct values, ascending
	y                []uint16
}

func newDataset(r Rows, numClasses, workers int) *dataset {
	n := r.Len()
	d := &dataset{n: n, cols: r.Cols, classes: numClasses, y: make([]uint16, n)}
	for i, l := range r.Label {
		d.y[i] = uint16(l)
	}
	d.codes = make([][]uint32, r.Cols)
	d.uniq = make([][]float32, r.Cols)
	cols := make(chan int)
	var wg sync.WaitGroup
	for range max(1, workers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			keys := make([]uint64, n)
			for c := range cols {
				d.rankColumn(r, c, keys)
			}
		}()
	}
	for c := range r.Cols {
		cols <- c
	}
	close(cols)
	wg.Wait()
	return d
}

// rankColumn sorts column c as (order-preserving bits, row) keys, so the
// sort compares integers only.
func (d *dataset) rankColumn(r Rows, c int, keys []uint64) {
	for i := range d.n {
		keys[i] = uint64(sortable(r.X[i*r.Cols+c]))<<32 | uint64(i)
	}
	slices.Sort(keys)
	codes := make([]uint32, d.n)
	var uniq []float32
	for _, k := range keys {
		i := int(uint32(k))
		v := r.X[i*r.Cols+c]
		if len(uniq) == 0 || v != uniq[len(uniq)-1] {
			uniq = append(uniq, v)
		}
		codes[i] = uint32(len(uniq) - 1)
	}
	d.codes[c], d.uniq[c] = codes, uniq
}

// sortable maps a float32 to a uint32 of the same order.
func sortable(v float32) uint32 {
	b := math.Float32bits(v)
	if b>>31 == 1 {
		return ^b
	}
	return b | 1<<31
}

// builder grows one tree; each worker owns one and reuses its buffers.
type builder struct {
	d       *dataset
	cfg     Config
	mtry    int
	rng     *rand.Rand
	weight  []uint16   // bootstrap count of each row
	yw      []uint32   // class<<16 | bootstrap count, of in-bag rows
	konst   [][]uint64 // per depth: the columns constant in that node
	keys    []uint64
	tmp     []uint64
	right   []int32
	hist    []uint32
	binN    []uint32
	counts  []int64
	left    []int64
	feats   []int
	t       *tree
	imp     []float64 // impurity decrease per column
	visited int
	ctx     context.Context
	err     error
}

func newBuilder(d *dataset, cfg Config, mtry int) *builder {
	return &builder{
		d: d, cfg: cfg, mtry: mtry,
		weight: make([]uint16, d.n),
		yw:     make([]uint32, d.n),
		keys:   make([]uint64, d.n),
		tmp:    make([]uint64, d.n),
		right:  make([]int32, 0, d.n),
		counts: make([]int64, d.classes),
		left:   make([]int64, d.classes),
		feats:  make([]int, d.cols),
	}
}

// grow builds tree number t. Its random stream depends on the seed and t
// only, so a forest is the same whatever the number of workers.
func (b *builder) grow(ctx context.Context, t int) (*tree, []float64, error) {
	b.rng = rand.New(rand.NewPCG(b.cfg.Seed, uint64(t)))
	b.ctx, b.err, b.visited = ctx, nil, 0
	clear(b.weight)
	for range b.d.n {
		i := b.rng.IntN(b.d.n)
		// A row drawn 65535 times in a bootstrap of its own size does not
		// happen; saturating keeps the packed sort keys valid if it did.
		if b.weight[i] < 0xffff {
			b.weight[i]++
		}
	}
	idx := make([]int32, 0, b.d.n)
	for i, w := range b.weight {
		if w > 0 {
			idx = append(idx, int32(i))
			b.yw[i] = uint32(b.d.y[i])<<16 | uint32(w)
		}
	}
	b.t = &tree{}
	b.imp = make([]float64, b.d.cols)
	b.build(idx, 0, make([]uint64, (b.d.cols+63)/64))
	if b.err != nil {
		return nil, nil, b.err
	}
	var sum float64
	for _, v := range b.imp {
		sum += v
	}
	if sum > 0 {
		for i := range b.imp {
			b.imp[i] /= sum
		}
	}
	return b.t, b.imp, nil
}

// split is a candidate: rows with rank at most code go left; next is the
// smallest rank going right, so the threshold falls midway between the
// node's own neighbouring values, as in scikit-learn.
type split struct {
	feature    int
	code, next uint32
	score      float64 // sum over children of (class weight)^2 / child weight
}

// build grows the subtree of the rows idx. konst marks columns already
// found constant on these rows: they stay constant in every descendant, so
// no node below sorts them again.
func (b *builder) build(idx []int32, depth int, konst []uint64) int32 {
	self := int32(len(b.t.Nodes))
	b.t.Nodes = append(b.t.Nodes, node{Feature: -1})
	b.visited++
	// ctx.Err takes a lock; every thousandth node still stops a tree
	// within a millisecond of cancellation.
	if b.visited&1023 == 1 && b.err == nil {
		b.err = b.ctx.Err()
	}
	if b.err != nil {
		return self
	}

	clear(b.counts)
	var total int64
	for _, i := range idx {
		yw := b.yw[i]
		w := int64(yw & 0xffff)
		b.counts[yw>>16] += w
		total += w
	}
	var sq int64
	nonzero := 0
	for _, c := range b.counts {
		sq += c * c
		if c > 0 {
			nonzero++
		}
	}
	leaf := nonzero <= 1 || len(idx) < 2*b.cfg.MinLeaf || (b.cfg.MaxDepth > 0 && depth >= b.cfg.MaxDepth)
	var best split
	found := false
	if !leaf {
		for len(b.konst) <= depth {
			b.konst = append(b.konst, make([]uint64, len(konst)))
		}
		konst = append(b.konst[depth][:0], konst...)
		best, found = b.findSplit(idx, total, konst)
	}
	if !found {
		lo := int32(len(b.t.Probs))
		for c, v := range b.counts {
			if v > 0 {
				b.t.Probs = append(b.t.Probs, classProb{Class: int32(c), P: float32(float64(v) / float64(total))})
			}
		}
		b.t.Nodes[self].Left, b.t.Nodes[self].Right = lo, int32(len(b.t.Probs))
		return self
	}

	b.imp[best.feature] += best.score - float64(sq)/float64(total)
	codes := b.d.codes[best.feature]
	// A stable partition keeps every node's rows in ascending order, so
	// the gathers below walk the columns forwards.
	right := b.right[:0]
	lo := 0
	for _, i := range idx {
		if codes[i] <= best.code {
			idx[lo] = i
			lo++
		} else {
			right = append(right, i)
		}
	}
	copy(idx[lo:], right)
	u := b.d.uniq[best.feature]
	a, c := u[best.code], u[best.next]
	th := a/2 + c/2
	// The midpoint of two neighbouring float32 values may round up to the
	// larger one, which would then go left.
	if th >= c || th < a {
		th = a
	}
	b.t.Nodes[self].Feature = int32(best.feature)
	b.t.Nodes[self].Thresh = th
	l := b.build(idx[:lo], depth+1, konst)
	r := b.build(idx[lo:], depth+1, konst)
	b.t.Nodes[self].Left, b.t.Nodes[self].Right = l, r
	return self
}

// findSplit draws columns without replacement until mtry of them have
// shown more than one value in the node, as scikit-learn does, and returns
// the best Gini split among them. Columns it finds constant are added to
// konst.
func (b *builder) findSplit(idx []int32, total int64, konst []uint64) (split, bool) {
	cand := b.feats[:0]
	for f := range b.d.cols {
		if konst[f/64]&(1<<(f%64)) == 0 {
			cand = append(cand, f)
		}
	}
	var best split
	found := false
	tried := 0
	for k := 0; k < len(cand) && tried < b.mtry; k++ {
		j := k + b.rng.IntN(len(cand)-k)
		cand[k], cand[j] = cand[j], cand[k]
		f := cand[k]
		codes, yw := b.d.codes[f], b.yw
		keys := b.keys[:len(idx)]
		lo, hi := codes[idx[0]], codes[idx[0]]
		// One gather of rank | class | bootstrap weight per row serves the
		// constant check and either scan, which then read memory in order.
		for j, i := range idx {
			c := codes[i]
			lo, hi = min(lo, c), max(hi, c)
			keys[j] = uint64(c)<<32 | uint64(yw[i])
		}
		if lo == hi {
			konst[f/64] |= 1 << (f % 64)
			continue
		}
		tried++
		var s split
		var ok bool
		if int(hi-lo+1)*b.d.classes <= 2*len(idx) {
			s, ok = b.histSplit(f, keys, total, lo, hi)
		} else {
			s, ok = b.sortSplit(f, keys, total, lo, hi)
		}
		if ok && (!found || s.score > best.score) {
			best, found = s, true
		}
	}
	return best, found
}

// histSplit scans a per-rank class histogram of the node's rows, whose
// ranks lie in [lo, hi].
func (b *builder) histSplit(f int, keys []uint64, total int64, lo, hi uint32) (split, bool) {
	C := b.d.classes
	bins := int(hi - lo + 1)
	b.hist = zeroed(b.hist, bins*C)
	b.binN = zeroed(b.binN, bins)
	for _, k := range keys {
		c := uint32(k>>32) - lo
		b.hist[int(c)*C+int((k>>16)&0xffff)] += uint32(k & 0xffff)
		b.binN[c]++
	}
	clear(b.left)
	var sl, sr, wl int64
	for _, v := range b.counts {
		sr += v * v
	}
	nl, n := 0, len(keys)
	best := split{feature: f}
	found := false
	minLeaf := b.cfg.MinLeaf
	for bin := 0; bin < bins-1; bin++ {
		if b.binN[bin] == 0 {
			continue
		}
		row := b.hist[bin*C : (bin+1)*C]
		for c, h := range row {
			if h == 0 {
				continue
			}
			v := int64(h)
			dl, dr := b.moveLeft(c, v)
			sl, sr, wl = sl+dl, sr+dr, wl+v
		}
		nl += int(b.binN[bin])
		if nl < minLeaf || n-nl < minLeaf {
			continue
		}
		score := float64(sl)/float64(wl) + float64(sr)/float64(total-wl)
		if !found || score > best.score {
			best.code, best.score, found = uint32(bin), score, true
		}
	}
	if found {
		next := best.code + 1
		for b.binN[next] == 0 {
			next++
		}
		best.code, best.next = best.code+lo, next+lo
	}
	return best, found
}

// moveLeft moves v rows of class c from the right of the split being
// scanned to its left and returns what that adds to the left's and the
// right's sum of squared class counts, from which the scans score a split.
func (b *builder) moveLeft(c int, v int64) (dl, dr int64) {
	l := b.left[c]
	r := b.counts[c] - l
	b.left[c] = l + v
	return 2*l*v + v*v, -2*r*v + v*v
}

// sortSplit sorts the node's keys by rank, whose range is [lo, hi], and
// scans them.
func (b *builder) sortSplit(f int, keys []uint64, total int64, lo, hi uint32) (split, bool) {
	// Counting passes beat comparisons once the node is large or its
	// ranks span little more than its rows.
	if w := bits.Len32(hi - lo); len(keys) >= 256 || (len(keys) >= 32 && 1<<w <= 4*len(keys)) {
		radixSort(keys, b.tmp[:len(keys)], lo, w)
	} else {
		slices.Sort(keys)
	}
	clear(b.left)
	var sl, sr, wl int64
	for _, v := range b.counts {
		sr += v * v
	}
	n := len(keys)
	minLeaf := b.cfg.MinLeaf
	best := split{feature: f}
	found := false
	for j := 0; j < n-1; j++ {
		k := keys[j]
		c := (k >> 16) & 0xffff
		v := int64(k & 0xffff)
		dl, dr := b.moveLeft(int(c), v)
		sl, sr, wl = sl+dl, sr+dr, wl+v
		code := k >> 32
		if keys[j+1]>>32 == code || j+1 < minLeaf || n-j-1 < minLeaf {
			continue
		}
		score := float64(sl)/float64(wl) + float64(sr)/float64(total-wl)
		if !found || score > best.score {
			best.code, best.next, best.score, found = uint32(code), uint32(keys[j+1]>>32), score, true
		}
	}
	return best, found
}

// radixSort sorts keys by their upper 32 bits (the rank), of which only
// rank-lo matters (width bits of it), in passes of at most 11 bits.
func radixSort(keys, tmp []uint64, lo uint32, width int) {
	var count [1 << 11]int
	src, dst := keys, tmp
	for shift := 0; shift < width; shift += 11 {
		digit := min(11, width-shift)
		mask := uint32(1)<<digit - 1
		cnt := count[:1<<digit]
		clear(cnt)
		for _, k := range src {
			cnt[((uint32(k>>32)-lo)>>shift)&mask]++
		}
		sum := 0
		for i, c := range cnt {
			cnt[i] = sum
			sum += c
		}
		for _, k := range src {
			d := ((uint32(k>>32) - lo) >> shift) & mask
			dst[cnt[d]] = k
			cnt[d]++
		}
		src, dst = dst, src
	}
	if &src[0] != &keys[0] {
		copy(keys, src)
	}
}

// zeroed returns s with length n, all zero, reusing its array when it can.
func zeroed[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	s = s[:n]
	clear(s)
	return s
}
