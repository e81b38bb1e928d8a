// Package toolmain is what the measuring tools (tools/matrix,
// tools/realnoise) share around their run function: the process's signal
// handling and exit codes, the worker log, a comma list flag, and the
// embedded servers of a run's work folder. Tools cannot import
// services/internal/cli, so this is their copy of that wiring, written once.
package toolmain

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/homemole/homemole/pipeline/endpoints"
)

// Run is a tool's body: its arguments, stdout and stderr.
type Run func(ctx context.Context, args []string, out, errOut io.Writer) error

// Main runs run with the process's arguments under a context cancelled on
// SIGINT or SIGTERM, and exits 2 on a usage error, 1 on any other.
func Main(name string, run Run) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// Logger logs the pipeline's workers to errOut: warnings only, unless
// verbose (the tools' -v).
func Logger(errOut io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: level}))
}

// Split is a comma-separated flag's items, blanks dropped.
func Split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Embedded opens embedded NATS and S3 servers with their state under
// dir/state, whatever HOMEMOLE_NATS_URL or HOMEMOLE_S3_ENDPOINT say: a
// measuring run starts from nothing and touches no one's servers.
func Embedded(ctx context.Context, dir, name string, log *slog.Logger) (*endpoints.Env, error) {
	ep := endpoints.FromEnv()
	ep.Home, ep.NATSURL, ep.S3 = filepath.Join(dir, "state"), "", ""
	return endpoints.Open(ctx, ep, name, log)
}
