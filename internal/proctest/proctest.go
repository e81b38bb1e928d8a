// Package proctest reads the test process's memory from /proc/self/status,
// for the tests that bound what training and capture runs hold.
package proctest

import (
	"errors"
	"fmt"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Status returns field ("VmRSS": the resident set now, "VmHWM": its peak)
// of /proc/self/status in bytes, skipping the test where the file or the
// field is missing.
func Status(t testing.TB, field string) int64 {
	t.Helper()
	v, err := readStatus(field)
	var bad *strconv.NumError
	switch {
	case errors.As(err, &bad):
		t.Fatal(err)
	case err != nil:
		t.Skip(err)
	}
	return v
}

// Peak is what a Sampler saw when the resident set was at its largest.
type Peak struct {
	RSS   int64  // resident set, bytes
	Go    int64  // what the Go runtime held from the OS then (its memory limit's measure)
	Phase string // the phase the caller named last before that sample
}

// Native is the part of the peak the Go runtime does not account for:
// libtorch, glibc's heap and arenas, thread stacks, the binary's pages.
func (p Peak) Native() int64 { return p.RSS - p.Go }

// Sampler reads the resident set every interval and keeps the largest
// sample with the Go runtime's share at that moment, so a test that bounds
// a peak can say which side of cgo made it and when.
type Sampler struct {
	phase atomic.Value
	done  chan struct{}
	stop  sync.Once
	wg    sync.WaitGroup
	mu    sync.Mutex
	peak  Peak
}

// StartSampler starts sampling; Stop ends it.
func StartSampler(every time.Duration) *Sampler {
	s := &Sampler{done: make(chan struct{})}
	s.phase.Store("start")
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			s.sample()
			select {
			case <-s.done:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// SetPhase names what the process does from now on.
func (s *Sampler) SetPhase(p string) { s.phase.Store(p) }

// Stop ends the sampling after one last sample and returns the peak.
func (s *Sampler) Stop() Peak {
	s.stop.Do(func() { close(s.done) })
	s.wg.Wait()
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

func (s *Sampler) sample() {
	rss, err := readStatus("VmRSS")
	if err != nil {
		return
	}
	m := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(m)
	goHeld := int64(m[0].Value.Uint64() - m[1].Value.Uint64())
	s.mu.Lock()
	defer s.mu.Unlock()
	if rss > s.peak.RSS {
		s.peak = Peak{RSS: rss, Go: goHeld, Phase: s.phase.Load().(string)}
	}
}

// readStatus reads field of /proc/self/status in bytes.
func readStatus(field string) (int64, error) {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("no /proc/self/status to read %s from: %w", field, err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == field+":" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s line %q: %w", field, l, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/self/status", field)
}
