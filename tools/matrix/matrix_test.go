package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/schemas"
)

// TestTenClassesDistinguishable builds the paper household's NAPT
// datasets through the real pipeline (agents, JetStream, labeler with WAN
// pairing, windower, S3) and cross-validates on held-out sessions: a small
// BLSTM on the pure-IoT windows, where the ten devices must be told apart
// far above chance (10 %) and above always naming the busiest device, and
// a Random Forest on the noisy windows, where every device and the non-IoT
// background must be labeled.
func TestTenClassesDistinguishable(t *testing.T) {
	start := time.Now()
	lc := learn.DefaultConfig()
	lc.Epochs, lc.BatchSize, lc.LenEmbedDim, lc.LR, lc.Balance, lc.Seed = 10, 16, 16, 0.003, false, 3
	var out bytes.Buffer
	cfg := Config{
		Dir:   filepath.Join(t.TempDir(), "matrix"),
		Home:  homegen.Config{Seed: 3, Sessions: 6, SessionDuration: 4 * time.Minute},
		Views: []string{"napt"}, Kinds: []string{schemas.KindInd},
		Model: "blstm", Learn: lc, Cipher: gateway.AES256CBC, Window: 100, Folds: 3, Seed: 3,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Out: &out,
	}
	ind, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Kinds, cfg.Model = []string{schemas.KindNoise}, "rf"
	noise, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cells := append(ind.Cells, noise.Cells...)
	if len(cells) != 2 {
		t.Fatalf("%d cells, want 2", len(cells))
	}
	for _, c := range cells {
		t.Logf("%s/%s %s: accuracy %.3f ± %.3f, macro F1 %.3f, %d windows; per device %v", c.View, c.Kind, c.Model, c.Accuracy.Mean, c.Accuracy.Std, c.MacroF1.Mean, c.Windows, c.PerDevice)
		busiest, iot := 0, 0
		for _, d := range homegen.PaperIoT {
			n := c.PacketsPerDevice[d]
			if n == 0 {
				t.Errorf("%s/%s: no held-out packets of %s", c.View, c.Kind, d)
			}
			busiest, iot = max(busiest, n), iot+n
		}
		majority := float64(busiest) / float64(max(iot, 1))
		if c.Accuracy.Mean < majority+0.15 {
			t.Errorf("%s/%s: accuracy %.3f, no better than always naming the busiest device (%.3f)", c.View, c.Kind, c.Accuracy.Mean, majority)
		}
		if c.Paper == 0 || c.PaperSource == "" {
			t.Errorf("%s/%s: no paper figure", c.View, c.Kind)
		}
	}
	c := ind.Cells[0]
	if c.Accuracy.Mean < 0.7 || c.MacroF1.Mean < 0.6 { // measured: 0.85, 0.88
		t.Errorf("pure IoT: accuracy %.3f, macro F1 %.3f: the ten devices are not told apart", c.Accuracy.Mean, c.MacroF1.Mean)
	}
	if noise.Cells[0].PacketsPerDevice[NonIoT] == 0 {
		t.Error("noisy: no non-IoT packets labeled")
	}
	PrintTable(&out, ind)
	if !strings.Contains(out.String(), "napt  pure IoT") {
		t.Errorf("table lacks the pure NAPT row:\n%s", out.String())
	}
	if _, err := HTML(ind); err != nil {
		t.Error(err)
	}
	t.Logf("%s", out.String())
	// The bound is on the CPU this test binary spent (it runs only this
	// package's tests), not on the wall clock: inside a parallel go test
	// ./... on 2 cores the wall clock measures the other packages too.
	// Measured: 68-72 s of CPU; a slowdown past twice that fails.
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	t.Logf("took %v, %v of CPU", time.Since(start).Round(time.Second), cpu.Round(time.Second))
	if cpu > 150*time.Second {
		t.Errorf("took %v of CPU: want under 150 s", cpu)
	}
}

func TestIoTFigures(t *testing.T) {
	c := evaluate.NewConfusion([]string{"a", "b", NonIoT})
	add := func(truth, pred, n int) {
		for range n {
			c.Add(truth, pred)
		}
	}
	add(0, 0, 8)
	add(0, 2, 2) // a, taken for background
	add(1, 1, 5)
	add(2, 2, 100) // background: not in the IoT accuracy
	add(2, 1, 5)   // background taken for b: b's precision suffers
	acc, f1 := iotFigures(c, 2)
	if want := 13.0 / 15; math.Abs(acc-want) > 1e-9 {
		t.Errorf("accuracy %v, want %v", acc, want)
	}
	fa := 2 * 1.0 * 0.8 / 1.8
	fb := 2 * 0.5 * 1.0 / 1.5
	if want := (fa + fb) / 2; math.Abs(f1-want) > 1e-9 {
		t.Errorf("macro F1 %v, want %v", f1, want)
	}
}

func TestPaperFigures(t *testing.T) {
	for _, tc := range []struct {
		view, kind, model string
		want              float64
		device            string
		deviceWant        float64
	}{
		{"napt", schemas.KindInd, "blstm", 99.2, "echo-dot", 97.0},
		{"vpn", schemas.KindInd, "rf", 83.2, "broadlink-plug", 99.0},
		{"vpn", schemas.KindInd, "lstm", 92.4, "tmall-assistant", 75.4},
		{"napt", schemas.KindNoise, "blstm", 92.1, "", 0},
		{"vpn", schemas.KindNoise, "blstm", 81.0, "tplink-plug", 20.4},
		{"vpn", schemas.KindNoise, "rf", 67.6, "", 0},
	} {
		got, src, per := paperFigure(tc.view, tc.kind, tc.model)
		if got != tc.want || src == "" {
			t.Errorf("%s/%s/%s: %v (%q), want %v", tc.view, tc.kind, tc.model, got, src, tc.want)
		}
		if tc.device != "" && per[tc.device] != tc.deviceWant {
			t.Errorf("%s/%s/%s: %s %v, want %v", tc.view, tc.kind, tc.model, tc.device, per[tc.device], tc.deviceWant)
		}
	}
}
