//go:build !torch

package main

import (
	"bufio"
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
)

// torchBinary is the name of the build of this command with -tags torch,
// the one that links libtorch.
const torchBinary = "homemole-torch"

// module is the module path; the on-demand build runs only inside it.
const module = "github.com/homemole/homemole"

// torchExit carries the torch build's exit code, so that scripts see the
// same status whichever binary they called.
type torchExit struct{ code int }

func (e *torchExit) Error() string {
	return fmt.Sprintf("%s exited with status %d", torchBinary, e.code)
}

// torchCommand hands a model command to the torch build, so that this
// build stays CGO-free and starts in milliseconds: commands that never
// touch a model do not pay libtorch's initialisers.
func torchCommand(name string) runFunc {
	return func(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
		bin, err := findTorch(ctx, log)
		if err != nil {
			return fmt.Errorf("homemole %s needs libtorch: %w", name, err)
		}
		cmd := exec.CommandContext(ctx, bin, append([]string{name}, args...)...)
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
		case errors.As(err, &ee) && ee.ExitCode() >= 0:
			if ee.ExitCode() == 0 {
				return nil
			}
			return &torchExit{code: ee.ExitCode()}
		case ctx.Err() != nil:
			return ctx.Err()
		default:
			return fmt.Errorf("run %s %s: %w", bin, name, err)
		}
	}
}

// findTorch looks for the torch build next to this executable, then on
// PATH, then builds it when run inside this module's source tree (go run,
// a developer's checkout).
func findTorch(ctx context.Context, log *slog.Logger) (string, error) {
	self, err := os.Executable()
	if err == nil {
		p := filepath.Join(filepath.Dir(self), torchBinary)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	if p, err := exec.LookPath(torchBinary); err == nil {
		return p, nil
	}
	root, ok := moduleRoot()
	if !ok {
		return "", fmt.Errorf("no %s next to %s or on PATH: install it with `go build -tags torch -o %s ./services/homemole` in a checkout with libtorch set up (go tool task setup)", torchBinary, self, torchBinary)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	// One binary per checkout: two checkouts at different commits would
	// otherwise relink over each other on every call.
	sum := sha256.Sum256([]byte(root))
	out := filepath.Join(cache, "homemole", hex.EncodeToString(sum[:6]), torchBinary)
	log.Info("building the torch build of homemole", "out", out, "module", root)
	// go build relinks only when a source changed, so an up-to-date binary
	// costs a second of hashing, not a link.
	build := exec.CommandContext(ctx, "go", "build", "-tags", "torch", "-o", out, "./services/homemole")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	build.Env = append(os.Environ(), "CGO_ENABLED=1") // libtorch is linked through cgo
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("no %s next to %s or on PATH, and building it in %s failed (is libtorch set up? go tool task setup): %w", torchBinary, self, root, err)
	}
	return out, nil
}

// moduleRoot finds this module's go.mod at or above the working directory.
func moduleRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			sc.Scan()
			f.Close()
			if strings.TrimSpace(strings.TrimPrefix(sc.Text(), "module")) == module {
				return dir, true
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}
