package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
)

// Cross-validation modes.
const (
	// CVGrouped keeps every window of a capture session in one fold: the
	// default, since neighbouring windows share context and would leak it.
	CVGrouped = "grouped"
	// CVRandom deals windows into folds at random, as the paper does; it
	// flatters the model and is there to compare with the paper.
	CVRandom = "random"
	// CVLeaveOneHomeOut holds out one home per fold.
	CVLeaveOneHomeOut = "leave-one-home-out"
)

// CVModes lists the modes.
var CVModes = []string{CVGrouped, CVRandom, CVLeaveOneHomeOut, CVTime}

// CrossValidation trains and judges one model k times on a dataset version.
type CrossValidation struct {
	Store   store.Store
	Dataset string
	Version string
	RunName string
	Spec    Spec
	Folds   int // ignored by leave-one-home-out (one fold per home)
	Mode    string
	Seed    uint64
	// Parallel folds train at once (goroutines sharing the cores; in a
	// cluster each fold is a pod running the same code through Only).
	Parallel int
	// Only, when set, runs just these folds (numbered from 1) and writes
	// no summary: a cluster runs one fold per pod, and Gather writes the
	// summary from the folds' records once all are in.
	Only []int
	Log  *slog.Logger
}

// FoldResult is one fold's outcome.
type FoldResult struct {
	Fold                 int     `json:"fold"`
	TestGroups           int     `json:"test_groups"`
	TrainWindows         int     `json:"train_windows"`
	TestWindows          int     `json:"test_windows"`
	Accuracy             float64 `json:"accuracy"`
	MacroF1              float64 `json:"macro_f1"`
	SessionAccuracy      float64 `json:"session_accuracy"`
	SessionAccuracyTypes float64 `json:"session_accuracy_types"`
	// MajorityTypes is SessionAccuracyTypes with every session named by
	// the majority of its packets' labels (evaluate.MajorityAccuracy).
	MajorityTypes float64 `json:"session_accuracy_types_majority"`
	TrainSeconds  float64 `json:"train_seconds"`
	Report        string  `json:"report"`
	Checkpoint    string  `json:"checkpoint"`
	// UnknownThreshold and UnknownFamiliarity are the fold model's
	// open-set thresholds (see Calibrate), taken on the fold's held-out
	// sessions.
	UnknownThreshold   float64 `json:"unknown_threshold,omitempty"`
	UnknownFamiliarity float64 `json:"unknown_familiarity,omitempty"`
}

// CVResult sums the folds up: means and spreads, and the confusion matrix
// of every held-out packet of every fold.
type CVResult struct {
	Run     string       `json:"run"`
	Dataset string       `json:"dataset"`
	Model   string       `json:"model"`
	Mode    string       `json:"mode"`
	Window  int          `json:"window"`
	Folds   []FoldResult `json:"folds"`
	// Mean and standard deviation over folds.
	Accuracy             Spread                  `json:"accuracy"`
	MacroF1              Spread                  `json:"macro_f1"`
	SessionAccuracy      Spread                  `json:"session_accuracy"`
	SessionAccuracyTypes Spread                  `json:"session_accuracy_types"`
	MajorityTypes        Spread                  `json:"session_accuracy_types_majority"`
	PerDevice            []evaluate.ClassMetrics `json:"per_device"`
	Confusion            *evaluate.Confusion     `json:"confusion"`
	Sessions             []evaluate.SessionVote  `json:"session_votes"`
	Seconds              float64                 `json:"seconds"`
	// Family is family-level session accuracy (nil with one fold).
	Family *FamilyScore `json:"family,omitempty"`
}

// Spread is a mean and a standard deviation over folds.
type Spread struct {
	Mean float64 `json:"mean"`
	Std  float64 `json:"std"`
}

// SpreadOf is the mean and population standard deviation of xs.
func SpreadOf(xs []float64) Spread {
	var s Spread
	if len(xs) == 0 {
		return s
	}
	for _, x := range xs {
		s.Mean += x
	}
	s.Mean /= float64(len(xs))
	for _, x := range xs {
		s.Std += (x - s.Mean) * (x - s.Mean)
	}
	s.Std = math.Sqrt(s.Std / float64(len(xs)))
	return s
}

// fold is one split: which windows train and which are held out.
type fold struct {
	train, test func(w *schemas.Window) bool
	testGroups  int
}

// splits makes the folds of the chosen mode.
func (cv *CrossValidation) splits(m *dataset.Manifest) ([]fold, error) {
	switch cv.Mode {
	case CVGrouped, "":
		fs, err := dataset.Folds(m.Groups, cv.Folds, cv.Seed)
		if err != nil {
			return nil, fmt.Errorf("grouped folds over the capture sessions of %s/%s: %w", m.Dataset, m.Version, err)
		}
		return byGroup(fs, func(w *schemas.Window) string { return w.Group }), nil
	case CVLeaveOneHomeOut:
		var homes []string
		for _, p := range m.Parts {
			homes = append(homes, p.Home)
		}
		slices.Sort(homes)
		homes = slices.Compact(homes)
		if len(homes) < 2 {
			return nil, fmt.Errorf("leave-one-home-out over %s/%s: %d home(s), need 2 or more", m.Dataset, m.Version, len(homes))
		}
		fs := make([][]string, len(homes))
		for i, h := range homes {
			fs[i] = []string{h}
		}
		return byGroup(fs, func(w *schemas.Window) string { return w.Home }), nil
	case CVTime:
		return timeFolds(m, cv.Folds)
	case CVRandom:
		if cv.Folds < 2 {
			return nil, fmt.Errorf("random folds: %d folds, want 2 or more", cv.Folds)
		}
		k, seed := uint64(cv.Folds), cv.Seed
		of := func(w *schemas.Window) int { return int(windowHash(seed, w.ID) % k) }
		out := make([]fold, cv.Folds)
		for i := range out {
			out[i] = fold{
				train: func(w *schemas.Window) bool { return of(w) != i },
				test:  func(w *schemas.Window) bool { return of(w) == i },
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("cross-validation mode %q: want one of %s", cv.Mode, strings.Join(CVModes, ", "))
}

func byGroup(fs [][]string, key func(*schemas.Window) string) []fold {
	out := make([]fold, len(fs))
	for i, f := range fs {
		in := map[string]bool{}
		for _, g := range f {
			in[g] = true
		}
		out[i] = fold{
			train:      func(w *schemas.Window) bool { return !in[key(w)] },
			test:       func(w *schemas.Window) bool { return in[key(w)] },
			testGroups: len(f),
		}
	}
	return out
}

// windowHash deals a window to a random fold by its ID alone, so the deal
// does not depend on read order.
func windowHash(seed uint64, id string) uint64 {
	h := uint64(14695981039346656037) ^ seed
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	return rand.New(rand.NewPCG(h, seed)).Uint64()
}

// Run trains and judges every fold (or those in Only), writes each fold's
// checkpoint, report and record and, unless Only is set, the summary
// (reports/RUN/cv.json, cv.html) to the store.
func (cv *CrossValidation) Run(ctx context.Context) (*CVResult, []byte, error) {
	start := time.Now()
	if err := cv.Spec.Check(); err != nil {
		return nil, nil, err
	}
	m, folds, err := cv.load(ctx)
	if err != nil {
		return nil, nil, err
	}
	picked, err := cv.picked(len(folds))
	if err != nil {
		return nil, nil, err
	}
	all, err := dataset.Windows(ctx, cv.Store, m, nil)
	if err != nil {
		return nil, nil, err
	}
	par := max(1, min(cv.Parallel, len(picked)))
	spec := cv.Spec
	if par > 1 && spec.Learn.Threads == 0 {
		// Folds share the cores: libtorch's own threads would fight.
		spec.Learn.Threads = max(1, runtime.NumCPU()/par)
	}
	cv.Log.Info("cross-validation", "dataset", cv.Dataset+"/"+cv.Version, "model", cv.Spec.Name, "mode", cv.Mode,
		"folds", len(folds), "running", len(picked), "parallel", par, "windows", len(all))

	results := make([]FoldRecord, len(picked))
	errs := make([]error, len(picked))
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for k, i := range picked {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[k], errs[k] = cv.runFold(ctx, m, i, len(folds), folds[i], all, spec)
		}()
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			return nil, nil, fmt.Errorf("fold %d of %d: %w", picked[k]+1, len(folds), err)
		}
	}
	if len(cv.Only) > 0 {
		res := &CVResult{Run: cv.RunName, Dataset: cv.Dataset + "/" + cv.Version, Model: cv.Spec.Name, Mode: cv.modeName(), Window: m.WindowSize}
		for _, r := range results {
			res.Folds = append(res.Folds, r.Result)
		}
		res.Seconds = time.Since(start).Seconds()
		return res, nil, nil
	}
	return cv.summarize(ctx, m, results, start)
}

// load checks the run name, reads the dataset's manifest and makes the
// folds: what running the folds and gathering them both start from.
func (cv *CrossValidation) load(ctx context.Context) (*dataset.Manifest, []fold, error) {
	if err := CheckRunName(cv.RunName); err != nil {
		return nil, nil, err
	}
	m, err := dataset.Load(ctx, cv.Store, cv.Dataset, cv.Version)
	if err != nil {
		return nil, nil, err
	}
	folds, err := cv.splits(m)
	if err != nil {
		return nil, nil, err
	}
	return m, folds, nil
}

// picked is the folds to run, numbered from 0.
func (cv *CrossValidation) picked(n int) ([]int, error) {
	if len(cv.Only) == 0 {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out, nil
	}
	var out []int
	for _, f := range cv.Only {
		if f < 1 || f > n {
			return nil, fmt.Errorf("fold %d: this %s cross-validation has folds 1 to %d", f, cv.modeName(), n)
		}
		if !slices.Contains(out, f-1) {
			out = append(out, f-1)
		}
	}
	return out, nil
}

func (cv *CrossValidation) modeName() string {
	if cv.Mode == "" {
		return CVGrouped
	}
	return cv.Mode
}

// FoldRecord is what a fold leaves in the store (reports/RUN/fold-I/fold.json)
// for Gather: its figures, its confusion matrix and its session votes.
type FoldRecord struct {
	// Of names the cross-validation the fold belongs to (model, mode,
	// folds, seed): Gather refuses a fold of another one left under the
	// same run name.
	Of        string                 `json:"of"`
	Result    FoldResult             `json:"result"`
	Confusion *evaluate.Confusion    `json:"confusion"`
	Sessions  []evaluate.SessionVote `json:"session_votes"`
}

func (cv *CrossValidation) of(folds int) string {
	return fmt.Sprintf("%s on %s/%s, %s, %d folds, seed %d", cv.Spec.Name, cv.Dataset, cv.Version, cv.modeName(), folds, cv.Seed)
}

func foldRecordKey(run string, fold int) string {
	return path.Join("reports", run, fmt.Sprintf("fold-%d", fold), "fold.json")
}

// Gather writes the summary of a cross-validation whose folds ran apart
// (Only, one pod each) from the records they left. It fails, naming them,
// while any fold is missing, so it can be retried until all are in.
func (cv *CrossValidation) Gather(ctx context.Context) (*CVResult, []byte, error) {
	m, folds, err := cv.load(ctx)
	if err != nil {
		return nil, nil, err
	}
	records := make([]FoldRecord, len(folds))
	var missing []string
	for i := range folds {
		data, err := cv.Store.Get(ctx, foldRecordKey(cv.RunName, i+1))
		if errors.Is(err, store.ErrNotFound) {
			missing = append(missing, fmt.Sprint(i+1))
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		if err := json.Unmarshal(data, &records[i]); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", foldRecordKey(cv.RunName, i+1), err)
		}
		if of := cv.of(len(folds)); records[i].Of != of || records[i].Confusion == nil || len(records[i].Confusion.Labels) != len(m.Labels) {
			return nil, nil, fmt.Errorf("%s is a fold of %q, not of %q: another run name, or the same settings as the folds", foldRecordKey(cv.RunName, i+1), records[i].Of, of)
		}
	}
	if len(missing) > 0 {
		return nil, nil, fmt.Errorf("run %s: fold(s) %s of %d not done yet", cv.RunName, strings.Join(missing, ", "), len(folds))
	}
	// The folds ran apart: their training time is what there is to add up.
	return cv.summarize(ctx, m, records, time.Time{})
}

// summarize writes reports/RUN/cv.json and cv.html over every fold.
func (cv *CrossValidation) summarize(ctx context.Context, m *dataset.Manifest, records []FoldRecord, start time.Time) (*CVResult, []byte, error) {
	res := &CVResult{Run: cv.RunName, Dataset: cv.Dataset + "/" + cv.Version, Model: cv.Spec.Name, Mode: cv.Mode, Window: m.WindowSize}
	if res.Mode == "" {
		res.Mode = CVGrouped
	}
	res.Confusion = evaluate.NewConfusion(m.Labels)
	var acc, f1, sess, types, maj []float64
	for _, rec := range records {
		r := rec.Result
		res.Folds = append(res.Folds, r)
		res.Confusion.Merge(rec.Confusion)
		res.Sessions = append(res.Sessions, rec.Sessions...)
		acc, f1 = append(acc, r.Accuracy), append(f1, r.MacroF1)
		sess, types = append(sess, r.SessionAccuracy), append(types, r.SessionAccuracyTypes)
		maj = append(maj, r.MajorityTypes)
	}
	res.MajorityTypes = SpreadOf(maj)
	res.Accuracy, res.MacroF1 = SpreadOf(acc), SpreadOf(f1)
	res.SessionAccuracy, res.SessionAccuracyTypes = SpreadOf(sess), SpreadOf(types)
	res.PerDevice = res.Confusion.PerClass()
	res.Family = familyScore(m.Labels, records)
	if start.IsZero() {
		for _, f := range res.Folds {
			res.Seconds += f.TrainSeconds
		}
	} else {
		res.Seconds = time.Since(start).Seconds()
	}

	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	html, err := cvHTML(res)
	if err != nil {
		return nil, nil, err
	}
	for name, data := range map[string][]byte{"cv.json": js, "cv.html": html} {
		if _, err := cv.Store.Put(ctx, path.Join("reports", cv.RunName, name), data, contentType(name)); err != nil {
			return nil, nil, err
		}
	}
	return res, html, nil
}

func contentType(name string) string {
	if strings.HasSuffix(name, ".html") {
		return "text/html"
	}
	return "application/json"
}

// runFold trains on the fold's training side and judges its held-out side,
// fold i of n, and leaves its record for Gather.
func (cv *CrossValidation) runFold(ctx context.Context, m *dataset.Manifest, i, n int, f fold, all []*schemas.Window, spec Spec) (FoldRecord, error) {
	r, conf, votes, err := cv.fitFold(ctx, m, i, f, all, spec)
	if err != nil {
		return FoldRecord{}, err
	}
	rec := FoldRecord{Of: cv.of(n), Result: r, Confusion: conf, Sessions: votes}
	js, err := json.Marshal(rec)
	if err != nil {
		return FoldRecord{}, err
	}
	if _, err := cv.Store.Put(ctx, foldRecordKey(cv.RunName, i+1), js, "application/json"); err != nil {
		return FoldRecord{}, err
	}
	return rec, nil
}

func (cv *CrossValidation) fitFold(ctx context.Context, m *dataset.Manifest, i int, f fold, all []*schemas.Window, spec Spec) (FoldResult, *evaluate.Confusion, []evaluate.SessionVote, error) {
	var trainW, testW []*schemas.Window
	for _, w := range all {
		switch {
		case f.test(w):
			testW = append(testW, w)
		case f.train(w):
			trainW = append(trainW, w)
		}
	}
	r := FoldResult{Fold: i + 1, TestGroups: f.testGroups, TrainWindows: len(trainW), TestWindows: len(testW)}
	if len(trainW) == 0 || len(testW) == 0 {
		return r, nil, nil, fmt.Errorf("%d training and %d held-out windows: too few sessions for this many folds", len(trainW), len(testW))
	}
	spec.Learn.Seed += int64(i)
	// Each fold's model is stored with its model.json, so that predict
	// can use it; its held-out sessions calibrate its unknown threshold.
	foldRun := path.Join(cv.RunName, fmt.Sprintf("fold-%d", i+1))
	out, err := Evaluate(ctx, &Evaluation{
		Spec: spec, Train: trainW, Test: testW, Labels: m.Labels,
		Report: evaluate.Report{Run: foldRun, Dataset: cv.Dataset + "/" + cv.Version,
			Split: fmt.Sprintf("%s cross-validation, fold %d (seed %d)", cv.Mode, i+1, cv.Seed)},
		SaveAs: foldRun, Meta: Meta{Window: m.WindowSize, Kind: m.Kind, Dataset: cv.Dataset + "/" + cv.Version}, Calibration: CalibrateOnTest,
		ReportDir: path.Join("reports", foldRun),
		Store:     cv.Store, Log: cv.Log.With("fold", i+1),
	})
	if err != nil {
		return r, nil, nil, err
	}
	rep := out.Report
	r.TrainSeconds, r.Checkpoint, r.Report = rep.TrainSeconds, out.Checkpoint, out.ReportJSON
	if out.Unknown != nil {
		r.UnknownThreshold = out.Unknown.Threshold
		if f := out.Unknown.Familiarity; f != nil {
			r.UnknownFamiliarity = f.Threshold
		}
	}
	r.Accuracy, r.MacroF1 = rep.Confusion.Accuracy(), rep.Confusion.MacroF1()
	r.SessionAccuracy, r.SessionAccuracyTypes = evaluate.SessionAccuracy(rep.Sessions)
	_, r.MajorityTypes = evaluate.MajorityAccuracy(rep.Sessions)
	cv.Log.Info("fold done", "fold", i+1, "accuracy", fmt.Sprintf("%.3f", r.Accuracy), "session_accuracy", fmt.Sprintf("%.3f", r.SessionAccuracy),
		"train_s", fmt.Sprintf("%.0f", r.TrainSeconds))
	return r, rep.Confusion, rep.Sessions, nil
}

// cvHTML renders the summary as the evaluator's report over every
// held-out packet of every fold, with the folds' figures as notes.
func cvHTML(res *CVResult) ([]byte, error) {
	rep := &evaluate.Report{
		Run: res.Run, Dataset: res.Dataset, Model: res.Model,
		Split: fmt.Sprintf("%s cross-validation, %d folds: accuracy %.1f ± %.1f %%, macro F1 %.3f ± %.3f, session accuracy %.1f ± %.1f %% (device types %.1f ± %.1f %%)",
			res.Mode, len(res.Folds), 100*res.Accuracy.Mean, 100*res.Accuracy.Std, res.MacroF1.Mean, res.MacroF1.Std,
			100*res.SessionAccuracy.Mean, 100*res.SessionAccuracy.Std, 100*res.SessionAccuracyTypes.Mean, 100*res.SessionAccuracyTypes.Std),
		Confusion: res.Confusion, Sessions: res.Sessions,
	}
	for _, f := range res.Folds {
		rep.TrainWindows += f.TrainWindows
		rep.TestWindows += f.TestWindows
		rep.TrainSeconds += f.TrainSeconds
		rep.Notes = append(rep.Notes, fmt.Sprintf("fold %d: %d held-out windows, accuracy %.1f %%, macro F1 %.3f, session accuracy %.1f %% (types %.1f %%), trained in %.0f s",
			f.Fold, f.TestWindows, 100*f.Accuracy, f.MacroF1, 100*f.SessionAccuracy, 100*f.SessionAccuracyTypes, f.TrainSeconds))
	}
	rep.Fill()
	return rep.HTML()
}

// FoldCount is how many folds this cross-validation has on its dataset
// (leave-one-home-out: one per home), for callers that run them one by one.
func (cv *CrossValidation) FoldCount(ctx context.Context) (int, error) {
	_, folds, err := cv.load(ctx)
	return len(folds), err
}
