//go:build torch

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"

	"github.com/homemole/homemole/pipeline/sweep"
	"github.com/homemole/homemole/services/internal/cli"
)

// sweepSpec writes a spec over a few small IoT Sentinel devices.
func sweepSpec(t *testing.T, body string) string {
	sentineldata.Need(t)
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"SmarterCoffee", "iKettle2", "HomeMaticPlug"} {
		src, err := filepath.Abs(filepath.Join(sentinelDir, d))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(src); err != nil {
			t.Skipf("IoT Sentinel captures not found: %v", err)
		}
		if err := os.Symlink(src, filepath.Join(dir, d)); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(t.TempDir(), "sweep.yaml")
	if err := os.WriteFile(file, []byte("from_dir: "+dir+"\n"+body), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestSweepCommand runs a sweep of a forest and an LSTM (1 epoch) through
// the command, reads sweep.json back, and runs it again: nothing is
// trained the second time.
func TestSweepCommand(t *testing.T) {
	spec := sweepSpec(t, "models: [rf, lstm]\nwindows: [20]\ncv: {mode: grouped, folds: 2}\nmodel_flags: {trees: 5, epochs: 1, hidden: 8}\n")
	home, outDir := t.TempDir(), t.TempDir()
	args := []string{"--home", home, "--device", "cpu", "--spec", spec, "--out", outDir, "--parallel", "2"}
	var out bytes.Buffer
	if err := runSweep(context.Background(), quiet(), &out, args); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log(out.String())
	if !strings.Contains(out.String(), "2 configurations, 4 tasks trained now, 0 found done") {
		t.Errorf("first run printed:\n%s", out.String())
	}
	var res sweep.Result
	data, err := os.ReadFile(filepath.Join(outDir, "sweep.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Configurations) != 2 || res.Configurations[0].Config.Model != "rf" || res.Configurations[1].Config.Model != "lstm" {
		t.Fatalf("sweep.json: %+v", res.Configurations)
	}
	for _, c := range res.Configurations {
		want := map[string]string{"rf": "trees=5", "lstm": "epochs=1 hidden=8"}[c.Config.Model]
		if len(c.Folds) != 2 || c.Mean.Accuracy <= 0 || c.Mean.TrainSeconds <= 0 || !strings.Contains(c.Label, want) {
			t.Errorf("%s: %d folds, mean %+v, flags %v", c.Label, len(c.Folds), c.Mean, c.Config.ModelFlags)
		}
	}
	if page, err := os.ReadFile(filepath.Join(outDir, "sweep.html")); err != nil || !bytes.Contains(page, []byte(res.Configurations[1].Hash)) {
		t.Errorf("sweep.html (%v) does not show configuration %s", err, res.Configurations[1].Hash)
	}

	out.Reset()
	if err := runSweep(context.Background(), quiet(), &out, args); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "2 configurations, 0 tasks trained now, 4 found done") {
		t.Errorf("second run printed:\n%s", out.String())
	}
}

// TestSweepTaskIndex runs a sweep as a cluster would: one task per call,
// with --gather failing until both are in.
func TestSweepTaskIndex(t *testing.T) {
	spec := sweepSpec(t, "models: [rf]\nwindows: [20]\ncv: {mode: grouped, folds: 2}\nmodel_flags: {trees: 5}\n")
	home, outDir := t.TempDir(), t.TempDir()
	run := func(extra ...string) (string, error) {
		var out bytes.Buffer
		err := runSweep(context.Background(), quiet(), &out, append([]string{"--home", home, "--device", "cpu", "--spec", spec}, extra...))
		return out.String(), err
	}
	if out, err := run("--task-index", "0"); err != nil || !strings.Contains(out, "task 0 (") || !strings.Contains(out, " ran: ") {
		t.Fatalf("task 0: %v\n%s", err, out)
	}
	if _, err := run("--gather", "--out", outDir); err == nil || !strings.Contains(err.Error(), "1 of 2 sweep tasks not done yet: 1 (") {
		t.Fatalf("gather with task 1 missing: %v", err)
	}
	if _, err := run("--task-index", "2"); err == nil || !strings.Contains(err.Error(), "tasks 0 to 1") {
		t.Errorf("task 2 of 2: %v", err)
	}
	if out, err := run("--task-index", "1"); err != nil {
		t.Fatalf("task 1: %v\n%s", err, out)
	}
	if out, err := run("--task-index", "1"); err != nil || !strings.Contains(out, "already done") {
		t.Errorf("task 1 again: %v\n%s", err, out)
	}
	if out, err := run("--gather", "--out", outDir); err != nil || !strings.Contains(out, "1 configurations, 0 tasks trained now, 2 found done") {
		t.Fatalf("gather: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(outDir, "sweep.html")); err != nil {
		t.Error(err)
	}
}

// TestSweepUsage: wrong specs and flags fail before anything is built.
func TestSweepUsage(t *testing.T) {
	spec := sweepSpec(t, "models: [rf]\nwindows: [20]\nmodel_flags: {bogus: 1}\n")
	for i, args := range [][]string{
		{"--out", "x"},
		{"--spec", spec, "--out", t.TempDir()},
		{"--spec", filepath.Join(t.TempDir(), "missing.yaml"), "--out", "x"},
	} {
		var out bytes.Buffer
		err := runSweep(context.Background(), quiet(), &out, append([]string{"--home", t.TempDir()}, args...))
		if !errors.Is(err, cli.ErrUsage) {
			t.Errorf("sweep %v: %v, want a usage error", args, err)
		}
		if i == 1 && (err == nil || !strings.Contains(err.Error(), "bogus is not a model flag")) {
			t.Errorf("sweep with model flag bogus: %v", err)
		}
	}
}
