package learn

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/homemole/homemole/schemas"

	"github.com/homemole/homemole/internal/proctest"
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
