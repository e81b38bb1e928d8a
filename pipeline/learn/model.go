package learn

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"time"
	"unsafe"

	"github.com/sugarme/gotch"
	lib "github.com/sugarme/gotch/libtch"
	"github.com/sugarme/gotch/nn"
	"github.com/sugarme/gotch/ts"

	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/schemas"
)

// Model is a trained per-packet classifier. It holds libtorch memory:
// call Close when done with it. A Model is not safe for concurrent use.
type Model struct {
	cfg        Config
	numClasses int
	feat       *features
	device     gotch.Device

	vs      *nn.VarStore
	embed   *ts.Tensor  // [port rows, EmbedDim]
	lens    *ts.Tensor  // [length rows, LenEmbedDim]; nil without a frame-length embedding
	streamW *ts.Tensor  // [bagDim, kinds of packet]; nil without a stream context
	streamB *ts.Tensor  // [bagDim]
	lstm    []ts.Tensor // flat LSTM weights in libtorch's order
	fcW     *ts.Tensor  // [numClasses, directions*Hidden (+ bagDim with a stream context)]
	fcB     *ts.Tensor  // [numClasses]
	headIn  int         // fcW's input width: what dropout masks per slot
}

// EpochStats reports one finished epoch.
type EpochStats struct {
	Epoch         int           // 1-based
	Loss          float64       // mean cross-entropy per labeled packet
	Accuracy      float64       // per labeled packet, on the training batches (dropout on)
	WindowsPerSec float64       // training throughput of this epoch
	Elapsed       time.Duration // since training started
	Steps         int           // optimisation steps in this epoch
	// DataWait is how long the steps waited for their batch: batches are
	// encoded ahead by a goroutine, so near zero means the device never
	// waited on Go. Compute is the steps themselves (tensors made and
	// moved to the device, forward, backward, Adam); on a GPU much of it
	// is queueing kernels, and the GPU's backlog shows up in it too.
	// Prepare is the encoding the goroutine did beside them.
	DataWait, Compute, Prepare time.Duration
}

// Config returns the configuration the model was trained with.
func (m *Model) Config() Config { return m.cfg }

// NumClasses returns the number of device classes the model predicts.
func (m *Model) NumClasses() int { return m.numClasses }

// Params counts the model's weights. Training holds four floats for each:
// the weight, its gradient and Adam's two moments.
func (m *Model) Params() int64 {
	var n int64
	for _, t := range m.vs.Variables() {
		size, err := t.Size()
		if err != nil {
			continue
		}
		k := int64(1)
		for _, d := range size {
			k *= d
		}
		n += k
	}
	return n
}

// Device names where the model's weights live: "cpu" or "cuda:N".
func (m *Model) Device() string {
	if m.device.IsCuda() {
		return fmt.Sprintf("cuda:%d", m.device.Value)
	}
	return "cpu"
}

func (c Config) directions() int64 {
	if c.Bidirectional {
		return 2
	}
	return 1
}

// newModel lays out the network of Table 3 with fresh weights:
// embedding(dport) ++ numeric inputs -> (B)LSTM -> dropout -> linear.
// Initialisation follows PyTorch's defaults for these layers, so results
// compare with the paper's PyTorch setting.
func newModel(cfg Config, feat *features, numClasses int, device gotch.Device) (m *Model, err error) {
	m = &Model{cfg: cfg, numClasses: numClasses, feat: feat, device: device, vs: nn.NewVarStore(device)}
	defer func() {
		if err != nil {
			m.Close()
			m = nil
		}
	}()
	root := m.vs.Root()
	if m.embed, err = root.Sub("embed").NewVar("weight", []int64{feat.portRows(), int64(cfg.EmbedDim)}, nn.NewRandnInit(0, 1)); err != nil {
		return nil, fmt.Errorf("learn: create embedding: %w", err)
	}
	if cfg.LenEmbedDim > 0 {
		if m.lens, err = root.Sub("len_embed").NewVar("weight", []int64{feat.lenRows(), int64(cfg.LenEmbedDim)}, nn.NewRandnInit(0, 1)); err != nil {
			return nil, fmt.Errorf("learn: create frame-length embedding: %w", err)
		}
	}
	h := int64(cfg.Hidden)
	in := int64(cfg.EmbedDim + cfg.LenEmbedDim + feat.numericDim())
	bound := 1 / math.Sqrt(float64(h))
	lstm := root.Sub("lstm")
	for _, suffix := range []string{"", "_reverse"}[:cfg.directions()] {
		for _, p := range []struct {
			name string
			dims []int64
		}{
			{"weight_ih_l0", []int64{4 * h, in}},
			{"weight_hh_l0", []int64{4 * h, h}},
			{"bias_ih_l0", []int64{4 * h}},
			{"bias_hh_l0", []int64{4 * h}},
		} {
			t, err := lstm.NewVar(p.name+suffix, p.dims, nn.NewUniformInit(-bound, bound))
			if err != nil {
				return nil, fmt.Errorf("learn: create LSTM weight %s: %w", p.name+suffix, err)
			}
			m.lstm = append(m.lstm, *t)
		}
	}
	if device.IsCuda() {
		// cuDNN wants the weights in one contiguous buffer; without it cuDNN
		// copies them on every call, which costs time, not correctness: a
		// libtorch that refuses (a stubbed wrapper) still trains.
		_ = flattenForCuDNN(m.lstm, in, h, cfg.Bidirectional)
	}
	d := cfg.directions() * h
	if cfg.Context == ContextStream {
		bound := 1 / math.Sqrt(float64(feat.bagRows()))
		if m.streamW, err = root.Sub("stream").NewVar("weight", []int64{bagDim, int64(feat.bagRows())}, nn.NewUniformInit(-bound, bound)); err != nil {
			return nil, fmt.Errorf("learn: create stream-context layer: %w", err)
		}
		if m.streamB, err = root.Sub("stream").NewVar("bias", []int64{bagDim}, nn.NewUniformInit(-bound, bound)); err != nil {
			return nil, fmt.Errorf("learn: create stream-context layer: %w", err)
		}
		d += bagDim
	}
	m.headIn = int(d)
	fcBound := 1 / math.Sqrt(float64(d))
	fc := root.Sub("fc")
	if m.fcW, err = fc.NewVar("weight", []int64{int64(numClasses), d}, nn.NewUniformInit(-fcBound, fcBound)); err != nil {
		return nil, fmt.Errorf("learn: create output layer: %w", err)
	}
	if m.fcB, err = fc.NewVar("bias", []int64{int64(numClasses)}, nn.NewUniformInit(-fcBound, fcBound)); err != nil {
		return nil, fmt.Errorf("learn: create output layer: %w", err)
	}
	return m, nil
}

// flattenForCuDNN lays the LSTM's weights out in one buffer, as PyTorch's
// flatten_parameters does, and returns libtorch's error if it cannot.
// gotch's Must_CudnnRnnFlattenWeight would end the process instead (its
// Must functions call log.Fatal).
func flattenForCuDNN(ws []ts.Tensor, in, h int64, bidirectional bool) error {
	cws := make([]lib.Ctensor, len(ws))
	for i := range ws {
		cws[i] = lib.Ctensor(ws[i].Ctensor())
	}
	bidi := int32(0)
	if bidirectional {
		bidi = 1
	}
	var flat lib.Ctensor
	// weight stride 4 (w_ih, w_hh, b_ih, b_hh), mode 2 (LSTM), no
	// projection, one layer, batch first.
	lib.Atg_CudnnRnnFlattenWeight(&flat, cws, len(cws), 4, in, 2, h, 0, 1, 1, bidi)
	if err := ts.TorchErr(); err != nil {
		return err
	}
	if flat != nil {
		lib.AtFree(flat) // the weights keep the buffer alive
	}
	return nil
}

// Close frees the model's libtorch memory. The model is unusable after.
func (m *Model) Close() {
	if m == nil || m.vs == nil {
		return
	}
	// The var store owns every weight; the fields above only alias them.
	for _, t := range m.vs.Variables() {
		_ = t.Drop()
	}
	m.vs, m.embed, m.lens, m.streamW, m.streamB, m.lstm, m.fcW, m.fcB = nil, nil, nil, nil, nil, nil, nil, nil
}

// Scope collects the tensors of one step so they are freed together:
// gotch v0.7.0 frees nothing on its own, and a leak per batch adds up
// over an epoch.
type Scope struct {
	tensors []*ts.Tensor
	scalars []*ts.Scalar
}

// Keep records t for Free and passes the call's results through.
func (s *Scope) Keep(t *ts.Tensor, err error) (*ts.Tensor, error) {
	if err == nil && t != nil {
		s.tensors = append(s.tensors, t)
	}
	return t, err
}

// Free drops every tensor and scalar kept.
func (s *Scope) Free() {
	for _, t := range s.tensors {
		_ = t.Drop()
	}
	for _, v := range s.scalars {
		v.MustDrop()
	}
	s.tensors, s.scalars = s.tensors[:0], s.scalars[:0]
}

// scalar makes a libtorch scalar that Free drops.
func (s *Scope) scalar(v float64) *ts.Scalar {
	x := ts.FloatScalar(v)
	s.scalars = append(s.scalars, x)
	return x
}

// batchTensors is an encoded batch on the model's device.
type batchTensors struct {
	ports, lens, numeric, targets *ts.Tensor
	present                       *ts.Tensor // [B, bag rows]; nil without a stream context
	drop                          *ts.Tensor // [B, n, headIn] dropout mask; nil: none drawn
}

// inputs moves an encoded batch to the model's device.
func (m *Model) inputs(sc *Scope, e encoded) (t batchTensors, err error) {
	b := int64(len(e.ports) / e.n)
	n := int64(e.n)
	toDevice := func(t *ts.Tensor, err error) (*ts.Tensor, error) {
		if _, err := sc.Keep(t, err); err != nil || !m.device.IsCuda() {
			return t, err
		}
		return sc.Keep(t.To(m.device, false))
	}
	if t.ports, err = toDevice(tensorOf(e.ports, []int64{b, n}, gotch.Int64)); err != nil {
		return t, err
	}
	if t.lens, err = toDevice(tensorOf(e.lens, []int64{b, n}, gotch.Int64)); err != nil {
		return t, err
	}
	if t.numeric, err = toDevice(tensorOf(e.numeric, []int64{b, n, int64(e.dim)}, gotch.Float)); err != nil {
		return t, err
	}
	if t.targets, err = toDevice(tensorOf(e.targets, []int64{b * n}, gotch.Int64)); err != nil {
		return t, err
	}
	if e.present != nil {
		if t.present, err = toDevice(tensorOf(e.present, []int64{b, int64(m.feat.bagRows())}, gotch.Float)); err != nil {
			return t, err
		}
	}
	if e.drop != nil {
		if t.drop, err = toDevice(tensorOf(e.drop, []int64{b, n, int64(m.headIn)}, gotch.Float)); err != nil {
			return t, err
		}
		e.recycleMask()
	}
	return t, nil
}

// tensorOf copies a slice into a new CPU tensor: one copy into an
// uninitialised tensor. gotch's constructors copy twice (into a malloc'd
// buffer through encoding/binary, then into a zeroed tensor), and its
// typed ones walk slices by reflection, which cost a tenth of a step.
func tensorOf[T int64 | float32](data []T, shape []int64, dtype gotch.DType) (*ts.Tensor, error) {
	if n := ts.ElementCount(shape); n != int64(len(data)) {
		return nil, fmt.Errorf("learn: %d values for a tensor of shape %v", len(data), shape)
	}
	if size, err := gotch.DTypeSize(dtype); err != nil || size != uint(unsafe.Sizeof(*new(T))) {
		return nil, fmt.Errorf("learn: %T values for a %v tensor", *new(T), dtype)
	}
	t, err := ts.Empty(shape, dtype, gotch.CPU)
	if err != nil {
		return nil, err
	}
	if len(data) == 0 {
		return t, nil
	}
	ptr, err := t.DataPtr()
	if err != nil {
		t.MustDrop()
		return nil, err
	}
	copy(unsafe.Slice((*T)(ptr), len(data)), data)
	return t, nil
}

// forward returns per-packet logits [B*n, numClasses].
func (m *Model) forward(sc *Scope, in batchTensors, train bool) (*ts.Tensor, error) {
	ports, lens, numeric := in.ports, in.lens, in.numeric
	emb, err := sc.Keep(ts.Embedding(m.embed, ports, -1, false, false))
	if err != nil {
		return nil, fmt.Errorf("embedding: %w", err)
	}
	parts := []ts.Tensor{*emb}
	if m.lens != nil {
		lemb, err := sc.Keep(ts.Embedding(m.lens, lens, -1, false, false))
		if err != nil {
			return nil, fmt.Errorf("frame-length embedding: %w", err)
		}
		parts = append(parts, *lemb)
	}
	x, err := sc.Keep(ts.Cat(append(parts, *numeric), 2))
	if err != nil {
		return nil, fmt.Errorf("concatenate inputs: %w", err)
	}
	size, err := x.Size()
	if err != nil {
		return nil, err
	}
	state := []int64{m.cfg.directions(), size[0], int64(m.cfg.Hidden)}
	h0, err := sc.Keep(ts.Zeros(state, gotch.Float, m.device))
	if err != nil {
		return nil, err
	}
	c0, err := sc.Keep(ts.Zeros(state, gotch.Float, m.device))
	if err != nil {
		return nil, err
	}
	out, h, c, err := x.Lstm([]ts.Tensor{*h0, *c0}, m.lstm, true, 1, 0, train, m.cfg.Bidirectional, true)
	if err != nil {
		return nil, fmt.Errorf("LSTM: %w", err)
	}
	sc.Keep(out, nil)
	sc.Keep(h, nil)
	sc.Keep(c, nil)
	if m.streamW != nil {
		if out, err = m.streamContext(sc, out, in.present); err != nil {
			return nil, fmt.Errorf("stream context: %w", err)
		}
	}
	switch {
	case train && in.drop != nil:
		if out, err = sc.Keep(out.Mul(in.drop, false)); err != nil {
			return nil, fmt.Errorf("dropout: %w", err)
		}
	case train && m.cfg.Dropout > 0:
		if out, err = sc.Keep(ts.Dropout(out, m.cfg.Dropout, true)); err != nil {
			return nil, fmt.Errorf("dropout: %w", err)
		}
	}
	logits, err := sc.Keep(ts.Linear(out, m.fcW, m.fcB))
	if err != nil {
		return nil, fmt.Errorf("output layer: %w", err)
	}
	return sc.Keep(logits.Reshape([]int64{-1, int64(m.numClasses)}, false))
}

// bagDim is the stream context's width.
const bagDim = 64

// streamContext appends to every slot's LSTM output [B, n, D] a learned
// summary of which kinds of packet (direction, exact frame length) the
// window's stream holds: relu(present · W + b), present being the
// stream's 0/1 vector over the kinds [B, kinds]. Timing and order are left
// out on purpose: a device shows itself by the messages it sends at all
// (one TLS record of its own size, a DHCP request with its hostname), and
// by the ones it never sends.
func (m *Model) streamContext(sc *Scope, out, present *ts.Tensor) (*ts.Tensor, error) {
	size, err := out.Size()
	if err != nil {
		return nil, err
	}
	lin, err := sc.Keep(ts.Linear(present, m.streamW, m.streamB))
	if err != nil {
		return nil, err
	}
	act, err := sc.Keep(lin.Relu(false))
	if err != nil {
		return nil, err
	}
	un, err := sc.Keep(act.Unsqueeze(1, false))
	if err != nil {
		return nil, err
	}
	wide, err := sc.Keep(un.Expand([]int64{size[0], size[1], bagDim}, false, false))
	if err != nil {
		return nil, err
	}
	return sc.Keep(ts.Cat([]ts.Tensor{*out, *wide}, 2))
}

// startTorch sets libtorch's threads and seed for one training run, on
// the OS thread the caller has locked.
func startTorch(cfg Config) error {
	tuneMalloc()
	if cfg.Threads > 0 {
		intraOp := cfg.Threads
		if cfg.Parallel == ParallelData {
			intraOp = 1 // each copy of the model steps on a thread of its own
		}
		if err := SetTorchThreads(intraOp); err != nil {
			return fmt.Errorf("learn: set libtorch threads: %w", err)
		}
	}
	if err := SeedTorch(cfg.Seed); err != nil {
		return fmt.Errorf("learn: seed libtorch: %w", err)
	}
	return nil
}

// lensToFit is how many exact frame lengths the features keep: none
// unless the length embedding or the stream context (whose kinds of
// packet are lengths too) uses them.
func (cfg Config) lensToFit() int {
	if cfg.LenEmbedDim > 0 || cfg.Context == ContextStream {
		return cfg.MaxLens
	}
	return 0
}

// Train fits a model on the training windows (one fold). numClasses is
// the size of the label vocabulary; labels must be in [-1, numClasses),
// -1 marking packets that are unlabeled. Padding (slots at or after Len)
// and unlabeled packets are never trained on. All windows must have the
// same number of slots. Cancelling ctx stops training between batches.
// progress, if not nil, is called after every epoch.
func Train(ctx context.Context, cfg Config, train []*schemas.Window, numClasses int, progress func(EpochStats)) (*Model, error) {
	if err := checkTrainArgs(cfg, numClasses); err != nil {
		return nil, err
	}
	if len(train) == 0 {
		return nil, errors.New("learn: no training windows")
	}
	n := len(train[0].Label)
	labeled := 0
	for i, w := range train {
		if err := checkWindow(w, numClasses, cfg.HeaderFeatures); err != nil {
			return nil, fmt.Errorf("learn: training window %d: %w", i, err)
		}
		if len(w.Label) != n {
			return nil, fmt.Errorf("learn: training window %d (%q) has %d slots, the first has %d; train one window size at a time", i, w.ID, len(w.Label), n)
		}
		if hasLabel(w) {
			labeled++
		}
	}
	if labeled == 0 {
		return nil, errors.New("learn: the training windows hold no labeled packet")
	}
	// Features come from all training windows, windows without labels
	// included; only the loss needs labels.
	fitFeat := func() *features { return fitFeatures(train, cfg.MaxPorts, cfg.lensToFit(), cfg.PortSessions) }
	return trainNew(cfg, numClasses, fitFeat, func(m *Model) error { return m.fit(ctx, train, progress) })
}

// checkTrainArgs rejects a configuration or a class count no model trains on.
func checkTrainArgs(cfg Config, numClasses int) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if numClasses < 1 {
		return fmt.Errorf("learn: numClasses is %d, must be >= 1", numClasses)
	}
	return nil
}

// trainNew makes a model on the features fitFeat fits and trains it with
// fit, on one locked OS thread: libtorch's grad mode and gotch's error slot
// are per OS thread, and a goroutine that migrated between cgo calls would
// lose both. A model that fails to train is closed.
func trainNew(cfg Config, numClasses int, fitFeat func() *features, fit func(*Model) error) (*Model, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := startTorch(cfg); err != nil {
		return nil, err
	}
	feat := fitFeat()
	feat.Header = cfg.HeaderFeatures
	dev, err := ResolveDevice(cfg.Device)
	if err != nil {
		return nil, fmt.Errorf("learn: %w", err)
	}
	m, err := newModel(cfg, feat, numClasses, dev.resolved)
	if err != nil {
		return nil, err
	}
	if err := fit(m); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func hasLabel(w *schemas.Window) bool {
	for j := range w.Len {
		if w.Label[j] >= 0 {
			return true
		}
	}
	return false
}

// batchOf is one encoded batch, made ahead of its step.
type batchOf struct {
	epoch, lo int
	e         encoded
	last      bool          // the epoch's last batch
	prepare   time.Duration // on the last batch: the epoch's encoding time
	err       error         // reading the windows failed; training stops
}

// prefetch is how many encoded batches wait for their step: enough to
// cover a slow encode, few enough to keep memory flat.
const prefetch = 4

// fit trains on the windows with labeled packets; the others only give
// their streams context.
func (m *Model) fit(ctx context.Context, ws []*schemas.Window, progress func(EpochStats)) error {
	// Windows without any labeled packet contribute nothing to the loss,
	// so skipping them is exact.
	var order []int
	for i, w := range ws {
		if hasLabel(w) {
			order = append(order, i)
		}
	}
	var streams contexts
	if m.streamW != nil {
		streams = m.feat.contextsOf(ws)
	}
	weights := ts.None
	var hostWeights []float32
	if m.cfg.Balance {
		w, host, err := classWeights(ws, m.numClasses, m.device)
		if err != nil {
			return fmt.Errorf("learn: class weights: %w", err)
		}
		defer w.MustDrop()
		weights, hostWeights = w, host
	}

	return m.steps(ctx, weights, hostWeights, len(order), progress, func(out chan<- batchOf, stop <-chan struct{}) {
		m.encodeBatches(ws, order, streams, out, stop)
	})
}

// steps runs the epochs on the batches produce sends (each epoch's last
// one marked), windows per epoch being what the figures count, with an
// Adam optimizer of its own and gradients on.
func (m *Model) steps(ctx context.Context, weights *ts.Tensor, hostWeights []float32, windows int, progress func(EpochStats), produce func(out chan<- batchOf, stop <-chan struct{})) error {
	opt, err := ts.Adam(m.cfg.LR, 0.9, 0.999, 0)
	if err != nil {
		return fmt.Errorf("learn: create Adam optimizer: %w", err)
	}
	defer opt.Drop()
	if err := opt.AddParameters(m.vs.TrainableVariables()); err != nil {
		return fmt.Errorf("learn: register weights with the optimizer: %w", err)
	}
	if prev, err := ts.GradSetEnabled(true); err == nil {
		defer ts.GradSetEnabled(prev)
	}
	// Batches are shuffled and encoded by a goroutine, prefetch steps
	// ahead, as PyTorch's DataLoader does: the step (the device's work)
	// never waits on Go unless encoding is the slower half.
	stop, done := make(chan struct{}), make(chan struct{})
	batches := make(chan batchOf, prefetch)
	go func() {
		defer close(done)
		produce(batches, stop)
	}()
	// The goroutine reads the model: it must be gone before fit returns
	// (a cancelled Train closes the model right after).
	defer func() {
		close(stop)
		<-done
	}()

	stepper, err := m.newStepper(opt, weights, hostWeights)
	if err != nil {
		return fmt.Errorf("learn: %w", err)
	}
	defer stepper.close()
	start := time.Now()
	for epoch := 1; epoch <= m.cfg.Epochs; epoch++ {
		epochStart := time.Now()
		st := EpochStats{Epoch: epoch}
		var labeled int64
		for {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("learn: training stopped in epoch %d: %w", epoch, err)
			}
			t := time.Now()
			b := <-batches
			st.DataWait += time.Since(t)
			if b.err != nil {
				return fmt.Errorf("learn: epoch %d: %w", epoch, b.err)
			}
			t = time.Now()
			if err := stepper.step(b.e); err != nil {
				return fmt.Errorf("learn: epoch %d, batch at %d: %w", epoch, b.lo, err)
			}
			st.Compute += time.Since(t)
			st.Steps++
			labeled += int64(b.e.labeled)
			if b.last {
				st.Prepare = b.prepare
				break
			}
		}
		// One read per epoch: reading the loss every step would make the
		// host wait for the GPU every step.
		t := time.Now()
		lossSum, correct, err := stepper.read()
		if err != nil {
			return fmt.Errorf("learn: epoch %d: read loss and accuracy: %w", epoch, err)
		}
		st.Compute += time.Since(t)
		if progress != nil {
			secs := time.Since(epochStart).Seconds()
			st.Loss = lossSum / float64(max(labeled, 1))
			st.Accuracy = float64(correct) / float64(max(labeled, 1))
			st.WindowsPerSec = float64(windows) / max(secs, 1e-9)
			st.Elapsed = time.Since(start)
			progress(st)
		}
	}
	return nil
}

// encodeBatches shuffles and encodes every epoch's batches in order, and
// stops early when stop closes. It owns the training RNG, so the batches
// are the same whatever the timing.
func (m *Model) encodeBatches(ws []*schemas.Window, order []int, streams contexts, out chan<- batchOf, stop <-chan struct{}) {
	seed := uint64(m.cfg.Seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	drop := m.newDropper()
	n := len(ws[0].Label)
	var kinds [][]int32
	for epoch := 1; epoch <= m.cfg.Epochs; epoch++ {
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		if m.streamW != nil {
			kinds = streams.sample(rng)
		}
		var spent time.Duration
		for lo := 0; lo < len(order); lo += m.stepWindows() {
			t := time.Now()
			hi := min(lo+m.stepWindows(), len(order))
			batch := make([]*schemas.Window, 0, hi-lo)
			var batchKinds [][]int32
			for _, k := range order[lo:hi] {
				batch = append(batch, ws[k])
				if kinds != nil {
					batchKinds = append(batchKinds, kinds[k])
				}
			}
			b := batchOf{epoch: epoch, lo: lo, e: m.withMask(drop, m.feat.encode(batch, n, batchKinds)), last: hi == len(order)}
			spent += time.Since(t)
			if b.last {
				b.prepare = spent
			}
			select {
			case out <- b:
			case <-stop:
				return
			}
		}
	}
}

// epochSums adds up an epoch's loss and correct predictions on the device.
type epochSums struct{ loss, correct *ts.Tensor }

func newEpochSums(device gotch.Device) (*epochSums, error) {
	loss, err := ts.Zeros([]int64{1}, gotch.Double, device)
	if err != nil {
		return nil, fmt.Errorf("loss accumulator: %w", err)
	}
	correct, err := ts.Zeros([]int64{1}, gotch.Int64, device)
	if err != nil {
		loss.MustDrop()
		return nil, fmt.Errorf("accuracy accumulator: %w", err)
	}
	return &epochSums{loss: loss, correct: correct}, nil
}

func (a *epochSums) free() {
	a.loss.MustDrop()
	a.correct.MustDrop()
}

// read returns the sums and sets them back to zero.
func (a *epochSums) read() (float64, int64, error) {
	l := make([]float64, 1)
	if err := a.loss.CopyData(l, 1); err != nil {
		return 0, 0, err
	}
	c := make([]int64, 1)
	if err := a.correct.CopyData(c, 1); err != nil {
		return 0, 0, err
	}
	if err := a.loss.Zero_(); err != nil {
		return 0, 0, err
	}
	if err := a.correct.Zero_(); err != nil {
		return 0, 0, err
	}
	return l[0], c[0], nil
}

// step runs one optimisation step and adds the batch's summed loss and
// its labeled packets predicted right to acc, on the device.
func (m *Model) step(opt *ts.COptimizer, e encoded, weights *ts.Tensor, acc *epochSums) error {
	if e.labeled == 0 {
		return nil // the mean over no packets is NaN: nothing to learn
	}
	var sc Scope
	defer sc.Free()
	in, err := m.inputs(&sc, e)
	if err != nil {
		return fmt.Errorf("move batch to %v: %w", m.device, err)
	}
	targets := in.targets
	logits, err := m.forward(&sc, in, true)
	if err != nil {
		return err
	}
	// ignore_index -1 is the mask: padding and unlabeled packets carry -1.
	l, err := sc.Keep(logits.CrossEntropyLoss(targets, weights, 1, -1, m.cfg.LabelSmoothing, false))
	if err != nil {
		return fmt.Errorf("loss: %w", err)
	}
	if err := opt.ZeroGrad(); err != nil {
		return fmt.Errorf("zero gradients: %w", err)
	}
	if err := l.Backward(); err != nil {
		return fmt.Errorf("backward: %w", err)
	}
	if err := m.clipGradNorm(&sc, maxGradNorm); err != nil {
		return fmt.Errorf("clip gradients: %w", err)
	}
	if err := opt.Step(); err != nil {
		return fmt.Errorf("optimizer step: %w", err)
	}
	return m.addStats(&sc, l, float64(e.labeled), logits, targets, acc)
}

// addStats adds to acc loss times labeled (the batch's mean loss, or a
// share's part of it, times the batch's labeled packets) and the labeled
// packets predicted right.
func (m *Model) addStats(sc *Scope, loss *ts.Tensor, labeled float64, logits, targets *ts.Tensor, acc *epochSums) error {
	// The sum must leave the autograd graph: added as is, every step's
	// graph (the LSTM's activations among it) hangs off the accumulator
	// and lives until training ends, about 90 KB a window an epoch.
	// TestTrainingMemoryFlat fails without the detach.
	ld, err := sc.Keep(loss.Detach(false))
	if err != nil {
		return err
	}
	scaled, err := sc.Keep(ld.MulScalar(sc.scalar(labeled), false))
	if err != nil {
		return err
	}
	if err := acc.loss.Add_(scaled); err != nil {
		return fmt.Errorf("add up the loss: %w", err)
	}
	// argmax is never -1, so masked positions never count as correct.
	pred, err := sc.Keep(logits.Argmax([]int64{1}, false, false))
	if err != nil {
		return err
	}
	eq, err := sc.Keep(pred.EqTensor(targets, false))
	if err != nil {
		return err
	}
	sum, err := sc.Keep(eq.Sum(gotch.Int64, false))
	if err != nil {
		return err
	}
	if err := acc.correct.Add_(sum); err != nil {
		return fmt.Errorf("add up the accuracy: %w", err)
	}
	return nil
}

// maxGradNorm bounds the gradient's global L2 norm per step. LSTMs now and
// then meet a batch whose gradient is orders of magnitude above the rest;
// unclipped, one such Adam step throws a converged model back to chance
// (seen on small data at the unit tests' learning rate).
const maxGradNorm = 5.0

// clipGradNorm scales the trainable weights' gradients down so that their
// global L2 norm is at most max, as torch.nn.utils.clip_grad_norm_ does:
// on the device, with no read back, so a GPU step never waits for the host.
func (m *Model) clipGradNorm(sc *Scope, max float64) error {
	vars := m.vs.TrainableVariables()
	grads := make([]*ts.Tensor, 0, len(vars))
	sums := make([]ts.Tensor, 0, len(vars))
	for i := range vars {
		g, err := sc.Keep(vars[i].Grad(false))
		if err != nil {
			return err
		}
		if ok, err := g.Defined(); err != nil || !ok {
			continue // a weight the loss did not reach (an unused embedding row set)
		}
		g2, err := sc.Keep(g.Square(false))
		if err != nil {
			return err
		}
		s, err := sc.Keep(g2.Sum(gotch.Float, false))
		if err != nil {
			return err
		}
		sums = append(sums, *s)
		grads = append(grads, g)
	}
	if len(grads) == 0 {
		return nil
	}
	all, err := sc.Keep(ts.Stack(sums, 0))
	if err != nil {
		return err
	}
	sq, err := sc.Keep(all.Sum(gotch.Float, false))
	if err != nil {
		return err
	}
	norm, err := sc.Keep(sq.Sqrt(false))
	if err != nil {
		return err
	}
	// coef = min(1, max / (norm + 1e-6)): a gradient within the bound is
	// multiplied by 1.
	d, err := sc.Keep(norm.AddScalar(sc.scalar(1e-6), false))
	if err != nil {
		return err
	}
	r, err := sc.Keep(d.Reciprocal(false))
	if err != nil {
		return err
	}
	c, err := sc.Keep(r.MulScalar(sc.scalar(max), false))
	if err != nil {
		return err
	}
	coef, err := sc.Keep(c.ClampMax(sc.scalar(1), false))
	if err != nil {
		return err
	}
	for _, g := range grads {
		if err := g.Mul_(coef); err != nil {
			return err
		}
	}
	return nil
}

// classWeights weighs each device's packets in the loss by the inverse of
// its share of the training packets (scikit-learn's "balanced"): captures
// of a chatty hub outnumber a scale's a hundred to one, and unweighted the
// model learns to call every ambiguous packet a hub. Classes without
// training packets get weight 0 (they never appear as targets anyway).
func classWeights(ws []*schemas.Window, numClasses int, device gotch.Device) (*ts.Tensor, []float32, error) {
	counts := make([]float64, numClasses)
	for _, w := range ws {
		countLabels(w, counts)
	}
	t, err := classWeightsOf(counts, device)
	return t, balancedWeights(counts), err
}

// balancedWeights are the class weights classWeightsOf puts on the device.
func balancedWeights(counts []float64) []float32 {
	var total, present float64
	for _, c := range counts {
		total += c
	}
	for _, c := range counts {
		if c > 0 {
			present++
		}
	}
	weights := make([]float32, len(counts))
	for i, c := range counts {
		if c > 0 {
			weights[i] = float32(total / (present * c))
		}
	}
	return weights
}

// countLabels adds w's labeled packets to counts, one per class.
func countLabels(w *schemas.Window, counts []float64) {
	for i := range w.Len {
		if l := w.Label[i]; l >= 0 {
			counts[l]++
		}
	}
}

func classWeightsOf(counts []float64, device gotch.Device) (*ts.Tensor, error) {
	weights := balancedWeights(counts)
	t, err := tensorOf(weights, []int64{int64(len(weights))}, gotch.Float)
	if err != nil {
		return nil, err
	}
	if device == gotch.CPU {
		return t, nil
	}
	defer t.MustDrop()
	return t.To(device, false)
}

// Predict labels every real packet of each window: out[i] has ws[i].Len
// classes. Dropout is off and no gradients are kept. Windows may differ
// in size; labels in the windows are ignored.
func (m *Model) Predict(ws []*schemas.Window) ([][]int32, error) {
	lp, err := m.LogProbs(ws)
	if err != nil {
		return nil, err
	}
	out := make([][]int32, len(ws))
	for i, w := range ws {
		out[i] = make([]int32, w.Len)
		for k := range w.Len {
			out[i][k] = int32(evaluate.Argmax(lp[i][k*m.numClasses : (k+1)*m.numClasses]))
		}
	}
	return out, nil
}

// LogProbs returns each real packet's log-probability of every class:
// out[i] holds ws[i].Len rows of NumClasses values, row-major. Decoders
// that pool evidence over many packets (a window of one device, a capture
// session) need these rather than the argmax alone.
func (m *Model) LogProbs(ws []*schemas.Window) ([][]float32, error) {
	if m == nil || m.vs == nil {
		return nil, errors.New("learn: Predict on a closed model")
	}
	bySize := map[int][]int{}
	var sizes []int
	for i, w := range ws {
		if err := checkWindow(w, -1, m.feat.Header); err != nil {
			return nil, fmt.Errorf("learn: window %d: %w", i, err)
		}
		n := len(w.Label)
		if _, ok := bySize[n]; !ok {
			sizes = append(sizes, n)
		}
		bySize[n] = append(bySize[n], i)
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	prev, err := ts.GradSetEnabled(false)
	if err != nil {
		return nil, fmt.Errorf("learn: disable gradients: %w", err)
	}
	defer ts.GradSetEnabled(prev)

	var kinds, batchKinds [][]int32
	if m.streamW != nil {
		kinds = m.feat.contextsOf(ws).whole()
	}
	c := m.numClasses
	out := make([][]float32, len(ws))
	batch := make([]*schemas.Window, 0, m.cfg.BatchSize)
	for _, n := range sizes {
		idx := bySize[n]
		for lo := 0; lo < len(idx); lo += m.cfg.BatchSize {
			part := idx[lo:min(lo+m.cfg.BatchSize, len(idx))]
			batch, batchKinds = batch[:0], batchKinds[:0]
			for _, i := range part {
				batch = append(batch, ws[i])
				if kinds != nil {
					batchKinds = append(batchKinds, kinds[i])
				}
			}
			lp, err := m.logProbBatch(m.feat.encode(batch, n, batchKinds))
			if err != nil {
				return nil, fmt.Errorf("learn: predict: %w", err)
			}
			for b, i := range part {
				out[i] = lp[b*n*c : (b*n+ws[i].Len)*c : (b*n+ws[i].Len)*c]
			}
		}
	}
	return out, nil
}

// logProbBatch returns log-softmax rows [B*n*numClasses].
func (m *Model) logProbBatch(e encoded) ([]float32, error) {
	var sc Scope
	defer sc.Free()
	in, err := m.inputs(&sc, e)
	if err != nil {
		return nil, err
	}
	logits, err := m.forward(&sc, in, false)
	if err != nil {
		return nil, err
	}
	lp, err := sc.Keep(logits.LogSoftmax(1, gotch.Float, false))
	if err != nil {
		return nil, err
	}
	v := make([]float32, len(e.ports)*m.numClasses)
	if err := lp.CopyData(v, uint(len(v))); err != nil {
		return nil, err
	}
	return v, nil
}
