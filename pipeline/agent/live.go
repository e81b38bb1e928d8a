package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// clock says where a home's live sessions start and end. Edges are the
// UTC-aligned slot edges of the home's rotation, the agent's start, and
// the cuts a tap asks for when its session reaches the size cap (at once
// where the wall clock was set back: force); every tap of the home steps
// through the same edges (the WAN tap Grace earlier, see campaign.Live),
// so the taps' sessions share their names.
type clock struct {
	live  campaign.Live
	start int64

	mu     sync.Mutex
	cuts   []int64 // ascending
	latest int64   // the start of the latest session a tap opened
	ver    atomic.Uint64
	// forced is the latest edge that force made: a tap whose session ends
	// at or before it leaves that session at once.
	forced atomic.Int64
}

func newClock(l campaign.Live, start time.Time) *clock {
	return &clock{live: l, start: start.UnixNano()}
}

// span is the session [lo, hi) that holds t (a shifted instant; instants
// before the agent's start belong to its first session).
func (c *clock) span(t int64) (lo, hi int64) {
	t = max(t, c.start)
	slot := c.live.SlotStart(t)
	lo, hi = max(slot, c.start), slot+int64(c.live.Rotation)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range c.cuts {
		if x <= t && x > lo {
			lo = x
		}
		if x > t && x < hi {
			hi = x
		}
	}
	return lo, hi
}

// cut ends the session that started at lo at t, for every tap of the
// home, unless a cut after lo already ends it: the taps of a home fill a
// session at about the same time, and each asks. Edges are whole
// milliseconds, which session names resolve. It reports whether a cut now
// ends the session: not when t is not after lo.
func (c *clock) cut(lo, t int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t -= t % int64(time.Millisecond)
	switch {
	case len(c.cuts) > 0 && c.cuts[len(c.cuts)-1] > lo:
		return true
	case t <= lo:
		return false
	}
	c.insert(t)
	return true
}

// force ends the latest session a tap of the home is in (the one that
// started at lo, or a later one) a millisecond after its start, and every
// tap leaves its session for the next as soon as it sees the cut
// (liveTap.follow), whatever its packets' stamps say. It is for a wall
// clock set back behind lo: for as long as it is behind, no packet and no
// tick reaches an edge ahead, while the session grows past the size cap.
// Ending the latest session, not lo's, keeps a tap that was already a
// session ahead (the WAN tap, a grace early) in step with the others. A
// cut asked before the clock went back stays, as the next session's end.
func (c *clock) force(lo int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := max(lo, c.latest) + int64(time.Millisecond)
	t -= t % int64(time.Millisecond)
	if t <= c.forced.Load() {
		return // another tap of the home forced it
	}
	// Before the version goes up: a tap that sees the new version must
	// see the edge forced.
	c.forced.Store(t)
	c.insert(t)
}

// entered records that a tap opened the session that starts at lo.
func (c *clock) entered(lo int64) {
	c.mu.Lock()
	c.latest = max(c.latest, lo)
	c.mu.Unlock()
}

// insert adds the edge t, with c.mu held.
func (c *clock) insert(t int64) {
	if i, found := slices.BinarySearch(c.cuts, t); !found {
		c.cuts = slices.Insert(c.cuts, i, t)
	}
	// Cuts older than two slots can no longer end a session.
	old := c.cuts[len(c.cuts)-1] - 2*int64(c.live.Rotation)
	for len(c.cuts) > 0 && c.cuts[0] < old {
		c.cuts = c.cuts[1:]
	}
	c.ver.Add(1)
}

// rotationSettle is how long after a session's end a quiet tap waits
// before it closes the session: the kernel hands packets over up to a ring
// block's poll timeout (50 ms) after it stamped them.
const rotationSettle = 250 * time.Millisecond

// maxEmptySteps bounds the empty sessions a tap publishes when its packets
// jump ahead several slots at once (the system clock was set forward):
// beyond it, the tap goes to the packet's session directly.
const maxEmptySteps = 4

// liveTap is one interface tap being cut into sessions. mu guards it
// against its ticker, which flushes old batches and closes the session of
// a tap that has gone quiet.
type liveTap struct {
	a     *Agent
	in    Input
	clk   *clock
	shift int64
	bufs  *bufPool
	send  func(*outBatch, bool) error

	mu        sync.Mutex
	bt        *batcher
	lo, hi    int64
	ver       uint64
	base      uint64 // the frame offset of the session's offset 0
	nextFrame uint64 // the offset after the last frame read
	packets   int
	cutAsked  bool
	// stepped is set while the wall clock is behind the session's start
	// (set back), so that the step is logged once.
	stepped bool
	log     *slog.Logger
}

// publishLive reads a live input until ctx ends or the source does, one
// session per rotation slot (or size-cap cut), each starting at offset 0
// under a source named after the session. It leaves the last session open
// for endLive; a source that could not be opened, for another reason than
// a missing interface, gives no liveTap.
//
// An interface that is missing, at the start or later (a PPPoE link, a
// VPN's tun or a USB NIC re-created), does not end the tap: its sessions go
// on, empty, so that the labeler still finds this side of every session,
// and the tap reopens the interface until it is back or ctx ends. Any other
// read error ends the tap and, returned, the run: a source that is broken
// for good is for the supervisor to restart, not to be left half blind.
func (a *Agent) publishLive(ctx context.Context, in Input, clk *clock, bufs *bufPool, send func(*outBatch, bool) error) (*liveTap, error) {
	log := a.cfg.Log.With("home", a.cfg.Home.Name, "tap", in.Tap, "interface", in.Name)
	src, err := in.Open()
	if err != nil && !errors.Is(err, capture.ErrNoInterface) {
		a.count(func(st *Stats) { st.ReadErrors++ })
		log.Error("live capture not started", "err", err)
		return nil, nil
	}
	lt := &liveTap{a: a, in: in, clk: clk, shift: int64(a.live.Shift(in.Tap)), bufs: bufs, send: send, log: log}
	lt.mu.Lock()
	lo, hi := clk.span(clk.start)
	oerr := lt.open(lo, hi, 0)
	lt.mu.Unlock()
	if oerr != nil {
		if src != nil {
			src.Close()
		}
		return nil, oerr
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(max(min(a.cfg.MaxBatchAge/4, 50*time.Millisecond), time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			lt.mu.Lock()
			err := lt.tick(a.now())
			lt.mu.Unlock()
			if err != nil {
				return // the reader meets the same error on its next send
			}
		}
	})
	defer func() { close(done); wg.Wait() }()

	dec := features.NewDecoder(a.home)
	// The LAN tap of a home whose gateway is "auto" holds its first frames
	// back until they tell the home side (warmup).
	var warm *warmup
	if a.cfg.Home.Gateway.Auto() && in.Tap == tapLAN {
		warm = &warmup{inf: features.NewHomeInference()}
	}
	tunnels := tunnelTracker(in.Tap)
	var p schemas.Packet
	decodeErrs, notPackets := 0, 0
	defer func() {
		a.count(func(st *Stats) {
			st.DecodeErrors += decodeErrs
			st.NotPackets += notPackets
		})
	}()
	handle := func(fr capture.Frame) error {
		if err := dec.Decode(fr.LinkType, fr.Data, fr.CI, fr.Offset, &p); err != nil {
			if errors.Is(err, features.ErrNotPacket) {
				notPackets++
			} else {
				decodeErrs++
			}
			return nil
		}
		if tunnels != nil {
			tunnels.Observe(fr.LinkType, fr.Data, &p)
		}
		lt.mu.Lock()
		defer lt.mu.Unlock()
		return lt.add(&p, fr.Offset)
	}
	endWarmup := func() error {
		res := warm.inf.Result()
		log.Info("home side inferred from the first frames of the live tap", "frames", len(warm.held), "side", res.String())
		dec = features.NewDecoder(res.Home)
		held := warm.held
		warm = nil
		for _, fr := range held {
			if err := handle(fr); err != nil {
				return err
			}
		}
		return nil
	}
	// A reopened source numbers its frames from 0 again: the tap's frame
	// offsets go on from the last frame read (next), so that a session's
	// offsets stay unique and growing across the reopen.
	var next, base uint64
	frame := func(fr capture.Frame) error {
		fr.Offset += base
		next = fr.Offset + 1
		if warm != nil {
			if warm.hold(fr) {
				return nil
			}
			if err := endWarmup(); err != nil {
				return err
			}
		}
		return handle(fr)
	}
	var rerr error // the read error that ended the tap
	for {
		if src == nil {
			// err says why the interface is missing.
			if src = a.reopenLive(ctx, in, err, log); src == nil {
				break
			}
			base = next
		}
		var ferr error
		err, ferr = a.readLive(ctx, src, frame)
		src = nil
		if ferr != nil {
			return nil, ferr
		}
		if err == nil {
			break // the source or ctx ended
		}
		if !errors.Is(err, capture.ErrNoInterface) {
			a.count(func(st *Stats) { st.ReadErrors++ })
			rerr = fmt.Errorf("tap %s ends (the packets before the fault are published): %w", in.Tap, err)
			break
		}
	}
	if warm != nil {
		if err := endWarmup(); err != nil {
			return nil, err
		}
	}
	return lt, rerr
}

// readLive hands src's frames to f until src ends (nil, nil), ctx ends
// (nil, nil), src fails (the read error) or f does (f's error), and closes
// src.
func (a *Agent) readLive(ctx context.Context, src capture.Source, f func(capture.Frame) error) (readErr, err error) {
	// A live source blocks in Next while the tap is quiet; closing it is
	// what wakes it when the run is cancelled.
	stop := context.AfterFunc(ctx, func() { src.Close() })
	defer func() {
		a.count(func(st *Stats) { st.OtherViews += int(capture.LeftOut(src)) })
		if stop() {
			src.Close()
		}
	}()
	for {
		fr, err := src.Next()
		switch {
		case errors.Is(err, io.EOF) || err != nil && ctx.Err() != nil:
			return nil, nil
		case err != nil:
			return err, nil
		}
		if err := f(fr); err != nil {
			return nil, err
		}
	}
}

// reopenLive opens a live input whose interface is missing (why) again,
// with pauses doubling from reopenMin to reopenMax, until it opens or ctx
// ends (nil). The outage is logged and counted once, as is the recovery;
// the tap's ticker keeps its sessions going meanwhile. An error other than
// a missing interface is retried too, as an interface being set up again
// may fail in other ways for a moment, but logged, once per kind of error.
func (a *Agent) reopenLive(ctx context.Context, in Input, why error, log *slog.Logger) capture.Source {
	a.count(func(st *Stats) { st.InterfaceOutages++ })
	log.Warn("interface missing: the tap publishes empty sessions until it is back", "err", why, "retry_max", a.reopenMax)
	since := time.Now()
	pause := a.reopenMin
	t := time.NewTimer(pause)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		src, err := in.Open()
		if err == nil {
			log.Info("interface back: live capture resumed", "missing_for", time.Since(since).Round(time.Millisecond))
			return src
		}
		if !errors.Is(err, capture.ErrNoInterface) && err.Error() != why.Error() {
			log.Warn("interface not reopened yet", "err", err)
		}
		why = err
		pause = min(2*pause, a.reopenMax)
		t.Reset(pause)
	}
}

// endLive ends the last session of every live tap of the home with a final
// batch, once all have stopped reading. A tap whose last session is older
// than another's (the WAN tap enters a slot Grace before the LAN tap) first
// publishes the sessions it lacks, empty, so that the labeler finds both
// sides of every session. The final batches still go out after ctx ends:
// send allows a live input a grace period.
func endLive(taps []*liveTap) error {
	var last int64
	for _, lt := range taps {
		last = max(last, lt.lo)
	}
	var errs []error
	for _, lt := range taps {
		lt.mu.Lock()
		err := lt.rotate(last, lt.nextFrame)
		if err == nil {
			err = lt.bt.cut(true)
		}
		lt.mu.Unlock()
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// open starts the session [lo, hi) at frame offset base.
func (lt *liveTap) open(lo, hi int64, base uint64) error {
	a := lt.a
	session := campaign.LiveSessionName(lt.in.Tap, lo)
	source := a.cfg.Campaign + "/" + a.cfg.Home.Name + "/" + lt.in.Tap + "/" + session
	bt, err := a.newBatcher(lt.in.Tap, source, session, 0, true, lt.bufs, lt.send)
	if err != nil {
		return err
	}
	lt.bt, lt.lo, lt.hi, lt.base, lt.packets, lt.cutAsked = bt, lo, hi, base, 0, false
	lt.ver = lt.clk.ver.Load()
	lt.clk.entered(lo)
	a.session(session)
	return nil
}

// rotate ends the session with its final batch and opens the one that
// holds t, through every session between (empty ones too: the other taps
// of the home publish them, and the labeler waits for both sides).
func (lt *liveTap) rotate(t int64, base uint64) error {
	for steps := 0; t >= lt.hi; steps++ {
		if err := lt.bt.cut(true); err != nil {
			return err
		}
		lo, hi := lt.clk.span(lt.hi)
		if steps == maxEmptySteps && t >= hi {
			lt.a.cfg.Log.Warn("live tap jumps ahead several slots: was the clock set forward?", "home", lt.a.cfg.Home.Name, "tap", lt.in.Tap,
				"from", time.Unix(0, lt.hi).UTC(), "to", time.Unix(0, t).UTC())
			lo, hi = lt.clk.span(t)
		}
		if err := lt.open(lo, hi, base); err != nil {
			return err
		}
	}
	return nil
}

// add puts a decoded packet read at frame offset off in its session.
func (lt *liveTap) add(p *schemas.Packet, off uint64) error {
	if err := lt.follow(off); err != nil {
		return err
	}
	// A packet stamped before its session started (it came late out of the
	// ring after a quiet tap's session was closed) stays in the session
	// open now: late, not lost.
	if t := p.TsNs + lt.shift; t >= lt.hi {
		if err := lt.rotate(t, off); err != nil {
			return err
		}
	}
	lt.nextFrame = off + 1
	p.Offset = off - lt.base
	if err := lt.bt.add(p); err != nil {
		return err
	}
	lt.packets++
	if max := lt.a.live.MaxPackets; max > 0 && lt.packets >= max {
		lt.full()
	}
	return nil
}

// follow takes the cuts the clock got since the tap last looked, at frame
// offset base: another tap may have cut the sessions short, so that this
// one ends sooner, or forced them to end at once.
func (lt *liveTap) follow(base uint64) error {
	v := lt.clk.ver.Load()
	if v == lt.ver {
		return nil
	}
	_, lt.hi = lt.clk.span(lt.lo)
	lt.ver = v
	if f := lt.clk.forced.Load(); f >= lt.hi {
		return lt.rotate(f, base)
	}
	return nil
}

// full ends the session, which reached the size cap, for every tap of the
// home: a grace and a settle ahead of now, far enough that every tap, WAN
// edge included, is still before it.
func (lt *liveTap) full() {
	now := lt.a.now()
	if t := now.UnixNano() + int64(lt.a.live.Grace+rotationSettle); t > lt.lo {
		lt.stepped = false
		if !lt.cutAsked {
			lt.cutAsked = lt.clk.cut(lt.lo, t)
		}
		return
	}
	// The wall clock was set back behind the session's start: a cut ahead
	// of it would come before the session started, and the cut asked
	// before the step, if any, lies as far ahead as the clock went back.
	if !lt.stepped {
		lt.stepped = true
		lt.log.Warn("the wall clock is behind the session's start, set back: sessions that reach the size cap end at once until it catches up",
			"session_start", time.Unix(0, lt.lo).UTC(), "now", now.UTC())
	}
	lt.clk.force(lt.lo)
}

// tick sends a batch that has waited MaxBatchAge, and closes the session of
// a quiet tap once its end has passed.
func (lt *liveTap) tick(now time.Time) error {
	if err := lt.follow(lt.nextFrame); err != nil {
		return err
	}
	if t := now.UnixNano() + lt.shift; t >= lt.hi+int64(rotationSettle) {
		return lt.rotate(lt.hi, lt.nextFrame)
	}
	if b := lt.bt; b.n > 0 && now.Sub(b.born) >= lt.a.cfg.MaxBatchAge {
		return b.cut(false)
	}
	return nil
}
