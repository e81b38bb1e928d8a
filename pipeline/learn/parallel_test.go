package learn

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
)

// TestDataParallelSameSteps: two copies of the model stepping a batch of
// 32 each must take the optimizer where one model stepping batches of 64
// does, up to the order floating-point sums are taken in: the dropout
// masks come with the batches, drawn from the seed. An error in the shares' loss weights
// (a class-weighted mean is not a mean of means) or a gradient left
// unsummed shows up as a different model.
func TestDataParallelSameSteps(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	train := synthWindows(rng, 200, 20)
	test := synthWindows(rng, 40, 20)
	cfg := DefaultConfig()
	cfg.Epochs, cfg.BatchSize, cfg.LR, cfg.Seed = 2, 32, 0.005, 3
	var losses [2][]float64
	lps := make([][][]float32, 2)
	for i, parallel := range []string{ParallelIntraOp, ParallelData} {
		c := cfg
		c.Threads, c.Parallel = 2, parallel
		if parallel == ParallelIntraOp {
			c.BatchSize *= 2 // what one step of the two copies takes
		}
		m, err := Train(context.Background(), c, train, len(devices), func(s EpochStats) { losses[i] = append(losses[i], s.Loss) })
		if err != nil {
			t.Fatalf("%s: %v", parallel, err)
		}
		lp, err := m.LogProbs(test)
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		lps[i] = lp
	}
	t.Logf("epoch losses: one model %v, two copies %v", losses[0], losses[1])
	for e := range losses[0] {
		if d := math.Abs(losses[0][e] - losses[1][e]); d > 1e-4*max(1, losses[0][e]) {
			t.Errorf("epoch %d: loss %.6f on one model, %.6f on two copies", e+1, losses[0][e], losses[1][e])
		}
	}
	var worst float64
	for w := range lps[0] {
		for k := range lps[0][w] {
			worst = max(worst, math.Abs(float64(lps[0][w][k]-lps[1][w][k])))
		}
	}
	t.Logf("largest log-probability difference after %d epochs: %.2g", cfg.Epochs, worst)
	if worst > 1e-3 {
		t.Errorf("the two trainings' models differ by up to %.4f in a log-probability: the data-parallel step is not the whole batch's", worst)
	}
}

// TestDataParallelLearns: the two-copy trainer learns the synthetic task
// (dropout on) about as well as one model does.
func TestDataParallelLearns(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	train := synthWindows(rng, 400, 20)
	test := synthWindows(rng, 200, 20)
	cfg := smallConfig()
	cfg.Epochs, cfg.Threads, cfg.Parallel = 8, 2, ParallelData
	acc := accuracy(t, test, trainPredict(t, cfg, train, test, len(devices)))
	lookup, _ := lookupBaseline(train, test)
	t.Logf("data-parallel on 2 copies: accuracy %.3f, per-port lookup %.3f", acc, lookup)
	if acc < lookup+0.05 {
		t.Errorf("data-parallel accuracy %.3f, not above the lookup baseline %.3f by 0.05", acc, lookup)
	}
}

// TestDropoutMask: the masks drop a share p of the values, keep the mean
// at one, and follow from the seed alone.
func TestDropoutMask(t *testing.T) {
	for _, p := range []float64{0.1, 0.5, 0.8} {
		m := &Model{cfg: Config{Dropout: p, Seed: 7}}
		a, b := m.newDropper().mask(1<<20+3), m.newDropper().mask(1<<20+3)
		var dropped int
		var sum float64
		for i, v := range a {
			if v != b[i] {
				t.Fatalf("p %g: two masks of one seed differ at %d", p, i)
			}
			if v == 0 {
				dropped++
			}
			sum += float64(v)
		}
		share, mean := float64(dropped)/float64(len(a)), sum/float64(len(a))
		t.Logf("p %g: dropped %.4f, mean %.4f", p, share, mean)
		if math.Abs(share-p) > 0.005 || math.Abs(mean-1) > 0.01 {
			t.Errorf("p %g: dropped a share %.4f, mean %.4f; want %g and 1", p, share, mean, p)
		}
	}
	if d := (&Model{cfg: Config{Dropout: 0}}).newDropper(); d != nil {
		t.Error("a model without dropout draws masks")
	}
}
