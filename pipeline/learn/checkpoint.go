package learn

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// A checkpoint is one self-contained stream:
//
//	magic "HMLEARN\n" | uint32 format | uint32 len | meta JSON | uint64 len | weights
//
// all integers big-endian. The weights are gotch's VarStore file verbatim:
// gotch only saves to a path, and keeping its format untouched means a
// future gotch can still read what an older one wrote.
const (
	checkpointMagic  = "HMLEARN\n"
	checkpointFormat = 1
	// Bounds that keep a corrupt header from allocating gigabytes.
	maxMetaBytes    = 64 << 20
	maxWeightsBytes = 4 << 30
)

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
	weights, err := m.weightBytes()
	if err != nil {
		return err
	}
	var hdr bytes.Buffer
	hdr.WriteString(checkpointMagic)
	binary.Write(&hdr, binary.BigEndian, uint32(checkpointFormat))
	binary.Write(&hdr, binary.BigEndian, uint32(len(meta)))
	hdr.Write(meta)
	binary.Write(&hdr, binary.BigEndian, uint64(len(weights)))
	for _, b := range [][]byte{hdr.Bytes(), weights} {
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("learn: write checkpoint: %w", err)
		}
	}
	return nil
}

func (m *Model) weightBytes() ([]byte, error) {
	// libtorch names the archive inside the file after the file, so a
	// fixed name keeps checkpoints of equal models byte-identical.
	dir, err := os.MkdirTemp("", "homemole-learn-")
	if err != nil {
		return nil, fmt.Errorf("learn: temp dir for weights: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "weights.ot")
	// VarStore.Save writes in map order; sorted names make equal models
	// give equal bytes. VarStore.Load matches by name, so it reads both.
	vars := m.vs.Variables()
	named := make([]ts.NamedTensor, 0, len(vars))
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		t := vars[name]
		named = append(named, ts.NamedTensor{Name: name, Tensor: &t})
	}
	runtime.LockOSThread() // gotch reports errors through a per-thread slot
	err = ts.SaveMultiNew(named, path)
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("learn: save weights: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("learn: read saved weights: %w", err)
	}
	return b, nil
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
func Load(r io.Reader) (*Model, error) {
	magic := make([]byte, len(checkpointMagic))
	if _, err := io.ReadFull(r, magic); err != nil {
		return nil, fmt.Errorf("learn: read checkpoint header: %w", err)
	}
	if string(magic) != checkpointMagic {
		return nil, errors.New("learn: not a HomeMole model checkpoint (bad magic)")
	}
	var format, metaLen uint32
	if err := binary.Read(r, binary.BigEndian, &format); err != nil {
		return nil, fmt.Errorf("learn: read checkpoint header: %w", err)
	}
	if format != checkpointFormat {
		return nil, fmt.Errorf("learn: checkpoint format %d, this build reads format %d", format, checkpointFormat)
	}
	if err := binary.Read(r, binary.BigEndian, &metaLen); err != nil {
		return nil, fmt.Errorf("learn: read checkpoint header: %w", err)
	}
	if metaLen > maxMetaBytes {
		return nil, fmt.Errorf("learn: checkpoint metadata of %d bytes is implausible; file corrupt?", metaLen)
	}
	metaBytes := make([]byte, metaLen)
	if _, err := io.ReadFull(r, metaBytes); err != nil {
		return nil, fmt.Errorf("learn: read checkpoint metadata: %w", err)
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
	var wLen uint64
	if err := binary.Read(r, binary.BigEndian, &wLen); err != nil {
		return nil, fmt.Errorf("learn: read checkpoint weights length: %w", err)
	}
	if wLen > maxWeightsBytes {
		return nil, fmt.Errorf("learn: checkpoint weights of %d bytes are implausible; file corrupt?", wLen)
	}

	f, err := os.CreateTemp("", "homemole-learn-*.ot")
	if err != nil {
		return nil, fmt.Errorf("learn: temp file for weights: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := io.CopyN(f, r, int64(wLen)); err != nil {
		f.Close()
		return nil, fmt.Errorf("learn: read checkpoint weights: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("learn: write weights to temp file: %w", err)
	}

	// The metadata sets the model's shape, and newModel allocates it before
	// the weights are read: a damaged header must not ask for more than
	// the weights on disk can fill.
	if n := paramCount(meta.Config, meta.Features, meta.NumClasses); n*4 > float64(wLen) {
		return nil, fmt.Errorf("learn: checkpoint metadata describes %.0f weights, its weights hold %d bytes; file corrupt?", n, wLen)
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	m, err := newModel(meta.Config, meta.Features, meta.NumClasses, gotch.CudaIfAvailable())
	if err != nil {
		return nil, err
	}
	// VarStore.Load copies by name into the variables just created and
	// refuses missing names or other shapes, so a checkpoint that does not
	// match its own metadata fails here.
	if err := m.vs.Load(f.Name()); err != nil {
		m.Close()
		return nil, fmt.Errorf("learn: load weights: %w", err)
	}
	return m, nil
}
