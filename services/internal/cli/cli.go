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
// flush and ack before they exit.
func Context() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// Main runs fn and turns its error into an exit code: 2 for usage errors,
// 1 for everything else, 0 when interrupted cleanly.
func Main(fn func(ctx context.Context, log *slog.Logger) error) {
	ctx, cancel := Context()
	log := Logger()
	err := fn(ctx, log)
	cancel()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return
	case errors.Is(err, context.Canceled):
		log.Info("stopped by signal")
		return
	case errors.Is(err, ErrUsage):
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
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
