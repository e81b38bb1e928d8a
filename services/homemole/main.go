// Command homemole is HomeMole's command line: it runs the whole pipeline
// in one process on embedded servers (demo, build, train), or one worker of
// it against a NATS JetStream cluster and MinIO.
//
// This binary is its front. It runs `homemole features` itself and hands
// every other command, with its arguments, standard streams and exit
// status, to the full CLI (homemole-full, built from services/homemole/full,
// next to this binary, on PATH, or built on demand in a checkout), which
// hands model commands to its torch build in turn. The front links the
// decoder and not NATS, S3, Arrow or gopacket's layers, whose initialisers
// cost 60 to 90 ms of every start on the VMs we measure on: a script that
// runs features once per capture pays milliseconds, not that.
package main

import (
	"context"
	"io"
	"log/slog"
	"os"

	"github.com/homemole/homemole/services/homemole/internal/cmdkit"
)

// full is the build that runs every command but features.
var full = cmdkit.Sibling{Binary: "homemole-full", Package: "./services/homemole/full"}

func main() {
	cmdkit.Main(func(ctx context.Context, log *slog.Logger) error {
		return run(ctx, log, os.Stdout, os.Stderr, os.Args[1:])
	})
}

func run(ctx context.Context, log *slog.Logger, stdout, stderr io.Writer, args []string) error {
	if len(args) > 0 && args[0] == "features" {
		return cmdkit.Features(ctx, stdout, stderr, args[1:])
	}
	return full.Run(ctx, log, stdout, args)
}
