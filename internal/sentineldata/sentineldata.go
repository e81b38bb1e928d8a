// Package sentineldata finds, fetches and verifies the development half of
// the IoT Sentinel captures (Miettinen et al., ICDCS 2017; Aalto
// University) that tests and benchmarks read from ../shared/data beside the
// repository. The captures are never part of the repository: a clone
// without them skips the tests that need them, and `go tool task data`
// fetches them and checks each file against iot-sentinel-dev.sha256.
package sentineldata

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/homemole/homemole/internal/modroot"
)

// Folder is the captures' folder under ../shared/data.
const Folder = "iot-sentinel-dev"

// DefaultBase is where the fetch takes the captures from: the IoT Sentinel
// capture set as Aalto University published it
// (https://research.aalto.fi/en/datasets/iot-devices-captures), mirrored
// file by file in a public Git repository, pinned to one commit so that
// the bytes cannot change under the checked-in digests. A URL of this
// base joined with DEVICE/FILE is one capture.
const DefaultBase = "https://raw.githubusercontent.com/andypitcher/IoT_Sentinel/f66baead7bda7271c0455b94a2ee8a013fe905a8/captures_IoT_Sentinel/captures_IoT-Sentinel"

//go:embed iot-sentinel-dev.sha256
var sums []byte

// File is one file of the set and its SHA-256.
type File struct {
	Path   string // DEVICE/NAME, slash-separated
	SHA256 string // lower-case hex
}

// Files lists the development half, as checked in.
func Files() ([]File, error) {
	fs, err := ParseSums(bytes.NewReader(sums))
	if err != nil {
		return nil, fmt.Errorf("the checked-in iot-sentinel-dev.sha256: %w", err)
	}
	return fs, nil
}

// ParseSums reads `sha256sum` output: "HEX  DEVICE/NAME" per line. Paths
// that could leave the destination folder are refused.
func ParseSums(r io.Reader) ([]File, error) {
	var out []File
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		sum, p, ok := strings.Cut(line, "  ")
		if !ok {
			return nil, fmt.Errorf("line %d: want \"SHA256  PATH\", got %q", n, line)
		}
		if b, err := hex.DecodeString(sum); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("line %d: %q is not a SHA-256 in hex", n, sum)
		}
		if !filepath.IsLocal(p) || path.Clean(p) != p || strings.Contains(p, `\`) {
			return nil, fmt.Errorf("line %d: path %q must be relative and stay inside the folder", n, p)
		}
		out = append(out, File{Path: p, SHA256: strings.ToLower(sum)})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no files listed")
	}
	return out, nil
}

// Dir is where the captures belong: ../shared/data/iot-sentinel-dev beside
// the checkout holding the working directory.
func Dir() (string, error) {
	dir, err := modroot.Find("")
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(dir), "shared", "data", Folder), nil
}

// Need returns the captures' folder, or skips the test with a message
// that names the task that fetches them.
func Need(tb testing.TB) string {
	tb.Helper()
	dir, err := Dir()
	if err == nil {
		var files []File
		if files, err = Files(); err != nil {
			tb.Fatal(err)
		}
		_, err = os.Stat(filepath.Join(dir, filepath.FromSlash(files[0].Path)))
	}
	if err != nil {
		tb.Skipf("needs the IoT Sentinel captures in ../shared/data/%s, beside the repository (%v): run `go tool task data` to fetch them", Folder, err)
	}
	return dir
}

// Fetch downloads every listed file from base (base/DEVICE/NAME) into
// dest, verifying each against its digest before it takes its place.
// Files already there with the right digest are not fetched again; a file
// there with another digest is replaced. Nothing unverified is ever left
// under its final name.
func Fetch(ctx context.Context, client *http.Client, base string, dest string, files []File, workers int) (fetched int, err error) {
	if _, err := url.Parse(base); err != nil {
		return 0, fmt.Errorf("base URL %q: %w", base, err)
	}
	if workers < 1 {
		workers = 1
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	todo := make(chan File)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range todo {
				did, err := fetchOne(ctx, client, base, dest, f)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else if did {
					fetched++
				}
				mu.Unlock()
			}
		}()
	}
	for _, f := range files {
		select {
		case todo <- f:
		case <-ctx.Done():
		}
	}
	close(todo)
	wg.Wait()
	if ctx.Err() != nil {
		errs = append(errs, ctx.Err())
	}
	if len(errs) > 5 {
		// An unreachable mirror fails every file the same way.
		errs = append(errs[:5], fmt.Errorf("and %d more", len(errs)-5))
	}
	return fetched, errors.Join(errs...)
}

func fetchOne(ctx context.Context, client *http.Client, base, dest string, f File) (bool, error) {
	final := filepath.Join(dest, filepath.FromSlash(f.Path))
	if got, err := digest(final); err == nil && got == f.SHA256 {
		return false, nil
	}
	u := strings.TrimRight(base, "/") + "/" + f.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, fmt.Errorf("%s: %w", f.Path, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Errorf("fetch %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("fetch %s: %s (is --base right? the default is %s)", u, resp.Status, DefaultBase)
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(final), ".fetch-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), resp.Body); err != nil {
		tmp.Close()
		return false, fmt.Errorf("fetch %s: %w", u, err)
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return false, fmt.Errorf("%s from %s has SHA-256 %s, want %s: the source changed or the download was corrupted; it was not kept (rerun, or point --base at a copy of the published set)", f.Path, u, got, f.SHA256)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return false, err
	}
	return true, nil
}

// Verify checks every listed file in dir against its digest, and reports
// each missing or different file.
func Verify(dir string, files []File) error {
	var errs []error
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		got, err := digest(p)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", f.Path, err))
		case got != f.SHA256:
			errs = append(errs, fmt.Errorf("%s: SHA-256 %s, want %s", f.Path, got, f.SHA256))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d files in %s are missing or differ (go tool task data fetches them again): %w", len(errs), len(files), dir, errors.Join(errs...))
	}
	return nil
}

func digest(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
