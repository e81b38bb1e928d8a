// Command data fetches the IoT Sentinel captures the tests read into
// ../shared/data/iot-sentinel-dev beside the repository, and verifies them
// against the checked-in SHA-256 list (internal/sentineldata). Run it as
// `go tool task data`; it fetches only what is missing or different.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/homemole/homemole/internal/sentineldata"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, slog.New(slog.NewTextHandler(os.Stderr, nil)), os.Args[1:])
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	default:
		fmt.Fprintln(os.Stderr, "data:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("data", flag.ContinueOnError)
	base := fs.String("base", sentineldata.DefaultBase, "URL the captures are fetched from, as BASE/DEVICE/FILE (a mirror, or a local server serving a copy)")
	dir := fs.String("dir", "", "folder to fetch into (default ../shared/data/"+sentineldata.Folder+" beside the repository)")
	verifyOnly := fs.Bool("verify", false, "only verify the files already there")
	workers := fs.Int("parallel", 4, "downloads at a time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (flags come as --name value)", fs.Arg(0))
	}
	files, err := sentineldata.Files()
	if err != nil {
		return err
	}
	if *dir == "" {
		if *dir, err = sentineldata.Dir(); err != nil {
			return fmt.Errorf("run from inside the repository, or give --dir: %w", err)
		}
	}
	start := time.Now()
	if !*verifyOnly {
		client := &http.Client{Timeout: 5 * time.Minute}
		n, err := sentineldata.Fetch(ctx, client, *base, *dir, files, *workers)
		if err != nil {
			return fmt.Errorf("fetch the IoT Sentinel captures into %s: %w", *dir, err)
		}
		log.Info("fetched", "files", n, "already there", len(files)-n, "into", *dir)
	}
	if err := sentineldata.Verify(*dir, files); err != nil {
		return err
	}
	fmt.Printf("%d files in %s verified against the checked-in SHA-256 list in %s\n", len(files), *dir, time.Since(start).Round(time.Millisecond))
	return nil
}
