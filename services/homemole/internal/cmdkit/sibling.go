package cmdkit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/homemole/homemole/internal/modroot"
	"github.com/homemole/homemole/services/internal/cli"
)

// Sibling is another build of the command line that this one hands
// commands to: the full CLI, which the front hands all but features, and
// its torch build, which the full CLI hands model commands.
type Sibling struct {
	Binary  string // its file name: homemole-full, homemole-torch
	Package string // the package it is built from, relative to the module
	Tags    string // build tags, "" for none
	CGO     bool   // built with cgo (libtorch is linked through it)
	// Setup says what a checkout needs before the build can succeed, ""
	// when nothing: "libtorch set up (go tool task setup)".
	Setup string
}

// module is the module path; the on-demand build runs only inside it.
const module = "github.com/homemole/homemole"

// ExitCode carries a sibling's exit status, so that scripts see the same
// status whichever binary they called; the sibling has printed its own
// error.
type ExitCode struct {
	Binary string
	Code   int
}

func (e *ExitCode) Error() string {
	return fmt.Sprintf("%s exited with status %d", e.Binary, e.Code)
}

// Main is cli.Main for a build that hands commands to a sibling: when the
// sibling failed it has printed its own error, and only its exit status
// is left to pass on.
func Main(fn func(ctx context.Context, log *slog.Logger) error) {
	cli.Main(func(ctx context.Context, log *slog.Logger) error {
		err := fn(ctx, log)
		var exit *ExitCode
		if errors.As(err, &exit) {
			os.Exit(exit.Code)
		}
		return err
	})
}

// Run runs the sibling with args, this process's stdin and stderr and out
// as its stdout. A failed command is an *ExitCode, which cmdkit.Main
// exits with: the sibling's status, 130 or 143 for an interrupted
// one-shot command included, passes through unchanged.
func (s Sibling) Run(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	bin, err := s.find(ctx, log)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, out, os.Stderr
	// On SIGTERM the child gets SIGTERM too, so it flushes and exits as
	// it would on its own; it is killed only if it hangs.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case cmd.ProcessState != nil && cmd.ProcessState.Success():
		// Stopped by the signal and exited 0 (serve, shut down cleanly):
		// the sibling's status is the command's.
		return nil
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		return &ExitCode{Binary: s.Binary, Code: ee.ExitCode()}
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		return fmt.Errorf("run %s: %w", bin, err)
	}
}

// find looks for the sibling next to this executable, then on PATH, then
// builds it when run inside this module's source tree (go run, a
// developer's checkout). A sibling next to an executable that was itself
// built here on demand is one of those builds, made from whatever the
// source was then: it is built again (a no-op when nothing changed), or
// a go run of the front would hand model commands to a stale one.
func (s Sibling) find(ctx context.Context, log *slog.Logger) (string, error) {
	self, err := os.Executable()
	return s.findFrom(ctx, log, self, err)
}

// findFrom is find for the executable self (selfErr: why it is unknown).
func (s Sibling) findFrom(ctx context.Context, log *slog.Logger, self string, selfErr error) (string, error) {
	root, rootErr := modroot.Find(module)
	out := ""
	if rootErr == nil {
		out = onDemandPath(root, s.Binary)
	}
	if selfErr == nil && (out == "" || filepath.Dir(self) != filepath.Dir(out)) {
		p := filepath.Join(filepath.Dir(self), s.Binary)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath(s.Binary); err == nil {
		return p, nil
	}
	buildArgs := []string{"build"}
	if s.Tags != "" {
		buildArgs = append(buildArgs, "-tags", s.Tags)
	}
	setup := ""
	if s.Setup != "" {
		setup = " with " + s.Setup
	}
	if rootErr != nil {
		return "", fmt.Errorf("no %s next to %s or on PATH: install it with `go %s -o %s %s` in a checkout%s",
			s.Binary, self, strings.Join(buildArgs, " "), s.Binary, s.Package, setup)
	}
	level := slog.LevelDebug
	if _, err := os.Stat(out); err != nil {
		level = slog.LevelInfo // the first build takes a while: say why
	}
	log.Log(ctx, level, "building "+s.Binary, "out", out, "module", root)
	// go build relinks only when a source changed, so an up-to-date binary
	// costs a second of hashing, not a link.
	build := exec.CommandContext(ctx, "go", append(buildArgs, "-o", out, s.Package)...)
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	cgo := "CGO_ENABLED=0"
	if s.CGO {
		cgo = "CGO_ENABLED=1"
	}
	build.Env = append(os.Environ(), cgo)
	if err := build.Run(); err != nil {
		hint := ""
		if s.Setup != "" {
			hint = " (it needs " + s.Setup + ")"
		}
		return "", fmt.Errorf("no %s next to %s or on PATH, and building it in %s failed%s: %w", s.Binary, self, root, hint, err)
	}
	return out, nil
}

// onDemandPath is where find builds binary for the checkout at root: one
// folder per checkout, since two checkouts at different commits would
// otherwise relink over each other on every call.
func onDemandPath(root, binary string) string {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	sum := sha256.Sum256([]byte(root))
	return filepath.Join(cache, "homemole", hex.EncodeToString(sum[:6]), binary)
}
