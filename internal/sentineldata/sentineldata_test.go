package sentineldata

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

func TestChecksumsParse(t *testing.T) {
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	pcaps, macs := 0, 0
	for _, f := range files {
		switch {
		case strings.HasSuffix(f.Path, ".pcap"):
			pcaps++
		case strings.HasSuffix(f.Path, "/_iotdevice-mac.txt"):
			macs++
		default:
			t.Errorf("unexpected file %s in the list", f.Path)
		}
	}
	// The README of ../shared/data: 277 captures of 31 devices.
	if pcaps != 277 || macs != 31 {
		t.Errorf("%d captures and %d MAC files listed, want 277 and 31", pcaps, macs)
	}
}

func TestParseSumsRefuses(t *testing.T) {
	good := strings.Repeat("ab", 32)
	for name, in := range map[string]string{
		"climbs":       good + "  ../etc/passwd\n",
		"absolute":     good + "  /etc/passwd\n",
		"not clean":    good + "  Aria/./x.pcap\n",
		"short digest": "abcd  Aria/x.pcap\n",
		"not hex":      strings.Repeat("zz", 32) + "  Aria/x.pcap\n",
		"one space":    good + " Aria/x.pcap\n",
		"empty":        "\n",
	} {
		if _, err := ParseSums(strings.NewReader(in)); err == nil {
			t.Errorf("%s: %q accepted", name, in)
		}
	}
}

// served writes files into a folder and serves it the way the public
// mirror does (BASE/DEVICE/FILE), counting requests.
func served(t *testing.T, content map[string]string) (*httptest.Server, string, *atomic.Int64) {
	t.Helper()
	src := t.TempDir()
	for p, c := range content {
		if err := os.MkdirAll(filepath.Join(src, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var hits atomic.Int64
	fs := http.FileServer(http.Dir(src))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, src, &hits
}

func sumOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestFetchFromLocalServer(t *testing.T) {
	ctx := context.Background()
	content := map[string]string{"Aria/Setup-A-1-STA.pcap": "pcap one", "Aria/_iotdevice-mac.txt": "00:11:22:33:44:55\n", "HueBridge/Setup-B-2-STA.pcap": "pcap two"}
	var files []File
	for p, c := range content {
		files = append(files, File{Path: p, SHA256: sumOf(c)})
	}
	srv, src, hits := served(t, content)
	dest := t.TempDir()

	n, err := Fetch(ctx, srv.Client(), srv.URL, dest, files, 2)
	if err != nil || n != 3 {
		t.Fatalf("first fetch: %d files, %v; want 3", n, err)
	}
	if err := Verify(dest, files); err != nil {
		t.Fatal(err)
	}

	// A second run fetches nothing: every file is there and right.
	hits.Store(0)
	if n, err := Fetch(ctx, srv.Client(), srv.URL, dest, files, 2); err != nil || n != 0 || hits.Load() != 0 {
		t.Errorf("second fetch: %d files, %d requests, %v; want none", n, hits.Load(), err)
	}

	// A damaged local copy is found by Verify and replaced by Fetch.
	damaged := filepath.Join(dest, "Aria", "Setup-A-1-STA.pcap")
	if err := os.WriteFile(damaged, []byte("pcap 0ne"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Verify(dest, files); err == nil || !strings.Contains(err.Error(), "Aria/Setup-A-1-STA.pcap") || !strings.Contains(err.Error(), "go tool task data") {
		t.Errorf("verify of a damaged file: %v", err)
	}
	if n, err := Fetch(ctx, srv.Client(), srv.URL, dest, files, 2); err != nil || n != 1 {
		t.Errorf("refetch: %d files, %v; want the damaged one", n, err)
	}

	// The source serving other bytes: refused, named, and not kept.
	if err := os.WriteFile(filepath.Join(src, "HueBridge", "Setup-B-2-STA.pcap"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	fresh := t.TempDir()
	_, err = Fetch(ctx, srv.Client(), srv.URL, fresh, files, 2)
	if err == nil || !strings.Contains(err.Error(), "HueBridge/Setup-B-2-STA.pcap") || !strings.Contains(err.Error(), "SHA-256 "+sumOf("tampered")) {
		t.Fatalf("tampered source: %v, want the file and its digest named", err)
	}
	left, _ := os.ReadDir(filepath.Join(fresh, "HueBridge"))
	if len(left) != 0 {
		t.Errorf("a file that failed its digest left %v behind", left)
	}

	// A file the source does not have: the status and the URL, named.
	missing := append(files, File{Path: "Aria/Setup-Z-9-STA.pcap", SHA256: sumOf("x")})
	if _, err := Fetch(ctx, srv.Client(), srv.URL, t.TempDir(), missing, 1); err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "Setup-Z-9-STA.pcap") {
		t.Errorf("missing file: %v", err)
	}

	// A cancelled fetch stops and says so.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Fetch(cctx, srv.Client(), srv.URL, t.TempDir(), files, 1); err == nil {
		t.Error("cancelled fetch returned no error")
	}
}

// TestFetchTheRealSet serves a copy of the captures from ../shared/data
// and fetches it all, as `go tool task data` would from the mirror: the
// checked-in list holds exactly what the published files hash to.
func TestFetchTheRealSet(t *testing.T) {
	real := Need(t)
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(real)))
	defer srv.Close()
	dest := filepath.Join(t.TempDir(), Folder)
	n, err := Fetch(context.Background(), srv.Client(), srv.URL, dest, files, 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(dest, files); err != nil {
		t.Fatal(err)
	}
	if n != len(files) {
		t.Errorf("fetched %d of %d files", n, len(files))
	}
	t.Logf("fetched and verified %d files", n)
}

func FuzzParseSums(f *testing.F) {
	f.Add(strings.Repeat("ab", 32) + "  Aria/Setup-A-1-STA.pcap\n")
	f.Add("\n\n" + strings.Repeat("0", 64) + "  ../x\n")
	f.Fuzz(func(t *testing.T, in string) {
		files, err := ParseSums(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, fl := range files {
			if !filepath.IsLocal(fl.Path) || len(fl.SHA256) != 64 {
				t.Fatalf("accepted %+v", fl)
			}
		}
	})
}
