// Package clitest builds the homemole binaries and runs them as a user
// would, for the tests of the hand-offs between the front, the full CLI
// and its torch build.
package clitest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"testing"
)

// Build builds the package pkg (a path relative to the test's folder)
// into out, with env added to the build's environment (CGO_ENABLED=...).
// It skips in -short: a build takes seconds to minutes.
func Build(t testing.TB, out, pkg string, tags string, env ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the CLI; not in -short")
	}
	args := []string{"build"}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	build := exec.Command("go", append(args, "-o", out, pkg)...)
	build.Env = append(os.Environ(), env...)
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go %v: %v\n%s", build.Args[1:], err, b)
	}
}

// Run runs bin with args in dir, with no PATH (so no other build is found
// there) and no NATS or S3 endpoint from the environment, and returns its
// output and exit status.
func Run(t testing.TB, bin, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, &o, &e
	cmd.Env = append(os.Environ(), "PATH=/nonexistent", "HOMEMOLE_NATS_URL=", "HOMEMOLE_S3_ENDPOINT=")
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s: %v", bin, err)
	}
	return o.String(), e.String(), code
}
