package main

import (
	"strings"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
)

// TestHomeSteadyCommand prints every type's eligibility and counts one
// eligible type's units, on a subset of n (the whole table is the README's
// command).
func TestHomeSteadyCommand(t *testing.T) {
	data := sentineldata.Need(t)
	s := homeOutput(t, "steady", "--from-dir", data, "--device", "Lightify", "--units", "1,5,10", "--homes", "3")
	t.Log(s)
	for _, want := range []string{
		"Lightify             yes       one of udp/80 in 10 of 10 captures; counted with Lightify",
		"D-LinkCam            no        one steady connection of tcp/443 in 1 of 10 captures, under 90 %",
		"Lightify                0.0%    0.0%    0.0%    0.0% 9/9",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("home steady printed no line %q:\n%s", want, s)
		}
	}
	if strings.Count(s, "\n") != 31+1+3+1 {
		t.Errorf("home steady printed %d lines, want a row per type (31), the table's title, head and row", strings.Count(s, "\n"))
	}
	// Held out: each home names the type from the captures it did not
	// draw on; with 10 captures none is left for n = 10.
	if s := homeOutput(t, "steady", "--from-dir", data, "--device", "Lightify", "--units", "1,9,10", "--homes", "2", "--held-out"); !strings.Contains(s, "Lightify                    0.0%        0.0%        - 2u    0.0% 4/4") {
		t.Errorf("home steady --held-out printed:\n%s", s)
	}
	wantUsageErrors(t, []usageCase{
		{[]string{"steady"}, "--from-dir"},
		{[]string{"steady", "--from-dir", data, "--units", "0"}, "--units"},
		{[]string{"steady", "--from-dir", data, "--device", "NoSuch"}, "no such device folder"},
		{[]string{"steady", "--from-dir", data, "--view", "vpn"}, "tunnel"},
		{[]string{"pairs", "--from-dir", data, "--pair", "EdimaxCam1"}, "A,B"},
		{[]string{"pairs", "--from-dir", data, "--pair", "EdimaxCam1,NoSuch"}, "no device folder NoSuch"},
		{[]string{"pairs", "--from-dir", data, "--window", "5m"}, "within the duration"},
	})
}

// TestHomePairsCommand counts one identical pair in a few homes.
func TestHomePairsCommand(t *testing.T) {
	data := sentineldata.Need(t)
	s := homeOutput(t, "pairs", "--from-dir", data, "--pair", "EdimaxCam1,EdimaxCam2", "--homes", "5")
	t.Log(s)
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "EdimaxCam1/EdimaxCam2") || !strings.Contains(lines[1], "(100.0 %)") {
		t.Fatalf("home pairs printed:\n%s", s)
	}
}
