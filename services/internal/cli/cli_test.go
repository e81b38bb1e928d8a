package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary a program that runs cli.Main (main) or
// cli.Serve (serve) until a signal comes; "main-nil" is a one-shot
// command that finishes cleanly on the signal (serve's own command).
const helperEnv = "HOMEMOLE_CLI_TEST_HELPER"

func TestMain(m *testing.M) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		os.Exit(m.Run())
	}
	fn := func(ctx context.Context, log *slog.Logger) error {
		fmt.Println("ready")
		<-ctx.Done()
		if mode == "main-nil" {
			return nil
		}
		return fmt.Errorf("build: %w", ctx.Err())
	}
	if mode == "serve" {
		Serve(fn)
	} else {
		Main(fn)
	}
	os.Exit(0)
}

// TestInterruptedExitStatus: a one-shot command (Main) interrupted by
// SIGINT exits 130 and by SIGTERM 143, never 0, so `build && train` stops
// and a Kubernetes Job is not taken for done (it exited 0, "stopped by
// signal"); a long-running worker (Serve) stopped by SIGTERM and a command
// that finished cleanly on the signal exit 0.
func TestInterruptedExitStatus(t *testing.T) {
	for _, c := range []struct {
		mode string
		sig  syscall.Signal
		want int
	}{
		{"main", syscall.SIGINT, 130},
		{"main", syscall.SIGTERM, 143},
		{"serve", syscall.SIGTERM, 0},
		{"serve", syscall.SIGINT, 0},
		{"main-nil", syscall.SIGTERM, 0},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+c.mode)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
			t.Fatalf("%s: read %q, %v, want ready", c.mode, line, err)
		}
		if err := cmd.Process.Signal(c.sig); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err = <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("%s: still running 30 s after %v", c.mode, c.sig)
		}
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.want {
			t.Errorf("%s stopped by %v: exit status %d, want %d", c.mode, c.sig, code, c.want)
		}
	}
}

// TestExitCode: usage errors exit 2, others 1; a signal's status wins
// over whatever a one-shot run failed with.
func TestExitCode(t *testing.T) {
	term := &Signal{Signal: syscall.SIGTERM}
	for _, c := range []struct {
		err     error
		sig     *Signal
		lasting bool
		want    int
	}{
		{nil, nil, false, 0},
		{Usagef("bad"), nil, false, 2},
		{errors.New("boom"), nil, false, 1},
		{context.Canceled, nil, false, 1},
		{context.Canceled, term, false, 143},
		{errors.New("read: interrupted"), term, false, 143},
		{context.Canceled, term, true, 0},
		{errors.New("boom"), term, true, 143},
		{nil, term, false, 0},
	} {
		if got := ExitCode(c.err, c.sig, c.lasting); got != c.want {
			t.Errorf("ExitCode(%v, %v, %v) = %d, want %d", c.err, c.sig, c.lasting, got, c.want)
		}
	}
}
