package homegen

import (
	"errors"
	"io"
	"sync/atomic"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
)

// LiveSource plays a generated home's captures as a live tap, as fast as
// they can be read, each frame stamped with the time it is read and
// numbered from 0, round and round its files until limit frames: the
// synthetic live source of the soaks, which a real interface could not feed
// fast enough. Close ends it at the next frame, as a live tap's must.
type LiveSource struct {
	files  []string
	i      int
	src    capture.Source
	n      int64
	limit  int64
	closed atomic.Bool
}

// NewLiveSource plays files (a Home's Files) as a live tap until limit
// frames.
func NewLiveSource(files []string, limit int64) *LiveSource {
	return &LiveSource{files: files, limit: limit}
}

// Next is the next frame, io.EOF after limit frames or once closed.
func (f *LiveSource) Next() (capture.Frame, error) {
	for {
		if f.n >= f.limit || f.closed.Load() || len(f.files) == 0 {
			// The file is closed here, not in Close: Next may be running
			// on another goroutine when Close is called.
			if f.src != nil {
				f.src.Close()
				f.src = nil
			}
			return capture.Frame{}, io.EOF
		}
		if f.src == nil {
			src, err := capture.OpenFile(f.files[f.i%len(f.files)])
			if err != nil {
				return capture.Frame{}, err
			}
			f.src, f.i = src, f.i+1
		}
		fr, err := f.src.Next()
		if errors.Is(err, io.EOF) {
			f.src.Close()
			f.src = nil
			continue
		}
		if err != nil {
			return fr, err
		}
		fr.CI.Timestamp, fr.Offset = time.Now(), uint64(f.n)
		f.n++
		return fr, nil
	}
}

// Close ends the source; a Next under way returns its frame, the next one
// io.EOF.
func (f *LiveSource) Close() error {
	f.closed.Store(true)
	return nil
}
