package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/homemole/homemole/services/homemole/internal/clitest"
)

// TestTorchCommandsExecTheTorchBuild: the CGO-free CLI hands model
// commands to homemole-torch beside it, with their arguments, output and
// exit status, and says what to install when there is none.
func TestTorchCommandsExecTheTorchBuild(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "homemole")
	clitest.Build(t, bin, ".", "", "CGO_ENABLED=0")
	run := func(wd string, args ...string) (stdout, stderr string, code int) {
		return clitest.Run(t, bin, wd, args...)
	}

	// Outside this module, with no torch build anywhere: a clear error.
	_, stderr, code := run(dir, "predict", "--model", "m", "--in", "x.pcap")
	if code != 1 || !strings.Contains(stderr, "homemole-torch") || !strings.Contains(stderr, "-tags torch") {
		t.Errorf("without homemole-torch: exit %d, stderr %q; want 1 and how to build it", code, stderr)
	}

	clitest.Build(t, filepath.Join(dir, "homemole-torch"), ".", "torch", "CGO_ENABLED=1")
	_, stderr, code = run(dir, "predict", "--help")
	if code != 0 || !strings.Contains(stderr, "Usage: homemole predict") {
		t.Errorf("predict --help through homemole-torch: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = run(dir, "train", "--model", "gru")
	if code != 2 || !strings.Contains(stderr, "want one of [rf lstm blstm]") {
		t.Errorf("train --model gru: exit %d, stderr %q; want the torch build's usage error and status 2", code, stderr)
	}
}
