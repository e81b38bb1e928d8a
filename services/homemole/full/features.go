package main

import (
	"context"
	"io"
	"log/slog"
	"os"

	"github.com/homemole/homemole/services/homemole/internal/cmdkit"
)

// runFeatures is cmdkit's features command, the one the front runs
// itself; this build runs it when called directly.
func runFeatures(ctx context.Context, _ *slog.Logger, out io.Writer, args []string) error {
	return cmdkit.Features(ctx, out, os.Stderr, args)
}
