package learn

import (
	"errors"
	"fmt"
	"math"

	pktfeatures "github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// Embedding rows reserved before the port vocabulary. Padding gets a row of
// its own so that the backward direction of a BLSTM, which reads a short
// window's padding first, sees a constant learned token rather than a real
// packet's port.
const (
	portPad   = 0 // slot at or after Window.Len
	portNone  = 1 // packet without a transport port (schemas.NoPort)
	portOOV   = 2 // port outside the vocabulary
	portFirst = 3 // first vocabulary row
)

// minPortCount keeps ports seen once out of the vocabulary: they would get
// an embedding trained on a single packet, while sending them to the
// out-of-vocabulary row trains that row on exactly the kind of rare port
// it stands for at inference.
const minPortCount = 2

// Rows of the frame-length embedding: padding, lengths outside the
// vocabulary, then the vocabulary.
const (
	lenPad   = 0
	lenOOV   = 1
	lenFirst = 2
)

// paperDim is the paper's per-packet input after the port embedding: 7
// protocol bits, direction one-hot (out, in, local), frame length and log
// interval.
const paperDim = 7 + 3 + 2

// headerDim is what the header fields add when features.Header is set: TTL,
// TCP window, TCP options length and payload length, scaled to about
// [0, 1]; the nine TCP flag bits; transport one-hot (TCP, UDP, other IP).
// A device's network stack fixes these (initial TTL, window, options), so
// they tell apart firmware the paper's features see as the same.
const headerDim = 4 + 9 + 3

// numericDim is the width of the numeric input.
func (f *features) numericDim() int {
	if f.Header {
		return paperDim + headerDim
	}
	return paperDim
}

// features is what feature preparation learns from the training fold. It
// is saved in the checkpoint: inference must encode packets exactly as
// training did.
type features struct {
	Ports      []int32 `json:"ports"` // vocabulary; Ports[i] has embedding row portFirst+i
	FrameMean  float64 `json:"frame_mean"`
	FrameStd   float64 `json:"frame_std"`
	LogIvlMean float64 `json:"log_interval_mean"`
	LogIvlStd  float64 `json:"log_interval_std"`
	// Lens is the frame-length vocabulary (empty when the model has no
	// frame-length embedding); Lens[i] has embedding row lenFirst+i.
	Lens []int32 `json:"frame_lens,omitempty"`
	// Header adds the header fields (headerDim) to the numeric input.
	Header bool `json:"header,omitempty"`

	index    map[int32]int64 // port -> embedding row, rebuilt from Ports
	lenIndex map[int32]int64 // frame length -> embedding row, rebuilt from Lens
}

// fitFeatures learns the port vocabulary and the normalisation statistics
// from the real packets (slots before Len) of the training windows,
// labeled or not: features do not depend on labels.
//
// Frame lengths get a vocabulary too when maxLens > 0: IoT firmware sends
// messages of fixed sizes, and an embedding lets the model tell 342 bytes
// from 343, which one normalised number spread over 60..1514 hardly does.
func fitFeatures(ws []*schemas.Window, maxPorts, maxLens, portSessions int) *features {
	var st featureStats
	for _, w := range ws {
		st.add(w)
	}
	return st.fit(maxPorts, maxLens, portSessions)
}

// featureStats gathers what fitFeatures learns one window at a time, so a
// trainer that streams its windows fits the same features without holding
// them: the counts grow with the vocabulary, not the dataset.
type featureStats struct {
	counts, lenCounts map[int32]int
	// portGroups holds, per port, the capture sessions (window groups) it
	// was seen in; groups all of them.
	portGroups                          map[int32]map[string]struct{}
	groups                              map[string]struct{}
	n, frameSum, frameSq, ivlSum, ivlSq float64
}

func (s *featureStats) add(w *schemas.Window) {
	if s.counts == nil {
		s.counts, s.lenCounts = map[int32]int{}, map[int32]int{}
		s.portGroups, s.groups = map[int32]map[string]struct{}{}, map[string]struct{}{}
	}
	s.groups[w.Group] = struct{}{}
	for i := range w.Len {
		if p := w.DPort[i]; p >= 0 {
			s.counts[p]++
			g := s.portGroups[p]
			if g == nil {
				g = map[string]struct{}{}
				s.portGroups[p] = g
			}
			g[w.Group] = struct{}{}
		}
		s.lenCounts[w.FrameLen[i]]++
		fl := float64(w.FrameLen[i])
		li := logInterval(w.Interval[i])
		s.n++
		s.frameSum += fl
		s.frameSq += fl * fl
		s.ivlSum += li
		s.ivlSq += li * li
	}
}

// fit makes the features; a port enters the vocabulary only when seen in
// portSessions capture sessions or more (see Config.PortSessions), unless
// the windows hold fewer sessions than that, where the rule cannot judge.
func (s *featureStats) fit(maxPorts, maxLens, portSessions int) *features {
	f := &features{FrameMean: 0, FrameStd: 1, LogIvlMean: 0, LogIvlStd: 1}
	counts := s.counts
	if portSessions > 1 && len(s.groups) >= portSessions {
		counts = make(map[int32]int, len(s.counts))
		for p, c := range s.counts {
			if len(s.portGroups[p]) >= portSessions {
				counts[p] = c
			}
		}
	}
	f.Ports = pktfeatures.Vocabulary(counts, maxPorts, minPortCount)
	if maxLens > 0 {
		f.Lens = pktfeatures.Vocabulary(s.lenCounts, maxLens, minPortCount)
	}
	if s.n > 0 {
		f.FrameMean, f.FrameStd = meanStd(s.frameSum, s.frameSq, s.n)
		f.LogIvlMean, f.LogIvlStd = meanStd(s.ivlSum, s.ivlSq, s.n)
	}
	f.buildIndex()
	return f
}

func meanStd(sum, sq, n float64) (mean, std float64) {
	mean = sum / n
	v := sq/n - mean*mean
	// A constant feature (every frame the same length) would divide by
	// zero; it carries no information, so any positive scale will do.
	if !(v > 1e-12) {
		return mean, 1
	}
	return mean, math.Sqrt(v)
}

// logInterval compresses inter-packet gaps, which span microseconds to
// minutes. Negative or non-finite gaps (clock steps, first packet of a
// stream) count as zero.
func logInterval(s float32) float64 {
	x := float64(s)
	if !(x > 0) || math.IsInf(x, 1) {
		return 0
	}
	return math.Log1p(x)
}

func (f *features) buildIndex() {
	f.index = make(map[int32]int64, len(f.Ports))
	for i, p := range f.Ports {
		f.index[p] = portFirst + int64(i)
	}
	f.lenIndex = make(map[int32]int64, len(f.Lens))
	for i, l := range f.Lens {
		f.lenIndex[l] = lenFirst + int64(i)
	}
}

// lenRows is the frame-length embedding's row count.
func (f *features) lenRows() int64 { return lenFirst + int64(len(f.Lens)) }

func (f *features) lenRow(l int32) int64 {
	if r, ok := f.lenIndex[l]; ok {
		return r
	}
	return lenOOV
}

// portRows is the embedding table's row count.
func (f *features) portRows() int64 { return portFirst + int64(len(f.Ports)) }

func (f *features) portRow(p int32) int64 {
	if p < 0 {
		return portNone
	}
	if r, ok := f.index[p]; ok {
		return r
	}
	return portOOV
}

// encoded is a batch of windows of n slots in the layout the model takes:
// row-major [window][slot].
type encoded struct {
	n       int
	ports   []int64          // [B*n] port embedding rows
	lens    []int64          // [B*n] frame-length embedding rows
	present []float32        // [B*bagRows] the window's stream context; nil without one
	numeric []float32        // [B*n*numericDim]
	dim     int              // numeric values per packet
	targets []int64          // [B*n] class, or -1 where the loss must not look
	labeled int              // positions with a target >= 0
	drop    []float32        // [B*n*headIn] a training batch's dropout mask; nil: none
	spare   chan<- []float32 // where drop goes once it is copied into a tensor (recycleMask)
}

// encode lays out windows of n slots; kinds, when not nil, holds each
// window's stream context (kindOf rows).
func (f *features) encode(ws []*schemas.Window, n int, kinds [][]int32) encoded {
	numericDim := f.numericDim()
	e := encoded{
		n:       n,
		dim:     numericDim,
		ports:   make([]int64, len(ws)*n),
		lens:    make([]int64, len(ws)*n),
		numeric: make([]float32, len(ws)*n*numericDim),
		targets: make([]int64, len(ws)*n),
	}
	if kinds != nil {
		rows := f.bagRows()
		e.present = make([]float32, len(ws)*rows)
		for b, ks := range kinds {
			for _, r := range ks {
				e.present[b*rows+int(r)] = 1
			}
		}
	}
	for b, w := range ws {
		for i := range n {
			k := b*n + i
			e.targets[k] = -1
			if i >= w.Len {
				e.ports[k], e.lens[k] = portPad, lenPad // numeric inputs stay zero
				continue
			}
			e.ports[k] = f.portRow(w.DPort[i])
			e.lens[k] = f.lenRow(w.FrameLen[i])
			x := e.numeric[k*numericDim : (k+1)*numericDim]
			bits := w.ProtoBits[i]
			for j := range 7 { // IP (bit 6) first, "other" (bit 0) last
				if bits&(1<<(6-j)) != 0 {
					x[j] = 1
				}
			}
			switch w.Direction[i] {
			case 1:
				x[7] = 1
			case 0:
				x[8] = 1
			case -1:
				x[9] = 1
			}
			x[10] = float32((float64(w.FrameLen[i]) - f.FrameMean) / f.FrameStd)
			x[11] = float32((logInterval(w.Interval[i]) - f.LogIvlMean) / f.LogIvlStd)
			if f.Header {
				f.encodeHeader(w, i, x[paperDim:])
			}
			if l := w.Label[i]; l >= 0 {
				e.targets[k] = int64(l)
				e.labeled++
			}
		}
	}
	return e
}

// bagRows is how many kinds of packet the stream context tells apart:
// each frame-length row in each direction (out, in, local).
func (f *features) bagRows() int { return 3 * int(f.lenRows()) }

// kindOf is slot i's kind of packet, a row of the stream context.
func (f *features) kindOf(w *schemas.Window, i int) int32 {
	dir := int64(2) // local
	switch w.Direction[i] {
	case 1:
		dir = 0
	case 0:
		dir = 1
	}
	return int32(3*f.lenRow(w.FrameLen[i]) + dir)
}

// checkWindow rejects windows the encoder would misread; header says the
// model reads the header columns (checkHeader). numClasses < 0 skips the
// label check (inference does not read labels).
func checkWindow(w *schemas.Window, numClasses int, header bool) error {
	if w == nil {
		return errors.New("nil window")
	}
	if err := w.Check(numClasses); err != nil {
		return err
	}
	if header {
		return checkHeader(w)
	}
	return nil
}

// encodeHeader writes slot i's header fields (headerDim values) into x.
// Fixed scales rather than fitted statistics: the fields have known ranges.
func (f *features) encodeHeader(w *schemas.Window, i int, x []float32) {
	x[0] = float32(w.TTL[i]) / 255
	x[1] = float32(math.Log1p(float64(max(w.TCPWindow[i], 0))) / math.Log1p(65535))
	x[2] = float32(w.TCPOptLen[i]) / 40
	x[3] = float32(math.Log1p(float64(max(w.PayloadLen[i], 0))) / math.Log1p(65535))
	for b := range 9 {
		if w.TCPFlags[i]&(1<<b) != 0 {
			x[4+b] = 1
		}
	}
	switch w.Transport[i] {
	case 6:
		x[13] = 1
	case 17:
		x[14] = 1
	case 0:
	default:
		x[15] = 1
	}
}

// checkHeader rejects windows that lack the header columns a model with
// header features reads.
func checkHeader(w *schemas.Window) error {
	n := len(w.Label)
	for _, f := range []struct {
		name string
		len  int
	}{
		{"TTL", len(w.TTL)}, {"TCPWindow", len(w.TCPWindow)}, {"TCPOptLen", len(w.TCPOptLen)},
		{"PayloadLen", len(w.PayloadLen)}, {"TCPFlags", len(w.TCPFlags)}, {"Transport", len(w.Transport)},
	} {
		if f.len != n {
			return fmt.Errorf("window %q: %s has %d slots, Label has %d (header features need every header column; train with HeaderFeatures off for windows without them)", w.ID, f.name, f.len, n)
		}
	}
	return nil
}
