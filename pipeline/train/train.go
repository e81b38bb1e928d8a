// Package train is the trainer and evaluator job: it splits a dataset's
// windows into training and held-out sets by group, trains a model, labels
// the held-out windows, and stores the checkpoint and the report.
package train

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"path"
	"sort"
	"time"

	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
)

// Job trains and evaluates one model on one dataset version.
type Job struct {
	Store   store.Store
	Dataset string
	Version string
	RunName string
	Model   learn.Config
	// TestShare of the groups (capture sessions) is held out; at least one.
	TestShare float64
	Seed      uint64
	Log       *slog.Logger
	// Progress receives each epoch's figures.
	Progress func(learn.EpochStats)
}

// Outcome is where the job put its results.
type Outcome struct {
	Report     *evaluate.Report
	Checkpoint string
	ReportJSON string
	ReportHTML string
	HTML       []byte
}

// SplitGroups holds out a seeded share of the groups: windows of one capture
// session never sit on both sides, since neighbouring windows share context
// and would leak it.
func SplitGroups(groups []string, share float64, seed uint64) (train, test []string, err error) {
	if len(groups) < 2 {
		return nil, nil, fmt.Errorf("%d capture session(s): a held-out evaluation needs at least 2, so that test windows come from a session the model never saw", len(groups))
	}
	g := append([]string(nil), groups...)
	sort.Strings(g)
	r := rand.New(rand.NewPCG(seed, 0x486f6d654d6f6c65))
	r.Shuffle(len(g), func(i, j int) { g[i], g[j] = g[j], g[i] })
	n := int(math.Round(share * float64(len(g))))
	n = max(1, min(n, len(g)-1))
	test, train = g[:n], g[n:]
	sort.Strings(test)
	sort.Strings(train)
	return train, test, nil
}

// ModelName is how reports and run names call a model configuration.
func ModelName(c learn.Config) string {
	if c.Bidirectional {
		return "blstm"
	}
	return "lstm"
}

// CheckRunName refuses a run name that is not a plain token: it names
// models/RUN and reports/RUN in the store and a folder on disk, and
// "../.." would write outside them.
func CheckRunName(run string) error { return schemas.ValidateToken("run name", run) }

// Run does the whole job.
func (j *Job) Run(ctx context.Context) (*Outcome, error) {
	if err := CheckRunName(j.RunName); err != nil {
		return nil, err
	}
	m, err := dataset.Load(ctx, j.Store, j.Dataset, j.Version)
	if err != nil {
		return nil, err
	}
	if j.TestShare == 0 {
		j.TestShare = 0.2
	}
	trainG, testG, err := SplitGroups(m.Groups, j.TestShare, j.Seed)
	if err != nil {
		return nil, fmt.Errorf("dataset %s/%s: %w", j.Dataset, j.Version, err)
	}
	inTest := map[string]bool{}
	for _, g := range testG {
		inTest[g] = true
	}
	trainW, err := dataset.Windows(ctx, j.Store, m, func(g string) bool { return !inTest[g] })
	if err != nil {
		return nil, err
	}
	testW, err := dataset.Windows(ctx, j.Store, m, func(g string) bool { return inTest[g] })
	if err != nil {
		return nil, err
	}
	j.Log.Info("dataset split", "dataset", j.Dataset+"/"+j.Version, "train_windows", len(trainW), "test_windows", len(testW),
		"train_sessions", len(trainG), "test_sessions", len(testG))

	rep := &evaluate.Report{
		Run: j.RunName, Dataset: j.Dataset + "/" + j.Version, Model: ModelName(j.Model),
		Split:        fmt.Sprintf("grouped hold-out: %d of %d capture sessions held out (seed %d)", len(testG), len(m.Groups), j.Seed),
		TrainWindows: len(trainW), TestWindows: len(testW), TrainGroups: trainG, TestGroups: testG,
	}
	start := time.Now()
	model, err := learn.Train(ctx, j.Model, trainW, len(m.Labels), func(e learn.EpochStats) {
		rep.Epochs = append(rep.Epochs, evaluate.Epoch{Epoch: e.Epoch, Loss: e.Loss, TrainAccuracy: e.Accuracy, WindowsPerSec: e.WindowsPerSec})
		if j.Progress != nil {
			j.Progress(e)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("train %s on %s/%s: %w", ModelName(j.Model), j.Dataset, j.Version, err)
	}
	defer model.Close()
	rep.Device = model.Device()
	rep.TrainSeconds = time.Since(start).Seconds()

	out := &Outcome{Report: rep}
	out.Checkpoint, _ = ModelKeys(j.RunName)
	meta := Meta{Model: ModelName(j.Model), Labels: m.Labels, Window: m.WindowSize, Kind: m.Kind, Dataset: j.Dataset + "/" + j.Version, Seed: j.Model.Seed}
	// The held-out sessions are known devices the model never saw: what
	// the open-set threshold is calibrated on.
	if meta.Unknown, err = Calibrate(model, testW, DefaultUnknownQuantile); err != nil {
		return nil, fmt.Errorf("calibrate the unknown-device threshold: %w", err)
	}
	j.Log.Info("unknown-device threshold", "score", meta.Unknown.Score, "threshold", fmt.Sprintf("%.3f", meta.Unknown.Threshold),
		"held_out_hosts", meta.Unknown.Hosts, "false_unknown", fmt.Sprintf("%.3f", meta.Unknown.FalseUnknown))
	if err := SaveModel(ctx, j.Store, j.RunName, model, meta); err != nil {
		return nil, err
	}

	preds, err := model.Predict(testW)
	if err != nil {
		return nil, fmt.Errorf("label held-out windows: %w", err)
	}
	conf, voter, err := judge(m.Labels, testW, preds)
	if err != nil {
		return nil, err
	}
	rep.Confusion = conf
	rep.Sessions = voter.Votes()
	rep.Fill()

	js, err := rep.JSON()
	if err != nil {
		return nil, err
	}
	html, err := rep.HTML()
	if err != nil {
		return nil, err
	}
	out.ReportJSON = path.Join("reports", j.RunName, "report.json")
	out.ReportHTML = path.Join("reports", j.RunName, "report.html")
	if _, err := j.Store.Put(ctx, out.ReportJSON, js, "application/json"); err != nil {
		return nil, err
	}
	if _, err := j.Store.Put(ctx, out.ReportHTML, html, "text/html"); err != nil {
		return nil, err
	}
	out.HTML = html
	return out, nil
}
