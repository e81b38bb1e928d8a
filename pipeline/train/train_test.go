package train

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/internal/proctest"
	"github.com/homemole/homemole/pipeline/build"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
)

func TestSplitGroups(t *testing.T) {
	groups := []string{"h/a", "h/b", "h/c", "h/d", "h/e", "h/f", "h/g", "h/h", "h/i", "h/j"}
	train, test, err := SplitGroups(groups, 0.2, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(test) != 2 || len(train) != 8 {
		t.Fatalf("split %d/%d, want 8/2", len(train), len(test))
	}
	seen := map[string]bool{}
	for _, g := range append(append([]string(nil), train...), test...) {
		if seen[g] {
			t.Fatalf("group %s on both sides", g)
		}
		seen[g] = true
	}
	train2, test2, _ := SplitGroups(groups, 0.2, 7)
	if strings.Join(test, ",") != strings.Join(test2, ",") || strings.Join(train, ",") != strings.Join(train2, ",") {
		t.Error("the same seed must give the same split")
	}
	if _, _, err := SplitGroups([]string{"only"}, 0.2, 1); err == nil {
		t.Error("one session cannot be split into training and held-out data")
	}
	if tr, te, _ := SplitGroups([]string{"a", "b"}, 0.01, 1); len(tr) != 1 || len(te) != 1 {
		t.Error("at least one group on each side")
	}
}

// TestWalkingSkeleton runs the whole slice on a generated home: capture ->
// label -> window over embedded NATS and S3, then the trainer job. The
// held-out sessions were never trained on, and the model must beat always
// guessing the commonest device on them.
func TestWalkingSkeleton(t *testing.T) {
	ctx, log, st := buildSkeleton(t, 5*time.Minute)

	cfg := learn.DefaultConfig()
	cfg.Epochs = 8
	epochs := 0
	job := Job{Store: st, Dataset: "skeleton", Version: "v1", RunName: "skeleton-blstm", Spec: Spec{Name: "blstm", Learn: cfg}, Seed: 3, Log: log,
		Progress: func(learn.EpochStats) { epochs++ }}
	out, err := job.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := out.Report
	if epochs != cfg.Epochs || len(r.Epochs) != cfg.Epochs {
		t.Errorf("progress reported %d epochs, report holds %d, want %d", epochs, len(r.Epochs), cfg.Epochs)
	}
	for _, g := range r.TestGroups {
		for _, h := range r.TrainGroups {
			if g == h {
				t.Fatalf("session %s is on both sides of the split", g)
			}
		}
	}
	t.Logf("held-out accuracy %.3f, commonest-device baseline %.3f, macro F1 %.3f", float64(r.Accuracy), r.MajorityShare, float64(r.MacroF1))
	if float64(r.Accuracy) < 0.8 || float64(r.Accuracy) <= r.MajorityShare {
		t.Errorf("held-out accuracy %.3f: want at least 0.8 and above the commonest-device baseline %.3f", float64(r.Accuracy), r.MajorityShare)
	}
	if len(r.PerDevice) < 3 {
		t.Errorf("only %d devices in the held-out sessions", len(r.PerDevice))
	}

	// The checkpoint and the report are in the store, and the checkpoint
	// reproduces the report's predictions.
	data, err := st.Get(ctx, out.ReportJSON)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(data, &back); err != nil || back["run"] != "skeleton-blstm" {
		t.Fatalf("report.json: %v", err)
	}
	if html, err := st.Get(ctx, out.ReportHTML); err != nil || !strings.Contains(string(html), "<svg") {
		t.Fatalf("report.html: %v", err)
	}
	// The held-out sessions calibrated the unknown-device threshold.
	if _, meta, err := LoadModel(ctx, st, "skeleton-blstm"); err != nil || meta.Unknown == nil || meta.Unknown.Score != ScoreMeanProb ||
		meta.Unknown.Threshold <= 0 || meta.Unknown.FalseUnknown > DefaultUnknownQuantile || len(meta.Unknown.Sessions) != len(r.TestGroups) {
		t.Errorf("model.json's unknown-device threshold: %+v (%v), want one calibrated on the %d held-out sessions", meta.Unknown, err, len(r.TestGroups))
	} else {
		t.Logf("unknown-device threshold %.3f over %d held-out hosts", meta.Unknown.Threshold, meta.Unknown.Hosts)
	}
	ckpt, err := st.Get(ctx, out.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	model, err := learn.Load(bytes.NewReader(ckpt))
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close()
	m, err := dataset.Load(ctx, st, "skeleton", "v1")
	if err != nil {
		t.Fatal(err)
	}
	inTest := map[string]bool{}
	for _, g := range r.TestGroups {
		inTest[g] = true
	}
	testW, err := dataset.Windows(ctx, st, m, func(g string) bool { return inTest[g] })
	if err != nil {
		t.Fatal(err)
	}
	preds, err := model.Predict(testW)
	if err != nil {
		t.Fatal(err)
	}
	right, total := 0, 0
	for i, w := range testW {
		for k := 0; k < w.Len; k++ {
			if w.Label[k] >= 0 {
				total++
				if int32(w.Label[k]) == preds[i][k] {
					right++
				}
			}
		}
	}
	if got := float64(right) / float64(total); got != float64(r.Accuracy) {
		t.Errorf("the stored checkpoint scores %.4f on the held-out windows, the report says %.4f", got, float64(r.Accuracy))
	}
}

// buildSkeleton builds dataset skeleton/v1 (windows of 40, ind) from a
// generated home of five sessions, through the real pipeline on embedded
// servers, and returns the test's context (it ends after within), its
// logger and the store holding the dataset.
func buildSkeleton(t *testing.T, within time.Duration) (context.Context, *slog.Logger, store.Store) {
	t.Helper()
	ctx, log := embeddedtest.Context(t, within), embeddedtest.Log()
	dir := t.TempDir()
	home, err := homegen.Generate(homegen.Config{Seed: 3, Sessions: 5, SessionDuration: 10 * time.Minute}, filepath.Join(dir, "captures"))
	if err != nil {
		t.Fatal(err)
	}
	c := home.Campaign("skeleton", "home-1")
	_, conn, st := embeddedtest.Start(ctx, t, log)
	spec := window.Spec{Dataset: "skeleton", Version: "v1", Kind: schemas.KindInd, Size: 40, Labels: build.LabelsOf(c)}
	res, err := (&build.Build{Campaign: c, Spec: spec, Bus: conn, Store: st, Log: log}).Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.Windows == 0 {
		t.Fatal("no windows")
	}
	return ctx, log, st
}

// TestStreamBudgetTooSmall: a --max-memory below what the trainer needs
// beside its shuffle buffer is refused before training, with the parts it
// was spent on and the fix.
func TestStreamBudgetTooSmall(t *testing.T) {
	ctx, log, st := buildSkeleton(t, 5*time.Minute)
	cfg := learn.DefaultConfig()
	cfg.Epochs = 1
	job := Job{Store: st, Dataset: "skeleton", Version: "v1", RunName: "too-small", Spec: Spec{Name: "blstm", Learn: cfg, MaxMemory: 8 << 20}, Seed: 3, Log: log,
		Progress: func(learn.EpochStats) { t.Error("a budget with no room for one batch trained an epoch") }}
	_, err := job.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "--max-memory 8388608 bytes") || !strings.Contains(err.Error(), "libtorch's reserve") || !strings.Contains(err.Error(), "raise --max-memory") {
		t.Fatalf("training under an 8 MiB budget: %v, want a refusal naming the budget, its parts and the fix", err)
	}
}

// TestStreamTrainingTrains: under a budget the trainer streams its windows,
// trains and judges the held-out sessions like the one reading them whole,
// and counts the same training windows.
func TestStreamTrainingTrains(t *testing.T) {
	ctx, log, st := buildSkeleton(t, 5*time.Minute)
	cfg := learn.DefaultConfig()
	cfg.Epochs = 2
	run := func(name string, maxMemory int64) *Outcome {
		job := Job{Store: st, Dataset: "skeleton", Version: "v1", RunName: name, Spec: Spec{Name: "blstm", Learn: cfg, MaxMemory: maxMemory}, Seed: 3, Log: log}
		out, err := job.Run(ctx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return out
	}
	streamed, whole := run("streamed", 128<<20), run("whole", 0)
	t.Logf("streamed: %d training windows, held-out accuracy %.3f; whole: %d, %.3f", streamed.Report.TrainWindows, streamed.Report.Accuracy, whole.Report.TrainWindows, whole.Report.Accuracy)
	if streamed.Report.TrainWindows != whole.Report.TrainWindows || streamed.Report.TrainWindows == 0 {
		t.Errorf("streamed %d training windows, read whole %d", streamed.Report.TrainWindows, whole.Report.TrainWindows)
	}
	if streamed.Report.Accuracy < whole.Report.Accuracy-0.15 {
		t.Errorf("streamed held-out accuracy %.3f, read whole %.3f", streamed.Report.Accuracy, whole.Report.Accuracy)
	}
	// The familiarity test judges hosts against the training windows'
	// packet kinds, gathered as they stream by as from the whole set.
	if streamed.Unknown == nil || whole.Unknown == nil || streamed.Unknown.Familiarity == nil || whole.Unknown.Familiarity == nil {
		t.Fatalf("streamed rule %+v, whole %+v: want both with a familiarity test", streamed.Unknown, whole.Unknown)
	}
	sk, wk := streamed.Unknown.Familiarity.Kinds, whole.Unknown.Familiarity.Kinds
	if !slices.EqualFunc(sk, wk, slices.Equal) || len(wk) == 0 || len(wk[0]) == 0 {
		t.Errorf("streamed training's packet kinds %v, read whole %v", sk, wk)
	}
}

// TestReleaseNative: native memory is the resident set less the Go
// runtime's, positive with libtorch loaded; the watcher releases and stops.
func TestReleaseNative(t *testing.T) {
	if n := nativeMemory(); n <= 0 {
		t.Skipf("native memory %d: no /proc/self/statm here", n)
	}
	stop := releaseNative(time.Millisecond, -1) // over the allowance from the start: releases every tick
	time.Sleep(20 * time.Millisecond)
	stop()
	if n := nativeMemory(); n <= 0 {
		t.Errorf("native memory %d after the releases, want the binary's and libtorch's pages", n)
	}
}

// streamChild is the environment variable that turns this test binary
// into one trainer process, so that its peak RSS (VmHWM) counts the
// trainer alone, not the embedded servers that built the dataset.
const streamChild = "HOMEMOLE_TEST_STREAM_CHILD"

// childResult is what a trainer process reports on stdout.
type childResult struct {
	// BaselineHWM is the runtime's resident set before any window of the
	// dataset is read: libtorch loaded and warmUpSteps training steps of
	// the same model taken on synthetic batches of the dataset's window
	// size, then their windows freed and the peak reset (clear_refs).
	// libtorch sets up its thread pool and kernels on the first step, and
	// glibc's arenas grow over the first twenty or so (measured: 215 MiB
	// after one step, 235 after twenty, 237 after thirty), whatever the
	// data.
	BaselineHWM int64 `json:"baseline_hwm"`
	ModelBytes  int64 `json:"model_bytes"` // weights, gradients and Adam's two moments
	PeakHWM     int64 `json:"peak_hwm"`
	// Peak is the largest resident set sampled (every 50 ms) with the Go
	// runtime's share of it and the job's last log message before it.
	Peak     proctest.Peak `json:"peak"`
	Accuracy float64       `json:"accuracy"`
	TrainN   int           `json:"train_windows"`
}

// warmUpSteps is how many training steps the baseline is measured after.
const warmUpSteps = 20

// warmUp takes warmUpSteps training steps of cfg's model on synthetic
// windows of n slots whose ports and lengths fill the feature
// vocabularies, so the model it returns the size of is the largest cfg
// makes for numClasses classes.
func warmUp(cfg learn.Config, n, numClasses int) (params int64, err error) {
	rng := rand.New(rand.NewPCG(1, 1))
	ws := make([]*schemas.Window, warmUpSteps*cfg.BatchSize)
	for k := range ws {
		w := schemas.NewWindow(n)
		w.ID, w.Len = fmt.Sprintf("warm-up/%d/ind/dev/0", k), n
		for i := range n {
			w.DPort[i], w.FrameLen[i] = int32(rng.IntN(4*cfg.MaxPorts)), int32(60+rng.IntN(1455))
			w.Direction[i], w.ProtoBits[i] = int8(rng.IntN(2)), 0b1101000
			w.Interval[i] = float32(rng.ExpFloat64())
			w.Label[i] = int16(rng.IntN(numClasses))
		}
		ws[k] = w
	}
	cfg.Epochs = 1
	m, err := learn.Train(context.Background(), cfg, ws, numClasses, nil)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	return m.Params(), nil
}

// TestStreamChild is the trainer process TestStreamTrainingStaysInBudget
// starts; run alone it does nothing.
func TestStreamChild(t *testing.T) {
	cfgJSON := os.Getenv(streamChild)
	if cfgJSON == "" {
		t.Skip("started by TestStreamTrainingStaysInBudget only")
	}
	var in struct {
		S3        store.S3Config
		MaxMemory int64
		Epochs    int
		Window    int
		Classes   int
	}
	if err := json.Unmarshal([]byte(cfgJSON), &in); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	st, err := store.OpenS3(ctx, in.S3)
	if err != nil {
		t.Fatal(err)
	}
	cfg := learn.DefaultConfig()
	cfg.Epochs, cfg.Threads = in.Epochs, 1
	// libtorch's own memory is there whatever the data: count from here.
	params, err := warmUp(cfg, in.Window, in.Classes)
	if err != nil {
		t.Fatal(err)
	}
	// The warm-up's windows are garbage now: hand their pages back and
	// start the peak from here, so the baseline holds the runtime, not
	// them.
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Skipf("cannot reset the peak RSS (/proc/self/clear_refs): %v", err)
	}
	base := proctest.Status(t, "VmHWM")
	sampler := proctest.StartSampler(50 * time.Millisecond)
	if b := sampler.Stop(); b.RSS > 0 {
		t.Logf("baseline's resident set %d MiB: Go runtime %d MiB, native %d MiB", b.RSS>>20, b.Go>>20, b.Native()>>20)
	}
	t.Logf("baseline: VmHWM %d MiB after %d warm-up steps, their windows freed and the peak reset", base>>20, warmUpSteps)
	defer func() { t.Logf("after the run: VmHWM %d MiB", proctest.Status(t, "VmHWM")>>20) }()
	sampler = proctest.StartSampler(50 * time.Millisecond)
	job := Job{Store: st, Dataset: "big", Version: "v1", RunName: "stream", Spec: Spec{Name: "blstm", Learn: cfg, MaxMemory: in.MaxMemory},
		TestShare: 0.05, Seed: 3, Log: slog.New(phaseHandler{embeddedtest.Log().Handler(), sampler}),
		Progress: func(s learn.EpochStats) {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			hwm, inuse := proctest.Status(t, "VmHWM"), ms.HeapInuse
			runtime.GC()
			runtime.ReadMemStats(&ms)
			t.Logf("epoch %d: VmHWM %d MiB, Go heap in use %d MiB, %d MiB live after a collection", s.Epoch, hwm>>20, inuse>>20, ms.HeapAlloc>>20)
		}}
	out, err := job.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	peak := sampler.Stop()
	t.Logf("largest sampled RSS %d MiB while %q: Go runtime %d MiB, native %d MiB", peak.RSS>>20, peak.Phase, peak.Go>>20, peak.Native()>>20)
	res, _ := json.Marshal(childResult{BaselineHWM: base, ModelBytes: 4 * 4 * params, PeakHWM: proctest.Status(t, "VmHWM"), Peak: peak, Accuracy: float64(out.Report.Accuracy), TrainN: out.Report.TrainWindows})
	fmt.Printf("CHILD %s\n", res)
}

// phaseHandler names the sampler's phase after each message the job logs,
// so the peak says what the trainer was doing.
type phaseHandler struct {
	slog.Handler
	s *proctest.Sampler
}

// Enabled is true at every level: the phase follows every message, those
// the test's quiet logger leaves out too.
func (h phaseHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h phaseHandler) Handle(ctx context.Context, r slog.Record) error {
	h.s.SetPhase(r.Message)
	if !h.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h phaseHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return phaseHandler{h.Handler.WithAttrs(as), h.s}
}

func (h phaseHandler) WithGroup(g string) slog.Handler {
	return phaseHandler{h.Handler.WithGroup(g), h.s}
}

// TestStreamTrainingStaysInBudget trains the same BLSTM twice in trainer
// processes of their own on a dataset at least four times the memory
// budget: once streaming under --max-memory, once reading every window,
// and compares their peak RSS. The streaming trainer's peak must stay
// within its runtime baseline (measured in the same process before the
// first window, see childResult) plus the budget and the model, each
// printed: the budget is all the trainer may add. It takes tens of
// minutes, so it runs on request: go tool task stream-test.
func TestStreamTrainingStaysInBudget(t *testing.T) {
	if testing.Short() || os.Getenv("HOMEMOLE_STREAM_TEST") == "" && os.Getenv("HOMEMOLE_TEST_STREAM_SESSIONS") == "" {
		t.Skip("builds a dataset of 1 GiB and trains twice (tens of minutes, two trainer processes): HOMEMOLE_STREAM_TEST=1, or go tool task stream-test")
	}
	// The budget is the 256 MiB unless HOMEMOLE_STREAM_BUDGET
	// names another (in MiB); the dataset is made four times as large.
	budget := int64(256) << 20
	if v := os.Getenv("HOMEMOLE_STREAM_BUDGET"); v != "" {
		mib, err := strconv.Atoi(v)
		if err != nil || mib <= 0 {
			t.Fatalf("HOMEMOLE_STREAM_BUDGET=%q: want a whole number of MiB", v)
		}
		budget = int64(mib) << 20
	}
	ctx, log := embeddedtest.Context(t, 90*time.Minute), embeddedtest.Log()
	// A generated ten-minute session gives about 0.18 MiB of decoded
	// windows of 40 (200 gave 36.0 MiB): a seventh more than four times
	// the budget's worth leaves room for the sessions' spread. Past 800
	// sessions (homegen writes at most 999) the sessions grow longer.
	tenMinutes := int(4*budget*8/7/(180<<10)) + 1
	sessions, diag := min(tenMinutes, 800), os.Getenv("HOMEMOLE_TEST_STREAM_SESSIONS")
	duration := time.Duration((tenMinutes+sessions-1)/sessions) * 10 * time.Minute
	if diag != "" {
		sessions, _ = strconv.Atoi(diag)
	}
	home, err := homegen.Generate(homegen.Config{Seed: 5, Sessions: sessions, SessionDuration: duration}, filepath.Join(t.TempDir(), "captures"))
	if err != nil {
		t.Fatal(err)
	}
	c := home.Campaign("big", "home-1")
	srv, conn, st := embeddedtest.Start(ctx, t, log)
	spec := window.Spec{Dataset: "big", Version: "v1", Kind: schemas.KindInd, Size: 40, Labels: build.LabelsOf(c)}
	if _, err := (&build.Build{Campaign: c, Spec: spec, Bus: conn, Store: st, Log: log}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := dataset.Load(ctx, st, "big", "v1")
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	if err := dataset.Stream(ctx, st, m, dataset.ReadOptions{}, func(w *schemas.Window) error { size += dataset.WindowBytes(w); return nil }); err != nil {
		t.Fatal(err)
	}
	t.Logf("dataset: %d windows, %.1f MiB decoded; budget %.1f MiB", m.Windows, float64(size)/(1<<20), float64(budget)/(1<<20))
	if size < 4*budget && diag == "" {
		t.Fatalf("the dataset holds %d bytes of windows, less than 4 times the budget %d", size, budget)
	}
	run := func(maxMemory int64) childResult {
		arg, _ := json.Marshal(map[string]any{"S3": embeddedtest.S3(srv), "MaxMemory": maxMemory, "Epochs": 1, "Window": spec.Size, "Classes": len(m.Labels)})
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestStreamChild$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), streamChild+"="+string(arg))
		outb, err := cmd.CombinedOutput()
		if diag != "" {
			t.Logf("%s", outb)
		} else {
			for _, l := range strings.Split(string(outb), "\n") {
				if strings.Contains(l, "VmHWM") || strings.Contains(l, "largest sampled") || strings.Contains(l, "baseline's") {
					t.Logf("trainer (max memory %d): %s", maxMemory, strings.TrimSpace(l))
				}
			}
		}
		if err != nil {
			t.Fatalf("trainer process (max memory %d): %v\n%s", maxMemory, err, outb)
		}
		for _, l := range strings.Split(string(outb), "\n") {
			if js, ok := strings.CutPrefix(l, "CHILD "); ok {
				var r childResult
				if err := json.Unmarshal([]byte(js), &r); err != nil {
					t.Fatal(err)
				}
				return r
			}
		}
		t.Fatalf("trainer process printed no result:\n%s", outb)
		return childResult{}
	}
	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	streamed := run(budget)
	whole := run(0)
	t.Logf("streamed (--max-memory %s): peak RSS %s; held-out accuracy %.3f (shuffle buffer bounded by the budget) on %d training windows",
		mib(budget), mib(streamed.PeakHWM), streamed.Accuracy, streamed.TrainN)
	t.Logf("read whole: peak RSS %s; held-out accuracy %.3f (full shuffle)", mib(whole.PeakHWM), whole.Accuracy)
	limit := streamed.BaselineHWM + budget + streamed.ModelBytes
	t.Logf("streamed peak %s against runtime baseline %s + budget %s + model %s = %s (%s over the baseline)",
		mib(streamed.PeakHWM), mib(streamed.BaselineHWM), mib(budget), mib(streamed.ModelBytes), mib(limit), mib(streamed.PeakHWM-streamed.BaselineHWM))
	t.Logf("streamed: largest sampled RSS %s while %q, Go runtime %s of it, native %s",
		mib(streamed.Peak.RSS), streamed.Peak.Phase, mib(streamed.Peak.Go), mib(streamed.Peak.Native()))
	if streamed.PeakHWM > limit {
		t.Errorf("streaming trainer's peak RSS %s is over its baseline, budget and model (%s)", mib(streamed.PeakHWM), mib(limit))
	}
	if streamed.PeakHWM >= whole.PeakHWM {
		t.Errorf("streaming trainer peaked at %s, the one reading every window at %s: streaming saved nothing", mib(streamed.PeakHWM), mib(whole.PeakHWM))
	}
	if streamed.TrainN != whole.TrainN {
		t.Errorf("streamed %d training windows, read whole %d", streamed.TrainN, whole.TrainN)
	}
	if streamed.Accuracy < 0.5 {
		t.Errorf("streamed training: held-out accuracy %.3f", streamed.Accuracy)
	}
}
