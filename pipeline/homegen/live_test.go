package homegen

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/capture/capturetest"
)

// TestLiveSource plays a generated home's captures round and round: frames
// numbered from 0 in the order of the files, stamped as read, until the
// limit; Close ends it early.
func TestLiveSource(t *testing.T) {
	h, _ := generate(t, Config{Seed: 5, Sessions: 2, SessionDuration: 20 * time.Second})
	inFiles := 0
	for _, f := range h.Files {
		inFiles += len(capturetest.Frames(t, f))
	}
	if inFiles == 0 {
		t.Fatal("the generated home has no frames")
	}
	limit := int64(2*inFiles + 7) // twice round, and into a third
	src := NewLiveSource(h.Files, limit)
	before := time.Now()
	var n int64
	for {
		fr, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if fr.Offset != uint64(n) {
			t.Fatalf("frame %d has offset %d", n, fr.Offset)
		}
		if fr.CI.Timestamp.Before(before) {
			t.Fatalf("frame %d stamped %s, before the source was read", n, fr.CI.Timestamp)
		}
		n++
	}
	if n != limit {
		t.Errorf("%d frames of %d in the files played up to %d: want %d", n, inFiles, limit, limit)
	}

	src = NewLiveSource(h.Files, limit)
	if _, err := src.Next(); err != nil {
		t.Fatal(err)
	}
	src.Close()
	if _, err := src.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("Next after Close: %v, want io.EOF", err)
	}
	if _, err := NewLiveSource(nil, 10).Next(); !errors.Is(err, io.EOF) {
		t.Errorf("a source without files: %v, want io.EOF", err)
	}
}
