//go:build torch

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/experiment"
	"github.com/homemole/homemole/pipeline/identify"
	"github.com/homemole/homemole/pipeline/train"
)

// TestReadFamilies reads the families a cv run wrote and refuses files
// that carry none, saying what to run.
func TestReadFamilies(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("cv.json", train.CVResult{Family: &train.FamilyScore{Families: [][]string{{"TP-LinkPlugHS100", "TP-LinkPlugHS110"}}}})
	fams, err := readFamilies(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(fams) != 1 || evaluate.FamilyName(fams[0]) != "TP-LinkPlugHS" || len(fams[0]) != 2 {
		t.Fatalf("families %v, want the TP-Link pair", fams)
	}
	none := write("one-fold.json", train.CVResult{Mode: train.CVTime})
	if _, err := readFamilies(none); err == nil || !strings.Contains(err.Error(), "two folds or more") {
		t.Fatalf("readFamilies(one fold) = %v, want an error saying it needs two folds", err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte("{"), 0o644)
	if _, err := readFamilies(bad); err == nil || !strings.Contains(err.Error(), "not a cv.json") {
		t.Fatalf("readFamilies(bad) = %v", err)
	}
	if _, err := readFamilies(filepath.Join(dir, "missing.json")); err == nil || !strings.Contains(err.Error(), "--families") {
		t.Fatalf("readFamilies(missing) = %v", err)
	}
}

// TestSavedModelFamilies: a model saved by experiment learns its vendor
// families from its own calibration folds (sessions each fold's model
// never trained on), with no cv run beside it. On real captures of two
// look-alike pairs and two devices unlike them, the identical kettles
// (iKettle2 and SmarterCoffee send the same frames) must form a family and
// the unlike devices none; experiment scores the test captures' families
// with them, and predict names a kettle's family from the stored model.
func TestSavedModelFamilies(t *testing.T) {
	if testing.Short() {
		t.Skip("trains BLSTMs on real captures")
	}
	kettles := []string{"SmarterCoffee", "iKettle2"}
	trainDir, testDir, testFiles := splitDevices(t, append(kettles, "TP-LinkPlugHS100", "TP-LinkPlugHS110", "Aria", "HueBridge", "D-LinkSensor", "D-LinkSiren")...)
	t.Setenv("HOMEMOLE_NATS_URL", "")
	t.Setenv("HOMEMOLE_S3_ENDPOINT", "")
	home := filepath.Join(t.TempDir(), "hm")
	t.Setenv("HOMEMOLE_HOME", home)
	ctx := context.Background()
	js := filepath.Join(t.TempDir(), "s.json")
	var out bytes.Buffer
	// The BLSTM: a forest labels each packet alone and takes the packets
	// every device sends (DHCP, ARP, DNS) for the busiest one, so its
	// families join devices only those packets confuse (README).
	if err := runExperiment(ctx, quiet(), &out, []string{"--home", home, "--train", trainDir, "--test", testDir, "--model", "blstm",
		"--epochs", "4", "--seed", "1", "--save", "fam", "--json", js}); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	var res experiment.Result
	data, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	var kettleFamily []string
	for _, f := range res.Families {
		if slices.Contains(f, "Aria") || slices.Contains(f, "HueBridge") {
			t.Errorf("family %v holds a device unlike the others", f)
		}
		if slices.Contains(f, kettles[0]) {
			kettleFamily = f
		}
	}
	if !slices.Contains(kettleFamily, kettles[1]) {
		t.Fatalf("families %v: the identical kettles are not one", res.Families)
	}
	// The D-Link sensor and siren reach the same cloud servers in the
	// training captures: one family by its servers, whatever the model
	// confuses, and the saved families hold it.
	dlink := []string{"D-LinkSensor", "D-LinkSiren"}
	if !slices.ContainsFunc(res.ServerFamilies, func(f []string) bool { return slices.Equal(f, dlink) }) ||
		!slices.ContainsFunc(res.Families, func(f []string) bool { return slices.Equal(f, dlink) }) {
		t.Fatalf("server families %v, families %v: want %v in both", res.ServerFamilies, res.Families, dlink)
	}
	if !strings.Contains(out.String(), "family accuracy") || res.SessionAccuracyFamilies < res.SessionAccuracyTypes || res.SessionAccuracyFamilies < 0.9 {
		t.Errorf("family accuracy %.3f, types %.3f: want families scored, at least the types' and 90 %%", res.SessionAccuracyFamilies, res.SessionAccuracyTypes)
	}

	var kettle string
	for _, f := range testFiles {
		if filepath.Dir(f) == kettles[1] {
			kettle = filepath.Join(testDir, f)
			break
		}
	}
	out.Reset()
	pj := filepath.Join(t.TempDir(), "p.json")
	if err := runPredict(ctx, quiet(), &out, []string{"--model", "fam", "--in", kettle, "--json", pj}); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	var pr identify.Result
	if data, err = os.ReadFile(pj); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &pr); err != nil {
		t.Fatal(err)
	}
	mac := deviceMAC(t, filepath.Dir(kettle))
	want := evaluate.FamilyName(kettleFamily)
	for _, h := range pr.Hosts {
		if h.Host != mac {
			continue
		}
		if h.Family != want || h.FamilyShare < h.Share || !strings.Contains(out.String(), "[family "+want+"]") {
			t.Errorf("the kettle host: %+v, want family %s at a share no lower than its device's, in the text too", h, want)
		}
		return
	}
	t.Errorf("%s: the kettle %s is not among the hosts %+v", kettle, mac, pr.Hosts)
}
