package train

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path"

	"github.com/homemole/homemole/pipeline/forest"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
)

// Model is what evaluation needs of a trained classifier: a label per
// packet of each window, and where it ran.
type Model interface {
	Predict(ws []*schemas.Window) ([][]int32, error)
	Save(w io.Writer) error
	Device() string
	Close()
}

// Spec names a model of the registry and how to fit it: the one choice
// every command and the trainer worker make through the same flags.
type Spec struct {
	Name  string       // rf, lstm or blstm (see Models)
	Learn learn.Config // the LSTM's schedule; its Seed seeds the forest too
	Trees int          // Random Forest trees (0: the paper's 100)
	// MaxMemory, when > 0, bounds what a trainer adds to its runtime's
	// memory (libtorch loaded), all in: it streams its training windows
	// from the store through a shuffle buffer sized to fit beside the
	// held-out windows, the Go heap's slack and libtorch's reserve,
	// instead of reading them all (LSTM and BLSTM only).
	MaxMemory int64
}

// fitter trains one kind of model.
type fitter func(ctx context.Context, s Spec, ws []*schemas.Window, numClasses int, progress func(learn.EpochStats), log *slog.Logger) (Model, error)

// registry is every model a trainer can fit, in the order help lists them;
// a new model is a line here and a case in LoadModelOn.
var registry = []struct {
	name string
	fit  fitter
}{
	{"rf", func(ctx context.Context, s Spec, ws []*schemas.Window, n int, _ func(learn.EpochStats), log *slog.Logger) (Model, error) {
		return trainForest(ctx, s.Learn.Seed, s.Trees, ws, n, log)
	}},
	{"lstm", fitLSTM(false)},
	{"blstm", fitLSTM(true)},
}

func fitLSTM(bidirectional bool) fitter {
	return func(ctx context.Context, s Spec, ws []*schemas.Window, n int, progress func(learn.EpochStats), _ *slog.Logger) (Model, error) {
		cfg := s.Learn
		cfg.Bidirectional = bidirectional
		m, err := learn.Train(ctx, cfg, ws, n, progress)
		if err != nil {
			return nil, fmt.Errorf("train %s: %w", s.Name, err)
		}
		return m, nil
	}
}

// FitStream trains the model on windows src reads pass by pass, never all
// at once; only the libtorch models can.
func (s Spec) FitStream(ctx context.Context, src learn.Source, numClasses int, progress func(learn.EpochStats)) (Model, error) {
	if s.Name != "lstm" && s.Name != "blstm" {
		return nil, fmt.Errorf("model %s: only lstm and blstm train from a stream; drop --max-memory or pick one of them", s.Name)
	}
	cfg := s.Learn
	cfg.Bidirectional = s.Name == "blstm"
	m, err := learn.TrainStream(ctx, cfg, src, numClasses, progress)
	if err != nil {
		return nil, fmt.Errorf("train %s from a stream: %w", s.Name, err)
	}
	return m, nil
}

// Models names the models a trainer can fit.
var Models = func() []string {
	var out []string
	for _, r := range registry {
		out = append(out, r.name)
	}
	return out
}()

// Check refuses a model the registry does not have.
func (s Spec) Check() error {
	if s.Trees < 0 {
		return fmt.Errorf("%d trees: want at least 1 (0: the paper's 100)", s.Trees)
	}
	_, err := s.fitter()
	return err
}

func (s Spec) fitter() (fitter, error) {
	for _, r := range registry {
		if r.name == s.Name {
			return r.fit, nil
		}
	}
	return nil, fmt.Errorf("model %q: want one of %v", s.Name, Models)
}

// Fit trains the model on the windows; progress gets each epoch of an
// LSTM or BLSTM.
func (s Spec) Fit(ctx context.Context, ws []*schemas.Window, numClasses int, progress func(learn.EpochStats), log *slog.Logger) (Model, error) {
	fit, err := s.fitter()
	if err != nil {
		return nil, err
	}
	return fit(ctx, s, ws, numClasses, progress, log)
}

// forestModel adapts the Random Forest to Model: it runs on the CPU and
// holds nothing outside the Go heap.
type forestModel struct{ *forest.Model }

func (forestModel) Device() string { return "cpu" }
func (forestModel) Close()         {}

// trainForest trains the paper's Random Forest baseline (100 trees unless
// told otherwise, on every core) on the windows' packets, one row each.
func trainForest(ctx context.Context, seed int64, trees int, ws []*schemas.Window, numClasses int, log *slog.Logger) (Model, error) {
	cfg := forest.DefaultConfig()
	cfg.Seed = uint64(seed)
	if trees > 0 {
		cfg.Trees = trees
	}
	last := -1
	m, err := forest.Train(ctx, cfg, ws, numClasses, func(done, total int) {
		// A line per tenth of the forest, not per tree.
		if tenth := done * 10 / total; tenth != last {
			last = tenth
			log.Info("random forest", "trees", fmt.Sprintf("%d/%d", done, total))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("train rf: %w", err)
	}
	imp := m.Importance()
	log.Info("random forest trained", "pca_explained_variance", fmt.Sprintf("%.3f", m.ExplainedVariance()),
		"importance_dport", fmt.Sprintf("%.2f", imp["dport"]), "importance_frame_length", fmt.Sprintf("%.2f", imp["frame_length"]),
		"importance_time_interval", fmt.Sprintf("%.2f", imp["time_interval"]), "importance_protocol", fmt.Sprintf("%.2f", imp["protocol"]))
	return forestModel{m}, nil
}

// probModel is a model that says how sure it is, packet by packet.
type probModel interface {
	LogProbs(ws []*schemas.Window) ([][]float32, error)
}

// PredictPooled labels the packets of the windows; with pool set, and when
// the model gives probabilities, each window's packets pool their evidence
// and all get the class of highest summed log-probability. That is right
// only for ind windows, where every packet is one device's by construction:
// a few telling packets (an announcement carrying the model string) then
// outweigh the many that one vendor's firmware shares across its devices.
func PredictPooled(m Model, ws []*schemas.Window, pool bool) ([][]int32, error) {
	pm, ok := m.(probModel)
	if !pool || !ok {
		return m.Predict(ws)
	}
	lp, err := pm.LogProbs(ws)
	if err != nil {
		return nil, err
	}
	out := make([][]int32, len(ws))
	var sum []float64
	for i, w := range ws {
		if w.Len == 0 {
			out[i] = []int32{}
			continue
		}
		k := len(lp[i]) / w.Len
		if sum == nil {
			sum = make([]float64, k)
		}
		clear(sum)
		for j := range w.Len {
			for c := range k {
				sum[c] += float64(lp[i][j*k+c])
			}
		}
		best := 0
		for c := range sum {
			if sum[c] > sum[best] {
				best = c
			}
		}
		out[i] = make([]int32, w.Len)
		for j := range out[i] {
			out[i][j] = int32(best)
		}
	}
	return out, nil
}

// Meta is what a stored model needs besides its weights to be used: which
// model it is, the label vocabulary its classes index, and the window size
// and view it was trained on. It is stored as model.json beside model.ckpt.
type Meta struct {
	Model   string   `json:"model"` // rf, lstm or blstm
	Labels  []string `json:"labels"`
	Window  int      `json:"window"`
	View    string   `json:"view,omitempty"`
	Kind    string   `json:"kind,omitempty"`
	Dataset string   `json:"dataset,omitempty"`
	Seed    int64    `json:"seed"`
	// Unknown is the open-set rule (see Calibrate); models saved without
	// one name every host after its likeliest trained device.
	Unknown *OpenSet `json:"unknown,omitempty"`
	// Families are the devices the model took for one another on
	// held-out sessions, or of one hardware type (HeldOut.Families),
	// learned when it was saved; predict names a host's family from them.
	// Models saved before they existed have none.
	Families [][]string `json:"families,omitempty"`
}

// ModelKeys are where a run's model lives in the store.
func ModelKeys(run string) (ckpt, meta string) {
	return path.Join("models", run, "model.ckpt"), path.Join("models", run, "model.json")
}

// SaveModel stores the checkpoint, then the metadata that makes it usable:
// a model.json never names a checkpoint that is not there.
func SaveModel(ctx context.Context, st store.Store, run string, m Model, meta Meta) error {
	var ckpt bytes.Buffer
	if err := m.Save(&ckpt); err != nil {
		return fmt.Errorf("save checkpoint of run %s: %w", run, err)
	}
	ck, mk := ModelKeys(run)
	if _, err := st.Put(ctx, ck, ckpt.Bytes(), "application/octet-stream"); err != nil {
		return err
	}
	js, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	_, err = st.Put(ctx, mk, js, "application/json")
	return err
}

// LoadModel reads a run's model back from the store.
func LoadModel(ctx context.Context, st store.Store, run string) (Model, Meta, error) {
	return LoadModelOn(ctx, st, run, learn.DeviceAuto)
}

// LoadModelOn is LoadModel with the device an LSTM or BLSTM goes to (see
// learn.ResolveDevice); a Random Forest runs on the CPU whatever it says.
func LoadModelOn(ctx context.Context, st store.Store, run, device string) (Model, Meta, error) {
	var meta Meta
	ck, mk := ModelKeys(run)
	js, err := st.Get(ctx, mk)
	if err != nil {
		return nil, meta, fmt.Errorf("model %s: %w (train one with homemole train, cv or experiment --save RUN)", run, err)
	}
	if err := json.Unmarshal(js, &meta); err != nil {
		return nil, meta, fmt.Errorf("%s: %w", st.Location(mk), err)
	}
	if meta.Window <= 0 || len(meta.Labels) == 0 {
		return nil, meta, fmt.Errorf("%s: window %d and %d labels: the metadata is incomplete", st.Location(mk), meta.Window, len(meta.Labels))
	}
	if err := meta.Unknown.check(len(meta.Labels)); err != nil {
		return nil, meta, fmt.Errorf("%s: %w (train the model again, or delete its \"unknown\" entry to name every host)", st.Location(mk), err)
	}
	data, err := st.Get(ctx, ck)
	if err != nil {
		return nil, meta, err
	}
	var m Model
	switch meta.Model {
	case "rf":
		f, err := forest.Load(bytes.NewReader(data))
		if err != nil {
			return nil, meta, fmt.Errorf("%s: %w", st.Location(ck), err)
		}
		m = forestModel{f}
	case "lstm", "blstm":
		l, err := learn.LoadOn(bytes.NewReader(data), device)
		if err != nil {
			return nil, meta, fmt.Errorf("%s: %w", st.Location(ck), err)
		}
		m = l
	default:
		return nil, meta, fmt.Errorf("%s: model %q: want one of %v", st.Location(mk), meta.Model, Models)
	}
	return m, meta, nil
}
