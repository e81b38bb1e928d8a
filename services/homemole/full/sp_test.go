//go:build torch

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/services/internal/cli"
)

// linkDevices lays out a folder of the given IoT Sentinel device folders.
func linkDevices(t *testing.T, devices ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range devices {
		src, err := filepath.Abs(filepath.Join(sentinelDir, d))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(src, filepath.Join(root, d)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestSPTrainAndDetect trains a small model on four device types, leaving
// every fifth capture out, and runs detect on a held-out HueBridge capture:
// the JSON must be the documented one, windows must tile the capture, and
// the bridge must be named in one of them.
func TestSPTrainAndDetect(t *testing.T) {
	sentineldata.Need(t)
	dir := linkDevices(t, "Aria", "HueBridge", "Lightify", "WeMoSwitch")
	model := filepath.Join(t.TempDir(), "m.spm")
	var stdout bytes.Buffer
	if err := runSP(context.Background(), quiet(), &stdout, []string{"train", "--dir", dir, "--out", model, "--holdout", "5",
		"--detector-samples", "400", "--counter-samples", "100", "--epochs", "10"}); err != nil {
		t.Fatalf("sp train: %v\n%s", err, stdout.String())
	}
	if !strings.Contains(stdout.String(), "trained 4 device types") {
		t.Errorf("sp train said %q", stdout.String())
	}
	stdout.Reset()
	if err := runSP(context.Background(), quiet(), &stdout, []string{"show", "--model", model}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "HueBridge\n  SP 1: N=") {
		t.Errorf("sp show printed %q", stdout.String())
	}

	caps, _ := filepath.Glob(filepath.Join(sentinelDir, "HueBridge", "*.pcap"))
	sort.Strings(caps)
	heldOut := caps[4] // --holdout 5 left it out of training
	out := filepath.Join(t.TempDir(), "d.json")
	stdout.Reset()
	if err := runDetect(context.Background(), quiet(), &stdout, []string{"--model", model, "--in", heldOut, "--window", "60s", "--json", out}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Packets int `json:"packets"`
		Windows []struct {
			StartNs    int64 `json:"start_ns"`
			EndNs      int64 `json:"end_ns"`
			Detections []struct {
				Device string  `json:"device"`
				Count  int     `json:"count"`
				Score  float64 `json:"score"`
			} `json:"detections"`
		} `json:"windows"`
	}
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatalf("detect wrote %s: %v", data, err)
	}
	if res.Packets == 0 || len(res.Windows) == 0 {
		t.Fatalf("no packets or windows: %s", data)
	}
	var named []string
	for i, w := range res.Windows {
		if w.EndNs-w.StartNs != 60e9 || (i > 0 && w.StartNs != res.Windows[i-1].EndNs) {
			t.Errorf("window %d [%d, %d) does not tile 60 s windows", i, w.StartNs, w.EndNs)
		}
		for _, d := range w.Detections {
			named = append(named, d.Device)
			if d.Count < 1 || d.Score < 0.5 || d.Score > 1 {
				t.Errorf("window %d: detection %+v", i, d)
			}
		}
	}
	t.Logf("%s", stdout.String())
	if !slices.Contains(named, "HueBridge") {
		t.Errorf("the held-out HueBridge capture was not named in any window: %v", named)
	}
}

func TestSPRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{},
		{"train", "--dir", dir},
		{"train", "--dir", dir, "--out", filepath.Join(dir, "m"), "--window", "365s"},
		{"train", "--dir", dir, "--out", filepath.Join(dir, "m"), "--unknown-holdout", "1"},
		{"eval", "--dir", dir, "--json", filepath.Join(dir, "x.json"), "--holdout", "1"},
		{"show"},
	} {
		if err := runSP(context.Background(), quiet(), &bytes.Buffer{}, args); !errors.Is(err, cli.ErrUsage) {
			t.Errorf("sp %v: %v, want a usage error", args, err)
		}
	}
	err := runSP(context.Background(), quiet(), &bytes.Buffer{}, []string{"train", "--dir", dir, "--out", filepath.Join(dir, "m")})
	if err == nil || !strings.Contains(err.Error(), "_iotdevice-mac.txt") {
		t.Errorf("empty folder: %v, want an error naming the layout", err)
	}
	if err := runDetect(context.Background(), quiet(), &bytes.Buffer{}, []string{"--model", filepath.Join(dir, "none"), "--in", "x", "--json", "y"}); err == nil || !strings.Contains(err.Error(), "sp train") {
		t.Errorf("missing model: %v, want a hint at sp train", err)
	}
	if err := runDetect(context.Background(), quiet(), &bytes.Buffer{}, []string{"--in", "x"}); !errors.Is(err, cli.ErrUsage) {
		t.Errorf("detect without --model: %v, want a usage error", err)
	}
}
