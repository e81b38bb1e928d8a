//go:build !torch

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/homemole/homemole/services/homemole/internal/cmdkit"
)

// torchSibling is this command built with -tags torch, the one that links
// libtorch.
var torchSibling = cmdkit.Sibling{
	Binary:  "homemole-torch",
	Package: "./services/homemole/full",
	Tags:    "torch",
	CGO:     true,
	Setup:   "libtorch set up (go tool task setup)",
}

// torchCommand hands a model command to the torch build, so that this
// build stays CGO-free: commands that never touch a model do not pay
// libtorch's initialisers (0.4 s).
func torchCommand(name string) runFunc {
	return func(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
		err := torchSibling.Run(ctx, log, out, append([]string{name}, args...))
		var exit *cmdkit.ExitCode
		if err != nil && !errors.As(err, &exit) && ctx.Err() == nil {
			return fmt.Errorf("homemole %s needs libtorch: %w", name, err)
		}
		return err
	}
}
