package campaign

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestLinkTimeSplit: captures split by when they began where they are
// dated, else by their sequence number, not their name (Setup-A-10 comes
// after Setup-B-2), every link resolving to the original file, and a
// device of one capture kept for training only.
func TestLinkTimeSplit(t *testing.T) {
	src := t.TempDir()
	write := func(dev string, files ...string) {
		d := filepath.Join(src, dev)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range append([]string{MACFile}, files...) {
			data := "capture " + f
			if f == MACFile {
				data = "00:11:22:33:44:55\n"
			}
			if err := os.WriteFile(filepath.Join(d, f), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("Plug", "Setup-A-10-STA.pcap", "Setup-A-1-STA.pcap", "Setup-B-2-STA.pcap", "Setup-A-3-STA.pcap")
	write("Scale", "Setup-A-1-STA.pcap")
	early, late, err := LinkTimeSplit(src, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	names := func(dir, dev string) []string {
		d, err := DeviceDirs(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range d {
			if x.Device != dev {
				continue
			}
			var out []string
			for _, f := range x.Files {
				data, err := os.ReadFile(f)
				if err != nil || string(data) != "capture "+filepath.Base(f) {
					t.Fatalf("%s links to %q, %v", f, data, err)
				}
				out = append(out, filepath.Base(f))
			}
			return out
		}
		return nil
	}
	if got := names(early, "Plug"); !slices.Equal(got, []string{"Setup-A-1-STA.pcap", "Setup-B-2-STA.pcap"}) {
		t.Errorf("early Plug %v", got)
	}
	if got := names(late, "Plug"); !slices.Equal(got, []string{"Setup-A-10-STA.pcap", "Setup-A-3-STA.pcap"}) {
		t.Errorf("late Plug %v", got)
	}
	if got := names(early, "Scale"); len(got) != 1 {
		t.Errorf("early Scale %v, want its one capture", got)
	}
	if got := names(late, "Scale"); got != nil {
		t.Errorf("late Scale %v, want no folder", got)
	}
	// Dated captures are ordered by when they began, not by their numbers
	// (IoT Sentinel's setups number their captures apart); a capture that
	// cannot be dated leaves the device in number order.
	began := map[string]int64{"Setup-A-10-STA.pcap": 1, "Setup-A-3-STA.pcap": 2, "Setup-B-2-STA.pcap": 3, "Setup-A-1-STA.pcap": 4}
	for _, c := range []struct {
		name        string
		at          CaptureTime
		early, late []string
	}{
		{"dated", func(f string) (int64, bool) { t, ok := began[filepath.Base(f)]; return t, ok },
			[]string{"Setup-A-10-STA.pcap", "Setup-A-3-STA.pcap"}, []string{"Setup-A-1-STA.pcap", "Setup-B-2-STA.pcap"}},
		{"one undated", func(f string) (int64, bool) { t, ok := began[filepath.Base(f)]; return t, ok && t != 3 },
			[]string{"Setup-A-1-STA.pcap", "Setup-B-2-STA.pcap"}, []string{"Setup-A-10-STA.pcap", "Setup-A-3-STA.pcap"}},
	} {
		early, late, err := LinkTimeSplit(src, t.TempDir(), c.at)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(early, "Plug"); !slices.Equal(got, c.early) {
			t.Errorf("%s: early Plug %v, want %v", c.name, got, c.early)
		}
		if got := names(late, "Plug"); !slices.Equal(got, c.late) {
			t.Errorf("%s: late Plug %v, want %v", c.name, got, c.late)
		}
	}
	if _, _, err := LinkTimeSplit(filepath.Join(src, "missing"), t.TempDir(), nil); err == nil {
		t.Error("a missing folder split without an error")
	}
}

// TestCaptureBase: a capture's name without its extensions, compressed or
// not, so that a session keeps its name (and its messages their ids)
// whether its file is compressed or not; other files are no captures.
func TestCaptureBase(t *testing.T) {
	for name, want := range map[string]string{
		"Setup-A-1-STA.pcap": "Setup-A-1-STA", "lan.pcapng": "lan", "lan.pcap.gz": "lan",
		"lan.pcapng.zst": "lan", "lan.pcap.zstd": "lan", "lan.pcap.lz4": "lan", "a.pcapng.pcap": "a.pcapng",
		"lan.pcap.xz": "lan", "lan.pcap.bz2": "lan", "lan.pcap1": "lan-1", "lan.pcapng12.gz": "lan-12",
	} {
		if got, ok := CaptureBase(name); !ok || got != want {
			t.Errorf("CaptureBase(%q) = %q, %v; want %q, true", name, got, ok, want)
		}
		if a, b := SessionName("lan", "/x/"+name), SessionName("lan", want+".pcap"); a != b {
			t.Errorf("session of %s is %s, of the uncompressed capture %s", name, a, b)
		}
	}
	for _, name := range []string{"notes.txt", "lan.gz", "_iotdevice-mac.txt", "lan.zst"} {
		if _, ok := CaptureBase(name); ok {
			t.Errorf("CaptureBase(%q) takes it for a capture", name)
		}
	}
}

// TestWatchedFiles: a watched folder's capture files in the order they
// were written (modification time, then name), tcpdump -C's numbered ones
// too, other files left out; a snapshot makes the tap a tap of those
// files; an empty folder is no snapshot.
func TestWatchedFiles(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now().Add(-time.Hour)
	for i, name := range []string{"lan.pcap", "lan.pcap1", "lan.pcap2", "notes.txt", "b.pcap.gz", "a.pcapng"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		at := t0.Add(time.Duration(i) * time.Minute)
		if name == "a.pcapng" {
			at = t0.Add(3 * time.Minute) // written with b.pcap.gz: name order
		}
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
	files, err := WatchedFiles("lan", dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f.Path))
	}
	if want := []string{"lan.pcap", "lan.pcap1", "lan.pcap2", "a.pcapng", "b.pcap.gz"}; !slices.Equal(names, want) {
		t.Errorf("watched files %v, want %v", names, want)
	}
	if a, b := SessionName("lan", "lan.pcap1"), SessionName("lan", "lan.pcap"); a == b {
		t.Errorf("tcpdump -C's second file is session %s, as its first", a)
	}
	c := &Campaign{Name: "c", Homes: []*Home{{Name: "h", Taps: []Tap{{Name: "lan", Watch: dir}}}}}
	if err := c.SnapshotWatched(); err != nil {
		t.Fatal(err)
	}
	// A capture and its compressed copy side by side would be one session.
	twice := t.TempDir()
	for _, name := range []string{"x.pcap", "x.pcap.zst"} {
		if err := os.WriteFile(filepath.Join(twice, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := WatchedFiles("lan", twice); err == nil || !strings.Contains(err.Error(), "would both be session lan-x") {
		t.Errorf("a folder of x.pcap and x.pcap.zst: %v, want the two named as one session", err)
	}
	if tap := c.Homes[0].Taps[0]; tap.Watch != "" || len(tap.Files) != 5 {
		t.Errorf("snapshot: watch %q, %d files; want a tap of the 5 files", tap.Watch, len(tap.Files))
	}
	// A campaign file's watch folder is relative to the file.
	file := filepath.Join(t.TempDir(), "c.yaml")
	yaml := "name: c\nhomes:\n  - name: h\n    gateway: auto\n    taps: [{name: lan, watch: caps/lan}]\n    inventory: [{mac: \"02:00:5e:10:00:01\", name: plug, category: iot}]\n"
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	loaded, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := loaded.Homes[0].Taps[0].Watch, filepath.Join(filepath.Dir(file), "caps", "lan"); got != want {
		t.Errorf("watch folder %s, want %s", got, want)
	}
	empty := &Campaign{Name: "c", Homes: []*Home{{Name: "h", Taps: []Tap{{Name: "lan", Watch: t.TempDir()}}}}}
	if err := empty.SnapshotWatched(); err == nil || !strings.Contains(err.Error(), "holds no capture file") {
		t.Errorf("snapshot of an empty folder: %v", err)
	}
}
