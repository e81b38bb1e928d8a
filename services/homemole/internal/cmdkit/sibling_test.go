package cmdkit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homemole/homemole/internal/modroot"
)

// TestSiblingBuiltAgainBesideAnOnDemandBuild: `go run ./services/homemole`
// builds homemole-full into the checkout's cache folder, and homemole-full
// then looks for homemole-torch beside itself, where an earlier on-demand
// build left one made from older source. That one must be built again,
// not used: a stale sibling once ran a figure's cross-validation with
// flags it read differently. A sibling beside an executable anywhere else
// (an install) is used as it is.
func TestSiblingBuiltAgainBesideAnOnDemandBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the front")
	}
	root, err := modroot.Find(module)
	if err != nil {
		t.Skipf("not in a checkout: %v", err)
	}
	// The on-demand folder moves to a temporary cache; go's own build
	// cache stays where it is, so the build is the usual relink.
	gocache, err := exec.Command("go", "env", "GOCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOCACHE", strings.TrimSpace(string(gocache)))
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	s := Sibling{Binary: "homemole-sibling-test", Package: "./services/homemole"}
	out := onDemandPath(root, s.Binary)
	// Any other program stands for the stale build: this test's own
	// binary (go build overwrites only executables).
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	stale, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, stale, 0o755); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()

	got, err := s.findFrom(ctx, log, filepath.Join(filepath.Dir(out), "homemole-full"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got != out {
		t.Errorf("found %s, want the on-demand build %s", got, out)
	}
	if b, err := os.ReadFile(out); err != nil || bytes.Equal(b, stale) {
		t.Errorf("the stale sibling beside an on-demand build was used, not built again (%v)", err)
	}

	// Installed side by side elsewhere: used as found, nothing built.
	dir := t.TempDir()
	installed := filepath.Join(dir, s.Binary)
	if err := os.WriteFile(installed, stale, 0o755); err != nil {
		t.Fatal(err)
	}
	got, err = s.findFrom(ctx, log, filepath.Join(dir, "homemole-full"), nil)
	if err != nil || got != installed {
		t.Errorf("beside an installed executable: %s, %v; want %s", got, err, installed)
	}
}

// TestSiblingStatusPassesThrough: the front passes on the status the
// sibling exits with when a signal stops both: 0 for a command that shut
// down cleanly (serve), which the front took for interrupted, and 143 for
// an interrupted one-shot command.
func TestSiblingStatusPassesThrough(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	for _, c := range []struct {
		onTerm string
		want   int // -1: nil
	}{{"exit 0", -1}, {"exit 143", 143}} {
		script := "#!/bin/sh\ntrap '" + c.onTerm + "' TERM\necho ready\nwhile :; do sleep 0.05; done\n"
		if err := os.WriteFile(filepath.Join(dir, "hm-sibling-test"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		r, w := io.Pipe()
		go func() {
			bufio.NewReader(r).ReadString('\n')
			cancel()
			io.Copy(io.Discard, r)
		}()
		err := Sibling{Binary: "hm-sibling-test"}.Run(ctx, slog.New(slog.DiscardHandler), w, nil)
		w.Close()
		var exit *ExitCode
		switch {
		case c.want < 0 && err != nil:
			t.Errorf("sibling that exited 0 on SIGTERM: %v, want nil", err)
		case c.want >= 0 && (!errors.As(err, &exit) || exit.Code != c.want):
			t.Errorf("sibling that exited %d on SIGTERM: %v, want its status", c.want, err)
		}
	}
}
