package train

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
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
