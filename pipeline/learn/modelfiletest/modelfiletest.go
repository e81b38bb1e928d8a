// Package modelfiletest damages model files (learn.ModelFile, and the
// forest's) the way a torn write or a flipped byte might, for the tests of
// their loaders.
package modelfiletest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"testing"
)

// Seed gives a loader's fuzz test the model file save writes, whole, torn
// in half and torn after each of cuts bytes (the end of a header), as its
// seed corpus.
func Seed(f *testing.F, save func(io.Writer) error, cuts ...int) {
	f.Helper()
	var buf bytes.Buffer
	if err := save(&buf); err != nil {
		f.Fatalf("save the model: %v", err)
	}
	good := buf.Bytes()
	f.Add(good)
	f.Add(good[:len(good)/2])
	for _, n := range cuts {
		f.Add(good[:n])
	}
}

// EditMeta returns a copy of file, a model file whose magic is magicLen
// bytes long, with its JSON metadata passed through edit: how tests give a
// loader a header that claims what its weights cannot back.
func EditMeta(tb testing.TB, file []byte, magicLen int, edit func(meta map[string]any)) []byte {
	tb.Helper()
	off := magicLen + 4 // magic, format
	n := int(binary.BigEndian.Uint32(file[off:]))
	var meta map[string]any
	if err := json.Unmarshal(file[off+4:off+4+n], &meta); err != nil {
		tb.Fatalf("model file metadata: %v", err)
	}
	edit(meta)
	js, err := json.Marshal(meta)
	if err != nil {
		tb.Fatal(err)
	}
	out := binary.BigEndian.AppendUint32(append([]byte{}, file[:off]...), uint32(len(js)))
	return append(append(out, js...), file[off+4+n:]...)
}
