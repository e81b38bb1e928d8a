package learn

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
)

// A checkpoint is a ModelFile whose metadata is checkpointMeta as JSON.
const (
	checkpointMagic  = "HMLEARN\n"
	checkpointFormat = 1
)

var checkpointFile = ModelFile{Magic: checkpointMagic, Format: checkpointFormat, MaxWeights: 4 << 30, Noun: "checkpoint"}

type checkpointMeta struct {
	Config     Config    `json:"config"`
	NumClasses int       `json:"num_classes"`
	Features   *features `json:"features"`
}

// Save writes the model (configuration, feature preparation, weights) as
// one checkpoint that Load reads back.
func (m *Model) Save(w io.Writer) error {
	if m == nil || m.vs == nil {
		return errors.New("learn: Save of a closed model")
	}
	meta, err := json.Marshal(checkpointMeta{Config: m.cfg, NumClasses: m.numClasses, Features: m.feat})
	if err != nil {
		return fmt.Errorf("learn: encode checkpoint metadata: %w", err)
	}
	if err := checkpointFile.Write(w, meta, m.vs); err != nil {
		return fmt.Errorf("learn: %w", err)
	}
	return nil
}

// paramCount is how many float32 weights newModel creates for this shape,
// in float64 so that absurd sizes cannot overflow.
func paramCount(cfg Config, feat *features, numClasses int) float64 {
	h := float64(cfg.Hidden)
	in := float64(cfg.EmbedDim + cfg.LenEmbedDim + feat.numericDim())
	n := float64(feat.portRows())*float64(cfg.EmbedDim) + float64(feat.lenRows())*float64(cfg.LenEmbedDim)
	n += float64(cfg.directions()) * (4*h*in + 4*h*h + 8*h)
	d := float64(cfg.directions()) * h
	if cfg.Context == ContextStream {
		n += bagDim*float64(feat.bagRows()) + bagDim
		d += bagDim
	}
	return n + float64(numClasses)*(d+1)
}

// Load reads a checkpoint written by Save. The model goes to the GPU when
// one is available, to the CPU otherwise, wherever it was trained.
func Load(r io.Reader) (*Model, error) { return LoadOn(r, DeviceAuto) }

// LoadOn reads a checkpoint onto a device (see ResolveDevice).
func LoadOn(r io.Reader, device string) (*Model, error) {
	metaBytes, err := checkpointFile.ReadMeta(r)
	if errors.Is(err, ErrBadMagic) {
		return nil, errors.New("learn: not a HomeMole model checkpoint (bad magic)")
	}
	if err != nil {
		return nil, fmt.Errorf("learn: %w", err)
	}
	var meta checkpointMeta
	if err := json.Unmarshal(metaBytes, &meta); err != nil {
		return nil, fmt.Errorf("learn: decode checkpoint metadata: %w", err)
	}
	if err := meta.Config.Validate(); err != nil {
		return nil, fmt.Errorf("learn: checkpoint: %w", err)
	}
	if meta.NumClasses < 1 || meta.Features == nil {
		return nil, errors.New("learn: checkpoint metadata lacks classes or feature state")
	}
	meta.Features.buildIndex()
	weights, err := checkpointFile.ReadWeights(r)
	if err != nil {
		return nil, fmt.Errorf("learn: %w", err)
	}
	defer weights.Close()

	// The metadata sets the model's shape, and newModel allocates it before
	// the weights are read: a damaged header must not ask for more than
	// the weights on disk can fill.
	if n := paramCount(meta.Config, meta.Features, meta.NumClasses); n*4 > float64(weights.Size) {
		return nil, fmt.Errorf("learn: checkpoint metadata describes %.0f weights, its weights hold %d bytes; file corrupt?", n, weights.Size)
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dev, err := ResolveDevice(device)
	if err != nil {
		return nil, fmt.Errorf("learn: %w", err)
	}
	m, err := newModel(meta.Config, meta.Features, meta.NumClasses, dev.resolved)
	if err != nil {
		return nil, err
	}
	if err := weights.LoadInto(m.vs); err != nil {
		m.Close()
		return nil, fmt.Errorf("learn: %w", err)
	}
	return m, nil
}
