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
	}
}

// mask is a mask of size values, four 16-bit draws a word.
func (d *dropper) mask(size int) []float32 {
	out := make([]float32, size)
	for i := 0; i < size; i += 4 {
		r := d.rng.Uint64()
		for k := i; k < min(i+4, size); k++ {
			if uint32(r&0xffff) >= d.cut {
				out[k] = d.scale
			}
			r >>= 16
		}
	}
	return out
}

// withMask gives a training batch of windows of n slots its dropout mask.
func (m *Model) withMask(d *dropper, e encoded) encoded {
	if d != nil {
		e.drop = d.mask(len(e.targets) * m.headIn)
	}
	return e
}
