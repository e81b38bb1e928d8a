// Package chromiumtest opens pages in Debian's headless Chromium for the
// tests that check what a report or status page shows once its scripts
// have run.
package chromiumtest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/homemole/homemole/internal/modroot"
)

// Find returns Debian's chromium, installing it when this runs as root
// (CI); elsewhere the test skips.
func Find(tb testing.TB) string {
	tb.Helper()
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Geteuid() != 0 {
		tb.Skip("chromium is not installed and this is not root: `bash tools/debian-packages.sh chromium` installs it")
	}
	script, err := installer()
	if err != nil {
		tb.Skipf("chromium is not installed, and its installer was not found: %v", err)
	}
	out, err := exec.Command("bash", script, "chromium").CombinedOutput()
	if err != nil {
		tb.Skipf("chromium could not be installed (%v): %s", err, out)
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		tb.Skipf("chromium installed but not on PATH: %v", err)
	}
	return p
}

// installer is tools/debian-packages.sh of the module holding the working
// directory, wherever in it the test runs.
func installer() (string, error) {
	dir, err := modroot.Find("")
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "tools", "debian-packages.sh"), nil
}

// Run runs headless Chromium with a profile of its own and returns its
// standard output (the DOM with --dump-dom).
func Run(tb testing.TB, chromium string, args ...string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--user-data-dir=" + tb.TempDir()}
	cmd := exec.CommandContext(ctx, chromium, append(base, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	return stdout.String()
}
