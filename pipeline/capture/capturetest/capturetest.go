// Package capturetest reads a test's capture files whole: the frames as
// they are, or the packets they decode to. Tests read small captures they
// made or that the project keeps, so failing the test on a bad frame is
// the right answer, and holding all of it in memory costs nothing.
package capturetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// Open opens the capture at path, failing the test when it cannot; the
// caller closes it.
func Open(tb testing.TB, path string) capture.Source {
	tb.Helper()
	src, err := capture.OpenFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return src
}

// Frames reads every frame of the capture at path, each with its own copy
// of the bytes (a Source reuses its buffer).
func Frames(tb testing.TB, path string) []capture.Frame {
	tb.Helper()
	src := Open(tb, path)
	defer src.Close()
	return all(tb, path, src)
}

// FramesOf is Frames for a capture a test holds in memory, named name.
func FramesOf(tb testing.TB, name string, data []byte) []capture.Frame {
	tb.Helper()
	src, err := capture.NewReader(bytes.NewReader(data), name)
	if err != nil {
		tb.Fatal(err)
	}
	defer src.Close()
	return all(tb, name, src)
}

func all(tb testing.TB, name string, src capture.Source) []capture.Frame {
	tb.Helper()
	var out []capture.Frame
	for {
		fr, err := src.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			tb.Fatalf("%s after %d frames: %v", name, len(out), err)
		}
		fr.Data = bytes.Clone(fr.Data)
		out = append(out, fr)
	}
}

// Packets decodes every frame of the capture at path as a tap of home
// would; a frame the decoder rejects fails the test.
func Packets(tb testing.TB, path string, home features.HomeConfig) []schemas.Packet {
	tb.Helper()
	var out []schemas.Packet
	st, err := capture.ReadFile(context.Background(), path, home, func(p *schemas.Packet) error {
		out = append(out, *p)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	if st.DecodeErrors > 0 {
		tb.Fatalf("%s: %d of %d frames do not decode, the first: %v", path, st.DecodeErrors, st.Packets, st.FirstDecodeError)
	}
	return out
}
