package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
)

// TestWatchTap: a tap watching the folder a capture tool rotates its files
// into publishes each file once a later one lies beside it, not the one
// being written; a file that appears later completes the one before it.
// A restart passes over what was published and, with the capture stopped
// (the last file unchanged for the settle time), publishes the last file.
// Every packet is stored once. Read once, the folder is its files now.
func TestWatchTap(t *testing.T) {
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, false)
	captures := testHome(t, "h", 3).Taps[0].Files
	dir := t.TempDir()
	t0 := time.Now().Add(-time.Hour)
	put := func(i int) string {
		raw, err := os.ReadFile(captures[i])
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "lan-"+string(rune('a'+i))+".pcap")
		if err := os.WriteFile(p, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		at := t0.Add(time.Duration(i) * time.Minute) // rotated a minute apart
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
		return p
	}
	files := []string{put(0), put(1)}
	home := &campaign.Home{Name: "h", Taps: []campaign.Tap{{Name: "lan", Watch: dir}}}
	cfg := testConfig(home, t.TempDir(), testLog(t))
	cfg.WatchPoll, cfg.WatchSettle = 20*time.Millisecond, 24*time.Hour

	run := func(cfg Config) (stop func()) { return runWatching(t, conn, cfg) }
	stop := run(cfg)
	waitFinal(t, conn, files[:1])
	time.Sleep(10 * cfg.WatchPoll)
	if got := finalSources(t, conn); len(got) != 1 {
		t.Fatalf("sessions ended: %v; want only %s, the newest being written", got, filepath.Base(files[0]))
	}
	files = append(files, put(2))
	waitFinal(t, conn, files[:2])
	stop()

	// The capture has stopped: the last file has not changed for longer
	// than the settle time.
	cfg.WatchSettle = time.Minute
	stop = run(cfg)
	waitFinal(t, conn, files)
	stop()
	exactlyOnce(t, conn, want(t, "c", fileHome("h", files...)))

	ag, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, in := range ag.Inputs(false) {
		names = append(names, in.Name)
	}
	if len(names) != 3 || names[0] != files[0] || names[2] != files[2] {
		t.Errorf("a one-off read of the folder lists %v; want its 3 files in the order they were written", names)
	}
}

// finalSources are the sources the stream holds a final batch of.
func finalSources(t *testing.T, c *bus.Conn) map[string]int {
	t.Helper()
	return readStream(t, c).finals
}

// waitFinal waits until the stream holds the final batch of each of files.
func waitFinal(t *testing.T, c *bus.Conn, files []string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := finalSources(t, c)
		n := 0
		for _, f := range files {
			if got["c/h/lan/"+filepath.Base(f)] > 0 {
				n++
			}
		}
		if n == len(files) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s the stream ends sessions %v; want those of %v", got, files)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runWatching runs an agent of cfg, its taps live or watching folders,
// until the returned stop is called.
func runWatching(t *testing.T, conn *bus.Conn, cfg Config) (stop func()) {
	t.Helper()
	ag, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx, conn, ag.Inputs(true)) }()
	return func() {
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Fatal(err)
		}
	}
}

// folder is a watched folder the test writes captures into, as a capture
// tool rotates them, a minute apart.
type folder struct {
	t   *testing.T
	dir string
	at  time.Time
}

func newFolder(t *testing.T) *folder {
	return &folder{t: t, dir: t.TempDir(), at: time.Now().Add(-time.Hour)}
}

// put writes the capture at path src as name, modified a minute after the
// file put before it, in place of any file of that name (as tcpdump -W
// does: it truncates the file).
func (f *folder) put(name, src string) string {
	f.t.Helper()
	raw, err := os.ReadFile(src)
	if err != nil {
		f.t.Fatal(err)
	}
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, raw, 0o644); err != nil {
		f.t.Fatal(err)
	}
	f.at = f.at.Add(time.Minute)
	if err := os.Chtimes(p, f.at, f.at); err != nil {
		f.t.Fatal(err)
	}
	return p
}

// wantAs is want for the capture at path src published by tap as source
// name.
func wantAs(t *testing.T, out map[key]bool, tap, name, src string) {
	t.Helper()
	h := fileHome("h", src)
	h.Taps[0].Name = tap
	for k := range want(t, "c", h) {
		out[key{"c/h/" + tap + "/" + name, k.offset}] = true
	}
}

// waitSources waits until the stream holds the final batch of each of
// sources.
func waitSources(t *testing.T, c *bus.Conn, sources ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := finalSources(t, c)
		n := 0
		for _, s := range sources {
			if got[s] > 0 {
				n++
			}
		}
		if n == len(sources) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s the stream ends sessions %v; want those of %v", got, sources)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// progressFiles lists the progress files of a spool folder by base name.
func progressFiles(t *testing.T, spool string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(spool, "progress", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range names {
		names[i] = filepath.Base(n)
	}
	sort.Strings(names)
	return names
}

// TestWatchRing: tcpdump -C -W 3 -w lan.pcap writes lan.pcap0, lan.pcap1
// and lan.pcap2, then lan.pcap0 again. A file written anew under a name
// already published is a session of its own (lan-lan-0-v2), noticed while
// the agent runs and across a restart; the lan and wan taps, whose rings
// wrap alike, name their sessions alike, so the labeler pairs them. Every
// packet is stored once, and only the last file of each name keeps a
// progress file.
func TestWatchRing(t *testing.T) {
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, false)
	captures := testHome(t, "h", 6).Taps[0].Files
	taps := []string{"lan", "wan"}
	dirs := map[string]*folder{}
	for _, tap := range taps {
		dirs[tap] = newFolder(t)
	}
	wanted := map[key]bool{}
	// put writes capture i into ring slot i%3 of both taps.
	put := func(i int) {
		name := fmt.Sprintf("cap.pcap%d", i%3)
		for _, tap := range taps {
			dirs[tap].put(name, captures[i])
			wantAs(t, wanted, tap, versioned(name, i/3, "+"), captures[i])
		}
	}
	// ended waits for the sessions of capture i on both taps.
	ended := func(i int) {
		t.Helper()
		name := versioned(fmt.Sprintf("cap.pcap%d", i%3), i/3, "+")
		waitSources(t, conn, "c/h/lan/"+name, "c/h/wan/"+name)
	}
	home := &campaign.Home{Name: "h", Taps: []campaign.Tap{{Name: "lan", Watch: dirs["lan"].dir}, {Name: "wan", Watch: dirs["wan"].dir}}}
	spool := t.TempDir()
	cfg := testConfig(home, spool, testLog(t))
	cfg.WatchPoll, cfg.WatchSettle = 20*time.Millisecond, 24*time.Hour

	stop := runWatching(t, conn, cfg)
	put(0)
	put(1)
	ended(0)
	put(2)
	ended(1)
	put(3) // cap.pcap0 again
	ended(2)
	put(4)
	ended(3) // noticed as it runs
	stop()

	put(5) // while the agent is stopped
	stop = runWatching(t, conn, cfg)
	ended(4) // noticed across a restart
	stop()

	cfg.WatchSettle = time.Minute // the capture has stopped
	stop = runWatching(t, conn, cfg)
	ended(5)
	stop()
	exactlyOnce(t, conn, wanted)

	sessions := map[string][]string{}
	for _, b := range readStream(t, conn).batches {
		if b.Final {
			sessions[b.Tap] = append(sessions[b.Tap], strings.TrimPrefix(b.Session, b.Tap+"-"))
		}
	}
	wantSessions := []string{"cap-0", "cap-1", "cap-2", "cap-0-v2", "cap-1-v2", "cap-2-v2"}
	for _, tap := range taps {
		if !slices.Equal(sessions[tap], wantSessions) {
			t.Errorf("tap %s ended sessions %v, want %s-%v: one per file, the same names on both taps", tap, sessions[tap], tap, wantSessions)
		}
	}
	if got := progressFiles(t, spool); len(got) != 6 {
		t.Errorf("progress files %v: want 6, one per tap and file name, of the last file written under it", got)
	}
}

// TestWatchForgetsProgress: dumpcap -b files:2 makes new names and deletes
// the oldest file. Once a file has left the folder and its session is
// acknowledged whole, its progress file goes; a file still in the folder
// keeps its own, so a restart passes over it. A folder found empty (a
// stick not mounted) forgets nothing.
func TestWatchForgetsProgress(t *testing.T) {
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, false)
	captures := testHome(t, "h", 3).Taps[0].Files
	dir := newFolder(t)
	wanted := map[key]bool{}
	var names []string
	put := func(i int) string {
		name := fmt.Sprintf("lan_%05d_20261207%02d0000.pcap", i+1, 10+i)
		names = append(names, name)
		wantAs(t, wanted, "lan", name, captures[i])
		return dir.put(name, captures[i])
	}
	source := func(i int) string { return "c/h/lan/" + names[i] }
	progressOf := func(is ...int) []string {
		var out []string
		for _, i := range is {
			out = append(out, progressFileName(source(i)))
		}
		sort.Strings(out)
		return out
	}
	home := &campaign.Home{Name: "h", Taps: []campaign.Tap{{Name: "lan", Watch: dir.dir}}}
	spool := t.TempDir()
	cfg := testConfig(home, spool, testLog(t))
	cfg.WatchPoll, cfg.WatchSettle = 20*time.Millisecond, 24*time.Hour

	stop := runWatching(t, conn, cfg)
	first := put(0)
	put(1)
	waitSources(t, conn, source(0))
	put(2)
	if err := os.Remove(first); err != nil {
		t.Fatal(err)
	}
	waitSources(t, conn, source(1))
	for deadline := time.Now().Add(10 * time.Second); !slices.Equal(progressFiles(t, spool), progressOf(1)); {
		if time.Now().After(deadline) {
			t.Fatalf("progress files %v; want only %v, of the one file published and still in the folder", progressFiles(t, spool), progressOf(1))
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()

	// The folder is empty, as a stick not mounted shows it.
	away := dir.dir + ".away"
	if err := os.Rename(dir.dir, away); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stop = runWatching(t, conn, cfg)
	time.Sleep(10 * cfg.WatchPoll)
	stop()
	if got := progressFiles(t, spool); !slices.Equal(got, progressOf(1)) {
		t.Errorf("progress files %v after a run on the empty folder; want %v, as before", got, progressOf(1))
	}
	if err := os.Remove(dir.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(away, dir.dir); err != nil {
		t.Fatal(err)
	}

	cfg.WatchSettle = time.Minute // the capture has stopped
	stop = runWatching(t, conn, cfg)
	waitSources(t, conn, source(2))
	stop()
	exactlyOnce(t, conn, wanted)
	if got := progressFiles(t, spool); !slices.Equal(got, progressOf(1, 2)) {
		t.Errorf("progress files %v; want %v, of the files in the folder", got, progressOf(1, 2))
	}
}
