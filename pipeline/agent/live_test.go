package agent

import (
	"context"
	"io"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/homegen"
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
			srv := startNATS(t, t.TempDir())
			defer srv.Close()
			conn := connect(t, srv.NATSURL, false)
			file := sentinelFiles(t)[0]
			home := &campaign.Home{Name: "h",
				Taps: []campaign.Tap{{Name: "lan", Interface: "eth1"}, {Name: "wan", Interface: "eth0"}},
				Live: campaign.Live{Rotation: time.Second, Grace: 100 * time.Millisecond, MaxPackets: tc.maxPackets}}
			cfg := testConfig(home, "", testLog(t))
			cfg.BatchSize, cfg.BatchBytes, cfg.Window = 200, 16<<10, 32
			cfg.MaxBatchAge = 50 * time.Millisecond
			ag, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
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
					shift = int64(home.Live.Grace)
				}
				for _, p := range b.Packets {
					if p.TsNs+shift < lo-int64(rotationSettle) {
						t.Fatalf("%s packet stamped %s in session %s", b.Tap, time.Unix(0, p.TsNs).UTC().Format(time.RFC3339Nano), b.Session)
					}
				}
			}
			served := srcs["lan"].served.Load() + srcs["wan"].served.Load()
			dups := 0
			for _, n := range st.packets {
				if n > 1 {
					dups++
				}
			}
			if int64(len(st.packets)) != served || dups > 0 {
				t.Fatalf("%d frames read, %d packets stored, %d of them more than once", served, len(st.packets), dups)
			}
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
	if len(st.Sessions) < 2 || st.Acked == 0 || len(files) != 0 {
		t.Fatalf("%d sessions, %d batches acknowledged, %d progress files: want several sessions, no progress file", len(st.Sessions), st.Acked, len(files))
	}
}
