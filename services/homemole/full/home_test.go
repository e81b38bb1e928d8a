package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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
