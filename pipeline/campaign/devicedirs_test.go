package campaign

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestLinkTimeSplit: captures split by their sequence number, not their
// name (Setup-A-10 is later than Setup-B-2), every link resolving to the
// original file, and a device of one capture kept for training only.
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
	early, late, err := LinkTimeSplit(src, t.TempDir())
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
	if _, _, err := LinkTimeSplit(filepath.Join(src, "missing"), t.TempDir()); err == nil {
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
		"lan.pcap.xz": "lan", "lan.pcap.bz2": "lan",
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
