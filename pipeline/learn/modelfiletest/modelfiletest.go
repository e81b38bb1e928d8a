// Package modelfiletest damages model files (learn.ModelFile) the way a
// torn write or a flipped byte might, for the tests of their loaders.
package modelfiletest

import (
	"encoding/binary"
	"encoding/json"
	"testing"
)

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
