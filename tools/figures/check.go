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
	var header []string // the columns of the table being read
	prev := ""
	for n, line := range strings.Split(readme, "\n") {
		if strings.HasPrefix(line, "|") && !strings.HasPrefix(prev, "|") {
			header = strings.Split(line, "|")
		}
		prev = line
		errs = append(errs, unquotedCells(n+1, line, header)...)
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

// cellFigureRe is a result in a table cell: a percentage or a score with
// three decimals.
var cellFigureRe = regexp.MustCompile(`\d+(?:\.\d+)? ?%|\b\d\.\d{3}\b`)

// unquotedCells: in a table row that quotes a figure, every other cell
// holding a result must quote one too, but for the row's label and the
// columns that cite a paper (their header starts with "paper"): those are
// not ours to rerun.
func unquotedCells(n int, line string, header []string) []error {
	if !strings.HasPrefix(line, "|") || !quoteRe.MatchString(line) {
		return nil
	}
	var errs []error
	for i, cell := range strings.Split(line, "|") {
		if i <= 1 { // before the first bar, and the row's label
			continue
		}
		if i < len(header) && strings.HasPrefix(strings.ToLower(strings.TrimSpace(header[i])), "paper") {
			continue
		}
		if s := cellFigureRe.FindString(quoteRe.ReplaceAllString(cell, "")); s != "" {
			errs = append(errs, fmt.Errorf("README.md:%d: a row of quoted figures states %q unquoted: add it to docs/figures.json", n, s))
		}
	}
	return errs
}

// Requote sets each quote of readme to the value f holds for its key;
// quotes of keys f lacks are left for Check to report.
func Requote(readme string, f *File) string {
	return quoteRe.ReplaceAllStringFunc(readme, func(q string) string {
		key := quoteRe.FindStringSubmatch(q)[1]
		fig, ok := f.Figures[key]
		if !ok {
			return q
		}
		return "<!--fig:" + key + "-->" + fig.Value + "<!--/fig-->"
	})
}
