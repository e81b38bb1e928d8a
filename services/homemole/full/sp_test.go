//go:build torch

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
)

// linkDevices lays out a folder of the given IoT Sentinel device folders.
func linkDevices(t *testing.T, devices ...string) string {
	t.Helper()
	return linkDevicesInto(t, t.TempDir(), devices...)
}

// linkDevicesInto links the given IoT Sentinel device folders into root.
func linkDevicesInto(t *testing.T, root string, devices ...string) string {
	t.Helper()
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

// TestSPUnknownDevices trains on six IoT Sentinel device types with
// --unknown-holdout, five further types left out, and runs detect on
// held-out captures: a capture is reported unknown when most of its
// windows with traffic are. Issue 15 asks for 90 % of the unseen types'
// captures reported unknown; the explained-share rule reaches 27 of 50
// (README, "The online detector says unknown"), so this test holds the
// line where it is (at least 40 %) rather than claim the target, and
// requires the known types' held-out captures to be named and almost
// never called unknown.
func TestSPUnknownDevices(t *testing.T) {
	sentineldata.Need(t)
	known := []string{"Aria", "HueBridge", "Lightify", "WeMoSwitch", "D-LinkCam", "TP-LinkPlugHS110"}
	unseen := []string{"EdimaxPlug1101W", "SmarterCoffee", "Withings", "D-LinkSiren", "HomeMaticPlug"}
	dir := linkDevices(t, known...)
	model := filepath.Join(t.TempDir(), "m.spm")
	var stdout bytes.Buffer
	if err := runSP(context.Background(), quiet(), &stdout, []string{"train", "--dir", dir, "--out", model, "--holdout", "5", "--unknown-holdout", "4",
		"--detector-samples", "400", "--counter-samples", "100", "--epochs", "10"}); err != nil {
		t.Fatalf("sp train: %v\n%s", err, stdout.String())
	}
	fmt.Print(stdout.String())
	if !strings.Contains(stdout.String(), "unknown-device rule: explained share below") {
		t.Errorf("sp train said %q, want the unknown-device rule", stdout.String())
	}
	// judge runs detect on one capture: whether most of its windows with
	// traffic are unknown, and whether dev is named in one.
	judge := func(path, dev string) (unknown, named bool) {
		out := filepath.Join(t.TempDir(), "d.json")
		if err := runDetect(context.Background(), quiet(), &bytes.Buffer{}, []string{"--model", model, "--in", path, "--json", out}); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			Windows []schemas.SeenWindow `json:"windows"`
		}
		if err := json.Unmarshal(data, &res); err != nil {
			t.Fatal(err)
		}
		traffic, unk := 0, 0
		for _, w := range res.Windows {
			if w.Packets > 0 {
				traffic++
			}
			if w.Unknown {
				unk++
			}
			for _, d := range w.Detections {
				named = named || d.Device == dev
			}
		}
		return traffic > 0 && 2*unk > traffic, named
	}
	captures := func(dev string) []string {
		caps, _ := filepath.Glob(filepath.Join(sentinelDir, dev, "*.pcap"))
		sort.Strings(caps)
		return caps
	}
	var unseenN, unseenUnknown int
	for _, dev := range unseen {
		for _, c := range captures(dev) {
			u, _ := judge(c, dev)
			unseenN++
			if u {
				unseenUnknown++
			}
		}
	}
	var knownN, knownNamed, knownUnknown int
	for _, dev := range known {
		for i, c := range captures(dev) {
			if i%5 != 4 { // --holdout 5 left these out of training
				continue
			}
			u, named := judge(c, dev)
			knownN++
			if named && !u {
				knownNamed++
			}
			if u {
				knownUnknown++
			}
		}
	}
	fmt.Printf("unseen types: %d of %d captures reported unknown; known types: %d of %d held-out captures named, %d unknown\n",
		unseenUnknown, unseenN, knownNamed, knownN, knownUnknown)
	if unseenN == 0 || knownN == 0 {
		t.Fatalf("no captures judged: %d unseen, %d known", unseenN, knownN)
	}
	if float64(unseenUnknown) < 0.4*float64(unseenN) {
		t.Errorf("%d of %d captures of unseen types reported unknown, want at least 40 %% (it was 27 of 50)", unseenUnknown, unseenN)
	}
	if float64(knownUnknown) > 0.1*float64(knownN) {
		t.Errorf("%d of %d held-out captures of known types reported unknown, want at most 10 %%", knownUnknown, knownN)
	}
	if float64(knownNamed) < 0.75*float64(knownN) {
		t.Errorf("%d of %d held-out captures of known types named and not unknown, want at least 75 %% (it was 10 of 12)", knownNamed, knownN)
	}
}
