package learn

import "math/rand/v2"

// dropper draws the training batches' dropout masks in Go, on the goroutine
// that encodes the batches, instead of libtorch's dropout drawing them on
// the training thread: Debian's libtorch draws each Bernoulli sample on its
// own (measured: 13 % of a default BLSTM step on one thread), where a PCG
// word gives four. The masks are the same inverted dropout (a slot's value
// kept with probability 1-p and scaled to keep its expectation), and a
// fit's masks now follow from its seed alone, whichever thread or copy
// of the model steps the batch.
type dropper struct {
	rng   *rand.PCG
	cut   uint32  // a 16-bit draw below cut drops the value
	scale float32 // what a kept value is multiplied by
	// spare holds masks whose step has copied them into a tensor. A mask
	// is 4.9 MB at batch 64 of windows of 100; a fresh one a batch made
	// the Go heap grow, be collected and fault its pages in again, a
	// fifth of a one-thread training's page faults.
	spare chan []float32
}

// newDropper returns the fit's mask source, nil without dropout. Its
// stream is its own, so the shuffles stay what the seed made them before.
func (m *Model) newDropper() *dropper {
	p := m.cfg.Dropout
	if p <= 0 {
		return nil
	}
	cut := uint32(p*65536 + 0.5)
	if cut >= 65536 {
		return nil // Validate refuses p >= 1; libtorch's dropout handles what is left
	}
	seed := uint64(m.cfg.Seed)
	return &dropper{
		rng: rand.NewPCG(seed^0x6a09e667f3bcc908, seed+0xbb67ae8584caa73b),
		cut: cut,
		// 65536/(65536-cut), not 1/(1-p): the mask's mean is then exactly
		// one, as p rounds to the draw's resolution.
		scale: float32(65536 / float64(65536-cut)),
		// The batches waiting for their step, the one being encoded and
		// the ones being stepped (one a data-parallel copy).
		spare: make(chan []float32, prefetch+4),
	}
}

// mask is a mask of size values, four 16-bit draws a word, in a spare
// mask's memory when there is one.
func (d *dropper) mask(size int) []float32 {
	var out []float32
	select {
	case out = <-d.spare:
	default:
	}
	if cap(out) < size {
		out = make([]float32, size)
	}
	out = out[:size]
	for i := 0; i < size; i += 4 {
		r := d.rng.Uint64()
		for k := i; k < min(i+4, size); k++ {
			v := float32(0)
			if uint32(r&0xffff) >= d.cut {
				v = d.scale
			}
			out[k] = v
			r >>= 16
		}
	}
	return out
}

// recycleMask hands e's mask back to its dropper once a step has copied
// it into a tensor; e must not be stepped again.
func (e encoded) recycleMask() {
	if e.spare == nil {
		return
	}
	select {
	case e.spare <- e.drop:
	default: // spares enough: the collector takes this one
	}
}

// withMask gives a training batch of windows of n slots its dropout mask.
func (m *Model) withMask(d *dropper, e encoded) encoded {
	if d != nil {
		e.drop, e.spare = d.mask(len(e.targets)*m.headIn), d.spare
	}
	return e
}
