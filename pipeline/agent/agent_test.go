package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/embedded"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
	"github.com/nats-io/nats.go/jetstream"
)

// key names one packet the way the stream's consumers can: its source and
// its offset there.
type key struct {
	source string
	offset uint64
}

// want reads the captures directly, without the bus, as the reference set
// of packets a run must publish exactly once.
func want(t *testing.T, campaignName string, home *campaign.Home) map[key]bool {
	t.Helper()
	hc, err := features.HomeFromCampaign(home)
	if err != nil {
		t.Fatal(err)
	}
	out := map[key]bool{}
	for _, tap := range home.Taps {
		for _, f := range tap.Files {
			src := campaignName + "/" + home.Name + "/" + tap.Name + "/" + filepath.Base(f)
			_, err := capture.ReadFile(context.Background(), f, hc, func(p *schemas.Packet) error {
				out[key{src, p.Offset}] = true
				return nil
			})
			if err != nil && !errors.Is(err, capture.ErrTruncated) {
				t.Fatalf("%s: %v", f, err)
			}
		}
	}
	return out
}

// stored is what the PACKETS stream holds: how often each packet appears,
// and how many final batches each source has.
type stored struct {
	packets map[key]int
	finals  map[string]int
	msgs    int
	batches []*schemas.Batch // in stream order
}

func readStream(t *testing.T, c *bus.Conn) stored {
	t.Helper()
	st := stored{packets: map[key]int{}, finals: map[string]int{}}
	eachBatch(t, c, func(b *schemas.Batch) {
		st.msgs++
		st.batches = append(st.batches, b)
		for _, p := range b.Packets {
			st.packets[key{b.Source, p.Offset}]++
		}
		if b.Final {
			st.finals[b.Source]++
		}
	})
	return st
}

// servedOnce fails unless the stream holds as many packets as the sources
// served frames, none of them twice.
func (st stored) servedOnce(t *testing.T, served int64) {
	t.Helper()
	dups := 0
	for _, n := range st.packets {
		if n > 1 {
			dups++
		}
	}
	if int64(len(st.packets)) != served || dups > 0 {
		t.Fatalf("%d frames read, %d packets stored, %d of them more than once", served, len(st.packets), dups)
	}
}

// eachBatch hands every batch the PACKETS stream holds to fn, in stream
// order, checking that each message's id is its batch's.
func eachBatch(t *testing.T, c *bus.Conn, fn func(*schemas.Batch)) {
	t.Helper()
	embeddedtest.EachBatch(t, c, schemas.StreamPackets, func(m *jetstream.RawStreamMsg, b *schemas.Batch) {
		if got, want := m.Header.Get("Nats-Msg-Id"), bus.MsgID(m.Subject, b.MsgID(), nil); got != want {
			t.Errorf("message %d: id %q, batch says %q", m.Sequence, got, want)
		}
		fn(b)
	})
}

// exactlyOnce fails unless the stream holds every wanted packet once,
// nothing else, and one final batch per source.
func exactlyOnce(t *testing.T, c *bus.Conn, wanted map[key]bool) {
	t.Helper()
	st := readStream(t, c)
	dups, holes, extra := 0, 0, 0
	for k, n := range st.packets {
		switch {
		case !wanted[k]:
			extra++
		case n > 1:
			dups++
			if dups <= 3 {
				t.Errorf("packet %s #%d stored %d times", k.source, k.offset, n)
			}
		}
	}
	sources := map[string]bool{}
	for k := range wanted {
		sources[k.source] = true
		if st.packets[k] == 0 {
			holes++
			if holes <= 3 {
				t.Errorf("packet %s #%d missing", k.source, k.offset)
			}
		}
	}
	for src := range sources {
		if st.finals[src] != 1 {
			t.Errorf("source %s has %d final batches, want 1", src, st.finals[src])
		}
	}
	if dups+holes+extra > 0 {
		t.Fatalf("%d packets duplicated, %d missing, %d unexpected among %d stored in %d messages", dups, holes, extra, len(st.packets), st.msgs)
	}
	t.Logf("%d packets of %d sources stored exactly once in %d messages", len(st.packets), len(sources), st.msgs)
}

// testHome is a home of n of the D-LinkCam captures, 270 to 650 packets
// each.
func testHome(t *testing.T, name string, n int) *campaign.Home {
	sentineldata.Need(t)
	files, err := filepath.Glob(filepath.Join(sentinel, "D-LinkCam", "*.pcap"))
	if err != nil || len(files) < n {
		t.Fatalf("want %d D-LinkCam captures under %s, found %d: %v", n, sentinel, len(files), err)
	}
	sort.Strings(files)
	return fileHome(name, files[:n]...)
}

// small batches and a small spool make a few thousand packets enough to
// cross every path: many batches in flight, the spool filling up.
func testConfig(home *campaign.Home, spoolDir string, log *slog.Logger) Config {
	return Config{
		Campaign: "c", Home: home, BatchSize: 40, Window: 4, SpoolDir: spoolDir, SpoolMaxBytes: 4 * (4<<10 + spoolSlack),
		BatchBytes: 4 << 10, RetryMax: 100 * time.Millisecond, AckTimeout: 2 * time.Second, ShutdownGrace: time.Second, Log: log,
	}
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// The login of servers a test starts after its clients, which hold a URL
// with it.
const testUser, testPassword = "agent-test", "agent-test-password"

// freePort finds a port nothing listens on, for a server that starts later.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func portOf(t *testing.T, url string) int {
	t.Helper()
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	_, p, err := net.SplitHostPort(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func spoolBytes(t *testing.T, dir string) int64 {
	var n int64
	segs, _ := filepath.Glob(filepath.Join(dir, "spool", "*.seg"))
	for _, s := range segs {
		if fi, err := os.Stat(s); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestNATSRestartMidStream stops the server while the agent publishes and
// starts a new one on the same port and store: the agent spools meanwhile
// (filling its small spool, then blocking), drains it when the server is
// back, and the stream ends up with every packet once.
func TestNATSRestartMidStream(t *testing.T) {
	state := t.TempDir()
	srv := startNATS(t, state)
	port := portOf(t, srv.NATSURL)
	conn := connect(t, srv.NATSURL, true)
	home := testHome(t, "h", 8)
	wanted := want(t, "c", home)

	var killed sync.Once
	down := make(chan struct{})
	cfg := testConfig(home, t.TempDir(), testLog(t))
	cfg.Progress = func(st Stats) {
		if st.Acked == 10 {
			killed.Do(func() { close(down) })
		}
	}
	ag, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	go func() { done <- ag.RunFiles(ctx, conn) }()

	<-down
	srv.Close()
	// Long enough for the reader to fill the spool and block on it.
	deadline := time.Now().Add(5 * time.Second)
	for spoolBytes(t, cfg.SpoolDir) < cfg.SpoolMaxBytes/2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if n := spoolBytes(t, cfg.SpoolDir); n > cfg.SpoolMaxBytes+spoolSlack {
		t.Errorf("spool holds %d bytes, limit %d", n, cfg.SpoolMaxBytes)
	}
	select {
	case err := <-done:
		t.Fatalf("agent ended while NATS was down: %v", err)
	default:
	}
	srv = startNATS(t, state, embedded.NATSPort(port), embedded.Login(srv.NATSUser, srv.NATSPassword))
	defer srv.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := ag.Stats()
	if st.Outages == 0 || st.Spooled == 0 {
		t.Errorf("stats %+v: want an outage and spooled batches", st)
	}
	exactlyOnce(t, conn, wanted)
}

// TestAgentRestartResumes cancels the agent mid-file and runs a new one on
// the same spool folder. The stream remembers message ids for only a
// moment, so a resend would show as a duplicate: the resume must be exact.
func TestAgentRestartResumes(t *testing.T) {
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn, err := bus.Connect(context.Background(), bus.Config{URL: srv.NATSURL, DedupWindow: 100 * time.Millisecond}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if info, err := conn.JS.Stream(context.Background(), schemas.StreamPackets); err != nil || info.CachedInfo().Config.Duplicates != 100*time.Millisecond {
		t.Fatalf("the stream should remember message ids for 100 ms only: %v", err)
	}
	home := testHome(t, "h", 6)
	wanted := want(t, "c", home)
	spool := t.TempDir()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := testConfig(home, spool, testLog(t))
	cfg.Progress = func(st Stats) {
		if st.Acked == 25 {
			cancel()
		}
	}
	first, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.RunFiles(ctx, conn); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run returned %v", err)
	}
	st1 := first.Stats()
	if st1.Files >= len(home.Taps[0].Files) && st1.Acked >= st1.Batches {
		t.Fatalf("the first run finished before it was cancelled: %+v", st1)
	}
	// Longer than the dedup window: from here on only the resume protects.
	time.Sleep(300 * time.Millisecond)

	cfg.Progress = nil
	second, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := second.RunFiles(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	st2 := second.Stats()
	if st2.Skipped == 0 {
		t.Errorf("the second run skipped nothing: %+v", st2)
	}
	t.Logf("first run %d packets in %d batches (%d acknowledged), second %d packets, %d skipped", st1.Packets, st1.Batches, st1.Acked, st2.Packets, st2.Skipped)
	exactlyOnce(t, conn, wanted)

	// A third run finds everything done and publishes nothing.
	third, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := third.RunFiles(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	if st := third.Stats(); st.Packets != 0 || st.Batches != 0 || st.Sessions != len(home.Taps[0].Files) {
		t.Errorf("a run after completion published %d packets in %d batches, listed %d sessions", st.Packets, st.Batches, st.Sessions)
	}
	exactlyOnce(t, conn, wanted)
}

// TestAgentRestartDuringOutage cancels the agent while NATS is down and
// its spool holds batches, then tears the newest spool record as a crash
// during a write would; the next run, with NATS back, sends the spool
// first and resumes after its last intact record.
func TestAgentRestartDuringOutage(t *testing.T) {
	port := freePort(t)
	url := fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", testUser, testPassword, port)
	home := testHome(t, "h", 4)
	wanted := want(t, "c", home)
	spool := t.TempDir()
	cfg := testConfig(home, spool, testLog(t))

	conn := connect(t, url, true)
	first, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.RunFiles(ctx, conn) }()
	for first.Stats().Spooled < 5 {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run returned %v", err)
	}
	if spoolBytes(t, spool) == 0 {
		t.Fatal("nothing left in the spool")
	}
	// A crash in the middle of a spool write leaves a torn record: the
	// next run must drop it and read its packets from the capture again.
	segs, _ := filepath.Glob(filepath.Join(spool, "spool", "*.seg"))
	sort.Strings(segs)
	newest := segs[len(segs)-1]
	fi, err := os.Stat(newest)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(newest, fi.Size()-5); err != nil {
		t.Fatal(err)
	}

	srv := startNATS(t, t.TempDir(), embedded.NATSPort(port), embedded.Login(testUser, testPassword))
	defer srv.Close()
	second, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := second.RunFiles(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	if n := spoolBytes(t, spool); n != 0 {
		t.Errorf("%d bytes left in the spool after a complete run", n)
	}
	exactlyOnce(t, conn, wanted)
}

// TestNATSUnreachableAtStart starts the agent before the server, with a
// spool of four batches: it spools, then blocks reading, loses nothing,
// and finishes once the server is up.
func TestNATSUnreachableAtStart(t *testing.T) {
	port := freePort(t)
	url := fmt.Sprintf("nats://%s:%s@127.0.0.1:%d", testUser, testPassword, port)
	conn := connect(t, url, true) // returns although nothing listens
	home := testHome(t, "h", 4)
	wanted := want(t, "c", home)
	cfg := testConfig(home, t.TempDir(), testLog(t))
	ag, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ag.RunFiles(ctx, conn) }()

	// The reader must stall once the window and the spool are full.
	var last Stats
	for stable := 0; stable < 5; {
		time.Sleep(50 * time.Millisecond)
		st := ag.Stats()
		if st.Batches == last.Batches && st.Batches > 0 {
			stable++
		} else {
			stable = 0
		}
		last = st
	}
	if last.Packets >= len(wanted) || last.Acked != 0 {
		t.Fatalf("with no server the agent read %d of %d packets and got %d acks: it should block", last.Packets, len(wanted), last.Acked)
	}
	if n := spoolBytes(t, cfg.SpoolDir); n == 0 || n > cfg.SpoolMaxBytes+spoolSlack {
		t.Errorf("spool holds %d bytes, limit %d", n, cfg.SpoolMaxBytes)
	}
	select {
	case err := <-done:
		t.Fatalf("agent ended with no server: %v", err)
	default:
	}

	srv := startNATS(t, t.TempDir(), embedded.NATSPort(port), embedded.Login(testUser, testPassword))
	defer srv.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	exactlyOnce(t, conn, wanted)
}

// TestTruncatedCapture publishes the packets before the cut, ends that
// session with its final batch, and goes on with the next capture.
func TestTruncatedCapture(t *testing.T) {
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, false)
	files := testHome(t, "h", 2).Taps[0].Files
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(t.TempDir(), "truncated.pcap")
	if err := os.WriteFile(cut, data[:len(data)*2/3], 0o644); err != nil {
		t.Fatal(err)
	}
	home := fileHome("h", cut, files[1])
	wanted := want(t, "c", home)
	ag, err := New(testConfig(home, t.TempDir(), testLog(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := ag.RunFiles(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	st := ag.Stats()
	if st.ReadErrors != 1 || st.Sessions != 2 {
		t.Errorf("stats %+v: want one read error and both sessions", st)
	}
	cutPackets := 0
	for k := range wanted {
		if k.source == "c/h/lan/truncated.pcap" {
			cutPackets++
		}
	}
	if cutPackets == 0 {
		t.Fatal("the truncated capture has no packets before the cut")
	}
	exactlyOnce(t, conn, wanted)
}

// trickle is a live source: it hands over the frames of a capture with a
// pause before each, then waits, as a quiet interface does, until closed.
type trickle struct {
	src    capture.Source
	gap    time.Duration
	limit  int
	n      int
	closed chan struct{}
	once   sync.Once
	served atomic.Int64
}

func (s *trickle) Next() (capture.Frame, error) {
	if s.n == s.limit {
		<-s.closed
		return capture.Frame{}, io.EOF
	}
	select {
	case <-time.After(s.gap):
	case <-s.closed:
		return capture.Frame{}, io.EOF
	}
	s.n++
	s.served.Add(1)
	return s.src.Next()
}

func (s *trickle) Close() error {
	s.once.Do(func() { close(s.closed) })
	return nil
}

// TestLiveSourceAgeFlush: packets of a live source that trickle reach the
// stream within MaxBatchAge although no batch fills, and stopping the agent
// ends the session with a final batch.
func TestLiveSourceAgeFlush(t *testing.T) {
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, false)
	file := sentinelFiles(t)[0]
	home := fileHome("h")
	cfg := testConfig(home, "", testLog(t))
	cfg.MaxBatchAge = 50 * time.Millisecond
	ag, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	inner := capturetest.Open(t, file)
	defer inner.Close()
	live := &trickle{src: inner, gap: 10 * time.Millisecond, limit: 12, closed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	input := Input{Tap: "lan", Name: "eth0", Live: true, Open: func() (capture.Source, error) { return live, nil }}
	go func() { done <- ag.Run(ctx, conn, []Input{input}) }()

	// All 12 frames are out after ~120 ms; the source then stays quiet, so
	// only the age flush can bring the last ones to the stream.
	deadline := time.Now().Add(5 * time.Second)
	for len(readStream(t, conn).packets) < 12 {
		if time.Now().After(deadline) {
			t.Fatalf("after %d frames served, the stream holds %d packets: the age flush did not send them", live.served.Load(), len(readStream(t, conn).packets))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := readStream(t, conn); len(st.finals) != 0 {
		t.Fatal("the live session ended before it was stopped")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped live run returned %v", err)
	}
	st := readStream(t, conn)
	// The frames carry their capture's old timestamps: all of them fall in
	// the session the agent's start opened.
	if s := ag.Stats().LastSessions; len(s) != 1 || st.finals["c/h/lan/"+s[0]] != 1 {
		t.Fatalf("sessions %v, finals %v: want one live session with one final batch", s, st.finals)
	}
	if len(st.packets) != 12 || len(st.finals) != 1 || st.msgs < 2 {
		t.Fatalf("stream holds %d packets, finals %v in %d messages; want 12 packets, one final batch, several messages", len(st.packets), st.finals, st.msgs)
	}
}

// emptySource is a capture without a frame.
type emptySource struct{}

func (emptySource) Next() (capture.Frame, error) { return capture.Frame{}, io.EOF }
func (emptySource) Close() error                 { return nil }

// TestStatsKeepLastSessions: Stats counts every session an agent published
// but names only the latest (a live agent opens some 200 a day per home,
// and Stats is copied at every metrics scrape), while OnSession sees each
// name.
func TestStatsKeepLastSessions(t *testing.T) {
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, false)
	home := fileHome("h")
	cfg := testConfig(home, "", testLog(t))
	var seen []string
	cfg.OnSession = func(s string) { seen = append(seen, s) }
	ag, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const n = lastSessions + 10
	var want []string
	var in []Input
	for i := range n {
		name := fmt.Sprintf("s%03d.pcap", i)
		want = append(want, campaign.SessionName("lan", name))
		in = append(in, Input{Tap: "lan", Name: name, Open: func() (capture.Source, error) { return emptySource{}, nil }})
	}
	if err := ag.Run(context.Background(), conn, in); err != nil {
		t.Fatal(err)
	}
	st := ag.Stats()
	if st.Sessions != n || st.Files != n || !slices.Equal(st.LastSessions, want[n-lastSessions:]) {
		t.Errorf("%d sessions, %d files, last %d names %v: want %d, %d, and the last %d of %v", st.Sessions, st.Files, len(st.LastSessions), st.LastSessions, n, n, lastSessions, want)
	}
	if !slices.Equal(seen, want) {
		t.Errorf("OnSession saw %v, want %v", seen, want)
	}
	// A copy: the agent's own list is not the caller's.
	st.LastSessions[0] = "changed"
	if ag.Stats().LastSessions[0] == "changed" {
		t.Error("Stats hands out the agent's own list of names")
	}
}
