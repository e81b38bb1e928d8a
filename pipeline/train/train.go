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
	"os"
	"path"
	"runtime/debug"
	"runtime/metrics"
	"sort"
	"strconv"
	"strings"
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
	Spec    Spec
	// TestShare of the groups (capture sessions) is held out; at least one.
	// 0 is the default, 0.2; otherwise it must lie strictly between 0 and
	// 1 (CheckTestShare).
	TestShare float64
	Seed      uint64
	Log       *slog.Logger
	// Progress receives each epoch's figures.
	Progress func(learn.EpochStats)
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

// CheckTestShare refuses a held-out share that is not strictly between 0
// and 1: 1 would train on one session and 0 or less hold out none, which
// SplitGroups would otherwise round to one session either way.
func CheckTestShare(share float64) error {
	if math.IsNaN(share) || share <= 0 || share >= 1 {
		return fmt.Errorf("test share %g: want a share above 0 and below 1, such as 0.2", share)
	}
	return nil
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
	if err := CheckTestShare(j.TestShare); err != nil {
		return nil, err
	}
	// What the runtime holds before this job reads a window: the
	// streaming trainer's whole budget counts from here.
	goBase := goMemory()
	trainG, testG, err := SplitGroups(m.Groups, j.TestShare, j.Seed)
	if err != nil {
		return nil, fmt.Errorf("dataset %s/%s: %w", j.Dataset, j.Version, err)
	}
	inTest := map[string]bool{}
	for _, g := range testG {
		inTest[g] = true
	}
	testW, err := dataset.Windows(ctx, j.Store, m, func(g string) bool { return inTest[g] })
	if err != nil {
		return nil, err
	}
	var trainW []*schemas.Window
	var src learn.Source
	trainN := 0
	keep := func(g string) bool { return !inTest[g] }
	if j.Spec.MaxMemory > 0 {
		// The budget is all the trainer adds to its runtime: the windows
		// it holds and the Go heap beyond them, which the collector would
		// let run to twice what is live (66 MiB of Go heap in use, 6 MiB
		// of it live, before this limit), and nativeReserve for libtorch.
		// Go's soft limit holds the runtime's part to what it held before
		// the first window plus the budget less that reserve.
		limit := goBase + j.Spec.MaxMemory - nativeReserve
		prev := debug.SetMemoryLimit(limit)
		defer debug.SetMemoryLimit(prev)
		j.Log.Info("Go memory limit for streaming training", "limit_bytes", limit)
		// Go's limit holds the Go side; glibc's heaps keep what a step
		// frees unless told to give it back.
		defer releaseNative(nativeCheckEvery, nativeGrowth)()
		if src, trainN, err = j.stream(ctx, m, keep, testW); err != nil {
			return nil, fmt.Errorf("dataset %s/%s: %w", j.Dataset, j.Version, err)
		}
	} else {
		if trainW, err = dataset.Windows(ctx, j.Store, m, keep); err != nil {
			return nil, err
		}
		trainN = len(trainW)
	}
	j.Log.Info("dataset split", "dataset", j.Dataset+"/"+j.Version, "train_windows", trainN, "test_windows", len(testW),
		"train_sessions", len(trainG), "test_sessions", len(testG))

	return Evaluate(ctx, &Evaluation{
		Spec: j.Spec, Train: trainW, TrainSource: src, TrainWindows: trainN, Test: testW, Labels: m.Labels,
		Report: evaluate.Report{
			Run: j.RunName, Dataset: j.Dataset + "/" + j.Version,
			Split:       fmt.Sprintf("grouped hold-out: %d of %d capture sessions held out (seed %d)", len(testG), len(m.Groups), j.Seed),
			TrainGroups: trainG, TestGroups: testG,
		},
		// The held-out sessions are known devices the model never saw:
		// what the open-set threshold is calibrated on.
		SaveAs: j.RunName, Meta: Meta{Window: m.WindowSize, Kind: m.Kind, Dataset: j.Dataset + "/" + j.Version}, Calibration: CalibrateOnTest,
		ReportDir: path.Join("reports", j.RunName), HTML: true,
		Store: j.Store, Log: j.Log, Progress: j.Progress,
	})
}

// stream is the training side of a job under Spec.MaxMemory: the native
// reserve, the Go heap's slack, the held-out windows (which evaluation
// labels all at once), the largest object (read and decoded whole), the
// prefetched batches and the stream context's index come off the budget,
// and what is left is the shuffle buffer. It counts the training windows
// on the way.
func (j *Job) stream(ctx context.Context, m *dataset.Manifest, keep func(string) bool, test []*schemas.Window) (learn.Source, int, error) {
	var held, per int64
	for _, w := range test {
		held += dataset.WindowBytes(w)
	}
	var largest int64
	for _, p := range m.Parts {
		for _, o := range p.Objects {
			largest = max(largest, o.Size)
		}
	}
	per = held / int64(max(len(test), 1))
	// The stream context's index grows with the training set, so the
	// training windows are counted (and the index sized) first, in
	// manifest order: a pass that only counts needs no shuffle buffer,
	// and one sized before the index is known held the Go heap over its
	// limit for the whole pass (by 47 MiB on TestStreamTrainingStaysInBudget's
	// 589,003 windows).
	n, index := 0, int64(0)
	streamContext := j.Spec.Learn.Context == learn.ContextStream
	if err := dataset.Stream(ctx, j.Store, m, dataset.ReadOptions{Keep: keep}, func(w *schemas.Window) error {
		n++
		if streamContext {
			index += learn.IndexBytes(w)
		}
		return nil
	}); err != nil {
		return nil, 0, err
	}
	// An object's bytes and its decoded windows are held together while
	// the reader works through it.
	left := j.Spec.MaxMemory - nativeReserve - goSlack - held - 3*largest - index
	batches := int64(j.Spec.Learn.BatchSize) * 6 * per // prefetched and encoded batches
	buffer := (left - batches) / max(per, 1)
	if buffer < int64(j.Spec.Learn.BatchSize) {
		return nil, 0, fmt.Errorf("--max-memory %d bytes: libtorch's reserve (%d) and the Go heap's slack (%d), the %d held-out windows (%d bytes), three times the largest window object (%d), the stream context's index of the %d training windows (%d bytes) and the prefetched batches (%d) leave no room for a shuffle buffer of one batch (%d windows); raise --max-memory or lower --test-share",
			j.Spec.MaxMemory, nativeReserve, goSlack, len(test), held, 3*largest, n, index, batches, j.Spec.Learn.BatchSize)
	}
	src := func(ctx context.Context, pass int, yield func(*schemas.Window) error) error {
		return dataset.Stream(ctx, j.Store, m, dataset.ReadOptions{Keep: keep, ShuffleBuffer: int(buffer), Seed: j.Seed + uint64(pass)}, yield)
	}
	j.Log.Info("streaming training windows", "max_memory", j.Spec.MaxMemory, "held_out_bytes", held, "stream_index_bytes", index, "shuffle_buffer", buffer)
	return src, n, nil
}

// goSlack is what a streaming trainer's Go heap may hold beyond the
// windows and the stream index the budget counts: decoding buffers, the
// store client, and room for the collector to work in without running
// back to back.
const goSlack = 32 << 20

// nativeReserve is what libtorch and glibc may add to a streaming
// trainer's resident set beyond its runtime baseline (libtorch loaded and
// a few steps of the model taken): batches of other sizes than the first
// steps', the evaluation's inference, and what glibc's heaps keep free
// until releaseNative hands it back. TestStreamTrainingStaysInBudget on
// 481 MiB of windows under 256 MiB measured native memory at the peak
// 54 MiB over the baseline without releases and 25 MiB with a release
// every second; on 1285 MiB with releases on growth, 43 MiB.
const nativeReserve = 48 << 20

// nativeGrowth is how far native memory may grow over what it was when
// streaming began before releaseNative hands glibc's free memory back.
const nativeGrowth = 16 << 20

// nativeCheckEvery is how often a streaming trainer looks at its native
// memory: reading /proc/self/statm costs microseconds, a step tens of
// milliseconds.
const nativeCheckEvery = 250 * time.Millisecond

// releaseNative watches native memory (the resident set less what the Go
// runtime holds) and hands glibc's free heap memory back
// (learn.ReleaseNative) whenever it has grown more than allow over what it
// was when the watch began, until the returned function is called. A
// release every second cost a one-thread BLSTM a fifth to a third of its
// speed here (BenchmarkTrainDefault/threads=1,release=1s: the freed pages
// fault in again), so it runs only when the budget needs it.
func releaseNative(every time.Duration, allow int64) (stop func()) {
	base := nativeMemory()
	return learn.StartReleases(every, func() bool { return nativeMemory()-base > allow })
}

// nativeMemory is the resident set less what the Go runtime holds: what
// libtorch, glibc's heaps and the binary's pages hold (0 where
// /proc/self/statm cannot be read).
func nativeMemory() int64 {
	raw, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(raw))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages*int64(os.Getpagesize()) - goMemory()
}

// goMemory is the memory the Go runtime holds from the OS now, as its
// memory limit counts it.
func goMemory() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(s[0].Value.Uint64() - s[1].Value.Uint64())
}
