//go:build torch

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/pipeline/experiment"
	"github.com/homemole/homemole/services/internal/cli"
)

// TestExperimentCommand trains on half of five devices' real captures and
// names the device of each capture of the other half. The score comes
// from captures the model never saw; chance is one in five.
func TestExperimentCommand(t *testing.T) {
	sentineldata.Need(t)
	train, test, testFiles := splitDevices(t, "Aria", "HueBridge", "Lightify", "Withings", "EdnetGateway")
	t.Setenv("HOMEMOLE_NATS_URL", "")
	t.Setenv("HOMEMOLE_S3_ENDPOINT", "")
	for _, model := range []string{"blstm", "rf"} {
		t.Run(model, func(t *testing.T) { checkExperiment(t, train, test, model, testFiles) })
	}
}

func checkExperiment(t *testing.T, train, test, model string, testFiles []string) {
	out := filepath.Join(t.TempDir(), "summary.json")
	var stdout bytes.Buffer
	err := runExperiment(context.Background(), quiet(), &stdout, []string{
		"--train", train, "--test", test, "--model", model, "--epochs", "6", "--window", "40", "--json", out})
	if err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res experiment.Result
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatalf("summary is not the documented JSON: %v\n%s", err, data)
	}
	t.Logf("%s", stdout.String())
	var got []string
	for _, s := range res.Sessions {
		got = append(got, s.File)
		if s.Packets <= 0 || s.Share <= 0 || s.Share > 1 {
			t.Errorf("session %+v: packets and share must be positive", s)
		}
	}
	got = append(got, res.Unscored...)
	sort.Strings(got)
	if strings.Join(got, ",") != strings.Join(testFiles, ",") {
		t.Errorf("summary names the captures\n%v\nthe test folder holds\n%v", got, testFiles)
	}
	if len(res.PerDevice) != 5 {
		t.Errorf("per_device has %d devices, want the 5 tested: %v", len(res.PerDevice), res.PerDevice)
	}
	if res.OverallAccuracy < 0.5 || res.SessionAccuracy < 0.6 {
		t.Errorf("held-out accuracy per packet %.2f, per capture %.2f: want at least 0.5 and 0.6 (chance is 0.2)", res.OverallAccuracy, res.SessionAccuracy)
	}
	if res.Seconds <= 0 || res.TrainWindows == 0 || res.TestWindows == 0 {
		t.Errorf("summary lacks its counts: %+v", res)
	}
	if html, err := os.ReadFile(strings.TrimSuffix(out, ".json") + ".html"); err != nil || !bytes.Contains(html, []byte("Confusion matrix")) {
		t.Errorf("HTML report beside the summary: %v", err)
	}
}

func TestExperimentRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--train", dir, "--json", filepath.Join(dir, "x.json")},
		{"--train", dir, "--test", filepath.Join(dir, "missing"), "--json", filepath.Join(dir, "x.json")},
		{"--train", dir, "--test", dir, "--model", "svm", "--json", filepath.Join(dir, "x.json")},
		{"--train", dir, "--test", dir, "--view", "tor", "--json", filepath.Join(dir, "x.json")},
	} {
		err := runExperiment(context.Background(), quiet(), &bytes.Buffer{}, args)
		if !errors.Is(err, cli.ErrUsage) {
			t.Errorf("experiment %v: %v, want a usage error", args, err)
		}
	}
	// A folder without device folders: an error that says what it wants.
	err := runExperiment(context.Background(), quiet(), &bytes.Buffer{}, []string{"--train", dir, "--test", dir, "--json", filepath.Join(dir, "x.json")})
	if err == nil || !strings.Contains(err.Error(), "device folders") {
		t.Errorf("empty folders: %v, want an error naming device folders", err)
	}
}

// TestPredictDeterministic trains the same model twice with the same seed
// (CPU), stores both, and labels a held-out capture with each through
// `homemole predict`: the device named and every packet's label must be
// the same, and the device must be the capture's own.
func TestPredictDeterministic(t *testing.T) {
	sentineldata.Need(t)
	train, test, testFiles := splitDevices(t, "Aria", "HueBridge", "Lightify", "Withings", "EdnetGateway")
	t.Setenv("HOMEMOLE_NATS_URL", "")
	t.Setenv("HOMEMOLE_S3_ENDPOINT", "")
	home := filepath.Join(t.TempDir(), "hm")
	for _, run := range []string{"a", "b"} {
		err := runExperiment(context.Background(), quiet(), &bytes.Buffer{}, []string{"--home", home,
			"--train", train, "--test", test, "--model", "blstm", "--epochs", "4", "--seed", "3", "--save", run, "--json", filepath.Join(t.TempDir(), "s.json")})
		if err != nil {
			t.Fatal(err)
		}
	}
	capture := filepath.Join(test, testFiles[0]) // an Aria capture
	mac, err := os.ReadFile(filepath.Join(test, "Aria", "_iotdevice-mac.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var outs [2]string
	var results [2]map[string]any
	for i, run := range []string{"a", "b"} {
		var out bytes.Buffer
		js := filepath.Join(t.TempDir(), "p.json")
		if err := runPredict(context.Background(), quiet(), &out, []string{"--home", home, "--model", run, "--in", capture, "--json", js}); err != nil {
			t.Fatal(err)
		}
		outs[i] = out.String()
		data, err := os.ReadFile(js)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &results[i]); err != nil {
			t.Fatal(err)
		}
	}
	t.Log(outs[0])
	a, b := strings.SplitN(outs[0], "\n", 2)[1], strings.SplitN(outs[1], "\n", 2)[1]
	if a != b {
		t.Errorf("two models trained with the same seed label the capture differently:\n%s\n%s", a, b)
	}
	wantMAC := strings.ToLower(strings.TrimSpace(string(mac)))
	if !strings.Contains(a, wantMAC) || !strings.Contains(strings.SplitN(a[strings.Index(a, wantMAC):], "\n", 2)[0], "Aria") {
		t.Errorf("the Aria capture's device %s is not named Aria:\n%s", wantMAC, a)
	}
	if err := runPredict(context.Background(), quiet(), &bytes.Buffer{}, []string{"--home", home, "--model", "missing", "--in", capture}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("an unknown model: %v, want an error naming it", err)
	}
}

// TestStudyCommand runs a small window-size study (two sizes, 3 folds, an
// LSTM of few epochs) on real captures of four devices.
func TestStudyCommand(t *testing.T) {
	sentineldata.Need(t)
	train, _, _ := splitDevices(t, "Aria", "HueBridge", "Lightify", "Withings")
	t.Setenv("HOMEMOLE_NATS_URL", "")
	t.Setenv("HOMEMOLE_S3_ENDPOINT", "")
	out := t.TempDir()
	var stdout bytes.Buffer
	err := runStudy(context.Background(), quiet(), &stdout, []string{"--home", filepath.Join(t.TempDir(), "hm"), "--from-dir", train,
		"--windows", "20,40", "--folds", "3", "--model", "lstm", "--epochs", "3", "--out", out})
	if err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	t.Log(stdout.String())
	data, err := os.ReadFile(filepath.Join(out, "study.json"))
	if err != nil {
		t.Fatal(err)
	}
	var points []struct {
		Window int `json:"window"`
		CV     struct {
			Folds []json.RawMessage `json:"folds"`
		} `json:"cv"`
	}
	if err := json.Unmarshal(data, &points); err != nil {
		t.Fatal(err)
	}
	if len(points) != 2 || points[0].Window != 20 || points[1].Window != 40 || len(points[1].CV.Folds) != 3 {
		t.Errorf("study.json holds %+v, want windows 20 and 40 with 3 folds each", points)
	}
	if html, err := os.ReadFile(filepath.Join(out, "study.html")); err != nil || !bytes.Contains(html, []byte("<polyline")) {
		t.Errorf("study.html lacks the curve: %v", err)
	}
	if err := runStudy(context.Background(), quiet(), &bytes.Buffer{}, []string{"--from-dir", train, "--windows", "20,x", "--out", out}); !errors.Is(err, cli.ErrUsage) {
		t.Errorf("--windows 20,x: %v, want a usage error", err)
	}
}

// TestLargeForestModel: a Random Forest whose model file is over 100 MB
// (more than six of minio-go's 16 MiB multipart parts, the size at which the
// embedded S3 once stored corrupt objects) saves through experiment --save,
// reads back whole and checked, and names a held-out capture's device.
func TestLargeForestModel(t *testing.T) {
	sentineldata.Need(t)
	entries, err := os.ReadDir(sentinelDir)
	if err != nil {
		t.Fatal(err)
	}
	var devices []string
	for _, e := range entries {
		if caps, _ := filepath.Glob(filepath.Join(sentinelDir, e.Name(), "*.pcap")); e.IsDir() && len(caps) >= 4 {
			devices = append(devices, e.Name())
		}
	}
	train, test, testFiles := splitDevices(t, devices...)
	t.Setenv("HOMEMOLE_NATS_URL", "")
	t.Setenv("HOMEMOLE_S3_ENDPOINT", "")
	home := filepath.Join(t.TempDir(), "hm")
	if err := runExperiment(context.Background(), quiet(), &bytes.Buffer{}, []string{"--home", home,
		"--train", train, "--test", test, "--model", "rf", "--trees", "360", "--save", "big", "--json", filepath.Join(t.TempDir(), "s.json")}); err != nil {
		t.Fatal(err)
	}
	// The embedded S3 keeps an object as a file of its own.
	fi, err := os.Stat(filepath.Join(home, "s3", "buckets", "homemole", "models", "big", "model.ckpt"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() < 100e6 {
		t.Fatalf("the model file is %d bytes; the test needs one over 100 MB (raise --trees)", fi.Size())
	}
	t.Logf("model file: %.1f MB", float64(fi.Size())/1e6)
	var capture string
	for _, f := range testFiles {
		if strings.HasPrefix(f, "Aria/") {
			capture = filepath.Join(test, f)
			break
		}
	}
	var out bytes.Buffer
	if err := runPredict(context.Background(), quiet(), &out, []string{"--home", home, "--model", "big", "--in", capture}); err != nil {
		t.Fatal(err)
	}
	mac, err := os.ReadFile(filepath.Join(test, "Aria", "_iotdevice-mac.txt"))
	if err != nil {
		t.Fatal(err)
	}
	a := out.String()
	wantMAC := strings.ToLower(strings.TrimSpace(string(mac)))
	if i := strings.Index(a, wantMAC); i < 0 || !strings.Contains(strings.SplitN(a[i:], "\n", 2)[0], "Aria") {
		t.Errorf("the Aria capture's device %s is not named Aria by the large model:\n%s", wantMAC, a)
	}
}
