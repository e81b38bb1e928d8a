package main

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/homemole/homemole/pipeline/detect/scene"
)

// TestCVFigure formats a cross-validation as the README's tables state it,
// from the cv.json of a real run of the LAN Random Forest row (homemole cv,
// trimmed of its confusion matrix and votes): the figures it gave.
func TestCVFigure(t *testing.T) {
	var res cvSummary
	if err := readJSON("testdata/cv.json", &res); err != nil {
		t.Fatal(err)
	}
	if err := res.check("testdata/cv.json"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		col    string
		spread bool
		want   string
	}{
		{"packet", true, "54.0 ± 5.1 %"}, {"macro_f1", true, "0.480"}, {"sessions", true, "79.8 ± 5.0 %"}, {"types", true, "81.6 ± 5.9 %"},
		{"packet", false, "54.0 ± 5.1 %"}, {"sessions", false, "79.8 %"}, {"types", false, "81.6 %"},
	} {
		if got, err := cvFigure(&res, c.col, c.spread); err != nil || got != c.want {
			t.Errorf("%s (spread %v) = %q, %v, want %q", c.col, c.spread, got, err, c.want)
		}
	}
	// The forest's cv.json predates the majority column: its figure fails
	// rather than reading as 0.
	if got, err := cvFigure(&res, "types_majority", true); err == nil {
		t.Errorf("types_majority of a cv.json without it = %q, want an error", got)
	}
	res.MajorityTypes = &spread{Mean: 0.9, Std: 0.02}
	if got, err := cvFigure(&res, "types_majority", true); err != nil || got != "90.0 ± 2.0 %" {
		t.Errorf("types_majority = %q, %v, want 90.0 ± 2.0 %%", got, err)
	}
	var partial cvSummary
	if err := json.Unmarshal([]byte(`{"accuracy":{"mean":0.5,"std":0.1}}`), &partial); err != nil {
		t.Fatal(err)
	}
	if err := partial.check("cv.json"); err == nil || !strings.Contains(err.Error(), "cv.json lacks") {
		t.Errorf("a summary without its session figures: %v", err)
	}
}

func TestMatrixFigure(t *testing.T) {
	var m matrixResult
	js := `{"model":"blstm","cells":[{"view":"napt","kind":"noise","accuracy":{"mean":0.892,"std":0.035},"macro_f1":{"mean":0.7871,"std":0.01}}]}`
	if err := json.Unmarshal([]byte(js), &m); err != nil {
		t.Fatal(err)
	}
	if v, err := matrixFigure(&m, "napt", "noise", "packet"); err != nil || v != "89.2 ± 3.5 %" {
		t.Errorf("packet %q, %v", v, err)
	}
	if v, err := matrixFigure(&m, "napt", "noise", "macro_f1"); err != nil || v != "0.787" {
		t.Errorf("macro F1 %q, %v", v, err)
	}
	if _, err := matrixFigure(&m, "vpn", "ind", "packet"); err == nil || !strings.Contains(err.Error(), "vpn/ind") {
		t.Errorf("a missing cell: %v", err)
	}
}

// TestSPFigures writes a report as sp eval does (NaN and infinities as
// null) and formats the table's four rows from it.
func TestSPFigures(t *testing.T) {
	rep := &scene.Report{PerDevice: []scene.DeviceResult{
		{Device: "camera", F: 1, Precision: 1, Recall: 1, CountError: 0.014, ResponseSeconds: 8, ResponseMax: 300},
		{Device: "plug", F: 1, Precision: 1, Recall: 1, CountError: 0.027, ResponseSeconds: 51, ResponseMax: 770},
		{Device: "hub", F: 0.98, Precision: 0.96, Recall: 1, CountError: scene.Ratio(math.NaN()), ResponseSeconds: scene.Ratio(math.Inf(1)), ResponseMax: scene.Ratio(math.NaN())},
	}, CountByN: []scene.CountPoint{{N: 1, MeanError: 0.02}, {N: 50, MeanError: 0.031}}}
	path := filepath.Join(t.TempDir(), "gen.json")
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, js, 0o644); err != nil {
		t.Fatal(err)
	}
	var back scene.Report
	if err := readJSON(path, &back); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		f    func(*scene.Report) (string, error)
		want string
	}{
		"detection":   {spDetection, "F-score 0.980 to 1.000, no false positive"},
		"count error": {spCountError, "2.1 % mean (1.4-2.7 % per type, at most 3.1 % at any n)"},
		"response":    {spResponse, "8 s (camera) to 51 s (plug); all under 13 min"},
		"sentinel":    {spSentinel, "2 of 3 types F >= 0.99; mean precision 0.987, recall 1.000"},
	} {
		if got, err := c.f(&back); err != nil || got != c.want {
			t.Errorf("%s = %q, %v; want %q", name, got, err, c.want)
		}
	}
	back.PerDevice[2].F, back.PerDevice[2].FP = 1, 2
	if got, _ := spDetection(&back); got != "F-score 1.000 for every type, 2 false positives" {
		t.Errorf("detection %q", got)
	}
	if _, err := spCountError(&scene.Report{PerDevice: back.PerDevice[2:]}); err == nil {
		t.Error("a report without count errors gave a count-error figure")
	}
	if _, err := spResponse(&scene.Report{}); err == nil {
		t.Error("an empty report gave a response figure")
	}
}

// TestTableValue reads the rows as tools/benchref and tools/cluster print
// them: the number after the row's name, not one inside it.
func TestTableValue(t *testing.T) {
	out := "benchmark                                            HomeMole    reference     ratio  target\n" +
		"(a) records: read + decode (merged, 1 core)             5850123        43512    134.4x  >= 3M/s and >= 50x tshark\n" +
		"throughput (packets/s)                             353210              1180000\n"
	if v, err := tableValue(out, "(a) records: read + decode (merged, 1 core)"); err != nil || v != 5850123 {
		t.Errorf("row (a): %v, %v", v, err)
	}
	if v, err := tableValue(out, "throughput (packets/s)"); err != nil || v != 353210 {
		t.Errorf("cluster throughput: %v, %v", v, err)
	}
	if _, err := tableValue(out, "(b) homemole features CSV to /dev/null (1 core)"); err == nil {
		t.Error("a missing row gave a value")
	}
}

// TestSlowFiguresNeedAll: the default run leaves the result tables alone;
// --only of one of them runs it, and without the captures it fails naming
// the task that fetches them, keeping the file's value.
func TestSlowFiguresNeedAll(t *testing.T) {
	slow := slowRunners(&reruns{work: t.TempDir(), done: map[string]any{}})
	if len(slow) < 51 {
		t.Fatalf("%d slow figures, want every figure of the result tables (51 or more)", len(slow))
	}
	seen := map[string]bool{}
	for _, r := range slow {
		if seen[r.key] || !r.slow || r.command == "" {
			t.Errorf("slow runner %+v: a key once, marked slow, with its command", r.key)
		}
		seen[r.key] = true
	}
	f, err := Load("../../docs/figures.json")
	if err != nil {
		t.Fatal(err)
	}
	for k, fig := range f.Figures {
		if fig.Date == "" && !seen[k] && k != "cluster.throughput" {
			t.Errorf("%s has no date and no runner: nothing reruns it", k)
		}
		if seen[k] && fig.Command != slowCommand(slow, k) {
			t.Errorf("%s: the file says %q, the runner runs %q", k, fig.Command, slowCommand(slow, k))
		}
	}
	if _, err := os.Stat(sentinelDir); err == nil {
		t.Skip("the captures are here: the missing-data error is not reachable")
	}
	dir := t.TempDir()
	figs, readme := filepath.Join(dir, "figures.json"), filepath.Join(dir, "README.md")
	b, _ := os.ReadFile("../../docs/figures.json")
	os.WriteFile(figs, b, 0o644)
	os.WriteFile(readme, nil, 0o644)
	err = run(context.Background(), []string{"--file", figs, "--readme", readme, "--only", "study.w20.packet"})
	if err == nil || !strings.Contains(err.Error(), "go tool task data") {
		t.Fatalf("study without the captures: %v", err)
	}
}

func slowCommand(rs []runner, key string) string {
	for _, r := range rs {
		if r.key == key {
			return r.command
		}
	}
	return ""
}

// TestParsePairs reads home pairs' table by each row's first folder, and
// fails on output with no rows.
func TestParsePairs(t *testing.T) {
	out := "pair (LAN)                             windows both active      counted 2          counted 2 live     counted 2 live, 20s late   the detector's counter\n" +
		"EdimaxCam1/EdimaxCam2                  106                      106 (100.0 %)      89 (84.0 %)        106 (100.0 %)              106 of 106 (100.0 %)\n" +
		"WeMoInsightSwitch/WeMoInsightSwitch2   94                       94 (100.0 %)       74 (78.7 %)        93 (98.9 %)                95 of 96 (99.0 %)\n"
	rows, err := parsePairs(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows["EdimaxCam1"] != (pairsRow{100, 84, 100, 100}) || rows["WeMoInsightSwitch"] != (pairsRow{100, 78.7, 98.9, 99}) {
		t.Errorf("rows %+v", rows)
	}
	if _, err := parsePairs("pair (LAN) windows\n"); err == nil {
		t.Error("a table without rows parsed")
	}
}

// TestParseHosts reads home hosts' table by its worst, exact and live
// columns, and fails on a row whose worst or live is not a share.
func TestParseHosts(t *testing.T) {
	out := "mean count error on the LAN, 5 homes per n ...:\n" +
		"type                     n=1     n=2   worst exact   live  counted as (homes)\n" +
		"Aria                    0.0%    0.0%    0.0% 10/10 100.0%  Aria 10\n" +
		"D-LinkSiren             0.0%    6.7%    6.7%  9/10  52.3%  D-Link (D-LinkSiren, D-LinkWaterSensor) 8; D-LinkSiren 2\n" +
		"MAXGateway            100.0%  100.0%  100.0%  0/10   9.4%  MAXGateway 10\n" +
		"Rare                        -       -       -   0/0      -  \n"
	rows, err := parseHosts(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []hostsRow{{"Aria", 0, true, 100}, {"D-LinkSiren", 6.7, false, 52.3}, {"MAXGateway", 100, false, 9.4}}
	if !slices.Equal(rows, want) {
		t.Errorf("rows %+v, want %+v", rows, want)
	}
	if got, want := liveShare(rows), "1 of those 2 types in 90 % of windows or more; below: D-LinkSiren 52.3 %"; got != want {
		t.Errorf("liveShare = %q, want %q", got, want)
	}
	if _, err := parseHosts("type n=1 worst exact\nAria 0.0% x 1/1\n"); err == nil {
		t.Error("a worst that is no share parsed")
	}
	if _, err := parseHosts("type n=1 worst exact live\nAria 0.0% 0.0% 1/1 x%\n"); err == nil {
		t.Error("a live that is no share parsed")
	}
}

// TestParseTenUnits reads the types measured at n = 10 and their worst,
// and fails on a table without the n = 10 column.
func TestParseTenUnits(t *testing.T) {
	out := "type                     n=9    n=10   worst exact   live  counted as (homes)\n" +
		"Aria                       -       -    0.0% 40/40 100.0%  Aria 40\n" +
		"WeMoSwitch              0.0%    0.0%    0.0% 50/50  96.5%  WeMoSwitch 50\n" +
		"WeMoInsightSwitch       0.0%   12.0%   12.0% 48/50  83.8%  WeMoInsightSwitch 50\n"
	got, err := parseTenUnits(out)
	if want := "WeMoSwitch 0.0 %, WeMoInsightSwitch 12.0 %"; err != nil || got != want {
		t.Errorf("parseTenUnits = %q, %v; want %q", got, err, want)
	}
	if _, err := parseTenUnits("type n=1 worst exact\nAria 0.0% 0.0% 1/1\n"); err == nil {
		t.Error("a table without n=10 parsed")
	}
}

// TestParseNearest reads home nearest's share and misses, and fails on
// output without the share.
func TestParseNearest(t *testing.T) {
	out := "247 of 277 captures named by their nearest capture's type (89.2 %)\n" +
		"  EdimaxPlug2101W -> EdimaxPlug1101W            10\n" +
		"  HueSwitch -> HueBridge                        4\n" +
		"132 of 277 captures counted as a unit of another type by the host rule, their own type left out of what it learns (47.7 %; 8 as another vendor's; the rest counted as nothing)\n" +
		"  WeMoInsightSwitch -> WeMoSwitch               13\n"
	res, err := parseNearest(out)
	if err != nil {
		t.Fatal(err)
	}
	if res.share != "247 of 277 captures (89.2 %)" || !slices.Equal(res.misses, []string{"EdimaxPlug2101W -> EdimaxPlug1101W 10", "HueSwitch -> HueBridge 4"}) ||
		res.unseen != "132 of 277 captures (47.7 %), 8 of them as another vendor's" {
		t.Errorf("parsed %+v", res)
	}
	if _, err := parseNearest("  HueSwitch -> HueBridge 4\n"); err == nil {
		t.Error("output without the share parsed")
	}
}

func TestParseLong(t *testing.T) {
	out := "device counted as sessions windows right keys after each session\n" +
		"Aria                 Aria                            5      11 100.0%  10 10 10 10 10\n" +
		"29 of 29 devices whose unit has a signature counted as one unit in 90 % of their windows or more; the most keys a host held: 162 (bound 2048); past the bound: none; no signature: SmarterCoffee, iKettle2\n"
	got, err := parseLong(out)
	if err != nil || got != "29 of 29 devices in 90 % of their windows or more; at most 162 keys a host (the bound: 2048)" {
		t.Errorf("parsed %q, %v", got, err)
	}
	if _, err := parseLong("Aria 5 11 100.0%\n"); err == nil {
		t.Error("output without the summary parsed")
	}
}

// TestParseCombined reads home count's summary line, and fails without one.
func TestParseCombined(t *testing.T) {
	got, err := parseCombined("n   most at once\nmean count error over 40 homes: ip-id 4.8 % (28 exact) combined 4.8 % (28 exact)\n")
	if err != nil || got != "4.8 % mean count error over 40 homes of n = 1..8 (28 exact)" {
		t.Errorf("parseCombined: %q, %v", got, err)
	}
	if _, err := parseCombined("n   most at once\n"); err == nil {
		t.Error("output without a summary parsed")
	}
}
