//go:build !torch

package main

import (
	"context"
	"io"
	"log/slog"
)

// runHomeCount counts with sequence-profile CNNs, so the CGO-free build
// hands it to homemole-torch, as it does the other model commands.
func runHomeCount(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	return torchCommand("home")(ctx, log, out, append([]string{"count"}, args...))
}
