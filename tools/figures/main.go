// Command figures reruns what the README's figures report and writes them,
// each with the command that produced it and when, to docs/figures.json.
// The README quotes that file by key (<!--fig:KEY-->VALUE<!--/fig-->), and
// TestREADMEQuotesFigures fails when the two disagree or when the README
// states a throughput that is not quoted from it.
//
// Run it as `go tool task figures` from the repository root: by default
// it reruns the benchmarks and the CLI's start-up, a few minutes. --all
// (or FIGURES=all) reruns the result tables too: the cross-validations,
// the window-size study, the NAPT/VPN matrix, the sequence-profile tables,
// tshark's benchmark rows and the cluster's throughput, hours on 2 cores.
// A figure not rerun keeps its value and date, or its "regenerate" note
// naming the command; --only KEY reruns any one figure.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// File is docs/figures.json.
type File struct {
	About   string            `json:"about"`
	Figures map[string]Figure `json:"figures"`
}

// Figure is one number the README states.
type Figure struct {
	Value   string `json:"value"`
	Command string `json:"command"`
	// Date is when Command last produced Value (UTC, RFC 3339), or empty
	// when the value predates this file and has not been rerun since.
	Date string `json:"date,omitempty"`
	// Regenerate says, for a figure `go tool task figures` does not rerun,
	// why and what to run instead.
	Regenerate string `json:"regenerate,omitempty"`
}

// runner measures one figure.
type runner struct {
	key, command string
	measure      func(ctx context.Context) (string, error)
	// target, where set, judges the figure: the run also writes KEY.verdict,
	// so the README's verdict cell is as generated as the number beside it.
	target func(value string) string
	// slow figures (minutes to hours) run only with --all or --only.
	slow bool
}

// atLeast judges a throughput figure against the least the issue asked for.
func atLeast(min float64) func(string) string {
	return func(v string) string {
		var got float64
		if _, err := fmt.Sscanf(v, "%g", &got); err != nil {
			return "not judged: " + v
		}
		if got >= min {
			return fmt.Sprintf(">= %g M/s: met", min)
		}
		return fmt.Sprintf(">= %g M/s: missed", min)
	}
}

// benchFigure runs one Go benchmark and formats its metric.
func benchFigure(key, pkg, name, benchtime, metric string, format func(float64) string) runner {
	args := []string{"test", "-run", "^$", "-bench", "^" + name + "$", "-benchtime", benchtime, pkg}
	return runner{key: key, command: "go " + shellJoin(args), measure: func(ctx context.Context) (string, error) {
		out, err := goCmd(ctx, args...)
		if err != nil {
			return "", err
		}
		v, err := metricOf(out, metric)
		if err != nil {
			return "", err
		}
		return format(v), nil
	}}
}

var medianRe = regexp.MustCompile(`median ([0-9.]+)ms of (\d+) runs`)

func judged(r runner, target func(string) string) runner {
	r.target = target
	return r
}

func runners() []runner {
	mps := func(v float64) string { return fmt.Sprintf("%.2f M packets/s", v/1e6) }
	return []runner{
		judged(benchFigure("bench.sp_matching", "./pipeline/seqprofile/", "BenchmarkMatch", "3s", "packets/s", mps), atLeast(1)),
		judged(benchFigure("bench.jetstream", "./pipeline/agent/", "BenchmarkPublishSentinel", "20x", "packets/s", mps), atLeast(2)),
		judged(benchFigure("bench.labeler", "./pipeline/label/", "BenchmarkLabel/paired", "3x", "packets/s", mps), atLeast(1)),
		judged(benchFigure("bench.windowing", "./pipeline/window/", "BenchmarkWindower", "3x", "packets/s", mps), atLeast(1)),
		{key: "cli.features_start", command: "go test -count=1 -run '^TestCGOFreeFeatures$' -v ./services/homemole/",
			measure: func(ctx context.Context) (string, error) {
				out, err := goCmd(ctx, "test", "-count=1", "-run", "^TestCGOFreeFeatures$", "-v", "./services/homemole/")
				if err != nil {
					return "", err
				}
				m := medianRe.FindStringSubmatch(out)
				if m == nil {
					return "", fmt.Errorf("no median in the test's output:\n%s", tail(out))
				}
				v, _ := strconv.ParseFloat(m[1], 64)
				return fmt.Sprintf("%.1f ms", v), nil
			}},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "figures:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("figures", flag.ContinueOnError)
	path := fs.String("file", "docs/figures.json", "the figures file to update")
	readme := fs.String("readme", "README.md", "the README whose quotes are rewritten from the file")
	var only []string
	fs.Func("only", "rerun only this key (repeatable)", func(s string) error { only = append(only, s); return nil })
	all := fs.Bool("all", os.Getenv("FIGURES") == "all", "rerun the result tables too (cross-validations, study, matrix, sequence profiles, tshark rows, cluster): hours on 2 cores (env FIGURES=all)")
	work := fs.String("work", "", "folder for the slow figures' embedded home and outputs (default: a temporary one, removed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	f, err := Load(*path)
	if err != nil {
		return err
	}
	slow := &reruns{work: *work, done: map[string]any{}}
	if slow.work == "" {
		if slow.work, err = os.MkdirTemp("", "homemole-figures-"); err != nil {
			return err
		}
		defer os.RemoveAll(slow.work)
	}
	rs := append(runners(), slowRunners(slow)...)
	for _, k := range only {
		if !slices.ContainsFunc(rs, func(r runner) bool { return r.key == k }) {
			return fmt.Errorf("--only %s: no runner for that key (these have one: %s)", k, keys(rs))
		}
	}
	// A figure that fails is reported and the run goes on: the others of
	// an hours-long --all run are worth keeping.
	var failed []error
	for _, r := range rs {
		if len(only) > 0 && !slices.Contains(only, r.key) || len(only) == 0 && r.slow && !*all {
			continue
		}
		if err := ctx.Err(); err != nil {
			failed = append(failed, err)
			break
		}
		fmt.Fprintf(os.Stderr, "%s: %s\n", r.key, r.command)
		v, err := r.measure(ctx)
		if err != nil {
			err = fmt.Errorf("%s (%s): %w", r.key, r.command, err)
			fmt.Fprintln(os.Stderr, err)
			failed = append(failed, err)
			continue
		}
		now := time.Now().UTC().Format(time.RFC3339)
		f.Figures[r.key] = Figure{Value: v, Command: r.command, Date: now}
		if r.target != nil {
			f.Figures[r.key+".verdict"] = Figure{Value: r.target(v), Command: r.command, Date: now}
		}
		fmt.Fprintf(os.Stderr, "%s = %s\n", r.key, v)
		// Written after each figure, so an interrupted run keeps what it measured.
		if err := f.Save(*path); err != nil {
			return err
		}
	}
	if err := f.Save(*path); err != nil {
		return err
	}
	if err := requote(*readme, f); err != nil {
		return err
	}
	return errors.Join(failed...)
}

// requote rewrites every quote in the README to the value the file holds
// now, so that a rerun leaves the two agreeing.
func requote(path string, f *File) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read the README to requote: %w", err)
	}
	out := Requote(string(b), f)
	if out == string(b) {
		return nil
	}
	return os.WriteFile(path, []byte(out), 0o644)
}

// Load reads a figures file.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the figures file (run from the repository root, or give --file): %w", err)
	}
	var f File
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if f.Figures == nil {
		f.Figures = map[string]Figure{}
	}
	for k, v := range f.Figures {
		if v.Value == "" || v.Command == "" || (v.Date == "" && v.Regenerate == "") {
			return nil, fmt.Errorf("%s: figure %q needs a value, a command, and a date or a regenerate note", path, k)
		}
	}
	return &f, nil
}

// Save writes the file with sorted keys (encoding/json sorts map keys).
func (f *File) Save(path string) error {
	b, err := f.encode()
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func (f *File) encode() ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	// The figures quote HTML comments and "<=": kept readable in diffs.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(f); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func goCmd(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%w\n%s", err, tail(out.String()))
	}
	return out.String(), nil
}

// metricOf finds "VALUE METRIC" on a benchmark result line.
func metricOf(out, metric string) (float64, error) {
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		fields := strings.Fields(line)
		for i := 1; i < len(fields); i++ {
			if fields[i] == metric {
				return strconv.ParseFloat(fields[i-1], 64)
			}
		}
	}
	return 0, fmt.Errorf("no %q in the benchmark output:\n%s", metric, tail(out))
}

func tail(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

func keys(rs []runner) string {
	var ks []string
	for _, r := range rs {
		ks = append(ks, r.key)
	}
	return strings.Join(ks, ", ")
}

func shellJoin(args []string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		if strings.ContainsAny(a, "^$ /*") && !strings.HasPrefix(a, "./") {
			a = "'" + a + "'"
		}
		b.WriteString(a)
	}
	return b.String()
}
