package learn

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/sugarme/gotch"
	ts "github.com/sugarme/gotch/ts"

	"github.com/homemole/homemole/internal/proctest"
	"github.com/homemole/homemole/schemas"
)

// TestTrainingMemoryFlat trains the default model (BLSTM, stream context,
// frame-length embedding) for 300 steps after a warm-up, through Train
// and TrainStream, and holds the resident set's growth over those steps
// to a bound. Before the loss sum left the autograd graph, each step
// kept its whole graph alive: about 0.7 MB a step here, 200 MB over the
// 300 steps, against a bound of 40 MiB that leaves room for the
// allocator's and Go's own drift on a loaded machine.
func TestTrainingMemoryFlat(t *testing.T) {
	const (
		windows, slots = 320, 20
		batch          = 16
		warmEpochs     = 3
		measured       = 300 // steps after the warm-up
		bound          = 40 << 20
	)
	stepsPerEpoch := windows / batch
	rng := rand.New(rand.NewPCG(11, 12))
	ws := synthWindows(rng, windows, slots)
	cfg := DefaultConfig()
	cfg.BatchSize, cfg.Threads = batch, 1
	cfg.Epochs = warmEpochs + measured/stepsPerEpoch
	for _, tc := range []struct {
		name  string
		train func(progress func(EpochStats)) (*Model, error)
	}{
		{"Train", func(p func(EpochStats)) (*Model, error) {
			return Train(context.Background(), cfg, ws, len(devices), p)
		}},
		{"TrainStream", func(p func(EpochStats)) (*Model, error) {
			src := func(_ context.Context, _ int, yield func(*schemas.Window) error) error {
				for _, w := range ws {
					if err := yield(w); err != nil {
						return err
					}
				}
				return nil
			}
			return TrainStream(context.Background(), cfg, src, len(devices), p)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var warm, last int64
			steps := 0
			m, err := tc.train(func(s EpochStats) {
				switch {
				case s.Epoch == warmEpochs:
					warm = proctest.Status(t, "VmRSS")
				case s.Epoch > warmEpochs:
					steps += s.Steps
					last = proctest.Status(t, "VmRSS")
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			m.Close()
			grew := last - warm
			t.Logf("resident set %.1f MiB after %d warm-up epochs, %.1f MiB after %d more steps: %+.1f MiB (%.1f KB a step)",
				float64(warm)/(1<<20), warmEpochs, float64(last)/(1<<20), steps, float64(grew)/(1<<20), float64(grew)/1e3/float64(steps))
			if steps < measured {
				t.Fatalf("measured %d steps, want %d", steps, measured)
			}
			if grew > bound {
				t.Errorf("the resident set grew %.1f MiB over %d training steps, more than %d MiB: libtorch memory is kept per step (a tensor left in the autograd graph or never dropped)",
					float64(grew)/(1<<20), steps, bound>>20)
			}
		})
	}
}

// TestTensorOpsDoNotLeak runs a million tensor operations through gotch
// after a warm-up and holds the resident set's growth to a bound. gotch
// 0.7.0 took each operation's result slots from malloc(0) and never freed
// them: 40 to 68 bytes an operation here, and 7.5 to 12.5 KB a step of
// TestTrainingMemoryFlat's training, 66 to 109 MB an epoch of the full
// streaming test's 8,746 steps. tools/gotchsetup's patch frees
// them (gotchsrc.FreeOutSlots); a copy of gotch made before it fails this test
// (go run ./tools/gotchsetup redoes it).
func TestTensorOpsDoNotLeak(t *testing.T) {
	const (
		warm, measured = 200_000, 1_000_000
		bound          = 8 << 20
	)
	x, err := ts.Ones([]int64{4}, gotch.Float, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer x.MustDrop()
	ops := func(n int) {
		for range n {
			y, err := x.Neg(false)
			if err != nil {
				t.Fatal(err)
			}
			y.MustDrop()
		}
	}
	ops(warm)
	before := proctest.Status(t, "VmRSS")
	ops(measured)
	grew := proctest.Status(t, "VmRSS") - before
	t.Logf("resident set %+.1f MiB over %d operations (%.1f bytes each)", float64(grew)/(1<<20), measured, float64(grew)/measured)
	if grew > bound {
		t.Errorf("the resident set grew %.1f MiB over %d tensor operations, more than %d MiB: gotch's result slots leak (rerun go run ./tools/gotchsetup for the patched copy)",
			float64(grew)/(1<<20), measured, bound>>20)
	}
}
