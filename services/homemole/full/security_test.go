//go:build torch

package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homemole/homemole/services/internal/cli"
)

// TestSecurityNamesRefusedAtFlags: run and dataset names become object
// keys and folders (reports/RUN on disk, datasets/NAME/VERSION in S3), so a
// name that climbs out ("../..") is refused as a usage error naming the
// flag, before any server starts or any file is written.
func TestSecurityNamesRefusedAtFlags(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	home := filepath.Join(dir, "hm", "state")
	t.Setenv("HOMEMOLE_NATS_URL", "")
	t.Setenv("HOMEMOLE_S3_ENDPOINT", "")
	refused := 0
	cases := []struct {
		run  func(context.Context, *bytes.Buffer, []string) error
		args []string
		flag string
	}{
		{wrap(runTrain), []string{"--dataset", "d", "--run", "../.."}, "--run"},
		{wrap(runTrain), []string{"--dataset", "../../etc", "--run", "r"}, "--dataset"},
		{wrap(runCV), []string{"--dataset", "d", "--run", "../escape", "--gather"}, "--run"},
		{wrap(runCV), []string{"--dataset", "d", "--version", "v1/../../x"}, "--version"},
		{wrap(runDataset), []string{"verify", "--dataset", "..", "--version", "v1"}, "--dataset"},
		{wrap(runDataset), []string{"export", "--dataset", "d", "--version", "../v1", "--out", "x.parquet"}, "--version"},
		{wrap(runDataset), []string{"build", "--name", "a/b"}, "--name"},
	}
	for _, c := range cases {
		args := append([]string{"--home", home}, c.args...)
		if c.args[0][0] != '-' { // a subcommand comes first
			args = append([]string{c.args[0], "--home", home}, c.args[1:]...)
		}
		var out bytes.Buffer
		err := c.run(context.Background(), &out, args)
		if err == nil || !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), c.flag) || !strings.Contains(err.Error(), "not allowed") {
			t.Errorf("%v: %v, want a usage error naming %s", c.args, err, c.flag)
		} else {
			refused++
		}
	}
	// Nothing was started or written: no state folder, nothing beside it.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("refused commands left %v in %s", entries, dir)
	}
	t.Logf("attack: run, dataset and version names that climb (--run ../.., --dataset ../../etc, --version v1/../../x, ...) | expected: usage errors before anything opens | observed: %d of %d refused, %d files left behind", refused, len(cases), len(entries))
}

func wrap(f func(context.Context, *slog.Logger, io.Writer, []string) error) func(context.Context, *bytes.Buffer, []string) error {
	return func(ctx context.Context, out *bytes.Buffer, args []string) error { return f(ctx, quiet(), out, args) }
}
