package learn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/homemole/homemole/pipeline/learn/modelfiletest"
	"github.com/homemole/homemole/schemas"
)

// device is a synthetic device class. The classes share ports and overlap
// in frame length and timing, so a single packet says little about its
// device; the run of packets around it says a lot. That is the property
// that makes the paper's windows-of-packets model worth its cost.
type device struct {
	ports     []int32   // destination ports
	portP     []float64 // their probabilities
	lenMean   float64
	lenStd    float64
	meanGap   float64 // mean inter-packet gap, seconds (exponential)
	outbound  float64 // share of outbound packets
	protoBits uint8
}

var devices = []device{
	{ports: []int32{443, 8883, 53}, portP: []float64{.6, .2, .2}, lenMean: 900, lenStd: 350, meanGap: 0.02, outbound: .7, protoBits: 0b1101000},
	{ports: []int32{443, 8883, 123}, portP: []float64{.45, .35, .2}, lenMean: 350, lenStd: 200, meanGap: 1.0, outbound: .5, protoBits: 0b1101000},
	{ports: []int32{443, 53, 123}, portP: []float64{.5, .3, .2}, lenMean: 650, lenStd: 300, meanGap: 0.15, outbound: .4, protoBits: 0b1101000},
	{ports: []int32{8883, 53, 443, 5353}, portP: []float64{.35, .25, .3, .1}, lenMean: 500, lenStd: 300, meanGap: 0.4, outbound: .6, protoBits: 0b1101000},
}

// synthWindows makes windows of n slots in which one device talks for a
// while and another (possibly the same) takes over at a random point, as in
// the paper's noisy windows. Some windows are short (padding after Len) and
// a few packets are unlabeled.
func synthWindows(rng *rand.Rand, count, n int) []*schemas.Window {
	ws := make([]*schemas.Window, count)
	for k := range ws {
		w := schemas.NewWindow(n)
		w.ID = fmt.Sprintf("synth/%d/0", k) // every window a stream of its own
		w.Len = n
		if rng.Float64() < 0.2 {
			w.Len = n/2 + rng.IntN(n-n/2)
		}
		first, second := rng.IntN(len(devices)), rng.IntN(len(devices))
		switchAt := w.Len
		if rng.Float64() < 0.6 {
			switchAt = 1 + rng.IntN(max(w.Len-1, 1))
		}
		for i := range w.Len {
			c := first
			if i >= switchAt {
				c = second
			}
			d := devices[c]
			r := rng.Float64()
			port := d.ports[len(d.ports)-1]
			for j, p := range d.portP {
				if r < p {
					port = d.ports[j]
					break
				}
				r -= p
			}
			w.DPort[i] = port
			w.ProtoBits[i] = d.protoBits
			if port == 53 || port == 123 || port == 5353 {
				w.ProtoBits[i] = 0b1010000 | map[int32]uint8{53: 0b0000010, 123: 0b0000001, 5353: 0b0000010}[port]
			}
			w.Direction[i] = 0
			if rng.Float64() < d.outbound {
				w.Direction[i] = 1
			}
			w.FrameLen[i] = int32(min(max(d.lenMean+d.lenStd*rng.NormFloat64(), 60), 1514))
			w.Interval[i] = float32(rng.ExpFloat64() * d.meanGap)
			w.Label[i] = int16(c)
			if rng.Float64() < 0.03 {
				w.Label[i] = -1
			}
		}
		ws[k] = w
	}
	return ws
}

// accuracy is the share of labeled packets predicted right.
func accuracy(t *testing.T, ws []*schemas.Window, pred [][]int32) float64 {
	t.Helper()
	var ok, total int
	for i, w := range ws {
		if len(pred[i]) != w.Len {
			t.Fatalf("window %d: %d predictions for %d packets", i, len(pred[i]), w.Len)
		}
		for j := range w.Len {
			if w.Label[j] < 0 {
				continue
			}
			total++
			if pred[i][j] == int32(w.Label[j]) {
				ok++
			}
		}
	}
	return float64(ok) / float64(total)
}

// lookupBaseline is the best a per-packet classifier can do on these
// features: the majority training class of each (port, length bucket, gap
// bucket, direction) cell, applied to the test packets.
func lookupBaseline(train, test []*schemas.Window) (lookup, majority float64) {
	type key struct {
		port     int32
		len, gap int
		dir      int8
	}
	keyOf := func(w *schemas.Window, i int) key {
		return key{w.DPort[i], int(w.FrameLen[i]) / 100, int(math.Floor(math.Log10(float64(w.Interval[i]) + 1e-6))), w.Direction[i]}
	}
	cells := map[key][]int{}
	overall := make([]int, len(devices))
	for _, w := range train {
		for i := range w.Len {
			if l := w.Label[i]; l >= 0 {
				k := keyOf(w, i)
				if cells[k] == nil {
					cells[k] = make([]int, len(devices))
				}
				cells[k][l]++
				overall[l]++
			}
		}
	}
	argmax := func(c []int) int { return slices.Index(c, slices.Max(c)) }
	major := argmax(overall)
	var okL, okM, total int
	for _, w := range test {
		for i := range w.Len {
			l := int(w.Label[i])
			if l < 0 {
				continue
			}
			total++
			guess := major
			if c, ok := cells[keyOf(w, i)]; ok {
				guess = argmax(c)
			}
			if guess == l {
				okL++
			}
			if major == l {
				okM++
			}
		}
	}
	return float64(okL) / float64(total), float64(okM) / float64(total)
}

func smallConfig() Config {
	cfg := DefaultConfig()
	cfg.Epochs = 12
	cfg.BatchSize = 32
	cfg.LR = 0.005 // the paper's 0.001 needs more epochs than a unit test affords
	cfg.Seed = 7
	return cfg
}

var shared struct {
	once        sync.Once
	model       *Model
	train, test []*schemas.Window
	stats       []EpochStats
	err         error
}

// trainedModel trains the synthetic task once for the tests that need a
// trained model.
func trainedModel(t *testing.T) (*Model, []*schemas.Window, []*schemas.Window) {
	t.Helper()
	shared.once.Do(func() {
		rng := rand.New(rand.NewPCG(1, 2))
		shared.train = synthWindows(rng, 800, 20)
		shared.test = synthWindows(rng, 300, 20)
		shared.model, shared.err = Train(context.Background(), smallConfig(), shared.train, len(devices), func(s EpochStats) {
			shared.stats = append(shared.stats, s)
		})
	})
	if shared.err != nil {
		t.Fatalf("Train: %v", shared.err)
	}
	return shared.model, shared.train, shared.test
}

func TestLearnsContext(t *testing.T) {
	m, train, test := trainedModel(t)
	for _, s := range shared.stats {
		t.Logf("epoch %2d loss %.3f train acc %.3f %6.0f windows/s", s.Epoch, s.Loss, s.Accuracy, s.WindowsPerSec)
	}
	if len(shared.stats) != smallConfig().Epochs {
		t.Fatalf("progress called %d times, want %d", len(shared.stats), smallConfig().Epochs)
	}
	if first, last := shared.stats[0], shared.stats[len(shared.stats)-1]; !(last.Loss < first.Loss) {
		t.Errorf("training loss did not fall: epoch 1 %.3f, last %.3f", first.Loss, last.Loss)
	}
	pred, err := m.Predict(test)
	if err != nil {
		t.Fatal(err)
	}
	acc := accuracy(t, test, pred)
	lookup, majority := lookupBaseline(train, test)
	t.Logf("held-out accuracy %.3f; per-packet lookup %.3f; majority class %.3f", acc, lookup, majority)
	if acc < 0.8 {
		t.Errorf("held-out accuracy %.3f, want >= 0.8", acc)
	}
	if acc < majority+0.3 {
		t.Errorf("held-out accuracy %.3f is not well above the majority guess %.3f", acc, majority)
	}
	if acc < lookup+0.1 {
		t.Errorf("held-out accuracy %.3f is not well above a per-packet lookup (%.3f): the model does not use the window", acc, lookup)
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	m, _, test := trainedModel(t)
	want, err := m.Predict(test)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := m.Save(&buf); err != nil {
		t.Fatalf("Save: %v", err)
	}
	size := buf.Len()
	loaded, err := Load(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer loaded.Close()
	if loaded.Config() != m.Config() || loaded.NumClasses() != m.NumClasses() {
		t.Errorf("loaded config %+v / %d classes, saved %+v / %d", loaded.Config(), loaded.NumClasses(), m.Config(), m.NumClasses())
	}
	got, err := loaded.Predict(test)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Fatalf("window %d: loaded model predicts %v, saved model %v", i, got[i], want[i])
		}
	}
	t.Logf("checkpoint is %d bytes", size)
	var again bytes.Buffer
	if err := loaded.Save(&again); err != nil {
		t.Fatalf("Save of the loaded model: %v", err)
	}
	if !bytes.Equal(again.Bytes(), buf.Bytes()) {
		t.Errorf("saving the loaded model gives a different checkpoint (%d vs %d bytes)", again.Len(), size)
	}

	// A truncated or foreign stream must fail cleanly, not crash.
	for name, data := range map[string][]byte{
		"truncated": buf.Bytes()[:size-100],
		"foreign":   []byte("PK\x03\x04 this is a zip file, not a model"),
		"empty":     nil,
		// A header claiming an LSTM far beyond its weights is refused before
		// the model is allocated.
		"oversized": modelfiletest.EditMeta(t, buf.Bytes(), len(checkpointMagic), func(meta map[string]any) {
			meta["config"].(map[string]any)["Hidden"] = 1 << 20
		}),
	} {
		if m, err := Load(bytes.NewReader(data)); err == nil {
			m.Close()
			t.Errorf("Load of a %s checkpoint succeeded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// FuzzLoad: damaged checkpoints are refused with an error, never a crash
// or an allocation their weights cannot back; what loads can predict.
func FuzzLoad(f *testing.F) {
	rng := rand.New(rand.NewPCG(5, 6))
	ws := synthWindows(rng, 40, 8)
	cfg := smallConfig()
	cfg.Epochs, cfg.Hidden, cfg.EmbedDim, cfg.LenEmbedDim, cfg.MaxPorts, cfg.MaxLens = 1, 4, 3, 2, 8, 8
	m, err := Train(context.Background(), cfg, ws, len(devices), nil)
	if err != nil {
		f.Fatal(err)
	}
	modelfiletest.Seed(f, m.Save, len(checkpointMagic)+8)
	m.Close()
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Load(bytes.NewReader(data))
		if err != nil {
			return
		}
		defer m.Close()
		if _, err := m.Predict(ws[:2]); err != nil {
			return
		}
	})
}

func TestPaddingAndUnlabeled(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	ws := synthWindows(rng, 60, 12)
	ws[0].Len = 0 // a window with no packets at all
	ws[1].Len = 1
	for _, w := range ws[2:10] { // windows nobody labeled
		for i := range w.Label {
			w.Label[i] = -1
		}
	}
	// Labels in padding slots are not the caller's promise: Train must
	// ignore them, even when they are out of range.
	ws[10].Len = 6
	for i := ws[10].Len; i < len(ws[10].Label); i++ {
		ws[10].Label[i] = 99
	}
	cfg := smallConfig()
	cfg.Epochs = 2
	cfg.BatchSize = 16
	cfg.Bidirectional = false // the plain LSTM of the paper is covered too
	var stats []EpochStats
	m := trainT(t, cfg, ws, len(devices), func(s EpochStats) { stats = append(stats, s) })
	defer m.Close()
	if m.Device() != "cpu" && !strings.HasPrefix(m.Device(), "cuda:") {
		t.Errorf("Device() = %q", m.Device())
	}
	for _, s := range stats {
		if math.IsNaN(s.Loss) || s.Loss <= 0 {
			t.Errorf("epoch %d: loss %v", s.Epoch, s.Loss)
		}
	}
	// Another window size than training's is fine at inference.
	other := synthWindows(rng, 5, 7)
	other[0].Len = 3
	all := append(slices.Clone(ws), other...)
	pred, err := m.Predict(all)
	if err != nil {
		t.Fatalf("Predict: %v", err)
	}
	if len(pred) != len(all) {
		t.Fatalf("%d prediction rows for %d windows", len(pred), len(all))
	}
	for i, w := range all {
		if len(pred[i]) != w.Len {
			t.Errorf("window %d: %d predictions, Len %d", i, len(pred[i]), w.Len)
		}
		for _, p := range pred[i] {
			if p < 0 || int(p) >= len(devices) {
				t.Errorf("window %d: predicted class %d outside [0, %d)", i, p, len(devices))
			}
		}
	}
	if pred, err := m.Predict(nil); err != nil || len(pred) != 0 {
		t.Errorf("Predict(nil) = %v, %v", pred, err)
	}

	// Nothing labeled at all is an error, not a silent no-op model.
	if m, err := Train(context.Background(), cfg, ws[2:10], len(devices), nil); err == nil {
		m.Close()
		t.Error("Train on windows without labels succeeded")
	}
}

func TestSeedReproducible(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	ws := synthWindows(rng, 64, 10)
	cfg := smallConfig()
	cfg.Epochs = 2
	cfg.BatchSize = 16
	run := func() ([]float64, [][]int32) {
		var losses []float64
		m := trainT(t, cfg, ws, len(devices), func(s EpochStats) { losses = append(losses, s.Loss) })
		defer m.Close()
		pred, err := m.Predict(ws)
		if err != nil {
			t.Fatal(err)
		}
		return losses, pred
	}
	l1, p1 := run()
	l2, p2 := run()
	if !slices.Equal(l1, l2) {
		t.Errorf("same seed, different losses: %v vs %v", l1, l2)
	}
	for i := range p1 {
		if !slices.Equal(p1[i], p2[i]) {
			t.Fatalf("same seed, different predictions for window %d", i)
		}
	}
}

func TestTrainCancelled(t *testing.T) {
	ws := synthWindows(rand.New(rand.NewPCG(7, 8)), 32, 10)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m, err := Train(ctx, smallConfig(), ws, len(devices), nil)
	if err == nil {
		m.Close()
		t.Fatal("Train with a cancelled context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v does not wrap context.Canceled", err)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig invalid: %v", err)
	}
	for _, tc := range []struct {
		field string
		mod   func(*Config)
	}{
		{"Hidden", func(c *Config) { c.Hidden = 0 }},
		{"EmbedDim", func(c *Config) { c.EmbedDim = -3 }},
		{"Dropout", func(c *Config) { c.Dropout = 1 }},
		{"Dropout", func(c *Config) { c.Dropout = math.NaN() }},
		{"LR", func(c *Config) { c.LR = 0 }},
		{"LR", func(c *Config) { c.LR = math.Inf(1) }},
		{"Epochs", func(c *Config) { c.Epochs = 0 }},
		{"BatchSize", func(c *Config) { c.BatchSize = -1 }},
		{"MaxPorts", func(c *Config) { c.MaxPorts = 0 }},
		{"Threads", func(c *Config) { c.Threads = -2 }},
		{"Context", func(c *Config) { c.Context = "session" }},
		{"MaxLens", func(c *Config) { c.LenEmbedDim, c.MaxLens = 0, 0 }}, // the stream context still needs lengths
	} {
		cfg := DefaultConfig()
		tc.mod(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("bad %s: Validate() = %v, want an error naming %s", tc.field, err, tc.field)
		}
		if _, err := Train(context.Background(), cfg, synthWindows(rand.New(rand.NewPCG(1, 1)), 2, 5), 4, nil); err == nil {
			t.Errorf("Train accepted a config with bad %s", tc.field)
		}
	}
	// Several problems are reported together.
	cfg := DefaultConfig()
	cfg.Hidden, cfg.Epochs = 0, 0
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "Hidden") || !strings.Contains(err.Error(), "Epochs") {
		t.Errorf("Validate() = %v, want both Hidden and Epochs named", err)
	}

	// Inputs that no config can fix.
	ws := synthWindows(rand.New(rand.NewPCG(1, 1)), 4, 5)
	ws[0].Len, ws[0].Label[0] = 5, 3
	if _, err := Train(context.Background(), DefaultConfig(), ws, 0, nil); err == nil {
		t.Error("Train accepted numClasses 0")
	}
	if _, err := Train(context.Background(), DefaultConfig(), ws, 2, nil); err == nil || !strings.Contains(err.Error(), "label") {
		t.Errorf("Train with labels beyond numClasses: %v, want a label error", err)
	}
	mixed := append(slices.Clone(ws), synthWindows(rand.New(rand.NewPCG(1, 1)), 1, 6)...)
	if _, err := Train(context.Background(), DefaultConfig(), mixed, 4, nil); err == nil {
		t.Error("Train accepted windows of different sizes")
	}
}

// BenchmarkTrain measures training throughput of the paper's BLSTM at its
// window size (n = 100) and batch 64.
func BenchmarkTrain(b *testing.B) {
	const windows = 640
	ws := synthWindows(rand.New(rand.NewPCG(9, 9)), windows, 100)
	cfg := DefaultConfig()
	cfg.Epochs = 1
	// The paper's model exactly, as tools/benchref/blstm_ref.py builds it
	// in PyTorch, so the two figures compare like with like.
	cfg.LenEmbedDim = 0
	cfg.Context = ContextNone
	cfg.Threads = 1 // as the reference (see blstm_ref.py)
	var rate float64
	for b.Loop() {
		m, err := Train(context.Background(), cfg, ws, len(devices), func(s EpochStats) { rate = s.WindowsPerSec })
		if err != nil {
			b.Fatal(err)
		}
		m.Close()
	}
	b.ReportMetric(rate, "windows/s")
	b.ReportMetric(float64(TorchThreads()), "torch-threads")
}

// BenchmarkTrainDefault measures training throughput of the model people
// train (DefaultConfig: frame-length embedding, stream context) at n = 100
// and batch 64, on 1 thread, on 2 (intra-op) and on 2 copies of the model
// (data-parallel, one thread each); tools/benchref/blstm_ref.py
// --model default builds the same model in PyTorch. synthWindows' lengths
// fill the 512 kept lengths, so the embedding has 514 rows and the stream
// context 1542 kinds (3 directions x 514), as in the reference.
func BenchmarkTrainDefault(b *testing.B) {
	const windows = 640
	ws := synthWindows(rand.New(rand.NewPCG(9, 9)), windows, 100)
	for _, run := range []struct {
		name     string
		threads  int
		parallel string
		release  bool
	}{{"threads=1", 1, "", false}, {"threads=2", 2, ParallelIntraOp, false}, {"data=2", 2, ParallelData, false},
		// A release of glibc's free memory (ReleaseNative, malloc_trim)
		// every second beside the steps: what pipeline/train's
		// releaseNative would cost if it did not release only when native
		// memory grows.
		{"threads=1,release=1s", 1, "", true}} {
		b.Run(run.name, func(b *testing.B) {
			// Three epochs, the best after the first counted, as
			// blstm_ref.py --epochs 3 counts its own: a fresh model's first
			// epoch also pays for Adam's state and the allocator's first
			// growth (and, in the first run, libtorch's kernel set-up), and
			// an epoch is a second long, short enough for a neighbour's
			// burst on this shared machine to take half of it.
			cfg := DefaultConfig()
			cfg.Epochs, cfg.Threads, cfg.Parallel = 3, run.threads, run.parallel
			if run.release {
				defer StartReleases(time.Second, nil)()
			}
			var rate float64
			for b.Loop() {
				m, err := Train(context.Background(), cfg, ws, len(devices), func(s EpochStats) {
					if s.Epoch > 1 {
						rate = max(rate, s.WindowsPerSec)
					}
				})
				if err != nil {
					b.Fatal(err)
				}
				if lr, br := m.feat.lenRows(), m.feat.bagRows(); lr != 514 || br != 3*514 {
					b.Fatalf("length rows %d, kinds %d: blstm_ref.py --model default has 514 and 1542", lr, br)
				}
				m.Close()
			}
			b.ReportMetric(rate, "windows/s")
			b.ReportMetric(float64(TorchThreads()), "torch-threads")
		})
	}
}

// trainT trains cfg on train, failing the test when Train fails; the
// caller closes the model.
func trainT(t testing.TB, cfg Config, train []*schemas.Window, classes int, progress func(EpochStats)) *Model {
	t.Helper()
	m, err := Train(context.Background(), cfg, train, classes, progress)
	if err != nil {
		t.Fatalf("train: %v", err)
	}
	return m
}

// trainPredict trains cfg on train and labels every packet of test.
func trainPredict(t *testing.T, cfg Config, train, test []*schemas.Window, classes int) [][]int32 {
	t.Helper()
	m := trainT(t, cfg, train, classes, nil)
	defer m.Close()
	pred, err := m.Predict(test)
	if err != nil {
		t.Fatal(err)
	}
	return pred
}

// TestHeaderFeatures: two devices whose packets differ only in the
// initial TTL and TCP window of their network stacks. The paper's inputs
// cannot tell them apart; with header features the model must.
func TestHeaderFeatures(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	mk := func(count int) []*schemas.Window {
		ws := make([]*schemas.Window, count)
		for k := range ws {
			w := schemas.NewWindow(8)
			w.ID, w.Len = fmt.Sprintf("hdr/%d/0", k), 8
			c := rng.IntN(2)
			for i := range w.Len {
				w.DPort[i], w.ProtoBits[i], w.Direction[i] = 443, 0b1101000, 1
				w.FrameLen[i] = int32(60 + rng.IntN(400))
				w.Interval[i] = float32(rng.ExpFloat64())
				w.Transport[i], w.TTL[i], w.TCPWindow[i] = 6, 64, 29200
				if c == 1 {
					w.TTL[i], w.TCPWindow[i] = 128, 8192
				}
				w.Label[i] = int16(c)
			}
			ws[k] = w
		}
		return ws
	}
	train, test := mk(128), mk(64)
	cfg := smallConfig()
	cfg.Epochs = 20
	cfg.LenEmbedDim = 0
	cfg.Context = ContextNone // random lengths would give the stream context noise to learn
	score := func(header bool) float64 {
		cfg.HeaderFeatures = header
		return accuracy(t, test, trainPredict(t, cfg, train, test, 2))
	}
	with, without := score(true), score(false)
	t.Logf("held-out accuracy with header features %.3f, without %.3f", with, without)
	if with < 0.95 || without > 0.75 {
		t.Errorf("with header features %.3f (want >= 0.95), without %.3f (want near chance, <= 0.75)", with, without)
	}
	// A window without the header columns is refused, not misread.
	bad := mk(1)[0]
	bad.TTL = nil
	cfg.HeaderFeatures = true
	if _, err := Train(context.Background(), cfg, append(mk(4), bad), 2, nil); err == nil || !strings.Contains(err.Error(), "TTL") {
		t.Errorf("a window without TTL: %v, want an error naming TTL", err)
	}
}

// TestDevice: the device names, and where they resolve on a machine
// without a GPU (every test machine): auto and cpu to the CPU, cuda to an
// error rather than a silent CPU run.
func TestDevice(t *testing.T) {
	for _, ok := range []string{"", "auto", "cpu", "cuda", "cuda:0", "cuda:3"} {
		if err := CheckDevice(ok); err != nil {
			t.Errorf("CheckDevice(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"gpu", "CUDA", "cuda:", "cuda:-1", "cuda:x", "mps"} {
		if err := CheckDevice(bad); err == nil {
			t.Errorf("CheckDevice(%q) accepted it", bad)
		}
		cfg := DefaultConfig()
		cfg.Device = bad
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "Device") {
			t.Errorf("Validate with Device %q: %v", bad, err)
		}
	}
	auto, err := ResolveDevice("")
	if err != nil {
		t.Fatal(err)
	}
	if auto.CUDA {
		t.Skip("libtorch sees a GPU here; this test checks the CPU-only case")
	}
	if auto.Using != "cpu" || auto.Asked != "auto" {
		t.Errorf("auto resolved to %+v, want cpu", auto)
	}
	if _, err := ResolveDevice("cuda"); err == nil || !strings.Contains(err.Error(), "no GPU") {
		t.Errorf("cuda without a GPU: %v", err)
	}
	cfg := DefaultConfig()
	cfg.Device, cfg.Epochs = "cuda", 1
	ws := synthWindows(rand.New(rand.NewPCG(1, 2)), 8, 10)
	if _, err := Train(context.Background(), cfg, ws, len(devices), nil); err == nil || !strings.Contains(err.Error(), "no GPU") {
		t.Errorf("Train on cuda without a GPU: %v", err)
	}
}

// TestEpochTimes: every epoch reports its steps and splits their time into
// waiting for the batch and the step itself, and the batches' encoding.
func TestEpochTimes(t *testing.T) {
	ws := synthWindows(rand.New(rand.NewPCG(3, 4)), 100, 20)
	cfg := DefaultConfig()
	cfg.Epochs, cfg.BatchSize, cfg.Device = 2, 16, DeviceCPU
	var stats []EpochStats
	m := trainT(t, cfg, ws, len(devices), func(e EpochStats) { stats = append(stats, e) })
	defer m.Close()
	if m.Device() != "cpu" {
		t.Errorf("model on %s, asked for cpu", m.Device())
	}
	labeled := 0
	for _, w := range ws {
		if hasLabel(w) {
			labeled++
		}
	}
	if len(stats) != 2 {
		t.Fatalf("%d epochs reported, want 2", len(stats))
	}
	for _, e := range stats {
		if want := (labeled + 15) / 16; e.Steps != want {
			t.Errorf("epoch %d: %d steps, want %d", e.Epoch, e.Steps, want)
		}
		if e.Compute <= 0 || e.Prepare <= 0 || e.DataWait < 0 || e.DataWait+e.Compute > e.Elapsed {
			t.Errorf("epoch %d: data wait %v, compute %v, prepare %v, elapsed %v", e.Epoch, e.DataWait, e.Compute, e.Prepare, e.Elapsed)
		}
		if !(e.Loss > 0) || e.Accuracy <= 0 || e.Accuracy > 1 {
			t.Errorf("epoch %d: loss %v, accuracy %v", e.Epoch, e.Loss, e.Accuracy)
		}
	}
}

// TestFlattenFailsSoftly: flattening the LSTM's weights for cuDNN is an
// optimisation; where libtorch refuses it (CPU tensors here, a stubbed
// wrapper on another libtorch) it must return the error, not end the
// process as gotch's Must_CudnnRnnFlattenWeight would.
func TestFlattenFailsSoftly(t *testing.T) {
	var ws []ts.Tensor
	for _, dims := range [][]int64{{16, 3}, {16, 4}, {16}, {16}} {
		x, err := ts.Zeros(dims, gotch.Float, gotch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer x.MustDrop()
		ws = append(ws, *x)
	}
	if err := flattenForCuDNN(ws, 3, 4, false); err == nil {
		t.Error("cuDNN flattened CPU tensors")
	} else {
		t.Logf("as expected: %s", strings.SplitN(err.Error(), "\n", 2)[0])
	}
}
