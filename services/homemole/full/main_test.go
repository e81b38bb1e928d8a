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

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/services/internal/cli"
)

// TestDemoCommand runs `homemole demo` small, then `dataset verify` and
// `dataset ls` against the state it left, as a person would.
func TestDemoCommand(t *testing.T) {
	// A relative --home, as a person types it: paths the demo writes must
	// still resolve.
	t.Chdir(t.TempDir())
	home := "hm"
	t.Setenv("HOMEMOLE_NATS_URL", "")
	t.Setenv("HOMEMOLE_S3_ENDPOINT", "")
	var out bytes.Buffer
	err := runDemo(context.Background(), quiet(), &out, []string{"--home", home, "--sessions", "4", "--session-length", "10m", "--epochs", "3", "--window", "40"})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{"packets read:", "windows written:", "overall accuracy", "camera", "report:", "[4/4] summary"} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	report := filepath.Join(home, "demo", "reports", "demo-blstm", "report.html")
	if html, err := os.ReadFile(report); err != nil || !bytes.Contains(html, []byte("Confusion matrix")) {
		t.Errorf("report %s: %v", report, err)
	}

	// The campaign file the demo leaves behind loads, and names the captures.
	c, err := campaign.Load(filepath.Join(home, "demo", "campaign.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range c.Homes[0].Taps[0].Files {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("campaign file names a capture that is not there: %v", err)
		}
	}

	state := filepath.Join(home, "demo", "state")
	out.Reset()
	if err := runDataset(context.Background(), quiet(), &out, []string{"verify", "--home", state, "--dataset", "demo"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "verified") {
		t.Errorf("verify said %q", out.String())
	}
	out.Reset()
	if err := runDataset(context.Background(), quiet(), &out, []string{"inspect", "--home", state, "--dataset", "demo"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "label mix") || !strings.Contains(out.String(), "camera") {
		t.Errorf("inspect said %q", out.String())
	}
	out.Reset()
	if err := runDataset(context.Background(), quiet(), &out, []string{"ls", "--home", state}); err != nil || strings.TrimSpace(out.String()) != "demo/v1" {
		t.Errorf("ls said %q, %v", out.String(), err)
	}
}

func TestCommandErrors(t *testing.T) {
	ctx := context.Background()
	var out bytes.Buffer
	bad := filepath.Join(t.TempDir(), "campaign.yaml")
	if err := os.WriteFile(bad, []byte("name: c\nhomes: [{name: h, gateway: {mode: tor}, taps: [{name: lan, files: [x.pcap]}]}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		run   func(context.Context, *slog.Logger, *bytes.Buffer) error
		usage bool
		want  string
	}{
		"build without campaign": {func(ctx context.Context, l *slog.Logger, o *bytes.Buffer) error {
			return runBuild(ctx, l, o, []string{"--dataset", "d"})
		}, true, "--campaign"},
		"unknown flag": {func(ctx context.Context, l *slog.Logger, o *bytes.Buffer) error {
			return runTrain(ctx, l, o, []string{"--colour", "red"})
		}, true, "colour"},
		"stray argument": {func(ctx context.Context, l *slog.Logger, o *bytes.Buffer) error {
			return runBuild(ctx, l, o, []string{"extra"})
		}, true, "unexpected argument"},
		"bad model": {func(ctx context.Context, l *slog.Logger, o *bytes.Buffer) error {
			return runTrain(ctx, l, o, []string{"--model", "gru"})
		}, true, "want one of [rf lstm blstm]"},
		"bad campaign": {func(ctx context.Context, l *slog.Logger, o *bytes.Buffer) error {
			return runBuild(ctx, l, o, []string{"--campaign", bad, "--dataset", "d"})
		}, false, "want napt or vpn"},
		"bad device": {func(ctx context.Context, l *slog.Logger, o *bytes.Buffer) error {
			return runTrain(ctx, l, o, []string{"--dataset", "d", "--device", "tpu"})
		}, true, "want cpu, cuda, auto or cuda:N"},
		// No machine of the tests has a GPU: asking for one must fail before
		// any work, not fall back to the CPU.
		"cuda without a GPU": {func(ctx context.Context, l *slog.Logger, o *bytes.Buffer) error {
			return runTrain(ctx, l, o, []string{"--dataset", "d", "--device", "cuda"})
		}, true, "libtorch sees no GPU"},
		"predict on a GPU that is not there": {func(ctx context.Context, l *slog.Logger, o *bytes.Buffer) error {
			return runPredict(ctx, l, o, []string{"--model", "m", "--in", bad, "--device", "cuda:1"})
		}, true, "libtorch sees no GPU"},
		"sp train on a GPU that is not there": {func(ctx context.Context, l *slog.Logger, o *bytes.Buffer) error {
			return runSPTrain(ctx, l, o, []string{"--dir", ".", "--out", "m", "--device", "cuda"})
		}, true, "libtorch sees no GPU"},
		"detect on a bad device": {func(ctx context.Context, l *slog.Logger, o *bytes.Buffer) error {
			return runDetect(ctx, l, o, []string{"--model", "m", "--in", "c", "--json", "j", "--device", "gpu"})
		}, true, "want cpu, cuda, auto or cuda:N"},
		"dataset without subcommand": {func(ctx context.Context, l *slog.Logger, o *bytes.Buffer) error {
			return runDataset(ctx, l, o, nil)
		}, true, "ls | inspect"},
	} {
		err := c.run(ctx, quiet(), &out)
		if err == nil || !strings.Contains(err.Error(), c.want) || errors.Is(err, cli.ErrUsage) != c.usage {
			t.Errorf("%s: got %v, want an error with %q (usage error: %v)", name, err, c.want, c.usage)
		}
	}
}

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
