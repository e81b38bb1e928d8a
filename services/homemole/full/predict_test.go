//go:build torch

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/identify"
	"github.com/homemole/homemole/pipeline/train"
)

// Devices of the open-set test: the model is trained on knownDevices and
// never sees unknownDevices, whose vendors have no device among the known
// ones (MAXGateway's maker, eQ-3, also makes the HomeMaticPlug).
// siblingDevices are never trained either but have a sibling among the
// known (same vendor, firmware and cloud): their figure is reported, not
// held to 90 %, since their traffic is their sibling's.
var (
	knownDevices   = []string{"Aria", "HueBridge", "HueSwitch", "Lightify", "EdnetGateway", "EdnetCam1", "TP-LinkPlugHS110", "EdimaxPlug1101W", "WeMoSwitch", "HomeMaticPlug"}
	unknownDevices = []string{"Withings", "MAXGateway", "iKettle2", "SmarterCoffee", "D-LinkSwitch"}
	siblingDevices = []string{"WeMoLink", "EdimaxPlug2101W", "TP-LinkPlugHS100"}
)

// TestPredictUnknown is issue 15's done-when for "unknown": a model trained
// on ten device types with its threshold calibrated on held-out training
// sessions names the held-out captures of those types, calls the hosts of
// five types it never saw "unknown", and never names the gateway. The
// BLSTM (the main model) is held to 90 % on both; the Random Forest, whose
// tree votes separate unseen devices less well, to the floors it measured
// (87.5 % and 54 %) less a margin.
func TestPredictUnknown(t *testing.T) {
	sentineldata.Need(t)
	if testing.Short() {
		t.Skip("trains models on real captures")
	}
	for _, tc := range []struct {
		model                string
		minKnown, minUnknown float64
	}{{"blstm", 0.9, 0.9}, {"rf", 0.8, 0.45}} {
		t.Run(tc.model, func(t *testing.T) { openSet(t, tc.model, tc.minKnown, tc.minUnknown) })
	}
}

func openSet(t *testing.T, model string, minKnown, minUnknown float64) {
	trainDir, testDir, knownFiles := splitDevices(t, knownDevices...)
	t.Setenv("HOMEMOLE_NATS_URL", "")
	t.Setenv("HOMEMOLE_S3_ENDPOINT", "")
	home := filepath.Join(t.TempDir(), "hm")
	t.Setenv("HOMEMOLE_HOME", home)
	ctx := context.Background()
	args := []string{"--home", home, "--train", trainDir, "--test", testDir, "--model", model, "--seed", "1", "--save", "open", "--json", filepath.Join(t.TempDir(), "s.json")}
	if model != "rf" {
		args = append(args, "--epochs", "4")
	}
	if err := runExperiment(ctx, quiet(), &bytes.Buffer{}, args); err != nil {
		t.Fatal(err)
	}

	type capt struct{ path, device string }
	var known []capt
	for _, f := range knownFiles {
		known = append(known, capt{filepath.Join(testDir, f), filepath.Dir(f)})
	}
	capturesOf := func(devices []string) (out []capt) {
		for _, d := range devices {
			caps, err := filepath.Glob(filepath.Join(sentinelDir, d, "*.pcap"))
			if err != nil || len(caps) == 0 {
				t.Skipf("no captures of %s: %v", d, err)
			}
			sort.Strings(caps)
			for _, c := range caps {
				out = append(out, capt{c, d})
			}
		}
		return out
	}
	unknown, siblings := capturesOf(unknownDevices), capturesOf(siblingDevices)

	// The command, once each way, for what a user reads.
	for _, c := range []capt{known[0], unknown[0]} {
		var out bytes.Buffer
		js := filepath.Join(t.TempDir(), "p.json")
		if err := runPredict(ctx, quiet(), &out, []string{"--model", "open", "--in", c.path, "--json", js}); err != nil {
			t.Fatal(err)
		}
		t.Log(out.String())
		var res identify.Result
		data, err := os.ReadFile(js)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &res); err != nil {
			t.Fatal(err)
		}
		if res.Gateway == "" || !strings.Contains(out.String(), "gateway "+res.Gateway) {
			t.Errorf("%s: gateway %q in the JSON, want the inferred one, also in the text", c.path, res.Gateway)
		}
		if res.Threshold == nil || !strings.Contains(out.String(), `"unknown"`) {
			t.Errorf("%s: no unknown-device threshold reported", c.path)
		}
	}

	// Every capture through the same library call, the model loaded once.
	env, err := endpoints.Open(ctx, endpoints.FromEnv(), "test", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	m, meta, err := train.LoadModel(ctx, env.Store, "open")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if meta.Unknown == nil {
		t.Fatal("experiment --save stored no unknown-device threshold")
	}
	t.Logf("threshold %.3f (%s), calibrated on %d held-out hosts, false unknown there %.3f",
		meta.Unknown.Threshold, meta.Unknown.Score, meta.Unknown.Hosts, meta.Unknown.FalseUnknown)
	confs := map[bool][]float64{}
	gateways := map[string]bool{}
	var named []string // every host row, "MAC in capture"
	score := func(cs []capt, right func(h identify.Host, c capt) bool) (ok int) {
		for _, c := range cs {
			inf, err := capture.InferHome(ctx, c.path)
			if err != nil {
				t.Fatal(err)
			}
			res, err := identify.File(ctx, m, meta, c.path, inf.Home, true)
			if err != nil {
				t.Fatal(err)
			}
			mac := deviceMAC(t, filepath.Dir(c.path))
			if res.Gateway == mac {
				t.Errorf("%s: the device %s is taken for the gateway", c.path, mac)
			}
			// A capture of only local traffic has no gateway to infer.
			if res.Gateway != "" {
				gateways[res.Gateway] = true
			}
			var found *identify.Host
			for i, h := range res.Hosts {
				named = append(named, h.Host+" in "+c.path)
				if h.Host == mac {
					found = &res.Hosts[i]
				}
			}
			if k := slices.Contains(knownDevices, c.device); found != nil && (k || slices.Contains(unknownDevices, c.device)) {
				confs[k] = append(confs[k], found.Confidence)
			}
			switch {
			case found == nil:
				t.Logf("%s: the device %s is not among its hosts", c.path, mac)
			case right(*found, c):
				ok++
			default:
				t.Logf("%s (%s): %s at confidence %.3f (nearest %s)", filepath.Base(c.path), c.device, found.Device, found.Confidence, found.Likeliest)
			}
		}
		return ok
	}
	kn := score(known, func(h identify.Host, c capt) bool { return h.Device == c.device })
	un := score(unknown, func(h identify.Host, _ capt) bool { return h.Device == train.Unknown })
	for _, k := range []bool{true, false} {
		sort.Float64s(confs[k])
		t.Logf("confidences of hosts of known types (%v) and of unknown ones: %.2f", k, confs[k])
	}
	sn := score(siblings, func(h identify.Host, _ capt) bool { return h.Device == train.Unknown })
	t.Logf("%s: hosts of untrained siblings of known types (%v) reported unknown %d of %d (%.1f %%)",
		model, siblingDevices, sn, len(siblings), 100*float64(sn)/float64(len(siblings)))
	if len(gateways) == 0 {
		t.Error("no capture's gateway was inferred")
	}
	for _, n := range named {
		if gateways[strings.Fields(n)[0]] {
			t.Errorf("the gateway %s is reported as a device", n)
		}
	}
	t.Logf("gateways inferred: %v; none of %d host rows is one", slices.Sorted(maps.Keys(gateways)), len(named))
	kr, ur := float64(kn)/float64(len(known)), float64(un)/float64(len(unknown))
	t.Logf("%s: known types named right on %d of %d held-out sessions (%.1f %%); hosts of unknown types reported unknown %d of %d (%.1f %%)",
		model, kn, len(known), 100*kr, un, len(unknown), 100*ur)
	if kr < minKnown || ur < minUnknown {
		t.Errorf("want known named right on at least %.0f %% (got %.1f %%) and unknown said unknown on at least %.0f %% (got %.1f %%)",
			100*minKnown, 100*kr, 100*minUnknown, 100*ur)
	}
}

// deviceMAC is the MAC of a device folder's IoT device, as predict spells it.
func deviceMAC(t *testing.T, dir string) string {
	t.Helper()
	mac, err := os.ReadFile(filepath.Join(dir, "_iotdevice-mac.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.ToLower(strings.TrimSpace(string(mac)))
}
