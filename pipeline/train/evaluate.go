package train

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"time"

	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
)

// Calibration says which windows the open-set threshold of a saved model
// is taken on.
type Calibration int

const (
	// CalibrateOnTest takes it on the held-out windows: right when they
	// are known devices in sessions the model never saw (train, cv).
	CalibrateOnTest Calibration = iota
	// CalibrateOnTrain holds out a share of the training sessions and fits
	// a second model of the same spec: right when the test side may hold
	// devices the model never saw (experiment).
	CalibrateOnTrain
)

// Evaluation is one fit-and-judge: a model of Spec trained on Train,
// labelling Test, saved and reported where it says. Every command and the
// trainer worker build one, so that the epoch line, the checkpoint, the
// open-set threshold and the report mean the same everywhere.
type Evaluation struct {
	Spec        Spec
	Train, Test []*schemas.Window
	// TrainSource, when set, streams the training windows instead of Train
	// (Spec.FitStream); TrainWindows is how many it gives.
	TrainSource  learn.Source
	TrainWindows int
	// Labels index the windows' classes. The model learns the first
	// NumClasses of them (0: all); test-only devices come after, and the
	// model can never name them, which scores them as the misses they are.
	Labels     []string
	NumClasses int
	// Report carries what the caller knows: run, dataset, split in words,
	// groups. Evaluate fills in the rest.
	Report evaluate.Report
	// SaveAs, when set, stores the model as models/SaveAs with Meta (its
	// model name, seed, labels and threshold filled in here).
	SaveAs      string
	Meta        Meta
	Calibration Calibration
	// ServerFamilies are families of another reason than the model's
	// confusions (evaluate.ServerFamilies: types that reach one vendor's
	// servers), joined with those the calibration learns.
	ServerFamilies [][]string
	// CalibrationFolds is how many models CalibrateOnTrain fits (0:
	// CalibrationFolds), each scoring the training sessions it never saw.
	CalibrationFolds int
	// VoteBy is the unit packet i of w votes in (the Outcome's
	// Report.Sessions hold one vote per unit); nil: the stream w was cut
	// from (one device's packets of one session in ind windows, the
	// session in noise ones).
	VoteBy func(w *schemas.Window, i int) string
	// Pool gives every packet of an ind window its window's likeliest class
	// (see PredictPooled).
	Pool bool
	// ReportDir, when set, is where report.json (and report.html with
	// HTML) go in the store, e.g. reports/RUN.
	ReportDir string
	HTML      bool
	Store     store.Store
	Log       *slog.Logger
	// Progress receives each epoch's figures after they are logged (a
	// worker counts them in its metrics).
	Progress func(learn.EpochStats)
}

// Outcome is what an evaluation found and where it put it.
type Outcome struct {
	// Report holds the per-packet judgement and, in Sessions, the one
	// vote per session (Evaluation.VoteBy) that every caller reports.
	Report *evaluate.Report
	// Preds are the labels of every packet of every test window.
	Preds   [][]int32
	Unknown *OpenSet
	// Families are those the saved model learned from its held-out
	// calibration sessions (Meta.Families), joined with
	// Evaluation.ServerFamilies; nil when not saved. ConfusionFamilies are
	// those of the calibration's confusions alone.
	Families, ConfusionFamilies [][]string
	// TestHosts are the held-out windows' hosts, (session, device) pairs,
	// under the saved model's open-set rule; only for a model
	// calibrated on its training captures (CalibrateOnTrain), whose rule
	// never saw these sessions.
	TestHosts  []HostScore
	Checkpoint string // store key; empty when not saved
	ReportJSON string // store keys; empty when not written
	ReportHTML string
	HTML       []byte
}

// Evaluate fits the model, logs each epoch, calibrates and saves it,
// labels the test windows, judges them per packet and per stream, and
// writes the report.
func Evaluate(ctx context.Context, e *Evaluation) (*Outcome, error) {
	if err := e.Spec.Check(); err != nil {
		return nil, err
	}
	trainN := len(e.Train)
	if e.TrainSource != nil {
		trainN = e.TrainWindows
		if e.Calibration == CalibrateOnTrain {
			return nil, errors.New("calibration on training windows needs them in memory; a streamed evaluation calibrates on the held-out ones")
		}
	}
	if trainN == 0 || len(e.Test) == 0 {
		return nil, fmt.Errorf("%d training and %d held-out windows: an evaluation needs both", trainN, len(e.Test))
	}
	classes := e.NumClasses
	if classes == 0 {
		classes = len(e.Labels)
	}
	rep := e.Report
	rep.Model, rep.TrainWindows, rep.TestWindows = e.Spec.Name, trainN, len(e.Test)
	start := time.Now()
	progress := func(s learn.EpochStats) {
		rep.Epochs = append(rep.Epochs, evaluate.Epoch{Epoch: s.Epoch, Loss: s.Loss, TrainAccuracy: s.Accuracy, WindowsPerSec: s.WindowsPerSec})
		e.Log.Info("epoch", EpochLog(s, e.Spec.Learn.Epochs)...)
		if e.Progress != nil {
			e.Progress(s)
		}
	}
	// The familiarity test of a model saved and calibrated on held-out
	// windows judges them against the packet kinds it was trained on
	// (CalibrateBySplit gathers its own, fold by fold); nil when no such
	// calibration follows.
	var trained *KindSets
	if e.SaveAs != "" && e.Calibration == CalibrateOnTest {
		trained = NewKindSets(classes)
	}
	var model Model
	var err error
	if e.TrainSource != nil {
		src := e.TrainSource
		if trained != nil {
			src = func(ctx context.Context, pass int, yield func(*schemas.Window) error) error {
				if pass != 0 {
					return e.TrainSource(ctx, pass, yield)
				}
				// The first pass sees every training window.
				return e.TrainSource(ctx, pass, func(w *schemas.Window) error {
					trained.Add(w)
					return yield(w)
				})
			}
		}
		model, err = e.Spec.FitStream(ctx, src, classes, progress)
	} else {
		if trained != nil {
			trained.Add(e.Train...)
		}
		model, err = e.Spec.Fit(ctx, e.Train, classes, progress, e.Log)
	}
	if err != nil {
		return nil, err
	}
	defer model.Close()
	rep.Device = model.Device()
	rep.TrainSeconds = time.Since(start).Seconds()

	out := &Outcome{Report: &rep}
	if e.SaveAs != "" {
		if err := e.save(ctx, model, classes, trained, out); err != nil {
			return nil, err
		}
	}
	lp, err := e.label(model, out)
	if err != nil {
		return nil, fmt.Errorf("label held-out windows: %w", err)
	}
	conf, voter, err := e.judge(out.Preds, lp)
	if err != nil {
		return nil, err
	}
	if out.Unknown != nil && e.Calibration == CalibrateOnTrain {
		if out.TestHosts, err = e.openSet(model, out, lp); err != nil {
			return nil, err
		}
	}
	rep.Confusion = conf
	rep.Sessions = voter.Votes()
	rep.Fill()
	if e.ReportDir != "" {
		if err := e.writeReport(ctx, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// openSet judges the held-out hosts by the saved model's open-set rule,
// from the labels the rule was calibrated with: the model's own, with
// their probabilities (lp, when label kept them; else labeled again).
func (e *Evaluation) openSet(model Model, out *Outcome, lp [][]float32) ([]HostScore, error) {
	preds := out.Preds
	if lp == nil {
		var err error
		if preds, lp, err = Label(model, e.Test); err != nil {
			return nil, fmt.Errorf("label held-out windows for the open-set rule: %w", err)
		}
	}
	hosts, _ := ScoreHosts(preds, lp, e.Test, out.Unknown.Familiarity)
	for i := range hosts {
		hosts[i].Unknown = out.Unknown.IsUnknown(hosts[i].Confidence, hosts[i].Familiarity)
	}
	return hosts, nil
}

// judge tallies held-out predictions per packet and per session vote; lp,
// when not nil, holds the packets' log-probabilities, by which the
// sessions are then named (evaluate.VoteLogProb).
func (e *Evaluation) judge(preds [][]int32, lp [][]float32) (*evaluate.Confusion, *evaluate.Voter, error) {
	conf := evaluate.NewConfusion(e.Labels)
	voter := evaluate.NewVoter(e.Labels)
	for i, w := range e.Test {
		stream, _, _ := schemas.SplitWindowID(w.ID)
		for k := 0; k < w.Len; k++ {
			t, p := int(w.Label[k]), int(preds[i][k])
			if err := conf.Add(t, p); err != nil {
				return nil, nil, fmt.Errorf("window %s: %w", w.ID, err)
			}
			unit := stream
			if e.VoteBy != nil {
				unit = e.VoteBy(w, k)
			}
			voter.AddScored(unit, t, p, Row(lp, e.Test, i, k))
		}
	}
	return conf, voter, nil
}

// label labels the test windows' packets into out.Preds and returns their
// log-probabilities where the sessions are to be named by them
// (evaluate.VoteLogProb): an LSTM's or BLSTM's softmax, not pooled. A
// Random Forest's tree shares are often exactly 0 for the right class on
// a packet or two, whose logarithm would veto it; its sessions keep the
// majority of its labels.
func (e *Evaluation) label(model Model, out *Outcome) ([][]float32, error) {
	if _, ok := model.(probModel); !ok || e.Pool {
		var err error
		out.Preds, err = PredictPooled(model, e.Test, e.Pool)
		return nil, err
	}
	preds, lp, err := Label(model, e.Test)
	out.Preds = preds
	return lp, err
}

// save calibrates the unknown-device threshold and stores the model;
// trained are the packet kinds of its training windows, which a
// calibration on the held-out windows (CalibrateOnTest) judges them by.
func (e *Evaluation) save(ctx context.Context, model Model, classes int, trained *KindSets, out *Outcome) error {
	meta := e.Meta
	meta.Model, meta.Seed = e.Spec.Name, e.Spec.Learn.Seed
	if meta.Labels == nil {
		meta.Labels = e.Labels[:classes]
	}
	var held *HeldOut
	var err error
	switch e.Calibration {
	case CalibrateOnTest:
		held, err = Calibrate(model, e.Test, trained, classes, DefaultUnknownQuantile)
	case CalibrateOnTrain:
		folds := e.CalibrationFolds
		if folds == 0 {
			folds = CalibrationFolds
		}
		held, err = CalibrateBySplit(ctx, e.Spec, e.Train, classes, folds, DefaultUnknownQuantile, e.Log)
	}
	if err != nil {
		return fmt.Errorf("calibrate the unknown-device threshold: %w", err)
	}
	if held != nil {
		meta.Unknown = held.Unknown
		if meta.Families, err = held.Families(meta.Labels); err != nil {
			return fmt.Errorf("learn the families: %w", err)
		}
		out.ConfusionFamilies = meta.Families
		meta.Families = evaluate.MergeFamilies(meta.Families, evaluate.OnlyOf(e.ServerFamilies, meta.Labels))
		e.Log.Info("unknown-device threshold", "score", meta.Unknown.Score, "threshold", fmt.Sprintf("%.3f", meta.Unknown.Threshold),
			"familiarity_threshold", fmt.Sprintf("%.3f", meta.Unknown.Familiarity.Threshold), "held_out_hosts", meta.Unknown.Hosts, "false_unknown", fmt.Sprintf("%.3f", meta.Unknown.FalseUnknown))
		from := "the held-out calibration sessions"
		if len(e.ServerFamilies) > 0 {
			from += " and shared vendor servers"
		}
		e.Log.Info("families", "learned_from", from, "families", evaluate.FamilyList(meta.Families))
	}
	if err := SaveModel(ctx, e.Store, e.SaveAs, model, meta); err != nil {
		return fmt.Errorf("save model %s: %w", e.SaveAs, err)
	}
	out.Unknown, out.Families = meta.Unknown, meta.Families
	out.Checkpoint, _ = ModelKeys(e.SaveAs)
	return nil
}

func (e *Evaluation) writeReport(ctx context.Context, out *Outcome) error {
	js, err := out.Report.JSON()
	if err != nil {
		return err
	}
	out.ReportJSON = path.Join(e.ReportDir, "report.json")
	if _, err := e.Store.Put(ctx, out.ReportJSON, js, "application/json"); err != nil {
		return fmt.Errorf("store the report: %w", err)
	}
	if !e.HTML {
		return nil
	}
	if out.HTML, err = out.Report.HTML(); err != nil {
		return err
	}
	out.ReportHTML = path.Join(e.ReportDir, "report.html")
	if _, err := e.Store.Put(ctx, out.ReportHTML, out.HTML, "text/html"); err != nil {
		return fmt.Errorf("store the report: %w", err)
	}
	return nil
}

// EpochLog is an epoch's training log line: loss, accuracy, throughput,
// and each step's time split into waiting for its batch (data) and the
// step itself (compute), so a device left idle by Go shows.
func EpochLog(e learn.EpochStats, epochs int) []any {
	per := func(d time.Duration) string {
		return fmt.Sprintf("%.2f", d.Seconds()*1e3/float64(max(e.Steps, 1)))
	}
	return []any{"epoch", fmt.Sprintf("%d/%d", e.Epoch, epochs), "loss", fmt.Sprintf("%.4f", e.Loss),
		"train_accuracy", fmt.Sprintf("%.3f", e.Accuracy), "windows_per_s", fmt.Sprintf("%.0f", e.WindowsPerSec),
		"steps", e.Steps, "data_ms_per_step", per(e.DataWait), "compute_ms_per_step", per(e.Compute), "prepare_ms_per_step", per(e.Prepare)}
}
