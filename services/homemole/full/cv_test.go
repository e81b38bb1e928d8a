//go:build torch

package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/homemole/homemole/services/internal/cli"
)

func TestParseFolds(t *testing.T) {
	for _, c := range []struct {
		list  string
		index int
		want  []int
		bad   bool
	}{
		{"", -1, nil, false},
		{"2", -1, []int{2}, false},
		{"1, 4", -1, []int{1, 4}, false},
		{"", 0, []int{1}, false}, // a Job's completion index 0 is fold 1
		{"", 4, []int{5}, false},
		{"0", -1, nil, true},
		{"two", -1, nil, true},
		{"1", 0, nil, true},
	} {
		got, err := parseFolds(c.list, c.index)
		if (err != nil) != c.bad || !slices.Equal(got, c.want) {
			t.Errorf("--fold %q --fold-index %d: %v, %v; want %v (error %v)", c.list, c.index, got, err, c.want, c.bad)
		}
	}
}

// TestCVFoldUsage: the ways to get a cluster CV wrong fail before any
// server is started or fold trained.
func TestCVFoldUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--dataset", "d", "--fold", "1"},
		{"--dataset", "d", "--gather"},
		{"--dataset", "d", "--run", "r", "--fold-index", "0", "--gather"},
		{"--dataset", "d", "--run", "r", "--fold", "1", "--fold-index", "0"},
	} {
		var out bytes.Buffer
		if err := runCV(context.Background(), quiet(), &out, args); !errors.Is(err, cli.ErrUsage) {
			t.Errorf("cv %v: %v, want a usage error", args, err)
		}
	}
}

// TestWholeReadersRefuseMaxMemory: the commands that read their training
// windows whole refuse --max-memory as a usage error naming themselves,
// before they open anything.
func TestWholeReadersRefuseMaxMemory(t *testing.T) {
	for name, run := range map[string]func(context.Context, *slog.Logger, io.Writer, []string) error{
		"cv": runCV, "experiment": runExperiment, "study": runStudy,
	} {
		var out bytes.Buffer
		err := run(context.Background(), quiet(), &out, []string{"--model", "blstm", "--max-memory", "64MiB"})
		if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), name+" reads its training windows whole") {
			t.Errorf("%s --max-memory: %v, want a usage error naming %s", name, err, name)
		}
	}
}
