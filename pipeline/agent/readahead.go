package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/homemole/homemole/pipeline/capture"
)

// Read-ahead sizes: enough that the reading goroutine stays ahead of the
// decoder through a disk hiccup, small enough for a gateway's memory.
const (
	readAheadChunk  = 256 << 10
	readAheadChunks = 4
)

// openFileAhead opens a capture file whose bytes a goroutine of its own
// reads ahead of the decoder: the copies out of the page cache (or the waits
// for the disk) then run on another core than decoding does.
// A capture of the gateway on every interface is read as side (see
// capture.OpenFileSide).
func openFileAhead(path string, side capture.Side) (capture.Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open capture: %w", err)
	}
	ra := newReadAhead(f)
	src, err := capture.NewSideReader(ra, path, side)
	if err != nil {
		ra.Close()
		return nil, err
	}
	return src, nil
}

type chunk struct {
	b   []byte
	err error
}

// readAhead is an io.ReadCloser over r filled by a goroutine.
type readAhead struct {
	r    io.ReadCloser
	full chan chunk
	free chan []byte
	stop chan struct{}
	wg   sync.WaitGroup

	cur, curBuf []byte
	err         error
	closeOnce   sync.Once
	closeErr    error
}

func newReadAhead(r io.ReadCloser) *readAhead {
	ra := &readAhead{
		r:    r,
		full: make(chan chunk, readAheadChunks),
		free: make(chan []byte, readAheadChunks),
		stop: make(chan struct{}),
	}
	for range readAheadChunks {
		ra.free <- make([]byte, readAheadChunk)
	}
	ra.wg.Add(1)
	go ra.fill()
	return ra
}

func (ra *readAhead) fill() {
	defer ra.wg.Done()
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.stop:
			return
		}
		n, err := io.ReadFull(ra.r, buf[:cap(buf)])
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		select {
		case ra.full <- chunk{buf[:n], err}:
		case <-ra.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

func (ra *readAhead) Read(p []byte) (int, error) {
	for len(ra.cur) == 0 {
		if ra.err != nil {
			return 0, ra.err
		}
		if ra.curBuf != nil {
			ra.free <- ra.curBuf
			ra.curBuf = nil
		}
		c := <-ra.full
		ra.cur, ra.curBuf, ra.err = c.b, c.b, c.err
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	return n, nil
}

// Close stops the reading goroutine and closes the file.
func (ra *readAhead) Close() error {
	ra.closeOnce.Do(func() {
		close(ra.stop)
		ra.wg.Wait()
		ra.closeErr = ra.r.Close()
	})
	return ra.closeErr
}
