//go:build torch

package main

import (
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
)

// TestStudyDefensesBLSTM runs the study with rf and the BLSTM on three IoT
// Sentinel devices, undefended and under pad:mtu+cbr:20: a row per defence
// and attack, the BLSTM trained through the model flags every trainer
// shares, and undefended it must beat always guessing one device (1/3).
func TestStudyDefensesBLSTM(t *testing.T) {
	sentineldata.Need(t)
	var got defenseRows
	_, b := commandJSON(t, "study", &got, sentinelDefenses("--trees", "10", "--epochs", "4",
		"--attacks", "rf,blstm", "--defenses", "none,pad:mtu+cbr:20")...)
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

// TestStudyDefensesSP runs the sequence-profile attack in the study on
// three IoT Sentinel devices, undefended and padded to the MTU: its rows
// fill the same columns as the others', and undefended it must beat
// always guessing one device (1/3) in sessions and in detection F1.
func TestStudyDefensesSP(t *testing.T) {
	sentineldata.Need(t)
	var got defenseRows
	_, b := commandJSON(t, "study", &got, sentinelDefenses("--threads", "1", "--sp-epochs", "4",
		"--attacks", "sp", "--defenses", "none,pad:mtu")...)
	if len(got.Rows) != 2 {
		t.Fatalf("%d rows, want 2: %s", len(got.Rows), b)
	}
	for _, r := range got.Rows {
		if r.Attack != "sp" || r.Sessions != 9 {
			t.Errorf("%s: attack %s with %d sessions, want sp with 9", r.Defense, r.Attack, r.Sessions)
		}
	}
	if r := got.Rows[0]; r.SessionAccuracy <= 1.0/3 || r.DetectionF1 <= 1.0/3 || r.PerPacketAccuracy <= 0 {
		t.Errorf("undefended sp: session accuracy %.3f, detection F1 %.3f, per-packet %.3f: want the first two above 1/3", r.SessionAccuracy, r.DetectionF1, r.PerPacketAccuracy)
	}
	if got.Rows[1].ByteOverhead <= 0 {
		t.Errorf("pad:mtu: byte overhead %v, want above 0", got.Rows[1].ByteOverhead)
	}
}
