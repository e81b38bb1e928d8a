package train

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/learn"
)

// TestCrossValidationGrouped runs grouped 3-fold CV of an LSTM on a
// generated home: every fold is judged on sessions it never trained on,
// each fold's report and checkpoint and the summary land in the store.
func TestCrossValidationGrouped(t *testing.T) {
	ctx, log, st := buildSkeleton(t, 5*time.Minute)
	cfg := learn.DefaultConfig()
	cfg.Epochs = 6
	cv := &CrossValidation{Store: st, Dataset: "skeleton", Version: "v1", RunName: "cv-test", Spec: Spec{Name: "lstm", Learn: cfg},
		Folds: 3, Mode: CVGrouped, Seed: 2, Parallel: 2, Log: log}
	res, html, err := cv.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Folds) != 3 {
		t.Fatalf("%d folds, want 3", len(res.Folds))
	}
	groups := 0
	for _, f := range res.Folds {
		groups += f.TestGroups
		if f.TrainWindows == 0 || f.TestWindows == 0 {
			t.Errorf("fold %d: %d training, %d held-out windows", f.Fold, f.TrainWindows, f.TestWindows)
		}
		for _, key := range []string{f.Report, f.Checkpoint} {
			if _, err := st.Get(ctx, key); err != nil {
				t.Errorf("fold %d: %v", f.Fold, err)
			}
		}
		// Each fold's model is usable by predict, with the threshold its
		// held-out sessions gave.
		fm, meta, err := LoadModel(ctx, st, fmt.Sprintf("cv-test/fold-%d", f.Fold))
		if err != nil || meta.Unknown == nil || meta.Unknown.Threshold != f.UnknownThreshold || f.UnknownThreshold <= 0 ||
			meta.Unknown.Familiarity == nil || meta.Unknown.Familiarity.Threshold != f.UnknownFamiliarity || f.UnknownFamiliarity <= 0 {
			t.Errorf("fold %d's stored model: %+v, %v; want its unknown thresholds %.3f and %.3f", f.Fold, meta.Unknown, err, f.UnknownThreshold, f.UnknownFamiliarity)
		}
		if fm != nil {
			fm.Close()
		}
	}
	if groups != 5 {
		t.Errorf("the folds hold out %d sessions in all, the dataset has 5: each must be held out exactly once", groups)
	}
	t.Logf("accuracy %.3f ± %.3f, session accuracy %.3f", res.Accuracy.Mean, res.Accuracy.Std, res.SessionAccuracy.Mean)
	if res.Accuracy.Mean < 0.6 {
		t.Errorf("mean held-out accuracy %.3f: want at least 0.6 on the generated home", res.Accuracy.Mean)
	}
	if res.Confusion.Total() == 0 || !strings.Contains(string(html), "fold 3") {
		t.Error("the summary lacks the merged confusion matrix or the per-fold notes")
	}
	data, err := st.Get(ctx, "reports/cv-test/cv.json")
	if err != nil {
		t.Fatal(err)
	}
	var back CVResult
	if err := json.Unmarshal(data, &back); err != nil || len(back.Folds) != 3 {
		t.Fatalf("cv.json: %v", err)
	}

	// Bad settings fail before any training, naming what to change.
	for _, bad := range []*CrossValidation{
		{Store: st, Dataset: "skeleton", Version: "v1", RunName: "x", Spec: Spec{Name: "svm"}, Folds: 3, Log: log},
		{Store: st, Dataset: "skeleton", Version: "v1", RunName: "x", Spec: Spec{Name: "lstm"}, Folds: 9, Mode: CVGrouped, Log: log},
		{Store: st, Dataset: "skeleton", Version: "v1", RunName: "x", Spec: Spec{Name: "lstm"}, Folds: 3, Mode: "stratified", Log: log},
		{Store: st, Dataset: "skeleton", Version: "v1", RunName: "x", Spec: Spec{Name: "lstm"}, Mode: CVLeaveOneHomeOut, Log: log},
	} {
		if _, _, err := bad.Run(ctx); err == nil {
			t.Errorf("%s/%s with %d folds ran", bad.Spec.Name, bad.Mode, bad.Folds)
		} else {
			t.Logf("refused: %v", err)
		}
	}
}

func TestSpread(t *testing.T) {
	s := SpreadOf([]float64{0.8, 0.9, 1.0})
	if d := s.Mean - 0.9; d > 1e-12 || d < -1e-12 {
		t.Errorf("mean %v, want 0.9", s.Mean)
	}
	if s.Std < 0.0816 || s.Std > 0.0817 {
		t.Errorf("std %v, want 0.0816 (population)", s.Std)
	}
}

// TestCrossValidationApart runs each fold on its own, as the pods of a
// Kubernetes Indexed Job do, and gathers them: the summary must match the
// one of a run that trained every fold in one process.
func TestCrossValidationApart(t *testing.T) {
	ctx, log, st := buildSkeleton(t, 5*time.Minute)
	cv := func(run string, only ...int) *CrossValidation {
		return &CrossValidation{Store: st, Dataset: "skeleton", Version: "v1", RunName: run, Spec: Spec{Name: "rf", Learn: learn.DefaultConfig()},
			Folds: 3, Mode: CVGrouped, Seed: 2, Only: only, Log: log}
	}
	whole, _, err := cv("together").Run(ctx)
	if err != nil {
		t.Fatal(err)
	}

	for _, f := range []int{3, 1} {
		res, html, err := cv("apart", f).Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Folds) != 1 || res.Folds[0].Fold != f || html != nil {
			t.Fatalf("--fold %d ran folds %+v", f, res.Folds)
		}
	}
	if _, err := st.Get(ctx, "reports/apart/cv.json"); err == nil {
		t.Error("a single fold wrote the run's summary, which the other folds' pods would overwrite")
	}
	if _, _, err := cv("apart").Gather(ctx); err == nil || !strings.Contains(err.Error(), "fold(s) 2 of 3 not done") {
		t.Errorf("gather with fold 2 missing: %v", err)
	}
	if _, _, err := cv("apart", 2).Run(ctx); err != nil {
		t.Fatal(err)
	}
	got, html, err := cv("apart").Gather(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Folds) != 3 || got.Confusion.Total() != whole.Confusion.Total() || len(html) == 0 {
		t.Fatalf("gathered %d folds over %d packets, want 3 over %d", len(got.Folds), got.Confusion.Total(), whole.Confusion.Total())
	}
	for i := range whole.Folds {
		a, b := whole.Folds[i], got.Folds[i]
		if a.Fold != b.Fold || a.TestWindows != b.TestWindows || a.Accuracy != b.Accuracy {
			t.Errorf("fold %d apart: %d windows, accuracy %v; together: %d windows, accuracy %v", a.Fold, b.TestWindows, b.Accuracy, a.TestWindows, a.Accuracy)
		}
	}
	if got.Accuracy != whole.Accuracy {
		t.Errorf("gathered accuracy %+v, together %+v", got.Accuracy, whole.Accuracy)
	}
	if _, err := st.Get(ctx, "reports/apart/cv.json"); err != nil {
		t.Errorf("gather wrote no summary: %v", err)
	}

	other := cv("apart")
	other.Seed = 3
	if _, _, err := other.Gather(ctx); err == nil || !strings.Contains(err.Error(), "seed 2") {
		t.Errorf("gather with another seed than the folds': %v", err)
	}

	for _, bad := range [][]int{{0}, {4}} {
		if _, _, err := cv("x", bad...).Run(ctx); err == nil || !strings.Contains(err.Error(), "folds 1 to 3") {
			t.Errorf("fold %v of 3: %v", bad, err)
		}
	}
}
