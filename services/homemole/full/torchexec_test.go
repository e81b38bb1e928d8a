package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTorchCommandsExecTheTorchBuild: the CGO-free CLI hands model
// commands to homemole-torch beside it, with their arguments, output and
// exit status, and says what to install when there is none.
func TestTorchCommandsExecTheTorchBuild(t *testing.T) {
	dir, bin := buildCGOFree(t)
	run := func(wd string, args ...string) (stdout, stderr string, code int) {
		var o, e bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Dir, cmd.Stdout, cmd.Stderr = wd, &o, &e
		cmd.Env = append(os.Environ(), "PATH=/nonexistent", "HOMEMOLE_NATS_URL=", "HOMEMOLE_S3_ENDPOINT=")
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return o.String(), e.String(), code
	}

	// Outside this module, with no torch build anywhere: a clear error.
	_, stderr, code := run(dir, "predict", "--model", "m", "--in", "x.pcap")
	if code != 1 || !strings.Contains(stderr, "homemole-torch") || !strings.Contains(stderr, "-tags torch") {
		t.Errorf("without homemole-torch: exit %d, stderr %q; want 1 and how to build it", code, stderr)
	}

	torch := exec.Command("go", "build", "-tags", "torch", "-o", filepath.Join(dir, "homemole-torch"), ".")
	torch.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := torch.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags torch: %v\n%s", err, out)
	}
	_, stderr, code = run(dir, "predict", "--help")
	if code != 0 || !strings.Contains(stderr, "Usage: homemole predict") {
		t.Errorf("predict --help through homemole-torch: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = run(dir, "train", "--model", "gru")
	if code != 2 || !strings.Contains(stderr, "want one of [rf lstm blstm]") {
		t.Errorf("train --model gru: exit %d, stderr %q; want the torch build's usage error and status 2", code, stderr)
	}
}

// buildCGOFree builds the full CLI with CGO_ENABLED=0 into a fresh folder.
func buildCGOFree(t *testing.T) (dir, bin string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the CLI; not in -short")
	}
	dir = t.TempDir()
	bin = filepath.Join(dir, "homemole")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build ./services/homemole/full: %v\n%s", err, out)
	}
	return dir, bin
}
