package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/schemas"
)

const sentinel = "../../../shared/data/iot-sentinel-dev"

func needSentinel(t *testing.T) {
	t.Helper()
	sentineldata.Need(t)
}

// TestNoiseOnAssembledHomes runs the whole measurement small on real
// captures: two homes from the early sessions train a Random Forest, one
// home from the late sessions is labeled behind the NAPT and the VPN. The
// forest must beat naming the busiest device for every packet, and every
// judged session must be one unit of the late home.
func TestNoiseOnAssembledHomes(t *testing.T) {
	needSentinel(t)
	var out bytes.Buffer
	dir := filepath.Join(t.TempDir(), "realnoise")
	cfg := Config{Dir: dir, Sentinel: sentinel, TrainHomes: 2, TestHomes: 1, Duration: 5 * time.Minute,
		Views: []string{"napt", "vpn"}, Models: []string{"rf"}, Learn: learn.DefaultConfig(), Window: 100, Seed: 1,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Out: &out}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Logf("\n%s%s", out.String(), Markdown(res))
	if len(res.Cells) != 2 {
		t.Fatalf("%d cells, want napt/rf and vpn/rf", len(res.Cells))
	}
	for _, c := range res.Cells {
		if c.Packets == 0 || c.TrainWindows == 0 || c.TestWindows == 0 {
			t.Fatalf("%s/%s judged %d packets from %d training and %d test windows", c.View, c.Model, c.Packets, c.TrainWindows, c.TestWindows)
		}
		if c.Packets > c.TestWindows*100 {
			t.Errorf("%s: %d packets judged from %d windows of 100", c.View, c.Packets, c.TestWindows)
		}
		if c.Accuracy <= c.MajorityShare {
			t.Errorf("%s/%s: per-packet accuracy %.3f does not beat naming the busiest device (%.3f)", c.View, c.Model, c.Accuracy, c.MajorityShare)
		}
		if c.Sessions == 0 || c.Sessions > len(res.Devices) {
			t.Errorf("%s: %d sessions judged, want 1..%d (one per unit of the late home)", c.View, c.Sessions, len(res.Devices))
		}
		if c.TypeSessionAccuracy < c.SessionAccuracy {
			t.Errorf("%s: type-level session accuracy %.3f below device-level %.3f", c.View, c.TypeSessionAccuracy, c.SessionAccuracy)
		}
		if c.Paper == 0 {
			t.Errorf("%s/%s has no paper figure beside it", c.View, c.Model)
		}
	}
	for _, f := range []string{"homes/early-1.pcap", "homes/early-2.pcap", "homes/late-1.pcap"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("assembled home missing: %v", err)
		}
	}
}

// TestJudge scores a hand-made late home: per packet over labeled packets
// only, per session by majority over a unit's packets.
func TestJudge(t *testing.T) {
	labels := []string{"A", "B", "C"}
	ws := []*schemas.Window{
		{Home: "late-1", Len: 6, Label: []int16{0, 0, 0, 1, 1, -1}},
		{Home: "late-2", Len: 4, Label: []int16{2, 2, 2, 0}},
	}
	preds := [][]int32{{0, 0, 1, 0, 0, 2}, {2, 2, 0, 0}}
	// The votes as train.Evaluate takes them for realnoise (VoteBy: unitOf).
	voter := evaluate.NewVoter(labels)
	for i, w := range ws {
		for k := range w.Len {
			voter.Add(unitOf(w, k), int(w.Label[k]), int(preds[i][k]))
		}
	}
	c := judge(ws, preds, labels, voter.Votes())
	// labeled: 9; right: 2 of 3 A and none of 2 B in late-1, 2 of 3 C and 1 A in late-2 = 5
	if c.Packets != 9 || c.Accuracy != 5.0/9 {
		t.Errorf("packets %d accuracy %.4f, want 9 and %.4f", c.Packets, c.Accuracy, 5.0/9)
	}
	// sessions: late-1/A right, late-1/B wrong (voted A), late-2/C right, late-2/A right
	if c.Sessions != 4 || c.SessionAccuracy != 0.75 {
		t.Errorf("sessions %d accuracy %.3f, want 4 and 0.75", c.Sessions, c.SessionAccuracy)
	}
	if c.PerDevice["A"] != 0.75 || c.PerDevice["B"] != 0 || c.PerDevice["C"] != 2.0/3 {
		t.Errorf("per device %v, want A 0.75, B 0, C 2/3", c.PerDevice)
	}
	if c.MajorityShare != 4.0/9 {
		t.Errorf("majority share %.4f, want %.4f (A's 4 of 9)", c.MajorityShare, 4.0/9)
	}
}

func TestRefuses(t *testing.T) {
	base := Config{Dir: t.TempDir(), Sentinel: sentinel, TrainHomes: 1, TestHomes: 1, Duration: time.Minute,
		Views: []string{"napt"}, Models: []string{"rf"}, Window: 100, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Out: io.Discard}
	for name, c := range map[string]struct {
		edit func(*Config)
		want string
	}{
		"no test homes": {func(c *Config) { c.TestHomes = 0 }, "test homes"},
		"unknown model": {func(c *Config) { c.Models = []string{"svm"} }, "svm"},
		"no folder":     {func(c *Config) { c.Sentinel = filepath.Join(t.TempDir(), "nothing") }, "nothing"},
	} {
		cfg := base
		c.edit(&cfg)
		_, err := Run(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming %q", name, err, c.want)
		}
	}
}
