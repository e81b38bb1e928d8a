package learn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"

	"github.com/sugarme/gotch/nn"
	"github.com/sugarme/gotch/ts"
)

// ModelFile is the container every libtorch model of HomeMole is saved in
// (this package's checkpoints, detect's sequence-profile models):
//
//	magic | uint32 format | uint32 len | metadata | uint64 len | weights
//
// all integers big-endian. The weights are gotch's VarStore file verbatim:
// gotch only saves to a path, and keeping its format untouched means a
// future gotch can still read what an older one wrote. The metadata is the
// caller's, which builds its model from it before the weights are loaded.
//
// Errors carry no package prefix: the caller adds its own.
type ModelFile struct {
	Magic  string // tells one kind of model file from another and from garbage
	Format uint32 // changes whenever Magic's layout of metadata or weights does
	// MaxWeights bounds the weights a header may announce, so a corrupt
	// one fails cleanly instead of filling the temp directory.
	MaxWeights uint64
	Noun       string // what errors call the file, e.g. "checkpoint"
}

// ErrBadMagic is returned when a stream does not start with the expected
// magic: it is not a damaged model file but something else entirely, and
// callers say what the file should have been.
var ErrBadMagic = errors.New("bad magic")

// Bounds the metadata a header may announce, which is read into memory.
const maxModelMetaBytes = 64 << 20

// Write writes meta and the variables of vs as one model file.
func (f ModelFile) Write(w io.Writer, meta []byte, vs *nn.VarStore) error {
	weights, err := varStoreBytes(vs)
	if err != nil {
		return err
	}
	var hdr bytes.Buffer
	hdr.WriteString(f.Magic)
	binary.Write(&hdr, binary.BigEndian, f.Format)
	binary.Write(&hdr, binary.BigEndian, uint32(len(meta)))
	hdr.Write(meta)
	binary.Write(&hdr, binary.BigEndian, uint64(len(weights)))
	for _, b := range [][]byte{hdr.Bytes(), weights} {
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("write %s: %w", f.Noun, err)
		}
	}
	return nil
}

func varStoreBytes(vs *nn.VarStore) ([]byte, error) {
	// libtorch names the archive inside the file after the file, so a
	// fixed name keeps files of equal models byte-identical.
	dir, err := os.MkdirTemp("", "homemole-model-")
	if err != nil {
		return nil, fmt.Errorf("temp dir for weights: %w", err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "weights.ot")
	// VarStore.Save writes in map order; sorted names make equal models
	// give equal bytes. VarStore.Load matches by name, so it reads both.
	vars := vs.Variables()
	named := make([]ts.NamedTensor, 0, len(vars))
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		t := vars[name]
		named = append(named, ts.NamedTensor{Name: name, Tensor: &t})
	}
	runtime.LockOSThread() // gotch reports errors through a per-thread slot
	err = ts.SaveMultiNew(named, path)
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("save weights: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read saved weights: %w", err)
	}
	return b, nil
}

// ReadMeta reads the header and metadata of a model file from r. Reading
// stops there so that the caller can vet the metadata before ReadWeights
// copies up to MaxWeights bytes to disk.
func (f ModelFile) ReadMeta(r io.Reader) ([]byte, error) {
	magic := make([]byte, len(f.Magic))
	if _, err := io.ReadFull(r, magic); err != nil {
		return nil, fmt.Errorf("read %s header: %w", f.Noun, err)
	}
	if string(magic) != f.Magic {
		return nil, ErrBadMagic
	}
	var format, metaLen uint32
	if err := binary.Read(r, binary.BigEndian, &format); err != nil {
		return nil, fmt.Errorf("read %s header: %w", f.Noun, err)
	}
	if format != f.Format {
		return nil, fmt.Errorf("%s format %d, this build reads format %d", f.Noun, format, f.Format)
	}
	if err := binary.Read(r, binary.BigEndian, &metaLen); err != nil {
		return nil, fmt.Errorf("read %s header: %w", f.Noun, err)
	}
	if metaLen > maxModelMetaBytes {
		return nil, fmt.Errorf("%s metadata of %d bytes is implausible; file corrupt?", f.Noun, metaLen)
	}
	meta := make([]byte, metaLen)
	if _, err := io.ReadFull(r, meta); err != nil {
		return nil, fmt.Errorf("read %s metadata: %w", f.Noun, err)
	}
	return meta, nil
}

// ModelWeights are the weights of a model file, parked in a temp file
// because gotch only loads from a path. Close removes it.
type ModelWeights struct {
	// Size in bytes, which bounds how large a model the metadata may ask
	// for before it is allocated.
	Size uint64
	path string
}

// ReadWeights reads the weights that follow the metadata ReadMeta returned.
func (f ModelFile) ReadWeights(r io.Reader) (*ModelWeights, error) {
	var size uint64
	if err := binary.Read(r, binary.BigEndian, &size); err != nil {
		return nil, fmt.Errorf("read %s weights length: %w", f.Noun, err)
	}
	if size > f.MaxWeights {
		return nil, fmt.Errorf("%s weights of %d bytes are implausible; file corrupt?", f.Noun, size)
	}
	tmp, err := os.CreateTemp("", "homemole-model-*.ot")
	if err != nil {
		return nil, fmt.Errorf("temp file for weights: %w", err)
	}
	if _, err := io.CopyN(tmp, r, int64(size)); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("read %s weights: %w", f.Noun, err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("write weights to temp file: %w", err)
	}
	return &ModelWeights{Size: size, path: tmp.Name()}, nil
}

// LoadInto copies the weights into the variables of vs, which the caller
// created from the metadata. VarStore.Load matches by name and refuses
// missing names or other shapes, so weights that do not fit the metadata
// fail here.
func (w *ModelWeights) LoadInto(vs *nn.VarStore) error {
	runtime.LockOSThread() // gotch reports errors through a per-thread slot
	defer runtime.UnlockOSThread()
	if err := vs.Load(w.path); err != nil {
		return fmt.Errorf("load weights: %w", err)
	}
	return nil
}

// Close removes the temp file.
func (w *ModelWeights) Close() error {
	return os.Remove(w.path)
}
