package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
)

// pcapOf is a microsecond pcap of link type linkType holding the frames.
func pcapOf(linkType uint32, frames ...[]byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0xa1b2c3d4)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = append(b, make([]byte, 8)...)
	b = binary.LittleEndian.AppendUint32(b, 65535)
	b = binary.LittleEndian.AppendUint32(b, linkType)
	for i, f := range frames {
		b = binary.LittleEndian.AppendUint32(b, uint32(1700000000+i))
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// logBuffer is a logger whose lines a test reads back.
func logBuffer() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), &buf
}

// TestUnreadCaptures: a run over a good capture, a missing one, a corrupt
// one (a record of 2 GB after real packets) and one of an unknown link
// type (147, none of its frames decode) publishes the good one whole,
// fails naming the other three and why, and logs the unknown link type
// once, not once per frame. The corrupt capture's packets before the fault
// are published without the final batch, so that a run over the mended
// file publishes it whole: every packet once, one final batch each.
// Before, the run returned nil: a missing capture was only logged, the
// corrupt one ended with a final batch that kept the rest out for good,
// and the unknown link type went by as a count of undecodable packets.
func TestUnreadCaptures(t *testing.T) {
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, false)
	files := testHome(t, "h", 2).Taps[0].Files
	dir := t.TempDir()
	good := files[0]
	missing := filepath.Join(dir, "missing.pcap")
	whole, err := os.ReadFile(files[1])
	if err != nil {
		t.Fatal(err)
	}
	corrupt := filepath.Join(dir, "corrupt.pcap")
	huge := binary.LittleEndian.AppendUint32(make([]byte, 8), 0x7fffffff)
	huge = binary.LittleEndian.AppendUint32(huge, 0x7fffffff)
	if err := os.WriteFile(corrupt, append(bytes.Clone(whole), huge...), 0o644); err != nil {
		t.Fatal(err)
	}
	unknown := filepath.Join(dir, "unknown.pcap")
	if err := os.WriteFile(unknown, pcapOf(147, make([]byte, 60), make([]byte, 60), make([]byte, 60)), 0o644); err != nil {
		t.Fatal(err)
	}

	log, logs := logBuffer()
	spool := t.TempDir()
	home := fileHome("h", good, missing, corrupt, unknown)
	ag, err := New(testConfig(home, spool, log))
	if err != nil {
		t.Fatal(err)
	}
	err = ag.RunFiles(context.Background(), conn)
	var unread UnreadCaptures
	if !errors.As(err, &unread) {
		t.Fatalf("run over unreadable captures returned %v, want UnreadCaptures", err)
	}
	t.Logf("run: %v", err)
	why := map[string]string{missing: "no such file", corrupt: capture.ErrCorrupt.Error(), unknown: "none of its 3 frames decode: decode packet 0 (link type 147): unsupported link type 147"}
	if len(unread) != len(why) {
		t.Errorf("%d captures named, want %d", len(unread), len(why))
	}
	for _, ce := range unread {
		if w, ok := why[ce.File]; !ok || !strings.Contains(ce.Error(), w) || ce.Home != "h" || ce.Tap != "lan" {
			t.Errorf("%v: want the home, the tap, the file and %q", ce, w)
		}
	}
	if n := strings.Count(logs.String(), "unsupported link type 147"); n != 2 {
		// Once where its frames that do not decode are counted, once
		// where the capture is said not to be read.
		t.Errorf("the unknown link type is logged %d times, want 2:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "undecodable=3") {
		t.Errorf("the count of frames that do not decode is not logged:\n%s", logs)
	}
	st := readStream(t, conn)
	if st.finals["c/h/lan/corrupt.pcap"] != 0 || st.finals["c/h/lan/unknown.pcap"] != 0 {
		t.Errorf("final batches %v: a capture not read whole must leave its session open", st.finals)
	}
	before := 0
	for k := range st.packets {
		if k.source == "c/h/lan/corrupt.pcap" {
			before++
		}
	}
	if before == 0 {
		t.Error("the packets before the fault were not published")
	}

	// The corrupt file mended, the others taken out: the run resumes.
	if err := os.WriteFile(corrupt, whole, 0o644); err != nil {
		t.Fatal(err)
	}
	home = fileHome("h", good, corrupt)
	ag, err = New(testConfig(home, spool, testLog(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := ag.RunFiles(context.Background(), conn); err != nil {
		t.Fatalf("run over the mended captures: %v", err)
	}
	exactlyOnce(t, conn, want(t, "c", home))
}

// TestUnreadCaptureLive: a live agent (Inputs(true)) stopped by its signal
// still fails when one of its capture files could not be read: a stop by
// signal ends the process with 0. Before, its error was the stop's.
func TestUnreadCaptureLive(t *testing.T) {
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, false)
	home := fileHome("h", filepath.Join(t.TempDir(), "missing.pcap"))
	home.Taps = append(home.Taps, campaign.Tap{Name: "wan", Watch: t.TempDir()})
	ag, err := New(testConfig(home, t.TempDir(), testLog(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err = ag.Run(ctx, conn, ag.Inputs(true))
	var unread UnreadCaptures
	if !errors.As(err, &unread) || errors.Is(err, context.DeadlineExceeded) || len(unread) != 1 {
		t.Fatalf("stopped agent returned %v, want the missing capture alone", err)
	}
}

// TestWatchUnreadableFile: a watched folder's file that cannot be read is
// logged and counted, and the agent watches on: the file written after it
// is published. A watched file cut by corruption ends its session with the
// packets before the fault, as the rotation goes on.
func TestWatchUnreadableFile(t *testing.T) {
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	conn := connect(t, srv.NATSURL, false)
	captures := testHome(t, "h", 2).Taps[0].Files
	f := newFolder(t)
	junk := filepath.Join(f.dir, "lan-a.pcap")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not a capture "), 100), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(junk, f.at, f.at); err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(captures[0])
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "corrupt.pcap")
	huge := binary.LittleEndian.AppendUint32(make([]byte, 8), 0x7fffffff)
	huge = binary.LittleEndian.AppendUint32(huge, 0x7fffffff)
	if err := os.WriteFile(src, append(whole, huge...), 0o644); err != nil {
		t.Fatal(err)
	}
	corrupt := f.put("lan-b.pcap", src)
	good := f.put("lan-c.pcap", captures[1])
	home := &campaign.Home{Name: "h", Taps: []campaign.Tap{{Name: "lan", Watch: f.dir}}}
	cfg := testConfig(home, t.TempDir(), testLog(t))
	cfg.WatchPoll, cfg.WatchSettle = 20*time.Millisecond, time.Minute
	ag, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx, conn, ag.Inputs(true)) }()
	waitFinal(t, conn, []string{corrupt, good})
	select {
	case err := <-done:
		t.Fatalf("the agent ended: %v", err)
	default:
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("stopped agent returned %v, want its stop", err)
	}
	if st := ag.Stats(); st.ReadErrors != 2 {
		t.Errorf("%d read errors, want 2 (the junk and the corrupt file)", st.ReadErrors)
	}
}
