package modelflag

import (
	"bytes"
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/homemole/homemole/pipeline/learn"
)

// TestNumbersChecked: every numeric model flag refuses a value out of its
// range as it is parsed, naming the flag (they were clamped, or 0 taken
// for the default); the defaults stay those of learn.DefaultConfig, 100
// trees and a test share of 0.2, and the edges of each range are taken.
func TestNumbersChecked(t *testing.T) {
	parse := func(args ...string) (*flag.FlagSet, error) {
		fs := flag.NewFlagSet("train", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		Register(fs)
		var share float64
		TestShare(fs, &share)
		return fs, fs.Parse(args)
	}
	for _, c := range [][2]string{
		{"trees", "0"}, {"trees", "-5"}, {"trees", "x"}, {"epochs", "0"}, {"batch", "-1"}, {"lr", "0"}, {"lr", "-1"}, {"lr", "NaN"},
		{"len-embed", "-1"}, {"port-sessions", "-1"}, {"label-smoothing", "1"}, {"label-smoothing", "NaN"}, {"hidden", "0"},
		{"dropout", "1"}, {"dropout", "-0.5"}, {"threads", "-1"},
		{"test-share", "1"}, {"test-share", "0"}, {"test-share", "-0.5"}, {"test-share", "NaN"}, {"test-share", "Inf"},
	} {
		if _, err := parse("--"+c[0], c[1]); err == nil || !strings.Contains(err.Error(), "-"+c[0]+":") {
			t.Errorf("--%s %s: %v, want an error naming the flag", c[0], c[1], err)
		}
	}
	for _, args := range [][]string{{"--trees", "1"}, {"--len-embed", "0"}, {"--threads", "0"}, {"--dropout", "0"}, {"--label-smoothing", "0.1"},
		{"--test-share", "0.01"}, {"--test-share", "0.99"}, {"--lr", "1e-4"}} {
		if _, err := parse(args...); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	s := Register(fs)
	var share float64
	TestShare(fs, &share)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	want := learn.DefaultConfig()
	want.Device = s.Learn.Device
	if s.Trees != 100 || share != 0.2 || !reflect.DeepEqual(s.Learn, want) {
		t.Errorf("defaults: %d trees, test share %g, %+v; want 100, 0.2, %+v", s.Trees, share, s.Learn, want)
	}
	var help bytes.Buffer
	fs.SetOutput(&help)
	fs.PrintDefaults()
	for _, w := range []string{"-trees N", "(default 100)", "-test-share share", "(default 0.2)", "-lr rate", "(default 0.001)"} {
		if !strings.Contains(help.String(), w) {
			t.Errorf("help lacks %q:\n%s", w, help.String())
		}
	}
}

// TestThreadMode: --thread-mode stays a model flag, beside --threads (the
// flags' rewrite to checked numbers once dropped it, and the two-core
// benchmark's data-parallel row runs with it).
func TestThreadMode(t *testing.T) {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	s := Register(fs)
	if err := fs.Parse([]string{"--threads", "2", "--thread-mode", learn.ParallelData}); err != nil {
		t.Fatal(err)
	}
	if s.Learn.Threads != 2 || s.Learn.Parallel != learn.ParallelData {
		t.Errorf("--threads 2 --thread-mode %s: threads %d, mode %q", learn.ParallelData, s.Learn.Threads, s.Learn.Parallel)
	}
	if err := fs.Parse([]string{"--thread-mode", "both"}); err == nil {
		t.Error("--thread-mode both: accepted")
	}
}
