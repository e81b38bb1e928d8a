//go:build torch

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
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
	"github.com/homemole/homemole/pipeline/experiment"
	"github.com/homemole/homemole/pipeline/identify"
	"github.com/homemole/homemole/pipeline/sweep"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/services/internal/cli"
)

func TestParseFolds(t *testing.T) {
	for _, c := range []struct {
		list  string
		index int
		want  []int
		bad   bool
	}{
		{"", -1, nil, false},
		{"2", -1, []int{2}, false},
		{"1, 4", -1, []int{1, 4}, false},
		{"", 0, []int{1}, false}, // a Job's completion index 0 is fold 1
		{"", 4, []int{5}, false},
		{"0", -1, nil, true},
		{"two", -1, nil, true},
		{"1", 0, nil, true},
	} {
		got, err := parseFolds(c.list, c.index)
		if (err != nil) != c.bad || !slices.Equal(got, c.want) {
			t.Errorf("--fold %q --fold-index %d: %v, %v; want %v (error %v)", c.list, c.index, got, err, c.want, c.bad)
		}
	}
}

// TestCVFoldUsage: the ways to get a cluster CV wrong fail before any
// server is started or fold trained.
func TestCVFoldUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--dataset", "d", "--fold", "1"},
		{"--dataset", "d", "--gather"},
		{"--dataset", "d", "--run", "r", "--fold-index", "0", "--gather"},
		{"--dataset", "d", "--run", "r", "--fold", "1", "--fold-index", "0"},
	} {
		var out bytes.Buffer
		if err := runCV(context.Background(), quiet(), &out, args); !errors.Is(err, cli.ErrUsage) {
			t.Errorf("cv %v: %v, want a usage error", args, err)
		}
	}
}

// TestWholeReadersRefuseMaxMemory: the commands that read their training
// windows whole refuse --max-memory as a usage error naming themselves,
// before they open anything.
func TestWholeReadersRefuseMaxMemory(t *testing.T) {
	for name, run := range map[string]func(context.Context, *slog.Logger, io.Writer, []string) error{
		"cv": runCV, "experiment": runExperiment, "study": runStudy,
	} {
		var out bytes.Buffer
		err := run(context.Background(), quiet(), &out, []string{"--model", "blstm", "--max-memory", "64MiB"})
		if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), name+" reads its training windows whole") {
			t.Errorf("%s --max-memory: %v, want a usage error naming %s", name, err, name)
		}
	}
}

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
		{"--train", dir, "--test", dir, "--save", "m", "--calibration-folds", "1", "--json", filepath.Join(dir, "x.json")},
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
// Two calibration folds, the fewest: the threshold is not what it tests.
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
		"--train", train, "--test", test, "--model", "rf", "--trees", "360", "--save", "big", "--calibration-folds", "2", "--json", filepath.Join(t.TempDir(), "s.json")}); err != nil {
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
// BLSTM (the main model) is held to 90 % on both, also when ports of one
// session get no embedding of their own (--port-sessions 2), where the
// confidence alone let Withings captures pass for the Aria scale; the
// Random Forest, whose tree votes separate unseen devices less well, to
// the floors it measured (85.4 to 89.6 % and 54 to 76 %, over the
// calibrations and rules it has had) less a margin.
func TestPredictUnknown(t *testing.T) {
	sentineldata.Need(t)
	if testing.Short() {
		t.Skip("trains models on real captures")
	}
	for _, tc := range []struct {
		name                 string
		args                 []string
		minKnown, minUnknown float64
	}{
		{"blstm", []string{"--model", "blstm", "--epochs", "4"}, 0.9, 0.9},
		{"blstm-port-sessions-2", []string{"--model", "blstm", "--epochs", "4", "--port-sessions", "2"}, 0.9, 0.9},
		{"rf", []string{"--model", "rf"}, 0.8, 0.45},
	} {
		t.Run(tc.name, func(t *testing.T) { openSet(t, tc.name, tc.args, tc.minKnown, tc.minUnknown) })
	}
}

// openSet runs the open-set test on the experiment of modelArgs.
func openSet(t *testing.T, model string, modelArgs []string, minKnown, minUnknown float64) {
	trainDir, testDir, knownFiles := splitDevices(t, knownDevices...)
	// The experiment's test side holds the never-trained devices too: it
	// reports the saved rule on them beside the known captures.
	linkDevicesInto(t, testDir, unknownDevices...)
	t.Setenv("HOMEMOLE_NATS_URL", "")
	t.Setenv("HOMEMOLE_S3_ENDPOINT", "")
	home := filepath.Join(t.TempDir(), "hm")
	t.Setenv("HOMEMOLE_HOME", home)
	ctx := context.Background()
	summary := filepath.Join(t.TempDir(), "s.json")
	args := []string{"--home", home, "--train", trainDir, "--test", testDir, "--seed", "1", "--save", "open", "--json", summary}
	args = append(args, modelArgs...)
	if err := runExperiment(ctx, quiet(), &bytes.Buffer{}, args); err != nil {
		t.Fatal(err)
	}
	var exp experiment.Result
	if data, err := os.ReadFile(summary); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(data, &exp); err != nil {
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

	// The experiment's own account of the saved rule on its test captures
	// (each device's packets as the dataset labels them) is held to the
	// same bars as predict's below.
	if o := exp.OpenSet; o == nil {
		t.Error("experiment --save reported no open-set count")
	} else {
		t.Logf("%s: experiment's open set: %d of %d known test captures called unknown, %d of %d never-trained", model, o.KnownUnknown, o.Known, o.NewUnknown, o.New)
		if o.Known != len(knownFiles) || o.New != len(unknown) || float64(o.Known-o.KnownUnknown) < minKnown*float64(o.Known) || float64(o.NewUnknown) < minUnknown*float64(o.New) {
			t.Errorf("experiment's open set %+v: want %d known and %d new captures, at most %.0f %% of the known called unknown and at least %.0f %% of the new",
				*o, len(knownFiles), len(unknown), 100*(1-minKnown), 100*minUnknown)
		}
	}

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
	if meta.Unknown.Familiarity == nil {
		t.Fatal("experiment --save stored no familiarity test")
	}
	t.Logf("threshold %.3f (%s) and familiarity %.3f, calibrated on %d held-out hosts, false unknown there %.3f",
		meta.Unknown.Threshold, meta.Unknown.Score, meta.Unknown.Familiarity.Threshold, meta.Unknown.Hosts, meta.Unknown.FalseUnknown)
	confs, fams := map[bool][]float64{}, map[bool][]float64{}
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
				if found.Familiarity != nil {
					fams[k] = append(fams[k], *found.Familiarity)
				}
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
	byConf, byFam := 0, 0
	for _, c := range confs[false] {
		if c < meta.Unknown.Threshold {
			byConf++
		}
	}
	for _, f := range fams[false] {
		if f < meta.Unknown.Familiarity.Threshold {
			byFam++
		}
	}
	t.Logf("%s: of the %d hosts of unknown types, %d are under the confidence threshold and %d under the familiarity one", model, len(confs[false]), byConf, byFam)
	for _, k := range []bool{true, false} {
		sort.Float64s(confs[k])
		sort.Float64s(fams[k])
		t.Logf("confidences of hosts of known types (%v) and of unknown ones: %.2f", k, confs[k])
		t.Logf("familiarities of hosts of known types (%v) and of unknown ones: %.2f", k, fams[k])
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

// sweepSpec writes a spec over a few small IoT Sentinel devices.
func sweepSpec(t *testing.T, body string) string {
	sentineldata.Need(t)
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"SmarterCoffee", "iKettle2", "HomeMaticPlug"} {
		src, err := filepath.Abs(filepath.Join(sentinelDir, d))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(src); err != nil {
			t.Skipf("IoT Sentinel captures not found: %v", err)
		}
		if err := os.Symlink(src, filepath.Join(dir, d)); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(t.TempDir(), "sweep.yaml")
	if err := os.WriteFile(file, []byte("from_dir: "+dir+"\n"+body), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestSweepCommand runs a sweep of a forest and an LSTM (1 epoch) through
// the command, reads sweep.json back, and runs it again: nothing is
// trained the second time.
func TestSweepCommand(t *testing.T) {
	spec := sweepSpec(t, "models: [rf, lstm]\nwindows: [20]\ncv: {mode: grouped, folds: 2}\nmodel_flags: {trees: 5, epochs: 1, hidden: 8}\n")
	home, outDir := t.TempDir(), t.TempDir()
	args := []string{"--home", home, "--device", "cpu", "--spec", spec, "--out", outDir, "--parallel", "2"}
	var out bytes.Buffer
	if err := runSweep(context.Background(), quiet(), &out, args); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	t.Log(out.String())
	if !strings.Contains(out.String(), "2 configurations, 4 tasks trained now, 0 found done") {
		t.Errorf("first run printed:\n%s", out.String())
	}
	var res sweep.Result
	data, err := os.ReadFile(filepath.Join(outDir, "sweep.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Configurations) != 2 || res.Configurations[0].Config.Model != "rf" || res.Configurations[1].Config.Model != "lstm" {
		t.Fatalf("sweep.json: %+v", res.Configurations)
	}
	for _, c := range res.Configurations {
		want := map[string]string{"rf": "trees=5", "lstm": "epochs=1 hidden=8"}[c.Config.Model]
		if len(c.Folds) != 2 || c.Mean.Accuracy <= 0 || c.Mean.TrainSeconds <= 0 || !strings.Contains(c.Label, want) {
			t.Errorf("%s: %d folds, mean %+v, flags %v", c.Label, len(c.Folds), c.Mean, c.Config.ModelFlags)
		}
	}
	if page, err := os.ReadFile(filepath.Join(outDir, "sweep.html")); err != nil || !bytes.Contains(page, []byte(res.Configurations[1].Hash)) {
		t.Errorf("sweep.html (%v) does not show configuration %s", err, res.Configurations[1].Hash)
	}

	out.Reset()
	if err := runSweep(context.Background(), quiet(), &out, args); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "2 configurations, 0 tasks trained now, 4 found done") {
		t.Errorf("second run printed:\n%s", out.String())
	}
}

// TestSweepTaskIndex runs a sweep as a cluster would: one task per call,
// with --gather failing until both are in.
func TestSweepTaskIndex(t *testing.T) {
	spec := sweepSpec(t, "models: [rf]\nwindows: [20]\ncv: {mode: grouped, folds: 2}\nmodel_flags: {trees: 5}\n")
	home, outDir := t.TempDir(), t.TempDir()
	run := func(extra ...string) (string, error) {
		var out bytes.Buffer
		err := runSweep(context.Background(), quiet(), &out, append([]string{"--home", home, "--device", "cpu", "--spec", spec}, extra...))
		return out.String(), err
	}
	if out, err := run("--task-index", "0"); err != nil || !strings.Contains(out, "task 0 (") || !strings.Contains(out, " ran: ") {
		t.Fatalf("task 0: %v\n%s", err, out)
	}
	if _, err := run("--gather", "--out", outDir); err == nil || !strings.Contains(err.Error(), "1 of 2 sweep tasks not done yet: 1 (") {
		t.Fatalf("gather with task 1 missing: %v", err)
	}
	if _, err := run("--task-index", "2"); err == nil || !strings.Contains(err.Error(), "tasks 0 to 1") {
		t.Errorf("task 2 of 2: %v", err)
	}
	if out, err := run("--task-index", "1"); err != nil {
		t.Fatalf("task 1: %v\n%s", err, out)
	}
	if out, err := run("--task-index", "1"); err != nil || !strings.Contains(out, "already done") {
		t.Errorf("task 1 again: %v\n%s", err, out)
	}
	if out, err := run("--gather", "--out", outDir); err != nil || !strings.Contains(out, "1 configurations, 0 tasks trained now, 2 found done") {
		t.Fatalf("gather: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(outDir, "sweep.html")); err != nil {
		t.Error(err)
	}
}

// TestSweepUsage: wrong specs and flags fail before anything is built.
func TestSweepUsage(t *testing.T) {
	spec := sweepSpec(t, "models: [rf]\nwindows: [20]\nmodel_flags: {bogus: 1}\n")
	for i, args := range [][]string{
		{"--out", "x"},
		{"--spec", spec, "--out", t.TempDir()},
		{"--spec", filepath.Join(t.TempDir(), "missing.yaml"), "--out", "x"},
	} {
		var out bytes.Buffer
		err := runSweep(context.Background(), quiet(), &out, append([]string{"--home", t.TempDir()}, args...))
		if !errors.Is(err, cli.ErrUsage) {
			t.Errorf("sweep %v: %v, want a usage error", args, err)
		}
		if i == 1 && (err == nil || !strings.Contains(err.Error(), "bogus is not a model flag")) {
			t.Errorf("sweep with model flag bogus: %v", err)
		}
	}
}
