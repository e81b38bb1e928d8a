// Command sectable reads `go test -json` output of the adversarial tests
// (TestSecurity*) and prints one row per attack: what was tried, what must
// happen, what was observed, and whether the test passed. It exits non-zero
// when a test failed, a package did not build, or no security test ran.
//
// A test states its attack in one log line of the form
//
//	attack: WHAT | expected: WHAT MUST HAPPEN | observed: WHAT HAPPENED
//
// (t.Logf, so the observation is printed by the test itself, from what it
// measured); a test may log several. A TestSecurity* test that logs none
// still gets a row, with its name as the attack.
//
//	go test -count=1 -json -run TestSecurity ./... | go run ./tools/sectable
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/homemole/homemole/tools/internal/testjson"
)

// row is one attack of one test.
type row struct {
	pkg, test                  string
	attack, expected, observed string
	result                     string
}

type result struct {
	rows      []row
	failedPkg []string // packages that failed outside any test (build errors)
	output    map[string][]string
}

func main() {
	res, err := read(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sectable:", err)
		os.Exit(2)
	}
	os.Exit(print(os.Stdout, res))
}

func read(r io.Reader) (*result, error) {
	res := &result{output: map[string][]string{}}
	status := map[string]string{} // pkg/test -> PASS, FAIL, SKIP
	attacks := map[string][]row{}
	var order []string
	err := testjson.Read(r, 16<<20, func(e testjson.Event) {
		if e.Test == "" {
			if e.Action == "fail" {
				res.failedPkg = append(res.failedPkg, e.Package)
			}
			if e.Action == "output" {
				res.output[e.Package] = append(res.output[e.Package], strings.TrimRight(e.Output, "\n"))
			}
			return
		}
		if !strings.HasPrefix(e.Test, "TestSecurity") || strings.Contains(e.Test, "/") {
			return
		}
		key := e.Package + "\x00" + e.Test
		switch e.Action {
		case "run":
			order = append(order, key)
		case "pass", "fail", "skip":
			status[key] = strings.ToUpper(e.Action)
		case "output":
			res.output[key] = append(res.output[key], strings.TrimRight(e.Output, "\n"))
			if r, ok := parseAttack(e.Output); ok {
				r.pkg, r.test = e.Package, e.Test
				attacks[key] = append(attacks[key], r)
			}
		}
	}, func(line string) {
		// Build errors reach stdout as plain text before any event.
		if s := strings.TrimSpace(line); s != "" {
			res.output[""] = append(res.output[""], s)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read go test -json output: %w", err)
	}
	for _, key := range order {
		pkg, test, _ := strings.Cut(key, "\x00")
		rs := attacks[key]
		if len(rs) == 0 {
			rs = []row{{pkg: pkg, test: test, attack: test, expected: "(the test logs no attack line)", observed: "(see its output)"}}
		}
		for _, r := range rs {
			r.result = status[key]
			if r.result == "" {
				r.result = "NO RESULT"
			}
			res.rows = append(res.rows, r)
		}
	}
	return res, nil
}

// parseAttack finds "attack: A | expected: E | observed: O" in a log line.
func parseAttack(line string) (row, bool) {
	i := strings.Index(line, "attack: ")
	if i < 0 {
		return row{}, false
	}
	parts := strings.SplitN(strings.TrimSpace(line[i:]), " | ", 3)
	if len(parts) != 3 {
		return row{}, false
	}
	a, okA := strings.CutPrefix(parts[0], "attack: ")
	e, okE := strings.CutPrefix(parts[1], "expected: ")
	o, okO := strings.CutPrefix(parts[2], "observed: ")
	return row{attack: a, expected: e, observed: o}, okA && okE && okO
}

// print writes the table, then the output of every test that did not pass,
// and returns the exit code.
func print(w io.Writer, res *result) int {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RESULT\tTEST\tATTACK\tEXPECTED\tOBSERVED")
	bad := 0
	seen := map[string]bool{}
	var failed []string
	for _, r := range res.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.result, short(r.pkg)+"."+r.test, r.attack, r.expected, r.observed)
		key := r.pkg + "\x00" + r.test
		if r.result != "PASS" && r.result != "SKIP" && !seen[key] {
			seen[key] = true
			failed = append(failed, key)
			bad++
		}
	}
	tw.Flush()
	sort.Strings(failed)
	for _, key := range failed {
		fmt.Fprintf(w, "\n--- output of %s:\n%s\n", strings.ReplaceAll(key, "\x00", "."), strings.Join(res.output[key], "\n"))
	}
	for _, pkg := range res.failedPkg {
		fmt.Fprintf(w, "\n--- package %s failed:\n%s\n", pkg, strings.Join(res.output[pkg], "\n"))
		bad++
	}
	if lines := res.output[""]; len(lines) > 0 {
		fmt.Fprintf(w, "\n--- go test said:\n%s\n", strings.Join(lines, "\n"))
	}
	skipped := 0
	for _, r := range res.rows {
		if r.result == "SKIP" {
			skipped++
		}
	}
	fmt.Fprintf(w, "\n%d attacks in %d security tests; %d tests failed, %d attacks skipped\n", len(res.rows), countTests(res.rows), bad, skipped)
	switch {
	case len(res.rows) == 0:
		fmt.Fprintln(w, "no TestSecurity* test ran: was -run TestSecurity given the right packages?")
		return 1
	case bad > 0:
		return 1
	}
	return 0
}

func countTests(rows []row) int {
	seen := map[string]bool{}
	for _, r := range rows {
		seen[r.pkg+"."+r.test] = true
	}
	return len(seen)
}

// short drops the module path from a package.
func short(pkg string) string {
	return strings.TrimPrefix(pkg, "github.com/homemole/homemole/")
}
