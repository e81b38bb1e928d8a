package detect

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

	"github.com/sugarme/gotch/ts"
)

// A model file is one stream:
//
//	magic "HMSPCNN\n" | uint32 format | uint32 len | JSON (Model: config,
//	device types, SPs, scales) | uint64 len | weights
//
// integers big-endian; the weights are gotch's VarStore file verbatim, so a
// later gotch still reads what this one wrote.
const (
	modelMagic      = "HMSPCNN\n"
	modelFormat     = 1
	maxMetaBytes    = 64 << 20
	maxWeightsBytes = 1 << 30
)

// Save writes the model so that Load reads it back.
func (m *Model) Save(w io.Writer) error {
	if m == nil || m.vs == nil {
		return errors.New("detect: Save of a closed model")
	}
	meta, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("detect: encode model: %w", err)
	}
	dir, err := os.MkdirTemp("", "homemole-detect-")
	if err != nil {
		return fmt.Errorf("detect: temp dir for weights: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "weights.ot")
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
		return fmt.Errorf("detect: save weights: %w", err)
	}
	weights, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("detect: read saved weights: %w", err)
	}
	var hdr bytes.Buffer
	hdr.WriteString(modelMagic)
	binary.Write(&hdr, binary.BigEndian, uint32(modelFormat))
	binary.Write(&hdr, binary.BigEndian, uint32(len(meta)))
	hdr.Write(meta)
	binary.Write(&hdr, binary.BigEndian, uint64(len(weights)))
	for _, b := range [][]byte{hdr.Bytes(), weights} {
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("detect: write model: %w", err)
		}
	}
	return nil
}

// SaveFile writes the model to path through a temporary file, so a crash
// never leaves half a model under the name.
func (m *Model) SaveFile(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".model-*")
	if err != nil {
		return fmt.Errorf("detect: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := m.Save(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("detect: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("detect: %w", err)
	}
	return nil
}

// LoadFile reads a model file written by SaveFile.
func LoadFile(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("detect: %w (train one with `homemole sp train`)", err)
	}
	defer f.Close()
	m, err := Load(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// Load reads a model written by Save.
func Load(r io.Reader) (*Model, error) {
	magic := make([]byte, len(modelMagic))
	if _, err := io.ReadFull(r, magic); err != nil {
		return nil, fmt.Errorf("detect: read model header: %w", err)
	}
	if string(magic) != modelMagic {
		return nil, errors.New("detect: not a HomeMole sequence-profile model (bad magic); `homemole sp train` writes them")
	}
	var format, metaLen uint32
	if err := binary.Read(r, binary.BigEndian, &format); err != nil {
		return nil, fmt.Errorf("detect: read model header: %w", err)
	}
	if format != modelFormat {
		return nil, fmt.Errorf("detect: model format %d, this build reads format %d", format, modelFormat)
	}
	if err := binary.Read(r, binary.BigEndian, &metaLen); err != nil {
		return nil, fmt.Errorf("detect: read model header: %w", err)
	}
	if metaLen > maxMetaBytes {
		return nil, fmt.Errorf("detect: model metadata of %d bytes is implausible; file corrupt?", metaLen)
	}
	metaBytes := make([]byte, metaLen)
	if _, err := io.ReadFull(r, metaBytes); err != nil {
		return nil, fmt.Errorf("detect: read model metadata: %w", err)
	}
	m := &Model{}
	if err := json.Unmarshal(metaBytes, m); err != nil {
		return nil, fmt.Errorf("detect: decode model metadata: %w", err)
	}
	if err := m.Config.Validate(); err != nil {
		return nil, fmt.Errorf("detect: model file: %w", err)
	}
	if len(m.Devices) == 0 {
		return nil, errors.New("detect: model file holds no device type")
	}
	for _, d := range m.Devices {
		if len(d.Profiles) == 0 || len(d.Profiles) > m.Config.Gen.MaxProfiles || len(d.Scale) != len(d.Profiles) {
			return nil, fmt.Errorf("detect: model file: device %s has %d SPs and %d scales (at most %d)", d.Name, len(d.Profiles), len(d.Scale), m.Config.Gen.MaxProfiles)
		}
	}
	m.index()
	var wLen uint64
	if err := binary.Read(r, binary.BigEndian, &wLen); err != nil {
		return nil, fmt.Errorf("detect: read weights length: %w", err)
	}
	if wLen > maxWeightsBytes {
		return nil, fmt.Errorf("detect: weights of %d bytes are implausible; file corrupt?", wLen)
	}
	f, err := os.CreateTemp("", "homemole-detect-*.ot")
	if err != nil {
		return nil, fmt.Errorf("detect: temp file for weights: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := io.CopyN(f, r, int64(wLen)); err != nil {
		f.Close()
		return nil, fmt.Errorf("detect: read weights: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("detect: write weights to temp file: %w", err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := m.build(); err != nil {
		m.Close()
		return nil, err
	}
	// VarStore.Load copies by name and refuses missing names or other
	// shapes, so weights that do not fit the metadata fail here.
	if err := m.vs.Load(f.Name()); err != nil {
		m.Close()
		return nil, fmt.Errorf("detect: load weights: %w", err)
	}
	return m, nil
}
