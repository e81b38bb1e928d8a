package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/schemas"
)

// nowSource plays a capture's frames again and again as a live tap would
// deliver them (homegen's LiveSource: stamped with the time they are read,
// offsets growing across plays), burst frames every gap, until closed.
type nowSource struct {
	live   *homegen.LiveSource
	gap    time.Duration
	burst  int
	off    uint64
	closed chan struct{}
	once   sync.Once
	served atomic.Int64
}

func newNowSource(t *testing.T, file string, gap time.Duration, burst int) *nowSource {
	s := &nowSource{live: homegen.NewLiveSource([]string{file}, math.MaxInt64), gap: gap, burst: burst, closed: make(chan struct{})}
	// A LiveSource closes its file in the Next after Close.
	t.Cleanup(func() {
		s.Close()
		s.live.Next()
	})
	return s
}

func (s *nowSource) Next() (capture.Frame, error) {
	if s.off%uint64(s.burst) == 0 {
		select {
		case <-time.After(s.gap):
		case <-s.closed:
			return capture.Frame{}, io.EOF
		}
	}
	fr, err := s.live.Next()
	if err != nil {
		return fr, err
	}
	s.off++
	s.served.Add(1)
	return fr, nil
}

func (s *nowSource) Close() error {
	s.once.Do(func() { close(s.closed) })
	return s.live.Close()
}

// TestLiveRotation: a home's LAN and WAN live taps, read for a few slots of
// a 1 s rotation, publish one session per slot each, named after the slot
// and alike on both taps, each ended by one final batch, starting at
// offset 0, holding the packets stamped within it (the WAN tap's edges
// Grace earlier), and together every packet read exactly once. A size cap
// cuts the sessions of both taps at once.
func TestLiveRotation(t *testing.T) {
	for _, tc := range []struct {
		name       string
		gap        time.Duration
		burst      int
		maxPackets int
	}{
		{"slots", 2 * time.Millisecond, 1, 0},
		{"size-cap", time.Millisecond, 5, 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			live := campaign.Live{Rotation: time.Second, Grace: 100 * time.Millisecond, MaxPackets: tc.maxPackets}
			conn, ag, file := liveGateway(t, "eth0", live)
			srcs := map[string]*nowSource{"lan": newNowSource(t, file, tc.gap, tc.burst), "wan": newNowSource(t, file, tc.gap, tc.burst)}
			var inputs []Input
			for tap, s := range srcs {
				inputs = append(inputs, Input{Tap: tap, Name: "veth-" + tap, Live: true, Open: func() (capture.Source, error) { return s, nil }})
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			start := time.Now()
			go func() { done <- ag.Run(ctx, conn, inputs) }()
			time.Sleep(3500 * time.Millisecond)
			// The taps end (an interface removed): their last sessions end
			// with final batches and the run returns once all are stored.
			for _, s := range srcs {
				s.Close()
			}
			if err := <-done; err != nil {
				t.Fatalf("live run whose taps ended returned %v", err)
			}
			cancel()
			st := readStream(t, conn)

			type sess struct {
				tap, name string
				packets   int
				finals    int
				first     bool // a batch at offset 0
			}
			sessions := map[string]*sess{}
			for _, b := range st.batches {
				s := sessions[b.Source]
				if s == nil {
					s = &sess{tap: b.Tap, name: b.Session}
					sessions[b.Source] = s
				}
				if b.Source != "c/h/"+b.Tap+"/"+b.Session {
					t.Errorf("batch %s of session %s: source should be campaign/home/tap/session", b.MsgID(), b.Session)
				}
				s.packets += len(b.Packets)
				s.first = s.first || b.FirstOffset == 0
				if b.Final {
					s.finals++
				}
			}
			bases := map[string]map[string]bool{"lan": {}, "wan": {}}
			for src, s := range sessions {
				if s.finals != 1 || !s.first {
					t.Errorf("session %s: %d final batches, starts at offset 0: %v", src, s.finals, s.first)
				}
				bases[s.tap][strings.TrimPrefix(s.name, s.tap+"-")] = true
			}
			for b := range bases["lan"] {
				if !bases["wan"][b] {
					t.Errorf("LAN session %s has no WAN session of the same name", b)
				}
			}
			if len(bases["lan"]) != len(bases["wan"]) {
				t.Errorf("LAN sessions %v, WAN sessions %v: want the same names", bases["lan"], bases["wan"])
			}

			// Each packet lies in its session's span, but for the few that
			// came out of the ring after their session was closed.
			for _, b := range st.batches {
				lo := sessionStart(t, b.Session)
				shift := int64(0)
				if b.Tap == "wan" {
					shift = int64(live.Grace)
				}
				for _, p := range b.Packets {
					if p.TsNs+shift < lo-int64(rotationSettle) {
						t.Fatalf("%s packet stamped %s in session %s", b.Tap, time.Unix(0, p.TsNs).UTC().Format(time.RFC3339Nano), b.Session)
					}
				}
			}
			served := srcs["lan"].served.Load() + srcs["wan"].served.Load()
			st.servedOnce(t, served)
			slots := int(time.Since(start)/time.Second) + 1
			switch {
			case tc.maxPackets == 0 && (len(bases["lan"]) < slots-1 || len(bases["lan"]) > slots+1):
				t.Errorf("%d sessions per tap in %d slots", len(bases["lan"]), slots)
			case tc.maxPackets > 0 && len(bases["lan"]) <= slots+1:
				t.Errorf("%d sessions per tap in %d slots: the size cap of %d packets cut none (%d packets)", len(bases["lan"]), slots, tc.maxPackets, served)
			}
			for _, s := range sessions {
				// The cut comes a grace and a settle after the cap is reached.
				if limit := tc.maxPackets * 3; tc.maxPackets > 0 && s.packets > limit {
					t.Errorf("session %s holds %d packets, cap %d", s.name, s.packets, tc.maxPackets)
				}
			}
			t.Logf("%d packets in %d sessions per tap over %s", served, len(bases["lan"]), time.Since(start).Round(time.Millisecond))
		})
	}
}

// sessionStart reads a live session's start back from its name.
func sessionStart(t *testing.T, session string) int64 {
	t.Helper()
	stamp := session[strings.IndexByte(session, '-')+1:]
	tm, err := time.Parse("20060102T150405_000Z", strings.Replace(stamp, "_", ".", 1))
	if err != nil {
		// time.Parse wants the fraction after a dot.
		tm, err = time.Parse("20060102T150405.000Z", strings.Replace(stamp, "_", ".", 1))
	}
	if err != nil {
		t.Fatalf("session %s: %v", session, err)
	}
	return tm.UnixNano()
}

// TestLiveLeavesNoProgress: a live tap run with a spool leaves no progress
// file per session (no later run resumes a live session), while its batches
// still go through the sender as a file's do.
func TestLiveLeavesNoProgress(t *testing.T) {
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, true)
	home := &campaign.Home{Name: "h", Taps: []campaign.Tap{{Name: "lan", Interface: "eth1"}}, Live: campaign.Live{Rotation: time.Second}}
	spool := t.TempDir()
	cfg := testConfig(home, spool, testLog(t))
	cfg.MaxBatchAge = 50 * time.Millisecond
	ag, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src := newNowSource(t, sentinelFiles(t)[0], 2*time.Millisecond, 1)
	done := make(chan error, 1)
	go func() {
		done <- ag.Run(context.Background(), conn, []Input{{Tap: "lan", Name: "eth1", Live: true, Open: func() (capture.Source, error) { return src, nil }}})
	}()
	time.Sleep(2200 * time.Millisecond)
	src.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := ag.Stats()
	files, err := filepath.Glob(filepath.Join(spool, "progress", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Sessions < 2 || st.Acked == 0 || len(files) != 0 {
		t.Fatalf("%d sessions, %d batches acknowledged, %d progress files: want several sessions, no progress file", st.Sessions, st.Acked, len(files))
	}
}

// flakyIface is an interface that is removed and comes back, as a PPPoE
// link's is at its daily reconnect: while it is missing, Open fails with
// capture.ErrNoInterface; a capture open when it is removed fails so at its
// next frame; and each capture numbers its frames from 0, as a real one does.
type flakyIface struct {
	name, file string
	gap        time.Duration

	mu      sync.Mutex
	present bool
	gen     int // goes up at each removal: the captures of an earlier one are gone
	ended   bool
	opens   int
	served  atomic.Int64
}

func (f *flakyIface) set(present bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.present && !present {
		f.gen++
	}
	f.present = present
}

// end has the open capture end (io.EOF), as a closed one does.
func (f *flakyIface) end() {
	f.mu.Lock()
	f.ended = true
	f.mu.Unlock()
}

func (f *flakyIface) Open() (capture.Source, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.present {
		return nil, fmt.Errorf("live capture: interface %s not found (%w)", f.name, capture.ErrNoInterface)
	}
	f.opens++
	return &flakyCapture{f: f, gen: f.gen, live: homegen.NewLiveSource([]string{f.file}, math.MaxInt64), closed: make(chan struct{})}, nil
}

type flakyCapture struct {
	f      *flakyIface
	gen    int
	live   *homegen.LiveSource
	closed chan struct{}
	once   sync.Once
}

func (c *flakyCapture) Next() (capture.Frame, error) {
	select {
	case <-time.After(c.f.gap):
	case <-c.closed:
		c.release()
		return capture.Frame{}, io.EOF
	}
	c.f.mu.Lock()
	gone, ended := c.f.gen != c.gen, c.f.ended
	c.f.mu.Unlock()
	switch {
	case ended:
		c.release()
		return capture.Frame{}, io.EOF
	case gone:
		c.release()
		return capture.Frame{}, fmt.Errorf("live capture on %s: the interface was removed (%w)", c.f.name, capture.ErrNoInterface)
	}
	fr, err := c.live.Next()
	if err == nil {
		c.f.served.Add(1)
	}
	return fr, err
}

// release closes the file the capture plays (a LiveSource does so in the
// Next after its Close).
func (c *flakyCapture) release() {
	c.live.Close()
	c.live.Next()
}

func (c *flakyCapture) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// TestLiveInterfaceComesBack: a WAN interface missing when the agent starts
// and removed again later (a PPPoE link re-created), and a LAN interface
// removed for a moment, do not end their taps: the sessions go on, empty
// while the interface is missing, with the same names on both taps, each
// ended by one final batch; each tap reopens its interface once it is back,
// its offsets going on from where they were (a new capture numbers its
// frames from 0 again); and every packet read is published once.
func TestLiveInterfaceComesBack(t *testing.T) {
	conn, ag, file := liveGateway(t, "ppp0", campaign.Live{Rotation: time.Second, Grace: 100 * time.Millisecond})
	ag.reopenMin, ag.reopenMax = 20*time.Millisecond, 100*time.Millisecond
	lan := &flakyIface{name: "eth1", file: file, gap: 2 * time.Millisecond, present: true}
	wan := &flakyIface{name: "ppp0", file: file, gap: 2 * time.Millisecond}
	inputs := []Input{
		{Tap: "lan", Name: "eth1", Live: true, Open: lan.Open},
		{Tap: "wan", Name: "ppp0", Live: true, Open: wan.Open},
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- ag.Run(context.Background(), conn, inputs) }()
	at := func(d time.Duration, f func()) {
		time.Sleep(time.Until(start.Add(d)))
		f()
	}
	var wanBefore int64
	at(1200*time.Millisecond, func() { wan.set(true) })
	at(2200*time.Millisecond, func() { wanBefore = wan.served.Load(); wan.set(false) })
	at(2500*time.Millisecond, func() { lan.set(false) })
	at(2800*time.Millisecond, func() { lan.set(true) })
	at(3100*time.Millisecond, func() { wan.set(true) })
	at(4200*time.Millisecond, func() { lan.end(); wan.end() })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("live run whose taps ended returned %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not stop after its captures ended")
	}
	st := readStream(t, conn)

	type sess struct {
		tap, name string
		packets   int
		finals    int
		first     bool
	}
	sessions := map[string]*sess{}
	batches := map[string][]*schemas.Batch{}
	for _, b := range st.batches {
		s := sessions[b.Source]
		if s == nil {
			s = &sess{tap: b.Tap, name: b.Session}
			sessions[b.Source] = s
		}
		s.packets += len(b.Packets)
		s.first = s.first || b.FirstOffset == 0
		if b.Final {
			s.finals++
		}
		batches[b.Source] = append(batches[b.Source], b)
	}
	names := map[string]map[string]bool{"lan": {}, "wan": {}}
	for src, s := range sessions {
		if s.finals != 1 || !s.first {
			t.Errorf("session %s: %d final batches, starts at offset 0: %v", src, s.finals, s.first)
		}
		names[s.tap][strings.TrimPrefix(s.name, s.tap+"-")] = true
	}
	if !maps.Equal(names["lan"], names["wan"]) {
		t.Errorf("LAN sessions %v, WAN sessions %v: want the same names", slices.Sorted(maps.Keys(names["lan"])), slices.Sorted(maps.Keys(names["wan"])))
	}
	// Every frame of the capture decodes (checked below), so a session's
	// offsets are 0, 1, 2... across a reopen too.
	for src, bs := range batches {
		slices.SortFunc(bs, func(a, b *schemas.Batch) int { return cmp.Compare(a.FirstOffset, b.FirstOffset) })
		next := uint64(0)
		for _, b := range bs {
			for _, p := range b.Packets {
				if p.Offset != next {
					t.Fatalf("session %s: offset %d where %d was due", src, p.Offset, next)
				}
				next++
			}
		}
	}
	served := lan.served.Load() + wan.served.Load()
	st.servedOnce(t, served)
	if wanBefore == 0 || wan.served.Load() == wanBefore || lan.opens != 2 || wan.opens != 2 {
		t.Errorf("WAN frames %d before its removal, %d in all; interfaces opened %d (LAN) and %d (WAN) times: want frames after each reopen, 2 opens each",
			wanBefore, wan.served.Load(), lan.opens, wan.opens)
	}
	if ast := ag.Stats(); ast.InterfaceOutages != 3 || ast.ReadErrors != 0 {
		t.Errorf("%d interface outages, %d read errors: want 3 and 0", ast.InterfaceOutages, ast.ReadErrors)
	}
	if slots := int(time.Since(start)/time.Second) + 1; len(names["wan"]) < slots-1 {
		t.Errorf("%d WAN sessions in %d slots: the tap's sessions stopped while its interface was missing", len(names["wan"]), slots)
	}
	t.Logf("%d packets in %d sessions per tap over %s", served, len(names["lan"]), time.Since(start).Round(time.Millisecond))
}

// steppedSource is a nowSource whose frames are stamped as far back as the
// wall clock was set (step).
type steppedSource struct {
	*nowSource
	step *atomic.Int64
}

func (s steppedSource) Next() (capture.Frame, error) {
	fr, err := s.nowSource.Next()
	fr.CI.Timestamp = fr.CI.Timestamp.Add(-time.Duration(s.step.Load()))
	return fr, err
}

// TestLiveClockSetBack: the wall clock set back behind the session's start
// (NTP stepping a gateway's clock back) does not lift the size cap: with a
// rotation of an hour, only the cap cuts, before the step and after it,
// and both taps keep naming their sessions alike, every packet published
// once.
func TestLiveClockSetBack(t *testing.T) {
	const maxPackets = 1000
	conn, ag, file := liveGateway(t, "eth0", campaign.Live{Rotation: time.Hour, Grace: 100 * time.Millisecond, MaxPackets: maxPackets})
	var step atomic.Int64
	ag.now = func() time.Time { return time.Now().Add(-time.Duration(step.Load())) }
	srcs := map[string]*nowSource{"lan": newNowSource(t, file, time.Millisecond, 5), "wan": newNowSource(t, file, time.Millisecond, 5)}
	var inputs []Input
	for tap, s := range srcs {
		inputs = append(inputs, Input{Tap: tap, Name: "veth-" + tap, Live: true, Open: func() (capture.Source, error) { return steppedSource{s, &step}, nil }})
	}
	done := make(chan error, 1)
	go func() { done <- ag.Run(context.Background(), conn, inputs) }()
	time.Sleep(1200 * time.Millisecond)
	step.Store(int64(10 * time.Minute))
	var before int64
	for _, s := range srcs {
		before += s.served.Load()
	}
	time.Sleep(1500 * time.Millisecond)
	for _, s := range srcs {
		s.Close()
	}
	if err := <-done; err != nil {
		t.Fatalf("live run whose taps ended returned %v", err)
	}
	st := readStream(t, conn)

	packets := map[string]int{}
	names := map[string]map[string]bool{"lan": {}, "wan": {}}
	for _, b := range st.batches {
		packets[b.Source] += len(b.Packets)
		names[b.Tap][strings.TrimPrefix(b.Session, b.Tap+"-")] = true
	}
	for src, n := range packets {
		// The cut comes a grace and a settle after the cap is reached.
		if n > 3*maxPackets {
			t.Errorf("session %s holds %d packets, cap %d", src, n, maxPackets)
		}
	}
	if !maps.Equal(names["lan"], names["wan"]) {
		t.Errorf("LAN sessions %v, WAN sessions %v: want the same names", slices.Sorted(maps.Keys(names["lan"])), slices.Sorted(maps.Keys(names["wan"])))
	}
	served := srcs["lan"].served.Load() + srcs["wan"].served.Load()
	st.servedOnce(t, served)
	if served-before < 4*maxPackets {
		t.Fatalf("%d packets after the step: too few to fill sessions", served-before)
	}
	t.Logf("%d packets (%d after the step) in %d sessions per tap", served, served-before, len(names["lan"]))
}

// brokenSource is a live capture that fails for good after n frames.
type brokenSource struct {
	*nowSource
	n   int64
	err error
}

func (s brokenSource) Next() (capture.Frame, error) {
	if s.served.Load() == s.n {
		return capture.Frame{}, s.err
	}
	return s.nowSource.Next()
}

// TestLiveBrokenSourceEndsRun: a live capture that fails other than by its
// interface going missing ends the run with its error, for the agent's
// supervisor to restart, rather than leave the home captured on one side:
// the packets read before are published, and every tap's last session ends
// with a final batch.
func TestLiveBrokenSourceEndsRun(t *testing.T) {
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, false)
	file := sentinelFiles(t)[0]
	home := &campaign.Home{Name: "h",
		Taps: []campaign.Tap{{Name: "lan", Interface: "eth1"}, {Name: "wan", Interface: "eth0"}},
		Live: campaign.Live{Rotation: time.Hour}}
	cfg := testConfig(home, "", testLog(t))
	cfg.MaxBatchAge = 50 * time.Millisecond
	ag, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fault := errors.New("ring frame damaged")
	lan := newNowSource(t, file, 2*time.Millisecond, 1)
	wan := brokenSource{newNowSource(t, file, 2*time.Millisecond, 1), 100, fault}
	inputs := []Input{
		{Tap: "lan", Name: "eth1", Live: true, Open: func() (capture.Source, error) { return lan, nil }},
		{Tap: "wan", Name: "eth0", Live: true, Open: func() (capture.Source, error) { return wan, nil }},
	}
	done := make(chan error, 1)
	go func() { done <- ag.Run(context.Background(), conn, inputs) }()
	select {
	case err := <-done:
		if !errors.Is(err, fault) || !strings.Contains(err.Error(), "tap wan") {
			t.Fatalf("run ended with %v, want the WAN capture's fault", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the run goes on after a capture broke")
	}
	st := readStream(t, conn)
	if len(st.finals) != 2 {
		t.Errorf("final batches %v: want one per tap", st.finals)
	}
	if served := lan.served.Load() + wan.served.Load(); int64(len(st.packets)) != served {
		t.Errorf("%d frames read, %d packets stored", served, len(st.packets))
	}
	if ast := ag.Stats(); ast.ReadErrors != 1 || ast.InterfaceOutages != 0 {
		t.Errorf("%d read errors, %d interface outages: want 1 and 0", ast.ReadErrors, ast.InterfaceOutages)
	}
}

// liveGateway starts NATS and an agent of a home whose lan tap reads eth1
// and whose wan tap reads wan, on the live settings l, cutting small batches
// (200 packets, 16 KiB, a window of 32, at most 50 ms old); file is a
// capture for the test's live sources to replay.
func liveGateway(t *testing.T, wan string, l campaign.Live) (conn *bus.Conn, ag *Agent, file string) {
	t.Helper()
	srv := startNATS(t, t.TempDir())
	t.Cleanup(srv.Close)
	conn = connect(t, srv.NATSURL, false)
	home := &campaign.Home{Name: "h", Taps: []campaign.Tap{{Name: "lan", Interface: "eth1"}, {Name: "wan", Interface: wan}}, Live: l}
	cfg := testConfig(home, "", testLog(t))
	cfg.BatchSize, cfg.BatchBytes, cfg.Window = 200, 16<<10, 32
	cfg.MaxBatchAge = 50 * time.Millisecond
	ag, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return conn, ag, sentinelFiles(t)[0]
}
