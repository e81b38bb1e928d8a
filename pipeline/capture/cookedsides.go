package capture

import (
	"bytes"
	"fmt"
	"io"
	"sync"
)

// A campaign's home has a LAN tap and a WAN tap. On a gateway captured on
// every interface both come out of the one capture: OpenLiveSides reads it
// once, judging every frame once, and hands each side's frames to its own
// Source, so that the gateway copies every packet out of the kernel once
// instead of once per tap.

// sidesQueue is how many frames wait for a side's reader before the other
// side's reader waits too: a fraction of a second of a busy home's
// packets, so that the two taps' readers (each publishing its own
// batches) need not keep in step.
const sidesQueue = 1024

// sidesStatsEvery is how often, in frames, the interfaces judged are
// copied out for Stats: the counters are copied with every frame.
const sidesStatsEvery = 1024

// OpenLiveSides captures on every interface (AnyInterface) and reads the
// capture as the gateway's two sides: lan is its LAN side's Ethernet
// frames, as OpenLive(AnyInterface) gives them, and wan its WAN side's,
// as OpenLive with LiveOptions.Side SideWAN gives them; every frame goes
// to one of them at most. Each is read by a goroutine of its own: a side
// not read holds the other up once sidesQueue frames wait for it, as a
// full ring would. Closing a side drops its frames from then on; closing
// both closes the capture. opts.Side is ignored.
func OpenLiveSides(opts LiveOptions) (lan, wan Source, err error) {
	opts.Side = SideLAN
	src, err := OpenLive(AnyInterface, opts)
	if err != nil {
		return nil, nil, err
	}
	lc, ok := src.(*liveCooked)
	if !ok {
		src.Close()
		return nil, nil, fmt.Errorf("live capture on %s: read as both sides: not a capture of cooked frames (%T)", AnyInterface, src)
	}
	lc.cookedView.sides = SideLAN | SideWAN
	s := newSides(lc.cookedView, lc.live)
	return s.out[0], s.out[1], nil
}

// sides feeds a view of both sides to two sources, one per side.
type sides struct {
	view *cookedView
	live *LiveSource // the capture the view reads, nil for a file
	out  [2]*sideSource
	done chan struct{} // closed when the view is read to its end

	mu     sync.Mutex
	stats  CookedStats // the view's counters, copied out by the pump
	closed int
}

// sideSource is one side of a sides.
type sideSource struct {
	s      *sides
	side   Side
	frames chan Frame
	stop   chan struct{} // closed by Close
	once   sync.Once
	err    error // the view's error, set before frames is closed
}

func newSides(view *cookedView, live *LiveSource) *sides {
	s := &sides{view: view, live: live, done: make(chan struct{})}
	for i, side := range []Side{SideLAN, SideWAN} {
		s.out[i] = &sideSource{s: s, side: side, frames: make(chan Frame, sidesQueue), stop: make(chan struct{})}
	}
	go s.pump()
	return s
}

// pump reads the view and hands each frame to its side's reader, until the
// capture ends or both sides are closed.
func (s *sides) pump() {
	defer close(s.done)
	for n := 0; ; n++ {
		f, side, err := s.view.next()
		s.mu.Lock()
		// The view's counters (it keeps no Interfaces), and the copy of
		// the interfaces judged, renewed now and then.
		interfaces := s.stats.Interfaces
		if n%sidesStatsEvery == 0 || err != nil {
			interfaces = s.view.Stats().Interfaces
		}
		s.stats = s.view.stats
		s.stats.Interfaces = interfaces
		s.mu.Unlock()
		if err != nil {
			for _, o := range s.out {
				o.err = err
				close(o.frames)
			}
			return
		}
		o := s.out[side.index()]
		// The live source reads the next frame into the same buffer.
		f.Data = bytes.Clone(f.Data)
		select {
		case o.frames <- f:
		case <-o.stop:
		}
	}
}

// Next returns the side's next frame; once the side is closed, io.EOF.
func (o *sideSource) Next() (Frame, error) {
	select {
	case <-o.stop:
		return Frame{}, io.EOF
	default:
	}
	select {
	case f, ok := <-o.frames:
		if !ok {
			return Frame{}, o.err
		}
		return f, nil
	case <-o.stop:
		return Frame{}, io.EOF
	}
}

// Close stops this side; the second side's Close closes the capture and
// returns once the view has stopped reading it.
func (o *sideSource) Close() error {
	var err error
	o.once.Do(func() {
		close(o.stop)
		s := o.s
		s.mu.Lock()
		s.closed++
		last := s.closed == len(s.out)
		s.mu.Unlock()
		if last {
			err = s.view.Close()
			<-s.done
		}
	})
	return err
}

// Stats and Mechanism are the live capture's, which both sides share.
func (o *sideSource) Stats() (LiveStats, error) {
	if o.s.live == nil {
		return LiveStats{}, nil
	}
	return o.s.live.Stats()
}

func (o *sideSource) Mechanism() string {
	if o.s.live == nil {
		return "a capture file"
	}
	return o.s.live.Mechanism()
}

// cookedStats is what the view has done so far. The frames left out are
// the LAN side's to count, so that two taps of one capture count each
// once between them.
func (o *sideSource) cookedStats() CookedStats {
	o.s.mu.Lock()
	defer o.s.mu.Unlock()
	st := o.s.stats
	st.Interfaces = append([]CookedInterface(nil), st.Interfaces...)
	if o.side == SideWAN {
		st.OtherSide, st.Loopback, st.Duplicates = 0, 0, 0
	}
	return st
}
