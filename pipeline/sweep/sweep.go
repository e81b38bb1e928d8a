package sweep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/experiment"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/train"
)

// SpecOf turns a configuration's model and model flags into a model spec
// (the CLI parses them with the same flags homemole train has).
type SpecOf func(model string, flags map[string]string) (train.Spec, error)

// CheckModelFlags reads every value of every model flag as each model's
// flags, before anything is built: a flag a model ignores is dropped from
// its configurations, but a misspelt one is an error, not a no-op.
func (s *Spec) CheckModelFlags(of SpecOf) error {
	for _, m := range s.Models {
		for k, vs := range s.ModelFlags {
			for _, v := range vs {
				if _, err := of(m, map[string]string{k: v}); err != nil {
					return fmt.Errorf("model_flags.%s: %q for %s: %w", k, v, m, err)
				}
			}
		}
	}
	for _, c := range s.Configurations() {
		if _, err := of(c.Model, c.ModelFlags); err != nil {
			return fmt.Errorf("configuration %s: %w", c.Label(), err)
		}
	}
	return nil
}

// Sweep runs a spec's (configuration, fold) tasks.
type Sweep struct {
	Spec     *Spec
	SpecOf   SpecOf
	Parallel int
	// Cipher is the VPN view's emulated data channel.
	Cipher  gateway.Cipher
	WorkDir string
	Bus     *bus.Conn // needed to build from_dir datasets
	Store   store.Store
	Log     *slog.Logger
	// OnTask, when set, is called after each task's result is stored (or
	// found stored), one call at a time.
	OnTask func(t Task, reused bool)
}

// Task is one fold of one configuration.
type Task struct {
	Config  Config
	Fold    int // from 1
	Of      int
	Dataset string // name/version it trains on
}

// Key is where the task's result lives in the store.
func (t Task) Key() string { return TaskKey(t.Config.Hash(), t.Fold) }

// TaskKey is the store key of fold (from 1) of configuration hash.
func TaskKey(hash string, fold int) string {
	return path.Join("sweeps", hash, fmt.Sprintf("fold-%d.json", fold))
}

// TaskResult is what a finished task leaves in the store.
type TaskResult struct {
	Config Config           `json:"config"`
	Fold   train.FoldResult `json:"fold"`
}

// Metrics are the figures a sweep compares configurations by.
type Metrics struct {
	Accuracy             float64 `json:"accuracy"`
	MacroF1              float64 `json:"macro_f1"`
	SessionAccuracy      float64 `json:"session_accuracy"`
	SessionAccuracyTypes float64 `json:"session_accuracy_types"`
	TrainSeconds         float64 `json:"train_seconds"`
}

// Summary is one configuration over its folds.
type Summary struct {
	Hash   string             `json:"hash"`
	Label  string             `json:"label"`
	Config Config             `json:"config"`
	Folds  []train.FoldResult `json:"folds"`
	Mean   Metrics            `json:"mean"`
	Spread Metrics            `json:"spread"` // population standard deviation over folds
}

// Result is sweep.json.
type Result struct {
	Configurations []Summary `json:"configurations"`
	// Ran and Reused count this run's tasks: trained now, or found done.
	Ran    int `json:"ran"`
	Reused int `json:"reused"`
}

// Tasks builds (or finds) every dataset the grid needs and lists every
// (configuration, fold) task.
func (s *Sweep) Tasks(ctx context.Context) ([]Task, error) {
	if err := s.Spec.CheckModelFlags(s.SpecOf); err != nil {
		return nil, err
	}
	var out []Task
	for _, c := range s.Spec.Configurations() {
		ds, err := s.dataset(ctx, c)
		if err != nil {
			return nil, err
		}
		name, version, _ := strings.Cut(ds, "/")
		cv := &train.CrossValidation{Store: s.Store, Dataset: name, Version: version, RunName: runName(c), Spec: train.Spec{Name: c.Model},
			Folds: c.Folds, Mode: c.CVMode, Seed: c.Seed, Log: s.Log}
		n, err := cv.FoldCount(ctx)
		if err != nil {
			return nil, fmt.Errorf("configuration %s: %w", c.Label(), err)
		}
		for i := 1; i <= n; i++ {
			out = append(out, Task{Config: c, Fold: i, Of: n, Dataset: ds})
		}
	}
	return out, nil
}

func runName(c Config) string { return "sweep-" + c.Hash() }

// dataRef is where a from_dir dataset, once built, is recorded.
type dataRef struct {
	Dataset string `json:"dataset"`
	Version string `json:"version"`
}

// dataset is name/version of the configuration's dataset, built from
// from_dir the first time it is needed.
func (s *Sweep) dataset(ctx context.Context, c Config) (string, error) {
	if s.Spec.Dataset != "" {
		return s.Spec.Dataset + "/" + s.Spec.Version, nil
	}
	key := path.Join("sweeps", "datasets", c.dataKey()+".json")
	data, err := s.Store.Get(ctx, key)
	switch {
	case err == nil:
		var ref dataRef
		if err := json.Unmarshal(data, &ref); err != nil {
			return "", fmt.Errorf("%s: %w (delete it to rebuild the dataset)", key, err)
		}
		return ref.Dataset + "/" + ref.Version, nil
	case !errors.Is(err, store.ErrNotFound):
		return "", fmt.Errorf("look up the dataset of %s: %w", c.Label(), err)
	}
	if s.Bus == nil {
		return "", errors.New("building a from_dir dataset needs NATS (the pipeline's bus)")
	}
	// A fresh version per build: a build killed half-way leaves objects
	// no reference points at, never a dataset that looks whole.
	ref := dataRef{Dataset: "sweep-" + c.dataKey(), Version: strconv.FormatInt(time.Now().UnixNano(), 10)}
	s.Log.Info("building dataset", "from", c.Data, "view", c.View, "kind", c.Kind, "window", c.Window, "dataset", ref.Dataset+"/"+ref.Version)
	if _, err := experiment.BuildFromDir(ctx, c.Data, c.View, s.Cipher, c.Kind, c.Window, ref.Dataset, ref.Version, s.WorkDir, s.Bus, s.Store, s.Log); err != nil {
		return "", fmt.Errorf("build the %s view, %s windows of %d from %s: %w", c.View, c.Kind, c.Window, c.Data, err)
	}
	js, err := json.Marshal(ref)
	if err != nil {
		return "", err
	}
	if _, err := s.Store.Put(ctx, key, js, "application/json"); err != nil {
		return "", fmt.Errorf("record dataset %s: %w", ref.Dataset, err)
	}
	return ref.Dataset + "/" + ref.Version, nil
}

// Run runs every task not yet done, Parallel at once, then sums the
// configurations up. A failed task does not stop the others; the error
// names every failed task, and running the sweep again runs just those.
func (s *Sweep) Run(ctx context.Context) (*Result, error) {
	tasks, err := s.Tasks(ctx)
	if err != nil {
		return nil, err
	}
	par := max(1, min(s.Parallel, len(tasks)))
	s.Log.Info("sweep", "configurations", len(s.Spec.Configurations()), "tasks", len(tasks), "parallel", par)
	results := make([]*TaskResult, len(tasks))
	errs := make([]error, len(tasks))
	reused := make([]bool, len(tasks))
	var mu sync.Mutex // one OnTask call at a time
	// Workers take the tasks in grid order, so a sweep's first
	// configurations finish first.
	next := make(chan int)
	var wg sync.WaitGroup
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t := tasks[i]
				results[i], reused[i], errs[i] = s.runTask(ctx, t, par)
				if errs[i] == nil && s.OnTask != nil {
					mu.Lock()
					s.OnTask(t, reused[i])
					mu.Unlock()
				}
			}
		}()
	}
	for i := range tasks {
		next <- i
	}
	close(next)
	wg.Wait()
	res := &Result{}
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s fold %d of %d: %v", tasks[i].Config.Label(), tasks[i].Fold, tasks[i].Of, err))
			continue
		}
		if reused[i] {
			res.Reused++
		} else {
			res.Ran++
		}
	}
	if len(failed) > 0 {
		err := fmt.Errorf("%d of %d sweep task(s) did not finish (run the sweep again to run just those):\n  %s",
			len(failed), len(tasks), strings.Join(failed, "\n  "))
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		return res, err
	}
	res.Configurations = summarize(tasks, results)
	return res, nil
}

// runTask returns the task's stored result, or trains it and stores one.
func (s *Sweep) runTask(ctx context.Context, t Task, par int) (*TaskResult, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	key := t.Key()
	data, err := s.Store.Get(ctx, key)
	if err == nil {
		var r TaskResult
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, false, fmt.Errorf("%s: %w (delete it to rerun the task)", key, err)
		}
		return &r, true, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, false, fmt.Errorf("look up %s: %w", key, err)
	}
	spec, err := s.SpecOf(t.Config.Model, t.Config.ModelFlags)
	if err != nil {
		return nil, false, err
	}
	spec.Learn.Seed = int64(t.Config.Seed)
	if par > 1 && spec.Learn.Threads == 0 {
		// Tasks share the cores: libtorch's own threads would fight.
		spec.Learn.Threads = max(1, runtime.NumCPU()/par)
	}
	name, version, _ := strings.Cut(t.Dataset, "/")
	log := s.Log.With("configuration", t.Config.Hash()) // the fold is added by the cross-validation
	log.Info("sweep task", "config", t.Config.Label(), "fold", fmt.Sprintf("%d/%d", t.Fold, t.Of))
	cv := &train.CrossValidation{Store: s.Store, Dataset: name, Version: version, RunName: runName(t.Config), Spec: spec,
		Folds: t.Config.Folds, Mode: t.Config.CVMode, Seed: t.Config.Seed, Only: []int{t.Fold}, Log: log}
	res, _, err := cv.Run(ctx)
	if err != nil {
		return nil, false, err
	}
	if len(res.Folds) != 1 {
		return nil, false, fmt.Errorf("cross-validation ran %d folds, want fold %d alone", len(res.Folds), t.Fold)
	}
	r := &TaskResult{Config: t.Config, Fold: res.Folds[0]}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, false, err
	}
	// Stored last: a task killed before this line has left no result, so
	// it runs again; one that got here is never redone.
	if _, err := s.Store.Put(ctx, key, js, "application/json"); err != nil {
		return nil, false, fmt.Errorf("store %s: %w", key, err)
	}
	return r, false, nil
}

// summarize groups the tasks' folds by configuration, in grid order.
func summarize(tasks []Task, results []*TaskResult) []Summary {
	var out []Summary
	at := map[string]int{}
	for i, t := range tasks {
		h := t.Config.Hash()
		k, ok := at[h]
		if !ok {
			k = len(out)
			at[h] = k
			out = append(out, Summary{Hash: h, Label: t.Config.Label(), Config: t.Config})
		}
		out[k].Folds = append(out[k].Folds, results[i].Fold)
	}
	for k := range out {
		var acc, f1, sess, types, secs []float64
		for _, f := range out[k].Folds {
			acc, f1 = append(acc, f.Accuracy), append(f1, f.MacroF1)
			sess, types = append(sess, f.SessionAccuracy), append(types, f.SessionAccuracyTypes)
			secs = append(secs, f.TrainSeconds)
		}
		spread := func(xs []float64) (float64, float64) { s := train.SpreadOf(xs); return s.Mean, s.Std }
		m, sp := &out[k].Mean, &out[k].Spread
		m.Accuracy, sp.Accuracy = spread(acc)
		m.MacroF1, sp.MacroF1 = spread(f1)
		m.SessionAccuracy, sp.SessionAccuracy = spread(sess)
		m.SessionAccuracyTypes, sp.SessionAccuracyTypes = spread(types)
		m.TrainSeconds, sp.TrainSeconds = spread(secs)
	}
	return out
}

// RunTask runs task i (from 0, in Tasks' order) alone, unless it is done:
// a Kubernetes Indexed Job's pod runs the task of its completion index.
func (s *Sweep) RunTask(ctx context.Context, i int) (Task, *TaskResult, bool, error) {
	tasks, err := s.Tasks(ctx)
	if err != nil {
		return Task{}, nil, false, err
	}
	if i < 0 || i >= len(tasks) {
		return Task{}, nil, false, fmt.Errorf("task %d: this sweep has tasks 0 to %d", i, len(tasks)-1)
	}
	r, reused, err := s.runTask(ctx, tasks[i], 1)
	return tasks[i], r, reused, err
}

// Gather sums up a sweep whose tasks ran elsewhere (one pod each) from
// their stored results, and fails naming every task still missing.
func (s *Sweep) Gather(ctx context.Context) (*Result, error) {
	tasks, err := s.Tasks(ctx)
	if err != nil {
		return nil, err
	}
	results := make([]*TaskResult, len(tasks))
	var missing []string
	for i, t := range tasks {
		data, err := s.Store.Get(ctx, t.Key())
		if errors.Is(err, store.ErrNotFound) {
			missing = append(missing, fmt.Sprintf("%d (%s fold %d)", i, t.Config.Label(), t.Fold))
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", t.Key(), err)
		}
		var r TaskResult
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("%s: %w (delete it to rerun the task)", t.Key(), err)
		}
		results[i] = &r
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%d of %d sweep tasks not done yet: %s", len(missing), len(tasks), strings.Join(missing, ", "))
	}
	return &Result{Configurations: summarize(tasks, results), Reused: len(tasks)}, nil
}
