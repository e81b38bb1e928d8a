// Package cli holds what every HomeMole main shares: the logger, the
// signal-aware context, and the exit-code convention.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Logger writes structured logs to stderr; HOMEMOLE_LOG=debug|info|warn|error
// sets the level and HOMEMOLE_LOG_FORMAT=json switches to JSON for clusters.
func Logger() *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(os.Getenv("HOMEMOLE_LOG"))); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if os.Getenv("HOMEMOLE_LOG_FORMAT") == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// Context is cancelled on SIGINT or SIGTERM, so workers stop fetching,
// flush and ack before they exit; its cause (context.Cause) is then a
// *Signal saying which.
func Context() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case s := <-ch:
			cancel(&Signal{Signal: s})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel(context.Canceled)
	}
}

// Signal is the cause of a Context a signal cancelled.
type Signal struct{ Signal os.Signal }

func (s *Signal) Error() string { return "stopped by " + s.Name() }

// Name is the signal's name: SIGINT, SIGTERM.
func (s *Signal) Name() string {
	switch s.Signal {
	case os.Interrupt:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return s.Signal.String()
}

// Is makes a *Signal a context.Canceled too.
func (s *Signal) Is(target error) bool { return target == context.Canceled }

// Code is the shell's exit status of a process the signal ended: 128 plus
// its number (130 for SIGINT, 143 for SIGTERM).
func (s *Signal) Code() int {
	if n, ok := s.Signal.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return 1
}

// Main runs fn, a one-shot command (build, train, cv, experiment, home
// assemble, a Kubernetes Job's command), and turns its error into an exit
// code: 0 when it finished, 2 for usage errors, 1 for everything else,
// and 128 plus the signal's number (130 for SIGINT, 143 for SIGTERM) when
// a signal interrupted it. An interrupted one-shot run never exits 0: its
// work is not done, `build && train` must stop there, and a Kubernetes
// Job takes exit 0 for success and would not run it again.
//
// A command that runs until it is stopped (serve, a capture agent with
// live taps) and shut down cleanly on the signal returns nil: that is
// its success, and it exits 0. Long-running workers whose every run ends
// by a signal (labeler, windower, detector) use Serve.
func Main(fn func(ctx context.Context, log *slog.Logger) error) {
	run(false, fn)
}

// Serve is Main for a long-running worker (a Deployment's or
// StatefulSet's: labeler, windower, detector): stopped by SIGINT or
// SIGTERM, it shuts down gracefully, and the context.Canceled it returns
// then is a clean stop that exits 0. Any other error exits as in Main.
func Serve(fn func(ctx context.Context, log *slog.Logger) error) {
	run(true, fn)
}

func run(lasting bool, fn func(ctx context.Context, log *slog.Logger) error) {
	ctx, cancel := Context()
	log := Logger()
	err := fn(ctx, log)
	var sig *Signal
	errors.As(context.Cause(ctx), &sig)
	cancel()
	code := ExitCode(err, sig, lasting)
	switch {
	case code == 0:
		if sig != nil {
			log.Info("stopped by signal", "signal", sig.Name())
		}
		return
	case sig != nil && errors.Is(err, context.Canceled):
		fmt.Fprintf(os.Stderr, "stopped by %s before it finished (exit status %d)\n", sig.Name(), code)
	case errors.Is(err, ErrUsage):
		fmt.Fprintln(os.Stderr, err)
	default:
		fmt.Fprintln(os.Stderr, "error:", err)
	}
	os.Exit(code)
}

// ExitCode is the exit status of a run that returned err, sig the signal
// that cancelled its context (nil: none came), lasting whether it is a
// long-running worker (Serve) rather than a one-shot command (Main).
func ExitCode(err error, sig *Signal, lasting bool) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case sig != nil && lasting && errors.Is(err, context.Canceled):
		return 0
	case sig != nil:
		// Whatever it failed with, the signal is why it stopped.
		return sig.Code()
	case errors.Is(err, ErrUsage):
		return 2
	default:
		return 1
	}
}

// ErrUsage marks a command-line mistake.
var ErrUsage = errors.New("usage")

// Usagef builds a usage error.
func Usagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

// Parse parses a program's flags from args, which the caller takes from
// its command line or, in a test, gives; --help prints usage and ends
// cleanly.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return Usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return Usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
