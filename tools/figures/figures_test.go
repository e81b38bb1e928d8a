package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// readWithFigures reads a checked-in file, named from the repository's
// root, and the figures the checked-in docs/figures.json holds.
func readWithFigures(t *testing.T, name string) ([]byte, *File) {
	t.Helper()
	raw, err := os.ReadFile("../../" + name)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Load("../../docs/figures.json")
	if err != nil {
		t.Fatal(err)
	}
	return raw, f
}

// TestREADMEQuotesFigures: every figure the README quotes is the value
// docs/figures.json holds, and no throughput is stated outside a quote.
func TestREADMEQuotesFigures(t *testing.T) {
	readme, f := readWithFigures(t, "README.md")
	for _, err := range Check(string(readme), f) {
		t.Error(err)
	}
	if n := len(quoteRe.FindAllString(string(readme), -1)); n < len(f.Figures) {
		t.Errorf("%d quotes for %d figures", n, len(f.Figures))
	}
}

// TestCheckFails plants each mistake the check exists for.
func TestCheckFails(t *testing.T) {
	f := &File{Figures: map[string]Figure{
		"bench.x": {Value: "3.61 M packets/s", Command: "go test -bench X", Date: "2026-12-04T00:00:00Z"},
	}}
	good := "| x | <!--fig:bench.x-->3.61 M packets/s<!--/fig--> |\n\n" +
		"| what | ours | paper, BLSTM |\n| --- | --- | --- |\n| x 2.5 % | <!--fig:bench.x-->3.61 M packets/s<!--/fig--> | 99.2 % |\n"
	if errs := Check(good, f); len(errs) != 0 {
		t.Fatalf("a README that quotes right: %v", errs)
	}
	for name, c := range map[string]struct{ readme, want string }{
		"stale value":        {"<!--fig:bench.x-->1.77 M packets/s<!--/fig-->", `docs/figures.json holds "3.61 M packets/s"`},
		"unknown key":        {good + "<!--fig:bench.y-->2 M packets/s<!--/fig-->", `"bench.y", which docs/figures.json does not hold`},
		"typed by hand":      {good + "matching runs at 1.77 M packets/s\n", `states "1.77 M packets/s" outside a figure quote`},
		"short unit":         {good + "about 3.61 M/s\n", `states "3.61 M/s"`},
		"figure unquoted":    {"nothing here\n", `"bench.x", which the README never quotes`},
		"cell typed by hand": {"| what | ours | paper |\n| --- | --- | --- |\n| x | " + "<!--fig:bench.x-->3.61 M packets/s<!--/fig--> 0.903 | 99.2 % |\n", `states "0.903" unquoted`},
	} {
		errs := Check(c.readme, f)
		found := false
		for _, err := range errs {
			found = found || strings.Contains(err.Error(), c.want)
		}
		if !found {
			t.Errorf("%s: errors %v, want one with %q", name, errs, c.want)
		}
	}
}

func TestMetricOf(t *testing.T) {
	out := "goos: linux\nBenchmarkMatch-2   \t 5077968\t      1362 ns/op\t       296.0 SPs\t        31.00 devices\t         0.01858 miss-rate\t    734171 packets/s\nPASS\n"
	if v, err := metricOf(out, "packets/s"); err != nil || v != 734171 {
		t.Errorf("packets/s: %v, %v", v, err)
	}
	if _, err := metricOf(out, "windows/s"); err == nil || !strings.Contains(err.Error(), "windows/s") {
		t.Errorf("missing metric: %v", err)
	}
}

func TestLoadRefusesIncompleteFigures(t *testing.T) {
	p := t.TempDir() + "/f.json"
	for _, bad := range []string{
		`{"figures": {"a": {"value": "1", "command": ""}}}`,
		`{"figures": {"a": {"value": "1", "command": "x"}}}`,
		`{"figures": {}, "extra": 1}`,
	} {
		if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// TestFileIsAsSaved: the checked-in file is byte for byte what the tool
// writes, so a rerun's diff shows only the figures that changed.
func TestFileIsAsSaved(t *testing.T) {
	raw, f := readWithFigures(t, "docs/figures.json")
	b, err := f.encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, raw) {
		t.Errorf("docs/figures.json is not as the tool writes it; rewrite it with go run ./tools/figures --only cli.features_start")
	}
}

func TestRequote(t *testing.T) {
	f := &File{Figures: map[string]Figure{"bench.x": {Value: "0.99 M packets/s", Command: "c", Date: "d"}}}
	in := "a <!--fig:bench.x-->3.61 M packets/s<!--/fig--> b <!--fig:bench.y-->1<!--/fig-->"
	want := "a <!--fig:bench.x-->0.99 M packets/s<!--/fig--> b <!--fig:bench.y-->1<!--/fig-->"
	if got := Requote(in, f); got != want {
		t.Errorf("Requote:\n%s\nwant\n%s", got, want)
	}
	if errs := Check(Requote(in, f), f); len(errs) != 1 || !strings.Contains(errs[0].Error(), "bench.y") {
		t.Errorf("after requoting, only the unknown key is left: %v", errs)
	}
}
