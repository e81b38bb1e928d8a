package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"

	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/services/internal/cli"
)

// TestDefendCommand defends a real IoT Sentinel capture with each kind of
// defence and checks the printed cost against the files written: the
// defended capture holds as many packets as printed, the truth names every
// crossing LAN packet once and nothing else for the dummies.
func TestDefendCommand(t *testing.T) {
	sentineldata.Need(t)
	in := filepath.Join(sentinelDir, "D-LinkCam", "Setup-A-1-STA.pcap")
	if _, err := os.Stat(in); err != nil {
		t.Skipf("IoT Sentinel captures not at %s: %v", sentinelDir, err)
	}
	dir := t.TempDir()
	wan, truth := filepath.Join(dir, "wan.pcap"), filepath.Join(dir, "truth.csv")
	log := quiet()
	counts := regexp.MustCompile(`(\d+) WAN packets undefended, (\d+) defended \((\d+) dummies\)`)
	for _, spec := range []string{"none", "pad:mtu", "cbr:20", "pad:128+stp:6", "mimic:Aria", "vpn-pad"} {
		var out bytes.Buffer
		err := runDefend(context.Background(), log, &out, []string{"--in", in, "--defense", spec, "--out", wan, "--truth", truth,
			"--mimic-dir", sentinelDir})
		if err != nil {
			t.Fatalf("defend %s: %v", spec, err)
		}
		t.Logf("%s", out.String())
		m := counts.FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("defend %s printed no packet counts: %s", spec, out.String())
		}
		real, total, dummies := atoi(t, m[1]), atoi(t, m[2]), atoi(t, m[3])
		if real+dummies != total || real == 0 {
			t.Errorf("defend %s: %d real + %d dummies != %d", spec, real, dummies, total)
		}
		if (spec == "none" || spec == "pad:mtu" || spec == "vpn-pad") != (dummies == 0) {
			t.Errorf("defend %s: %d dummies", spec, dummies)
		}
		if n := len(capturetest.Frames(t, wan)); n != total {
			t.Errorf("defend %s: %s holds %d packets, printed %d", spec, wan, n, total)
		}
		lan, err := readTruthFile("defend", truth)
		if err != nil {
			t.Fatal(err)
		}
		seen, none := map[int64]bool{}, 0
		for _, l := range lan {
			if l < 0 {
				none++
			} else if seen[l] {
				t.Fatalf("defend %s: LAN packet %d twice in the truth", spec, l)
			} else {
				seen[l] = true
			}
		}
		if len(seen) != real || none != dummies {
			t.Errorf("defend %s: truth names %d LAN packets and %d dummies, printed %d and %d", spec, len(seen), none, real, dummies)
		}
	}
}

func TestDefendCommandRefuses(t *testing.T) {
	in := filepath.Join(sentinelDir, "D-LinkCam", "Setup-A-1-STA.pcap")
	dir := t.TempDir()
	log := quiet()
	for _, args := range [][]string{
		{"--defense", "pad:2000"},
		{"--defense", "vpn-pad", "--mode", "napt"},
		{"--defense", "mimic:Aria"},
		{"--defense", "cbr:10", "--out", in},
	} {
		full := append([]string{"--in", in, "--out", filepath.Join(dir, "w.pcap"), "--truth", filepath.Join(dir, "t.csv")}, args...)
		err := runDefend(context.Background(), log, &bytes.Buffer{}, full)
		if !errors.Is(err, cli.ErrUsage) {
			t.Errorf("defend %v: %v, want a usage error", args, err)
		}
	}
}
