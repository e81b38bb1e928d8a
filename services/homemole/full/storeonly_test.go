package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homemole/homemole/services/internal/cli"
)

// TestStoreCommandsOpenNoNATS: commands that only read objects work with
// a --nats nothing answers at, and start no JetStream in their state.
func TestStoreCommandsOpenNoNATS(t *testing.T) {
	home := filepath.Join(t.TempDir(), "state")
	t.Setenv("HOMEMOLE_S3_ENDPOINT", "")
	ctx := context.Background()
	for _, args := range [][]string{
		{"ls", "--home", home, "--nats", "nats://127.0.0.1:1"},
		{"verify", "--home", home, "--nats", "nats://127.0.0.1:1", "--dataset", "none"},
	} {
		var out bytes.Buffer
		err := runDataset(ctx, quiet(), &out, args)
		if args[0] == "ls" && err != nil {
			t.Errorf("dataset ls with an unreachable NATS: %v", err)
		}
		// verify of a dataset that is not there fails on the store, not on NATS.
		if args[0] == "verify" && (err == nil || strings.Contains(err.Error(), "nats") || !strings.Contains(err.Error(), "none")) {
			t.Errorf("dataset verify --dataset none: %v, want the store's answer about it", err)
		}
	}
	if _, err := os.Stat(filepath.Join(home, "nats")); !os.IsNotExist(err) {
		t.Errorf("dataset ls started JetStream (%s: %v)", filepath.Join(home, "nats"), err)
	}
}

// TestBuildNameIsDeprecated: one --dataset everywhere; build's old --name
// still works, says so, and may not contradict --dataset.
func TestBuildNameIsDeprecated(t *testing.T) {
	ctx := context.Background()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var out bytes.Buffer
	// No --campaign: the usage error comes after the flags are read.
	err := runDataset(ctx, log, &out, []string{"build", "--name", "d"})
	if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), "--campaign") {
		t.Errorf("build --name d without a campaign: %v", err)
	}
	if !strings.Contains(logs.String(), "--name is deprecated") || !strings.Contains(logs.String(), "use --dataset") {
		t.Errorf("no deprecation warning: %q", logs.String())
	}
	err = runBuild(ctx, log, &out, []string{"--name", "d", "--dataset", "e", "--campaign", "x.yaml"})
	if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), "disagree") {
		t.Errorf("--name d --dataset e: %v, want a usage error", err)
	}
}
