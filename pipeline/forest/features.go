package forest

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/stat"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// Columns after the port components: the seed's 7 protocol bits (IP first,
// "other" last), direction, frame length and time interval.
const (
	protoCols = 7
	tailCols  = protoCols + 3
)

// minPortCount matches pipeline/learn: a port seen once would get a column
// fitted to one packet, while the out-of-vocabulary column is trained on
// exactly the rare ports it stands for at inference.
const minPortCount = 2

// encoder is what feature preparation learns from the training fold; the
// model keeps it so inference encodes packets exactly as training did.
type encoder struct {
	Ports []int32 // vocabulary, most frequent first
	// Proj holds each one-hot column's PCA scores: one row per vocabulary
	// port, then the out-of-vocabulary row, then the no-port row.
	// Components wide, row-major.
	Proj       []float32
	Components int
	// Explained is the share of the one-hot variance the kept components
	// carry (the seed reports 98.9 % for 50).
	Explained float64

	index map[int32]int
}

func (e *encoder) cols() int { return e.Components + tailCols }

func (e *encoder) oneHotRows() int { return len(e.Ports) + 2 }

func (e *encoder) buildIndex() {
	e.index = make(map[int32]int, len(e.Ports))
	for i, p := range e.Ports {
		e.index[p] = i
	}
}

func (e *encoder) portRow(p int32) int {
	if p < 0 {
		return len(e.Ports) + 1
	}
	if r, ok := e.index[p]; ok {
		return r
	}
	return len(e.Ports)
}

// fitEncoder learns the port vocabulary and the PCA of its one-hot coding
// from the real packets of the training windows, labeled or not: features
// do not depend on labels.
//
// A one-hot matrix has only as many distinct rows as it has columns, so
// the PCA is fitted on those rows weighted by how often each occurs: the
// same components as the packets x ports matrix, at the cost of a small
// square SVD instead of a tall one.
func fitEncoder(ws []*schemas.Window, maxPorts, components int) (*encoder, error) {
	counts := map[int32]int{}
	for _, w := range ws {
		for i := range w.Len {
			counts[w.DPort[i]]++
		}
	}
	e := &encoder{Ports: features.Vocabulary(counts, maxPorts, minPortCount)}
	e.buildIndex()
	d := e.oneHotRows()
	weights := make([]float64, d)
	total := 0.0
	for p, c := range counts {
		weights[e.portRow(p)] += float64(c)
		total += float64(c)
	}
	if total < 2 {
		return nil, errors.New("fewer than two packets to fit the port PCA on")
	}
	// A column no packet has would get zero weight; gonum's weighted PCA
	// needs positive weights, and a vanishing one leaves the components
	// as they are.
	for i, w := range weights {
		if w == 0 {
			weights[i] = 1e-9
		}
	}
	var pc stat.PC
	eye := mat.NewDiagDense(d, nil)
	for i := range d {
		eye.SetDiag(i, 1)
	}
	if !pc.PrincipalComponents(eye, weights) {
		return nil, fmt.Errorf("PCA of the %d-column port one-hot did not converge", d)
	}
	var vecs mat.Dense
	pc.VectorsTo(&vecs)
	vars := pc.VarsTo(nil)
	k := min(components, d)
	var kept, all float64
	for i, v := range vars {
		all += v
		if i < k {
			kept += v
		}
	}
	if all > 0 {
		e.Explained = kept / all
	}

	// Score of one-hot row j on component c: (e_j - mean) . v_c, with the
	// mean being the port frequencies.
	mean := make([]float64, d)
	for i, w := range weights {
		mean[i] = w / total
	}
	e.Components = k
	e.Proj = make([]float32, d*k)
	for c := range k {
		off := 0.0
		for i := range d {
			off += mean[i] * vecs.At(i, c)
		}
		for j := range d {
			e.Proj[j*k+c] = float32(vecs.At(j, c) - off)
		}
	}
	return e, nil
}

// encodeRow writes packet i of w into x (cols() wide).
func (e *encoder) encodeRow(w *schemas.Window, i int, x []float32) {
	k := e.Components
	r := e.portRow(w.DPort[i])
	copy(x[:k], e.Proj[r*k:(r+1)*k])
	bits := w.ProtoBits[i]
	for j := range protoCols {
		x[k+j] = 0
		if bits&(1<<(protoCols-1-j)) != 0 {
			x[k+j] = 1
		}
	}
	x[k+protoCols] = float32(w.Direction[i])
	x[k+protoCols+1] = float32(w.FrameLen[i])
	x[k+protoCols+2] = interval(w.Interval[i])
}

// interval maps gaps a tree could not order (NaN) or that mean "no
// previous packet" (negative clock steps) to zero, as pipeline/learn does.
func interval(s float32) float32 {
	if !(s > 0) {
		return 0
	}
	if math.IsInf(float64(s), 1) {
		return math.MaxFloat32
	}
	return s
}

// group names the feature group of column c, as the seed reports them.
func (e *encoder) group(c int) string {
	k := e.Components
	switch {
	case c < k:
		return "dport"
	case c < k+protoCols:
		return "protocol"
	case c == k+protoCols:
		return "direction"
	case c == k+protoCols+1:
		return "frame_length"
	default:
		return "time_interval"
	}
}

// Rows is a per-packet feature matrix in the model's column layout, one
// row per real packet (slots before Window.Len) in window order.
type Rows struct {
	X     []float32 // row-major, Cols wide
	Label []int32   // the packet's class, -1 when unlabeled
	Cols  int
}

// Len is the number of rows.
func (r Rows) Len() int { return len(r.Label) }

func (e *encoder) encode(ws []*schemas.Window, labeledOnly bool) Rows {
	n := 0
	for _, w := range ws {
		for i := range w.Len {
			if !labeledOnly || w.Label[i] >= 0 {
				n++
			}
		}
	}
	cols := e.cols()
	r := Rows{X: make([]float32, n*cols), Label: make([]int32, n), Cols: cols}
	j := 0
	for _, w := range ws {
		for i := range w.Len {
			if labeledOnly && w.Label[i] < 0 {
				continue
			}
			e.encodeRow(w, i, r.X[j*cols:(j+1)*cols])
			r.Label[j] = int32(w.Label[i])
			j++
		}
	}
	return r
}

// checkWindow rejects windows the encoder would misread. numClasses < 0
// skips the label check (inference does not read labels).
func checkWindow(w *schemas.Window, numClasses int) error {
	if w == nil {
		return errors.New("nil window")
	}
	return w.Check(numClasses)
}
