//go:build torch

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
)

// TestStudyDefensesBLSTM runs the study with rf and the BLSTM on three IoT
// Sentinel devices, undefended and under pad:mtu+cbr:20: a row per defence
// and attack, the BLSTM trained through the model flags every trainer
// shares, and undefended it must beat always guessing one device (1/3).
func TestStudyDefensesBLSTM(t *testing.T) {
	sentineldata.Need(t)
	js := filepath.Join(t.TempDir(), "rows.json")
	var out bytes.Buffer
	err := commands()["study"].run(context.Background(), quiet(), &out, []string{"defenses", "--from-dir", sentinelDir,
		"--devices", "Aria,D-LinkCam,HueBridge", "--max-files", "3", "--folds", "3", "--trees", "10", "--epochs", "4",
		"--attacks", "rf,blstm", "--defenses", "none,pad:mtu+cbr:20", "--json", js})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Logf("%s", out.String())
	b, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Rows []struct {
			Defense         string  `json:"defense"`
			Attack          string  `json:"attack"`
			SessionAccuracy float64 `json:"session_accuracy"`
			ByteOverhead    float64 `json:"byte_overhead"`
			Sessions        int     `json:"sessions"`
		} `json:"rows"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := [][2]string{{"none", "rf"}, {"none", "blstm"}, {"pad:mtu+cbr:20", "rf"}, {"pad:mtu+cbr:20", "blstm"}}
	if len(got.Rows) != len(want) {
		t.Fatalf("%d rows, want %d: %s", len(got.Rows), len(want), b)
	}
	for i, w := range want {
		r := got.Rows[i]
		if r.Defense != w[0] || r.Attack != w[1] || r.Sessions != 9 {
			t.Errorf("row %d: %s/%s with %d sessions, want %s/%s with 9", i, r.Defense, r.Attack, r.Sessions, w[0], w[1])
		}
	}
	if got.Rows[1].SessionAccuracy <= 1.0/3 {
		t.Errorf("undefended BLSTM: session accuracy %.3f, want above always guessing one device (0.333)", got.Rows[1].SessionAccuracy)
	}
	// Both attacks face the same defended traffic: the cost is the defence's.
	if got.Rows[2].ByteOverhead != got.Rows[3].ByteOverhead || got.Rows[2].ByteOverhead <= 0 {
		t.Errorf("pad:mtu+cbr:20 byte overheads rf %v, blstm %v: want the same, above 0", got.Rows[2].ByteOverhead, got.Rows[3].ByteOverhead)
	}
}
