package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCGOFreeFeatures builds the CLI as users of the torch-free commands
// get it, CGO_ENABLED=0, and runs `features` on a 1-packet capture as a
// whole process: the start-up is the cost that per-file scripts pay.
func TestCGOFreeFeatures(t *testing.T) {
	_, bin := buildCGOFree(t)
	in, _ := featuresCapture(t, 1, nil)
	const runs = 21
	took := make([]time.Duration, 0, runs)
	for range runs {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(bin, "features", "--in", in)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("homemole features: %v\n%s", err, stderr.String())
		}
		took = append(took, time.Since(start))
		if lines := strings.Split(strings.TrimSpace(stdout.String()), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], "1700000000000000000,123,") {
			t.Fatalf("features printed %q, want the header and the one packet's row", stdout.String())
		}
	}
	slices.Sort(took)
	median := took[runs/2]
	t.Logf("homemole features on a 1-packet capture, CGO-free: median %s of %d runs (min %s, max %s)", median, runs, took[0], took[runs-1])
	// A build that links libtorch spends about 0.4 s in its initialisers
	// alone. The bound is loose enough for a busy CI machine where page
	// faults are dear (60 ms idle on one VM, a 164 ms median there during
	// a full parallel test run) and still below that.
	if median > 300*time.Millisecond {
		t.Errorf("median start-to-exit %s, want well under libtorch's 0.4 s start", median)
	}
}

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

// buildCGOFree builds this command with CGO_ENABLED=0 into a fresh folder.
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
		t.Fatalf("CGO_ENABLED=0 go build ./services/homemole: %v\n%s", err, out)
	}
	return dir, bin
}
