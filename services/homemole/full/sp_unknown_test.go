//go:build torch

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/schemas"
)

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
