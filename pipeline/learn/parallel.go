package learn

import (
	"errors"
	"fmt"
	"runtime"
	"slices"

	lib "github.com/sugarme/gotch/libtch"
	"github.com/sugarme/gotch/ts"
)

// Parallel values: how a trainer given Threads > 1 uses its cores.
const (
	// ParallelIntraOp splits each libtorch operation over the threads.
	ParallelIntraOp = "intra-op"
	// ParallelData gives each of Threads copies of the model, each on an
	// OS thread of its own with one libtorch thread, a whole batch of
	// BatchSize windows, and sums their gradients before one optimizer
	// step, as PyTorch's DistributedDataParallel does: a step takes
	// Threads x BatchSize windows. The LSTM's matrices (batch x 4*hidden
	// per time step) are too small for libtorch to split well, and half a
	// batch costs well over half a batch's time (the per-time-step
	// overhead stays), so copies that split one batch gained only 1.2x.
	ParallelData = "data"
)

// stepper runs a fit's optimisation steps and keeps the epoch's sums.
type stepper interface {
	step(e encoded) error
	read() (loss float64, correct int64, err error)
	close()
}

// oneModel steps the whole batch on the model, on the caller's thread.
type oneModel struct {
	m       *Model
	opt     *ts.COptimizer
	weights *ts.Tensor
	acc     *epochSums
}

func (o *oneModel) step(e encoded) error          { return o.m.step(o.opt, e, o.weights, o.acc) }
func (o *oneModel) read() (float64, int64, error) { return o.acc.read() }
func (o *oneModel) close()                        { o.acc.free() }

// stepWindows is how many windows one optimizer step takes: BatchSize,
// or BatchSize per copy in ParallelData.
func (m *Model) stepWindows() int {
	if m.dataParallel() {
		return m.cfg.BatchSize * m.cfg.Threads
	}
	return m.cfg.BatchSize
}

func (m *Model) dataParallel() bool {
	return m.cfg.Parallel == ParallelData && m.cfg.Threads >= 2
}

// newStepper returns the stepper cfg.Parallel asks for. hostWeights are
// the class weights weights holds (nil without Balance): a share's loss
// is normalised by the whole batch's weight, which the host works out.
func (m *Model) newStepper(opt *ts.COptimizer, weights *ts.Tensor, hostWeights []float32) (stepper, error) {
	acc, err := newEpochSums(m.device)
	if err != nil {
		return nil, err
	}
	if !m.dataParallel() {
		return &oneModel{m: m, opt: opt, weights: weights, acc: acc}, nil
	}
	dp := &dataParallel{m: m, opt: opt, weights: weights, hostWeights: hostWeights, acc: []*epochSums{acc}}
	if err := dp.start(m.cfg.Threads); err != nil {
		dp.close()
		return nil, err
	}
	return dp, nil
}

// dataParallel is ParallelData: a step's windows come as one batch of
// stepWindows, cut into one share of BatchSize per copy. Share 0 steps on
// the model itself, on the training thread; share r on replica r-1, which
// its own locked goroutine runs.
type dataParallel struct {
	m           *Model
	opt         *ts.COptimizer
	weights     *ts.Tensor
	hostWeights []float32
	names       []string      // trainable weights, in one order for every copy
	vars        [][]ts.Tensor // [copy][weight]; copy 0 is the model
	reps        []*Model
	acc         []*epochSums // [copy]
	jobs        []chan encoded
	results     chan error
	// The whole batch's loss weight and labeled packets, set before its
	// shares go out.
	norm, labeled float64
	exited        chan struct{}
}

func (dp *dataParallel) start(copies int) error {
	m := dp.m
	if m.device.IsCuda() {
		return errors.New("data-parallel training runs on the CPU only: one GPU takes the whole batch (drop --thread-mode data)")
	}
	dp.names = trainableNames(m)
	dp.vars = [][]ts.Tensor{varsByName(m, dp.names)}
	dp.results = make(chan error, copies)
	dp.exited = make(chan struct{}, copies)
	for range copies - 1 {
		r, err := newModel(m.cfg, m.feat, m.numClasses, m.device)
		if err != nil {
			return fmt.Errorf("replica: %w", err)
		}
		dp.reps = append(dp.reps, r)
		acc, err := newEpochSums(m.device)
		if err != nil {
			return fmt.Errorf("replica: %w", err)
		}
		dp.acc = append(dp.acc, acc)
		dp.vars = append(dp.vars, varsByName(r, dp.names))
		jobs := make(chan encoded)
		dp.jobs = append(dp.jobs, jobs)
		go dp.serve(len(dp.reps), jobs)
	}
	return nil
}

// serve runs replica k's shares on an OS thread of its own: libtorch's
// grad mode and gotch's error slot are per thread.
func (dp *dataParallel) serve(k int, jobs <-chan encoded) {
	defer func() { dp.exited <- struct{}{} }()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// OpenMP keeps the thread count per thread: one that never set it
	// opens teams of as many threads as there are cores, two copies then
	// running four threads on two cores. (Most of the copies' early
	// slowness was OpenBLAS's pool, which SetTorchThreads holds to one.)
	if err := SetTorchThreads(1); err != nil {
		for range jobs {
			dp.results <- fmt.Errorf("replica %d: one libtorch thread: %w", k, err)
		}
		return
	}
	if _, err := ts.GradSetEnabled(true); err != nil {
		for range jobs {
			dp.results <- fmt.Errorf("replica %d: enable gradients: %w", k, err)
		}
		return
	}
	for e := range jobs {
		dp.results <- dp.replicaStep(k, e)
	}
}

// replicaStep takes the model's weights (the last step changed them),
// clears the replica's gradients and steps its share.
func (dp *dataParallel) replicaStep(k int, e encoded) error {
	if err := copyWeights(dp.vars[k], dp.vars[0]); err != nil {
		return fmt.Errorf("replica %d: take the weights: %w", k, err)
	}
	if err := zeroGrads(dp.vars[k]); err != nil {
		return fmt.Errorf("replica %d: zero gradients: %w", k, err)
	}
	if err := dp.reps[k-1].shareStep(e, dp.weights, dp.acc[k], dp.norm, dp.labeled); err != nil {
		return fmt.Errorf("replica %d: %w", k, err)
	}
	return nil
}

func (dp *dataParallel) step(e encoded) error {
	if e.labeled == 0 {
		return nil
	}
	dp.norm, dp.labeled = lossWeight(e, dp.hostWeights), float64(e.labeled)
	shares := e.split(len(dp.vars))
	// Channel sends order the write of norm before the replicas read it.
	for k := 1; k < len(shares); k++ {
		dp.jobs[k-1] <- shares[k]
	}
	var errs []error
	if err := dp.opt.ZeroGrad(); err != nil {
		errs = append(errs, fmt.Errorf("zero gradients: %w", err))
	} else if err := dp.m.shareStep(shares[0], dp.weights, dp.acc[0], dp.norm, dp.labeled); err != nil {
		errs = append(errs, err)
	}
	for k := 1; k < len(shares); k++ {
		if err := <-dp.results; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for k := 1; k < len(shares); k++ {
		if err := addGrads(dp.vars[0], dp.vars[k]); err != nil {
			return fmt.Errorf("add replica %d's gradients: %w", k, err)
		}
	}
	var sc Scope
	defer sc.Free()
	if err := dp.m.clipGradNorm(&sc, maxGradNorm); err != nil {
		return fmt.Errorf("clip gradients: %w", err)
	}
	if err := dp.opt.Step(); err != nil {
		return fmt.Errorf("optimizer step: %w", err)
	}
	return nil
}

func (dp *dataParallel) read() (float64, int64, error) {
	var loss float64
	var correct int64
	for _, a := range dp.acc {
		l, c, err := a.read()
		if err != nil {
			return 0, 0, err
		}
		loss, correct = loss+l, correct+c
	}
	return loss, correct, nil
}

func (dp *dataParallel) close() {
	for _, j := range dp.jobs {
		close(j)
	}
	for range dp.jobs {
		<-dp.exited
	}
	for _, a := range dp.acc {
		a.free()
	}
	for _, r := range dp.reps {
		r.Close()
	}
}

// shareStep runs forward and backward on one share of a batch, adding to
// the weights' gradients its part of the batch's loss: its summed
// (class-weighted) loss over norm, the whole batch's loss weight, so the
// shares' gradients add up to the whole batch's. labeled is the whole
// batch's labeled packets.
func (m *Model) shareStep(e encoded, weights *ts.Tensor, acc *epochSums, norm, labeled float64) error {
	var sc Scope
	defer sc.Free()
	in, err := m.inputs(&sc, e)
	if err != nil {
		return fmt.Errorf("move batch to %v: %w", m.device, err)
	}
	logits, err := m.forward(&sc, in, true)
	if err != nil {
		return err
	}
	const sum = 2 // reduction: sum
	l, err := sc.Keep(logits.CrossEntropyLoss(in.targets, weights, sum, -1, 0, false))
	if err != nil {
		return fmt.Errorf("loss: %w", err)
	}
	part, err := sc.Keep(l.MulScalar(sc.scalar(1/norm), false))
	if err != nil {
		return err
	}
	if err := part.Backward(); err != nil {
		return fmt.Errorf("backward: %w", err)
	}
	// The epoch's figure is the batch's mean loss per labeled packet, as
	// one model's step adds it.
	return m.addStats(&sc, part, labeled, logits, in.targets, acc)
}

// lossWeight is what libtorch's mean cross-entropy divides by: the
// labeled packets' class weights summed, or their count without weights.
func lossWeight(e encoded, hostWeights []float32) float64 {
	if hostWeights == nil {
		return float64(e.labeled)
	}
	var w float64
	for _, t := range e.targets {
		if t >= 0 {
			w += float64(hostWeights[t])
		}
	}
	return w
}

// split cuts a batch into k shares of whole windows, as equal as they
// come; a batch of fewer windows than k gives fewer shares.
func (e encoded) split(k int) []encoded {
	b := len(e.targets) / e.n
	k = min(k, b)
	rows := 0
	if e.present != nil {
		rows = len(e.present) / b
	}
	out := make([]encoded, 0, k)
	for i := range k {
		lo, hi := i*b/k, (i+1)*b/k
		s := encoded{n: e.n, dim: e.dim,
			ports:   e.ports[lo*e.n : hi*e.n],
			lens:    e.lens[lo*e.n : hi*e.n],
			numeric: e.numeric[lo*e.n*e.dim : hi*e.n*e.dim],
			targets: e.targets[lo*e.n : hi*e.n],
		}
		if e.present != nil {
			s.present = e.present[lo*rows : hi*rows]
		}
		if e.drop != nil {
			per := len(e.drop) / b
			s.drop = e.drop[lo*per : hi*per]
		}
		for _, t := range s.targets {
			if t >= 0 {
				s.labeled++
			}
		}
		out = append(out, s)
	}
	return out
}

// trainableNames lists the model's trainable weights in a fixed order:
// gotch keeps them in a map, whose order differs between two var stores.
func trainableNames(m *Model) []string {
	var names []string
	for name, t := range m.vs.Variables() {
		if t.MustRequiresGrad() {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func varsByName(m *Model, names []string) []ts.Tensor {
	all := m.vs.Variables()
	out := make([]ts.Tensor, len(names))
	for i, n := range names {
		out[i] = all[n]
	}
	return out
}

// copyWeights sets dst's weights to src's, outside autograd, and leaves
// gradients on: the thread is a training thread. (gotch's GradSetEnabled
// reads the previous state as 8 bytes of a 4-byte int, so that state is
// not worth restoring.)
func copyWeights(dst, src []ts.Tensor) error {
	if _, err := ts.GradSetEnabled(false); err != nil {
		return err
	}
	defer ts.GradSetEnabled(true)
	for i := range dst {
		lib.AtCopy_(lib.Ctensor(dst[i].Ctensor()), lib.Ctensor(src[i].Ctensor()))
		if err := ts.TorchErr(); err != nil {
			return err
		}
	}
	return nil
}

// zeroGrads clears the gradients the last backward left.
func zeroGrads(vars []ts.Tensor) error {
	return eachGrad(vars, nil, func(g, _ *ts.Tensor) error { return g.Zero_() })
}

// addGrads adds src's gradients to dst's.
func addGrads(dst, src []ts.Tensor) error {
	return eachGrad(dst, src, func(g, s *ts.Tensor) error { return g.Add_(s) })
}

// eachGrad calls f on each weight's gradient in a (and the same weight's
// in b, when b is given), skipping weights without one.
func eachGrad(a, b []ts.Tensor, f func(ga, gb *ts.Tensor) error) error {
	var sc Scope
	defer sc.Free()
	for i := range a {
		ga, err := sc.Keep(a[i].Grad(false))
		if err != nil {
			return err
		}
		if ok, err := ga.Defined(); err != nil || !ok {
			continue
		}
		var gb *ts.Tensor
		if b != nil {
			if gb, err = sc.Keep(b[i].Grad(false)); err != nil {
				return err
			}
			if ok, err := gb.Defined(); err != nil || !ok {
				continue
			}
		}
		if err := f(ga, gb); err != nil {
			return err
		}
	}
	return nil
}
