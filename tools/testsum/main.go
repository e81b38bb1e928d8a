// Command testsum reads `go test -json` and prints what plain `go test` would
// (each package's ok/FAIL line, and the whole output of a failing test or a
// package that did not build), then names every skipped test with its reason.
//
// Why: a clone without ../shared skips the tests that read real captures, and
// plain `go test` prints "ok" for a package whose every test skipped. A person
// must see which tests did not run and what to do about it (most say
// `go tool task data`).
//
//	go test -json ./... | go run ./tools/testsum
//
// It exits 1 when any test or package failed or the input ended in the middle
// of a test, 2 when it cannot read its input, and 0 otherwise.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/homemole/homemole/tools/internal/testjson"
)

// skip is one skipped test and the reason it gave.
type skip struct{ pkg, test, reason string }

type summary struct {
	failed  bool
	skipped []skip
	running map[string]bool // pkg + " " + test, started and not ended
}

func main() {
	s, err := run(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsum: reading go test -json from stdin:", err)
		os.Exit(2)
	}
	printSkips(os.Stdout, s.skipped)
	if len(s.running) > 0 {
		names := make([]string, 0, len(s.running))
		for k := range s.running {
			names = append(names, k)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stdout, "testsum: the input ended while %d tests were running (go test killed?): %s\n",
			len(names), strings.Join(names, ", "))
		s.failed = true
	}
	if s.failed {
		os.Exit(1)
	}
}

// run copies go test's own lines to out as they come and keeps a test's output
// until its end, printing it only when the test failed.
func run(in io.Reader, out io.Writer) (*summary, error) {
	s := &summary{running: map[string]bool{}}
	held := map[string][]string{}
	err := testjson.Read(in, 64<<20, func(e testjson.Event) {
		pkg := e.Package
		if pkg == "" {
			pkg = e.ImportPath
		}
		if e.Test == "" {
			switch e.Action {
			case "output", "build-output":
				fmt.Fprint(out, e.Output)
			case "fail", "build-fail":
				s.failed = true
			}
			return
		}
		key := pkg + " " + e.Test
		switch e.Action {
		case "run":
			s.running[key] = true
		case "output":
			held[key] = append(held[key], e.Output)
		case "pass":
			delete(s.running, key)
			delete(held, key)
		case "fail":
			delete(s.running, key)
			s.failed = true
			for _, o := range held[key] {
				fmt.Fprint(out, o)
			}
			delete(held, key)
		case "skip":
			delete(s.running, key)
			s.skipped = append(s.skipped, skip{pkg: pkg, test: e.Test, reason: skipReason(held[key])})
			delete(held, key)
		}
	}, func(line string) {
		// go vet and the linker write plain text before any event.
		fmt.Fprintln(out, line)
	})
	return s, err
}

// skipReason picks the message t.Skip logged: the output lines between the
// test's "=== RUN" and its "--- SKIP", without the file:line prefix.
func skipReason(lines []string) string {
	var msg []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") {
			continue
		}
		if i := strings.Index(t, ": "); i > 0 && strings.Contains(t[:i], ".go:") {
			t = t[i+2:]
		}
		msg = append(msg, t)
	}
	if len(msg) == 0 {
		return "(no reason given)"
	}
	// The reason is the last thing a test says before it skips.
	return msg[len(msg)-1]
}

// printSkips lists the skipped tests grouped by reason, so forty tests that
// skip for want of ../shared/data read as one line with forty names.
func printSkips(out io.Writer, skips []skip) {
	if len(skips) == 0 {
		fmt.Fprintln(out, "testsum: no test skipped")
		return
	}
	byReason := map[string][]string{}
	for _, s := range skips {
		byReason[s.reason] = append(byReason[s.reason], shortPkg(s.pkg)+"."+s.test)
	}
	reasons := make([]string, 0, len(byReason))
	for r := range byReason {
		reasons = append(reasons, r)
	}
	sort.Slice(reasons, func(i, j int) bool {
		if len(byReason[reasons[i]]) != len(byReason[reasons[j]]) {
			return len(byReason[reasons[i]]) > len(byReason[reasons[j]])
		}
		return reasons[i] < reasons[j]
	})
	fmt.Fprintf(out, "testsum: %d tests skipped:\n", len(skips))
	for _, r := range reasons {
		names := byReason[r]
		sort.Strings(names)
		fmt.Fprintf(out, "  %d skipped: %s\n    %s\n", len(names), r, strings.Join(names, ", "))
	}
}

// shortPkg drops the module path, which every package shares.
func shortPkg(p string) string {
	return strings.TrimPrefix(p, "github.com/homemole/homemole/")
}
