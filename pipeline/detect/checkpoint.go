package detect

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/homemole/homemole/internal/atomicfile"
	"github.com/homemole/homemole/pipeline/learn"
)

// A model file is a learn.ModelFile whose metadata is the Model as JSON
// (config, device types, SPs, scales).
var modelFile = learn.ModelFile{Magic: "HMSPCNN\n", Format: 1, MaxWeights: 1 << 30, Noun: "model"}

// Save writes the model so that Load reads it back.
func (m *Model) Save(w io.Writer) error {
	if m == nil || m.vs == nil {
		return errors.New("detect: Save of a closed model")
	}
	meta, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("detect: encode model: %w", err)
	}
	if err := modelFile.Write(w, meta, m.vs); err != nil {
		return fmt.Errorf("detect: %w", err)
	}
	return nil
}

// SaveFile writes the model to path through a temporary file, so a crash
// never leaves half a model under the name.
func (m *Model) SaveFile(path string) error {
	return atomicfile.Write(path, m.Save)
}

// LoadFile reads a model file written by SaveFile onto the first GPU when
// libtorch sees one, else the CPU.
func LoadFile(path string) (*Model, error) { return LoadFileOn(path, learn.DeviceAuto) }

// LoadFileOn reads a model file onto a device (see learn.ResolveDevice).
func LoadFileOn(path, device string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("detect: %w (train one with `homemole sp train`)", err)
	}
	defer f.Close()
	m, err := LoadOn(f, device)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// Load reads a model written by Save, as LoadFile places it.
func Load(r io.Reader) (*Model, error) { return LoadOn(r, learn.DeviceAuto) }

// LoadOn reads a model written by Save onto a device.
func LoadOn(r io.Reader, device string) (*Model, error) {
	metaBytes, err := modelFile.ReadMeta(r)
	if errors.Is(err, learn.ErrBadMagic) {
		return nil, errors.New("detect: not a HomeMole sequence-profile model (bad magic); `homemole sp train` writes them")
	}
	if err != nil {
		return nil, fmt.Errorf("detect: %w", err)
	}
	m := &Model{}
	if err := json.Unmarshal(metaBytes, m); err != nil {
		return nil, fmt.Errorf("detect: decode model metadata: %w", err)
	}
	if err := m.Config.Validate(); err != nil {
		return nil, fmt.Errorf("detect: model file: %w", err)
	}
	m.Config.Device = device
	if len(m.Devices) == 0 {
		return nil, errors.New("detect: model file holds no device type")
	}
	if err := m.Unknown.check(); err != nil {
		return nil, fmt.Errorf("detect: model file: %w", err)
	}
	for _, d := range m.Devices {
		if len(d.Profiles) == 0 || len(d.Profiles) > m.Config.Gen.MaxProfiles || len(d.Scale) != len(d.Profiles) {
			return nil, fmt.Errorf("detect: model file: device %s has %d SPs and %d scales (at most %d)", d.Name, len(d.Profiles), len(d.Scale), m.Config.Gen.MaxProfiles)
		}
	}
	m.index()
	weights, err := modelFile.ReadWeights(r)
	if err != nil {
		return nil, fmt.Errorf("detect: %w", err)
	}
	defer weights.Close()
	// build allocates what the metadata describes before the weights are
	// read: a damaged header must not ask for more than they can fill.
	if n := m.paramCount(); n*4 > float64(weights.Size) {
		return nil, fmt.Errorf("detect: model metadata describes %.0f weights, its weights hold %d bytes; file corrupt?", n, weights.Size)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := m.build(); err != nil {
		m.Close()
		return nil, err
	}
	if err := weights.LoadInto(m.vs); err != nil {
		m.Close()
		return nil, fmt.Errorf("detect: %w", err)
	}
	return m, nil
}
