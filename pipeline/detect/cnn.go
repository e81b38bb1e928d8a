package detect

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"unsafe"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/nn"
	"github.com/sugarme/gotch/ts"

	"github.com/homemole/homemole/pipeline/learn"
)

// CNNConfig is the shape and training of one network. The paper gives the
// layer counts (3 convolutions, 3 poolings, 2 fully connected, dropout),
// not the sizes: these are ours, small because the input is small (10 SP
// channels by 36 bins) and 2 shared cores train one per device type.
type CNNConfig struct {
	// Filters of the three 1-D convolutions along time (the SPs are the
	// input channels, as the paper's "signal channels").
	Filters [3]int `json:"filters"`
	// Kernel is the convolutions' width in bins; 3 bins of 10 s see a 30 s
	// heartbeat's period at the first layer.
	Kernel int `json:"kernel"`
	// Hidden is the first fully connected layer's width.
	Hidden  int     `json:"hidden"`
	Dropout float64 `json:"dropout"`
	Epochs  int     `json:"epochs"`
	Batch   int     `json:"batch"`
	LR      float64 `json:"lr"`
}

// DefaultCNN is 16-32-32 filters of width 3, 64 hidden units, dropout 0.3,
// Adam at 1e-3, 25 epochs of batches of 64.
func DefaultCNN() CNNConfig {
	return CNNConfig{Filters: [3]int{16, 32, 32}, Kernel: 3, Hidden: 64, Dropout: 0.3, Epochs: 25, Batch: 64, LR: 1e-3}
}

func (c CNNConfig) validate() error {
	for _, f := range c.Filters {
		if f <= 0 {
			return fmt.Errorf("CNN: filters %v: want three counts > 0", c.Filters)
		}
	}
	if c.Kernel <= 0 || c.Kernel%2 == 0 || c.Hidden <= 0 || c.Epochs <= 0 || c.Batch <= 0 || !(c.LR > 0) || c.Dropout < 0 || c.Dropout >= 1 {
		return fmt.Errorf("CNN: kernel %d (odd, > 0), hidden %d, epochs %d, batch %d, lr %v, dropout %v: one is out of range",
			c.Kernel, c.Hidden, c.Epochs, c.Batch, c.LR, c.Dropout)
	}
	return nil
}

// cnn is one network: a detector (two logits: absent, present) or a
// counter (one ReLU output: the number of devices).
type cnn struct {
	device       gotch.Device // where its weights are; inputs are moved there
	cfg          CNNConfig
	in, bins     int64
	outputs      int64
	convW, convB [3]*ts.Tensor
	fc1W, fc1B   *ts.Tensor
	fc2W, fc2B   *ts.Tensor
}

// cnnParams is how many weights newCNN creates, counted in float64.
func cnnParams(cfg CNNConfig, in, bins, outputs float64) float64 {
	n, ch := 0.0, in
	for _, f := range cfg.Filters {
		n += float64(f)*ch*float64(cfg.Kernel) + float64(f)
		ch = float64(f)
	}
	for range 3 { // pooled, without its int64 overflow
		bins = math.Ceil(bins / 2)
	}
	h := float64(cfg.Hidden)
	return n + h*ch*bins + h + outputs*h + outputs
}

// pooled is the time length after three max-poolings of 2 (ceil mode).
func pooled(bins int64) int64 {
	for range 3 {
		bins = (bins + 1) / 2
	}
	return bins
}

// newCNN creates the weights under p with PyTorch's default initialisation
// for these layers (uniform in +-1/sqrt(fan-in)).
func newCNN(p *nn.Path, cfg CNNConfig, in, bins, outputs int64) (*cnn, error) {
	n := &cnn{device: p.Device(), cfg: cfg, in: in, bins: bins, outputs: outputs}
	ch := in
	for i, f := range cfg.Filters {
		fan := float64(ch) * float64(cfg.Kernel)
		b := 1 / math.Sqrt(fan)
		sub := p.Sub(fmt.Sprintf("conv%d", i+1))
		var err error
		if n.convW[i], err = sub.NewVar("weight", []int64{int64(f), ch, int64(cfg.Kernel)}, nn.NewUniformInit(-b, b)); err != nil {
			return nil, fmt.Errorf("create conv%d: %w", i+1, err)
		}
		if n.convB[i], err = sub.NewVar("bias", []int64{int64(f)}, nn.NewUniformInit(-b, b)); err != nil {
			return nil, fmt.Errorf("create conv%d: %w", i+1, err)
		}
		ch = int64(f)
	}
	flat := ch * pooled(bins)
	var err error
	b1 := 1 / math.Sqrt(float64(flat))
	if n.fc1W, err = p.Sub("fc1").NewVar("weight", []int64{int64(cfg.Hidden), flat}, nn.NewUniformInit(-b1, b1)); err != nil {
		return nil, err
	}
	if n.fc1B, err = p.Sub("fc1").NewVar("bias", []int64{int64(cfg.Hidden)}, nn.NewUniformInit(-b1, b1)); err != nil {
		return nil, err
	}
	b2 := 1 / math.Sqrt(float64(cfg.Hidden))
	if n.fc2W, err = p.Sub("fc2").NewVar("weight", []int64{outputs, int64(cfg.Hidden)}, nn.NewUniformInit(-b2, b2)); err != nil {
		return nil, err
	}
	if n.fc2B, err = p.Sub("fc2").NewVar("bias", []int64{outputs}, nn.NewUniformInit(-b2, b2)); err != nil {
		return nil, err
	}
	return n, nil
}

// tensorOf copies a slice into a new CPU tensor as raw bytes (gotch's typed
// constructors walk slices by reflection).
func tensorOf[T int64 | float32](data []T, shape []int64, dtype gotch.DType) (*ts.Tensor, error) {
	raw := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(data))), len(data)*int(unsafe.Sizeof(data[0])))
	return ts.OfDataSize(raw, shape, dtype)
}

// forward maps x [B, in, bins] to [B, outputs]; a counter's output has
// passed its ReLU.
func (n *cnn) forward(sc *learn.Scope, x *ts.Tensor, train bool) (*ts.Tensor, error) {
	h := x
	pad := int64(n.cfg.Kernel / 2)
	for i := range 3 {
		var err error
		if h, err = sc.Keep(ts.Conv1d(h, n.convW[i], n.convB[i], []int64{1}, []int64{pad}, []int64{1}, 1)); err != nil {
			return nil, fmt.Errorf("conv%d: %w", i+1, err)
		}
		if h, err = sc.Keep(h.Relu(false)); err != nil {
			return nil, err
		}
		if h, err = sc.Keep(h.MaxPool1d([]int64{2}, []int64{2}, []int64{0}, []int64{1}, true, false)); err != nil {
			return nil, fmt.Errorf("pool%d: %w", i+1, err)
		}
	}
	h, err := sc.Keep(h.Flatten(1, -1, false))
	if err != nil {
		return nil, err
	}
	if h, err = sc.Keep(ts.Dropout(h, n.cfg.Dropout, train)); err != nil {
		return nil, err
	}
	if h, err = sc.Keep(ts.Linear(h, n.fc1W, n.fc1B)); err != nil {
		return nil, fmt.Errorf("fc1: %w", err)
	}
	if h, err = sc.Keep(h.Relu(false)); err != nil {
		return nil, err
	}
	if h, err = sc.Keep(ts.Dropout(h, n.cfg.Dropout, train)); err != nil {
		return nil, err
	}
	if h, err = sc.Keep(ts.Linear(h, n.fc2W, n.fc2B)); err != nil {
		return nil, fmt.Errorf("fc2: %w", err)
	}
	if n.outputs == 1 {
		if h, err = sc.Keep(h.Relu(false)); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// samples is a training set: X holds len(Y) inputs of in*bins values.
// A detector's Y is 0 or 1; a counter's Y is the device count, W its
// weight in the loss.
type samples struct {
	X    []float32
	Y    []float32
	W    []float32
	size int
}

// fit trains n on s with Adam. The detector's loss is cross-entropy over
// the softmax of its two logits; the counter's is MSE weighted per sample
// by W (the counter weighs by 1/n^2, making it the mean squared relative
// error, so that one device counts as much as a hundred).
func (n *cnn) fit(ctx context.Context, vars []ts.Tensor, s *samples, seed uint64) (lastLoss float64, err error) {
	opt, err := ts.Adam(n.cfg.LR, 0.9, 0.999, 0)
	if err != nil {
		return 0, fmt.Errorf("create Adam optimizer: %w", err)
	}
	defer opt.Drop()
	if err := opt.AddParameters(vars); err != nil {
		return 0, fmt.Errorf("register weights: %w", err)
	}
	if prev, err := ts.GradSetEnabled(true); err == nil {
		defer ts.GradSetEnabled(prev)
	}
	rng := rand.New(rand.NewPCG(seed, 0xc22))
	N := len(s.Y)
	order := rng.Perm(N)
	bx := make([]float32, 0, n.cfg.Batch*s.size)
	by := make([]float32, 0, n.cfg.Batch)
	bl := make([]int64, 0, n.cfg.Batch)
	bw := make([]float32, 0, n.cfg.Batch)
	for epoch := 0; epoch < n.cfg.Epochs; epoch++ {
		rng.Shuffle(N, func(i, j int) { order[i], order[j] = order[j], order[i] })
		var sum float64
		var batches int
		for lo := 0; lo < N; lo += n.cfg.Batch {
			if err := ctx.Err(); err != nil {
				return 0, fmt.Errorf("training stopped in epoch %d: %w", epoch+1, err)
			}
			bx, by, bl, bw = bx[:0], by[:0], bl[:0], bw[:0]
			for _, k := range order[lo:min(lo+n.cfg.Batch, N)] {
				bx = append(bx, s.X[k*s.size:(k+1)*s.size]...)
				by = append(by, s.Y[k])
				bl = append(bl, int64(s.Y[k]))
				if s.W != nil {
					bw = append(bw, s.W[k])
				}
			}
			l, err := n.step(opt, bx, by, bl, bw)
			if err != nil {
				return 0, fmt.Errorf("epoch %d, batch at %d: %w", epoch+1, lo, err)
			}
			sum += l
			batches++
		}
		lastLoss = sum / float64(max(batches, 1))
	}
	return lastLoss, nil
}

func (n *cnn) step(opt *ts.COptimizer, bx, by []float32, bl []int64, bw []float32) (float64, error) {
	var sc learn.Scope
	defer sc.Free()
	b := int64(len(by))
	x, err := input(n, &sc, bx, []int64{b, n.in, n.bins})
	if err != nil {
		return 0, err
	}
	out, err := n.forward(&sc, x, true)
	if err != nil {
		return 0, err
	}
	var loss *ts.Tensor
	if n.outputs > 1 {
		t, err := input(n, &sc, bl, []int64{b})
		if err != nil {
			return 0, err
		}
		if loss, err = sc.Keep(out.CrossEntropyLoss(t, ts.None, 1, -100, 0, false)); err != nil {
			return 0, fmt.Errorf("cross-entropy: %w", err)
		}
	} else {
		t, err := input(n, &sc, by, []int64{b, 1})
		if err != nil {
			return 0, err
		}
		w, err := input(n, &sc, bw, []int64{b, 1})
		if err != nil {
			return 0, err
		}
		d, err := sc.Keep(out.Sub(t, false))
		if err != nil {
			return 0, err
		}
		sq, err := sc.Keep(d.Square(false))
		if err != nil {
			return 0, err
		}
		wsq, err := sc.Keep(sq.Mul(w, false))
		if err != nil {
			return 0, err
		}
		if loss, err = sc.Keep(wsq.Mean(gotch.Float, false)); err != nil {
			return 0, fmt.Errorf("weighted MSE: %w", err)
		}
	}
	if err := opt.ZeroGrad(); err != nil {
		return 0, err
	}
	if err := loss.Backward(); err != nil {
		return 0, fmt.Errorf("backward: %w", err)
	}
	if err := opt.Step(); err != nil {
		return 0, fmt.Errorf("optimizer step: %w", err)
	}
	v := make([]float32, 1)
	if err := loss.CopyData(v, 1); err != nil {
		return 0, err
	}
	return float64(v[0]), nil
}

// predict runs n over inputs (len/size of them) without dropout or
// gradients and returns, per input, P(present) for a detector or the count
// for a counter.
func (n *cnn) predict(x []float32, size int) ([]float32, error) {
	count := len(x) / size
	out := make([]float32, 0, count)
	if count == 0 {
		return out, nil
	}
	prev, err := ts.GradSetEnabled(false)
	if err != nil {
		return nil, err
	}
	defer ts.GradSetEnabled(prev)
	const chunk = 512
	for lo := 0; lo < count; lo += chunk {
		hi := min(lo+chunk, count)
		var sc learn.Scope
		xt, err := input(n, &sc, x[lo*size:hi*size], []int64{int64(hi - lo), n.in, n.bins})
		if err != nil {
			sc.Free()
			return nil, err
		}
		y, err := n.forward(&sc, xt, false)
		if err != nil {
			sc.Free()
			return nil, err
		}
		if n.outputs > 1 {
			if y, err = sc.Keep(y.Softmax(1, gotch.Float, false)); err != nil {
				sc.Free()
				return nil, err
			}
		}
		vals := make([]float32, (hi-lo)*int(n.outputs))
		if err := y.CopyData(vals, uint(len(vals))); err != nil {
			sc.Free()
			return nil, err
		}
		sc.Free()
		for i := range hi - lo {
			out = append(out, vals[i*int(n.outputs)+int(n.outputs)-1])
		}
	}
	return out, nil
}

// input copies data into a tensor on the network's device.
func input[T int64 | float32](n *cnn, sc *learn.Scope, data []T, shape []int64) (*ts.Tensor, error) {
	dtype := gotch.Float
	if _, ok := any(data).([]int64); ok {
		dtype = gotch.Int64
	}
	t, err := sc.Keep(tensorOf(data, shape, dtype))
	if err != nil || !n.device.IsCuda() {
		return t, err
	}
	return sc.Keep(t.To(n.device, false))
}

// vars lists the network's weights for its optimizer.
func (n *cnn) vars() []ts.Tensor {
	out := []ts.Tensor{*n.fc1W, *n.fc1B, *n.fc2W, *n.fc2B}
	for i := range 3 {
		out = append(out, *n.convW[i], *n.convB[i])
	}
	return out
}
