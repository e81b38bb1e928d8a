package agent

import (
	"context"
	"os"
	"path/filepath"
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
