package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/services/internal/cli"
)

// TestHomeAssembleCommand assembles a home from the real IoT Sentinel
// captures, on the LAN and behind the emulated NAPT, and reads both back.
func TestHomeAssembleCommand(t *testing.T) {
	const data = "../../../../shared/data/iot-sentinel-dev"
	sentineldata.Need(t)
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, view := range []string{"lan", "napt"} {
		pcap, truth := filepath.Join(dir, view+".pcap"), filepath.Join(dir, view+".csv")
		var out bytes.Buffer
		err := runHome(context.Background(), log, &out, []string{"assemble", "--from-dir", data, "--devices", "4",
			"--units", "EdnetCam1=2", "--duration", "3m", "--sessions", "late", "--view", view, "--seed", "5", "--out", pcap, "--truth", truth})
		if err != nil {
			t.Fatalf("%s: %v\n%s", view, err, out.String())
		}
		if c := strings.Count(out.String(), "EdnetCam1#"); c != 2 {
			t.Fatalf("%s: report names %d EdnetCam1 units, want 2:\n%s", view, c, out.String())
		}
		f, err := os.Open(truth)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := realhome.ReadTruth(f, truth)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		src, err := capture.OpenFile(pcap)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for ; ; n++ {
			if _, err := src.Next(); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
		src.Close()
		units := map[string]bool{}
		for _, r := range rows {
			if r.Unit != "" {
				units[r.Unit] = true
			}
		}
		// The EdnetCam1 units stay on the LAN; what crosses the NAPT is
		// the other devices'.
		if n == 0 || len(rows) != n || view == "lan" && len(units) != 5 || len(units) == 0 {
			t.Fatalf("%s: %d packets, %d truth rows, units %v", view, n, len(rows), units)
		}
		t.Logf("%s: %d packets of %d units", view, n, len(units))
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"assemble", "--from-dir", data, "--out", "a.pcap", "--truth", "a.csv"}, "--devices N, --units TYPE=K"},
		{[]string{"assemble", "--from-dir", data, "--devices", "2", "--units", "Aria", "--out", "a.pcap", "--truth", "a.csv"}, "TYPE=K"},
		{[]string{"assemble", "--from-dir", data, "--devices", "2", "--view", "wan", "--out", "a.pcap", "--truth", "a.csv"}, "--view"},
		{[]string{"assemble", "--from-dir", data, "--devices", "2", "--sessions", "old", "--out", "a.pcap", "--truth", "a.csv"}, "--sessions"},
		{[]string{"assemble", "--from-dir", data, "--devices", "2", "--out", "a.pcap", "--truth", "a.pcap"}, "same file"},
		{[]string{"build"}, "assemble"},
	} {
		err := runHome(context.Background(), log, io.Discard, c.args)
		if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("home %v = %v, want a usage error saying %q", c.args, err, c.want)
		}
	}
}

// homeOutput runs homemole home with args and returns what it printed,
// failing the test on an error.
func homeOutput(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if err := runHome(context.Background(), quiet(), &out, args); err != nil {
		t.Fatalf("home %v: %v\n%s", args, err, out.String())
	}
	return out.String()
}

// usageCase is a homemole home command line and what its usage error says.
type usageCase struct {
	args []string
	want string
}

// wantUsageErrors checks that homemole home refuses each case with a
// usage error saying its want.
func wantUsageErrors(t *testing.T, cases []usageCase) {
	t.Helper()
	for _, c := range cases {
		if err := runHome(context.Background(), quiet(), io.Discard, c.args); !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("home %v = %v, want a usage error saying %q", c.args, err, c.want)
		}
	}
}

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
		{[]string{"pairs", "--from-dir", data, "--late", "-1s"}, "--late from 0"},
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

// TestHomeHostsCommand counts one identical pair's type host by host on
// the LAN, named by one of its folders, units drawn from both.
func TestHomeHostsCommand(t *testing.T) {
	data := sentineldata.Need(t)
	s := homeOutput(t, "hosts", "--from-dir", data, "--device", "EdimaxCam2", "--units", "1,8", "--homes", "2")
	t.Log(s)
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[2], "EdimaxCam ") || !strings.Contains(lines[2], "0.0%   4/4 ") || !strings.HasSuffix(lines[2], "  EdimaxCam 4") {
		t.Fatalf("home hosts printed:\n%s", s)
	}
	// The live column: the share of windows the detector's counter got
	// right, 20 s late, on the same homes.
	f := strings.Fields(lines[2])
	if live, err := strconv.ParseFloat(strings.TrimSuffix(f[len(f)-3], "%"), 64); err != nil || live < 80 || live > 100 {
		t.Errorf("home hosts' live column %q: want a share of windows from 80 %%", f[len(f)-3])
	}
	wantUsageErrors(t, []usageCase{
		{[]string{"hosts"}, "--from-dir"},
		{[]string{"hosts", "--from-dir", data, "--device", "NoSuch"}, "no such device folder or type"},
		{[]string{"hosts", "--from-dir", data, "--units", "0"}, "--units"},
		{[]string{"hosts", "--from-dir", data, "--homes", "0"}, "--homes from 1"},
	})
}

// TestHomeNearestCommand names every IoT Sentinel capture by its nearest
// other: most right, and the kettles, whose key sets are identical, among
// the misses.
func TestHomeNearestCommand(t *testing.T) {
	data := sentineldata.Need(t)
	s := homeOutput(t, "nearest", "--from-dir", data)
	t.Log(s)
	var right, all int
	var share float64
	if _, err := fmt.Sscanf(s, "%d of %d captures named by their nearest capture's type (%f %%)", &right, &all, &share); err != nil || all < 270 || right < all*8/10 || right > all {
		t.Fatalf("home nearest printed (%v):\n%s", err, s)
	}
	if !strings.Contains(s, "iKettle2 -> SmarterCoffee") && !strings.Contains(s, "SmarterCoffee -> iKettle2") {
		t.Errorf("home nearest named the kettles apart:\n%s", s)
	}
	wantUsageErrors(t, []usageCase{{[]string{"nearest"}, "--from-dir"}})
}

// TestHomeChainsCommand counts one type beyond the NAPT by its IP ID
// sequences: the eligibility of every type, then the type's row.
func TestHomeChainsCommand(t *testing.T) {
	data := sentineldata.Need(t)
	s := homeOutput(t, "chains", "--from-dir", data, "--device", "Lightify", "--units", "1,3", "--homes", "3")
	t.Log(s)
	if !strings.Contains(s, "Lightify             yes       10 of 10") {
		t.Errorf("home chains printed no eligibility line for Lightify:\n%s", s)
	}
	// A Linux stack numbers each connection apart: not counted this way.
	if linux := homeOutput(t, "chains", "--from-dir", data, "--device", "D-LinkSensor"); !strings.Contains(linux, "D-LinkSensor         no        0 of 10") ||
		!strings.Contains(linux, "no eligible type to count") {
		t.Errorf("home chains --device D-LinkSensor:\n%s", linux)
	}
	var e1, e3, worst float64
	var exact, judged int
	i := strings.LastIndex(s, "\nLightify  ")
	if i < 0 {
		t.Fatalf("no Lightify row:\n%s", s)
	}
	if _, err := fmt.Sscanf(s[i+1:], "Lightify %f%% %f%% %f%% %d/%d", &e1, &e3, &worst, &exact, &judged); err != nil || judged != 6 || worst > 10 {
		t.Errorf("Lightify's row (%v): n=1 %.1f, n=3 %.1f, worst %.1f, exact %d of %d homes", err, e1, e3, worst, exact, judged)
	}
	wantUsageErrors(t, []usageCase{{[]string{"chains"}, "--from-dir"}, {[]string{"chains", "--from-dir", data, "--homes", "0"}, "--homes"}})
}

// TestHomeLongCommand plays every device's later captures back to back:
// a row per device folder with its keys after each session, and a summary
// that no host passed the bound.
func TestHomeLongCommand(t *testing.T) {
	data := sentineldata.Need(t)
	s := homeOutput(t, "long", "--from-dir", data)
	t.Log(s)
	lines := strings.Split(strings.TrimSpace(s), "\n")
	last := lines[len(lines)-1]
	var met, signed, most, bound int
	if _, err := fmt.Sscanf(last, "%d of %d devices whose unit has a signature counted as one unit in 90 %% of their windows or more; the most keys a host held: %d (bound %d)", &met, &signed, &most, &bound); err != nil ||
		signed < 25 || met < signed*9/10 || most < 10 || most >= bound || !strings.Contains(last, "past the bound: none") {
		t.Fatalf("home long's summary (%v): %s", err, last)
	}
	entries, err := os.ReadDir(data)
	if err != nil {
		t.Fatal(err)
	}
	folders := 0
	for _, e := range entries {
		if e.IsDir() {
			folders++
		}
	}
	// Every folder's unit has a signature since DHCP host names are keys:
	// the kettles' too.
	if len(lines) != 2+folders || signed != folders || !strings.Contains(s, "iKettle2") || !strings.Contains(last, "no signature: none") {
		t.Errorf("home long printed %d lines, %d devices with a signature, for %d device folders: want a row per folder, each with a signature:\n%s", len(lines), signed, folders, s)
	}
	wantUsageErrors(t, []usageCase{{[]string{"long"}, "--from-dir"}, {[]string{"long", "--from-dir", data, "--gap", "-1s"}, "--gap"}})
}
