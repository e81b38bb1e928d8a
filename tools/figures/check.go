package main

import (
	"fmt"
	"regexp"
	"strings"
)

// quoteRe is a figure quoted from docs/figures.json in the README.
var quoteRe = regexp.MustCompile(`<!--fig:([A-Za-z0-9._-]+)-->(.*?)<!--/fig-->`)

// statedRe is a throughput as the README states them: one written outside
// a quote is a figure nobody regenerates.
var statedRe = regexp.MustCompile(`\b\d+(?:\.\d+)? ?M (?:packets|windows)/s|\b\d+\.\d+ ?M/s`)

// Check lists where readme and the figures disagree: a quote of a key the
// file lacks or of another value, a throughput stated without a quote,
// and a figure of the file the README never quotes.
func Check(readme string, f *File) []error {
	var errs []error
	quoted := map[string]bool{}
	for n, line := range strings.Split(readme, "\n") {
		for _, m := range quoteRe.FindAllStringSubmatch(line, -1) {
			key, text := m[1], m[2]
			quoted[key] = true
			fig, ok := f.Figures[key]
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("README.md:%d quotes figure %q, which docs/figures.json does not hold (go tool task figures)", n+1, key))
			case fig.Value != text:
				errs = append(errs, fmt.Errorf("README.md:%d quotes %s as %q, docs/figures.json holds %q (from %s)", n+1, key, text, fig.Value, fig.Command))
			}
		}
		for _, s := range statedRe.FindAllString(quoteRe.ReplaceAllString(line, ""), -1) {
			errs = append(errs, fmt.Errorf("README.md:%d states %q outside a figure quote: add it to docs/figures.json with its command and quote it as <!--fig:KEY-->VALUE<!--/fig-->", n+1, s))
		}
	}
	for k := range f.Figures {
		if !quoted[k] {
			errs = append(errs, fmt.Errorf("docs/figures.json holds %q, which the README never quotes", k))
		}
	}
	return errs
}
