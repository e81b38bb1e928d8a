package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"

	"github.com/homemole/homemole/services/internal/cli"
)

// TestStudyDefensesCommand runs homemole study defenses through the study
// command on three IoT Sentinel devices and checks the JSON rows: one per
// defence, with issue 19's fields, costs only where a defence adds them.
func TestStudyDefensesCommand(t *testing.T) {
	sentineldata.Need(t)
	if _, err := os.Stat(sentinelDir); err != nil {
		t.Skipf("IoT Sentinel captures not at %s: %v", sentinelDir, err)
	}
	html := filepath.Join(t.TempDir(), "report.html")
	var got struct {
		Rows []map[string]any `json:"rows"`
	}
	js, b := commandJSON(t, "study", &got, sentinelDefenses("--trees", "10", "--defenses", "none,pad:mtu,cbr:20", "--report", html)...)
	study := commands()["study"].run
	if len(got.Rows) != 3 {
		t.Fatalf("%d rows, want 3: %s", len(got.Rows), b)
	}
	page, err := os.ReadFile(html)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(page, []byte(`<tr class="row`)); n != 3 || !bytes.Contains(page, []byte("<svg")) {
		t.Errorf("--report: %d table rows, want 3, and a plot", n)
	}
	for _, f := range []string{"defense", "attack", "session_accuracy", "type_accuracy", "per_packet_accuracy", "detection_f1", "byte_overhead", "packet_overhead", "latency_ms_mean", "latency_ms_p99"} {
		if _, ok := got.Rows[0][f]; !ok {
			t.Errorf("row without %s: %v", f, got.Rows[0])
		}
	}
	if got.Rows[0]["byte_overhead"].(float64) != 0 || got.Rows[1]["byte_overhead"].(float64) <= 0 || got.Rows[2]["packet_overhead"].(float64) <= 0 {
		t.Errorf("overheads: none %v, pad:mtu %v, cbr:20 %v", got.Rows[0]["byte_overhead"], got.Rows[1]["byte_overhead"], got.Rows[2]["packet_overhead"])
	}
	// The rows drawn again from the JSON, twice over (runs split by view
	// or defence read as one report).
	again := filepath.Join(t.TempDir(), "again.html")
	if err := study(context.Background(), quiet(), &bytes.Buffer{}, []string{"defenses", "--report-from", js + "," + js, "--report", again}); err != nil {
		t.Fatal(err)
	}
	if page, err := os.ReadFile(again); err != nil || bytes.Count(page, []byte(`<tr class="row`)) != 6 {
		t.Errorf("--report-from: %v, want 6 rows drawn", err)
	}
	if err := study(context.Background(), quiet(), &bytes.Buffer{}, []string{"defenses", "--report-from", html, "--report", again}); err == nil || !strings.Contains(err.Error(), html) {
		t.Errorf("--report-from an HTML file: %v, want an error naming it", err)
	}
	for _, args := range [][]string{
		{"--attacks", "rf,nn"}, {"--generated-home", "3"}, {"--defenses", "pad:9999"}, {"--defenses", "vpn-pad"}, {"--folds", "1"},
		{"--max-windows", "-1"}, {"--defenses", "cbr:peakish"}, {"--span", "sometimes"}, {"--span", "-1m"},
	} {
		full := append([]string{"defenses", "--from-dir", sentinelDir, "--json", js}, args...)
		if err := study(context.Background(), quiet(), &bytes.Buffer{}, full); !errors.Is(err, cli.ErrUsage) {
			t.Errorf("study %v: %v, want a usage error", args, err)
		}
	}
}

// TestStudyAttackNames checks that the CGO-free build reads --attacks as
// the flag package will, to know before parsing whether the torch build
// must run the study.
func TestStudyAttackNames(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "rf"},
		{[]string{"--from-dir", "d", "--attacks", "rf,blstm"}, "rf,blstm"},
		{[]string{"-attacks=blstm", "--json", "x"}, "blstm"},
		{[]string{"--attacks", "blstm", "--attacks=rf"}, "rf"},
		{[]string{"--json", "--attacks"}, "rf"},
		{[]string{"--", "--attacks", "blstm"}, "rf"},
	} {
		if got := strings.Join(studyAttackNames(c.args), ","); got != c.want {
			t.Errorf("%v: %s, want %s", c.args, got, c.want)
		}
	}
}

// TestStudyDefensesGeneratedHome runs the study on a generated home: one
// row per defence, every device of the home judged in every session.
func TestStudyDefensesGeneratedHome(t *testing.T) {
	var got defenseRows
	_, b := commandJSON(t, "study", &got, "defenses", "--generated-home", "3", "--session-minutes", "5",
		"--folds", "3", "--trees", "10", "--defenses", "none,pad:mtu+cbr:20")
	if len(got.Rows) != 2 || got.Rows[0].Sessions < 6 || got.Rows[1].KBps <= 0 {
		t.Fatalf("want 2 rows of 6 sessions or more, the defended one costing KB/s: %s", b)
	}
}

// sentinelDefenses is a study defenses command line on three IoT Sentinel
// devices, three captures each, in three folds: small enough for a test,
// and every device in every fold; args follow.
func sentinelDefenses(args ...string) []string {
	return append([]string{"defenses", "--from-dir", sentinelDir, "--devices", "Aria,D-LinkCam,HueBridge", "--max-files", "3", "--folds", "3"}, args...)
}

// defenseRows is what study defenses --json writes, its names spelled out
// here, as a script reading the file would spell them.
type defenseRows struct {
	Rows []struct {
		Defense           string  `json:"defense"`
		Attack            string  `json:"attack"`
		SessionAccuracy   float64 `json:"session_accuracy"`
		PerPacketAccuracy float64 `json:"per_packet_accuracy"`
		DetectionF1       float64 `json:"detection_f1"`
		ByteOverhead      float64 `json:"byte_overhead"`
		KBps              float64 `json:"kbps_per_home"`
		Sessions          int     `json:"sessions"`
	} `json:"rows"`
}
