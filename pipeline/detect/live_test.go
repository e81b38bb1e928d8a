package detect

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestDecodeCheckpoint: what Save writes reads back, and a checkpoint no
// detector writes (another version, an empty or backwards range) is refused
// with what is wrong in it.
func TestDecodeCheckpoint(t *testing.T) {
	good := Checkpoint{Version: CheckpointVersion, Next: 170954965, Seq: 28, From: 25}
	data, err := json.Marshal(good)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeCheckpoint(data); err != nil || got != good {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, good)
	}
	for _, c := range []struct{ name, data, want string }{
		{"not JSON", "{", "decode checkpoint"},
		{"other version", `{"version":2,"seq":3,"from_seq":1}`, "version 2"},
		{"no position", `{"version":1}`, "positions 0 to 0"},
		{"backwards", `{"version":1,"seq":3,"from_seq":9}`, "positions 9 to 3"},
	} {
		if _, err := DecodeCheckpoint([]byte(c.data)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
	// Nothing held: the next batch is where a replay would start.
	if _, err := DecodeCheckpoint([]byte(`{"version":1,"seq":3,"from_seq":4}`)); err != nil {
		t.Errorf("a checkpoint holding no batch: %v", err)
	}
}

// FuzzDecodeCheckpoint: any bytes in the bucket give a checkpoint that
// keeps the invariants a restore relies on, or an error; never a panic.
func FuzzDecodeCheckpoint(f *testing.F) {
	f.Add([]byte(`{"version":1,"next_bin":5,"jumps":0,"seq":3,"from_seq":1}`))
	f.Add([]byte(`{"version":1,"seq":18446744073709551615,"from_seq":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cp, err := DecodeCheckpoint(data)
		if err != nil {
			return
		}
		if cp.Version != CheckpointVersion || cp.Seq == 0 || cp.From == 0 || cp.From > cp.Seq+1 {
			t.Fatalf("accepted %+v from %q", cp, data)
		}
	})
}
