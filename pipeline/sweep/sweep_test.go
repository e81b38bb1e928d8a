package sweep

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/homemole/homemole/internal/chromiumtest"
	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/train"
)

// smallDevices are IoT Sentinel devices with small captures: a sweep over
// them trains in seconds.
var smallDevices = []string{"SmarterCoffee", "iKettle2", "HomeMaticPlug", "EdnetGateway"}

// devicesDir links a few devices' folders into a folder of their own.
func devicesDir(t *testing.T, devices ...string) string {
	t.Helper()
	data := sentineldata.Need(t)
	dir := t.TempDir()
	for _, d := range devices {
		if err := os.Symlink(filepath.Join(data, d), filepath.Join(dir, d)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// forestSpec reads the few model flags these tests sweep; the CLI reads
// all of them through the flags homemole train has.
func forestSpec(model string, flags map[string]string) (train.Spec, error) {
	s := train.Spec{Name: model, Trees: 100}
	s.Learn.Epochs = 1
	for k, v := range flags {
		n, err := strconv.Atoi(v)
		if err != nil {
			return s, err
		}
		switch k {
		case "trees":
			s.Trees = n
		default:
			return s, errors.New("unknown model flag " + k)
		}
	}
	return s, nil
}

type env struct {
	*endpoints.Env
	home string
}

func open(t *testing.T, home string) env {
	t.Helper()
	e, err := endpoints.Open(context.Background(), endpoints.Config{Home: home, S3Bucket: "homemole"}, "sweep-test", quiet())
	if err != nil {
		t.Fatal(err)
	}
	return env{e, home}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newSweep(t *testing.T, e env, spec string, parallel int) *Sweep {
	t.Helper()
	s, err := Parse(strings.NewReader(spec), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return &Sweep{Spec: s, SpecOf: forestSpec, Parallel: parallel, Cipher: gateway.AES256GCM, WorkDir: e.home,
		Bus: e.Bus, Store: e.Store, Log: quiet()}
}

// TestSweepSmall runs 2 forests x 2 views (the second built in the same
// process, as a sweep does) with grouped 2-fold CV on four
// IoT Sentinel devices and checks sweep.json's figures against the stored
// fold records, and sweep.html in headless Chromium.
func TestSweepSmall(t *testing.T) {
	dir := devicesDir(t, smallDevices...)
	e := open(t, t.TempDir())
	defer e.Close()
	spec := "from_dir: " + dir + "\nmodels: [rf]\nviews: [lan, napt]\nwindows: [20]\nseeds: [1]\ncv: {mode: grouped, folds: 2}\nmodel_flags: {trees: [5, 10]}\n"
	s := newSweep(t, e, spec, 2)
	res, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Configurations) != 4 || res.Ran != 8 || res.Reused != 0 {
		t.Fatalf("%d configurations, %d tasks ran, %d reused; want 4, 8, 0", len(res.Configurations), res.Ran, res.Reused)
	}
	seen := map[string]bool{}
	for _, c := range res.Configurations {
		if seen[c.Hash] {
			t.Errorf("two configurations share hash %s", c.Hash)
		}
		seen[c.Hash] = true
		t.Logf("%s: accuracy %.3f ± %.3f, session accuracy %.3f", c.Label, c.Mean.Accuracy, c.Spread.Accuracy, c.Mean.SessionAccuracy)
		if len(c.Folds) != 2 {
			t.Fatalf("%s: %d folds, want 2", c.Label, len(c.Folds))
		}
		var sum float64
		for _, f := range c.Folds {
			data, err := e.Store.Get(context.Background(), TaskKey(c.Hash, f.Fold))
			if err != nil {
				t.Fatalf("%s fold %d: no stored result: %v", c.Label, f.Fold, err)
			}
			var tr TaskResult
			if err := json.Unmarshal(data, &tr); err != nil {
				t.Fatal(err)
			}
			if tr.Fold.Accuracy != f.Accuracy || tr.Config.Hash() != c.Hash {
				t.Errorf("%s fold %d: stored accuracy %v (config %s), summary %v", c.Label, f.Fold, tr.Fold.Accuracy, tr.Config.Hash(), f.Accuracy)
			}
			if f.TestWindows == 0 || f.TrainWindows == 0 {
				t.Errorf("%s fold %d: %d training, %d held-out windows", c.Label, f.Fold, f.TrainWindows, f.TestWindows)
			}
			sum += f.Accuracy
		}
		if mean := sum / 2; abs(mean-c.Mean.Accuracy) > 1e-12 {
			t.Errorf("%s: mean accuracy %v, folds average %v", c.Label, c.Mean.Accuracy, mean)
		}
		// Four devices: a forest that learned nothing would score about a quarter.
		if c.Mean.Accuracy < 0.5 || c.Mean.Accuracy > 1 {
			t.Errorf("%s: mean accuracy %.3f, want a forest that learned the devices (> 0.5)", c.Label, c.Mean.Accuracy)
		}
	}
	if best := res.Best(); len(best) != 2 || best[0].Config.View != "lan" || best[1].Config.View != "napt" {
		t.Errorf("best per view: %+v, want one for lan and one for napt", best)
	}

	page, err := res.HTML()
	if err != nil {
		t.Fatal(err)
	}
	chromium := chromiumtest.Find(t)
	file := filepath.Join(t.TempDir(), "sweep.html")
	if err := os.WriteFile(file, page, 0o644); err != nil {
		t.Fatal(err)
	}
	dom := chromiumtest.Run(t, chromium, "--dump-dom", "--virtual-time-budget=3000", "file://"+file)
	if !strings.Contains(dom, `data-sorted="8 down"`) {
		t.Errorf("the table was not sorted by its script (no data-sorted=\"8 down\"): the page's JavaScript did not run")
	}
	for _, c := range res.Configurations {
		if !strings.Contains(dom, `data-hash="`+c.Hash+`"`) {
			t.Errorf("configuration %s (%s) is not in the page Chromium rendered", c.Label, c.Hash)
		}
	}
	if n := strings.Count(dom, `class="config"`); n != len(res.Configurations) {
		t.Errorf("%d configuration rows rendered, want %d", n, len(res.Configurations))
	}
	if !strings.Contains(dom, "<svg") {
		t.Error("no plot (svg) in the rendered page")
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// TestSweepResumes cancels a sweep after its first finished task, as a
// kill would, and runs it again: the finished task is read back, not
// trained again, and only the rest run.
func TestSweepResumes(t *testing.T) {
	dir := devicesDir(t, smallDevices[:3]...)
	home := t.TempDir()
	spec := "from_dir: " + dir + "\nmodels: [rf]\nwindows: [20]\ncv: {mode: grouped, folds: 3}\nmodel_flags: {trees: 5}\n"

	e := open(t, home)
	s := newSweep(t, e, spec, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var done []Task
	s.OnTask = func(tk Task, reused bool) {
		if reused {
			t.Errorf("first run: task %s fold %d reused from nothing", tk.Config.Label(), tk.Fold)
		}
		done = append(done, tk)
		cancel()
	}
	_, err := s.Run(ctx)
	cancel()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled sweep returned %v, want context.Canceled", err)
	}
	if len(done) != 1 {
		t.Fatalf("%d tasks finished before the cancel, want 1", len(done))
	}
	first, err := e.Store.Get(context.Background(), done[0].Key())
	if err != nil {
		t.Fatal(err)
	}
	e.Close()

	// A new process: the same state, opened again.
	e = open(t, home)
	defer e.Close()
	s = newSweep(t, e, spec, 1)
	var reran []int
	s.OnTask = func(tk Task, reused bool) {
		if !reused {
			reran = append(reran, tk.Fold)
		} else if tk.Fold != done[0].Fold {
			t.Errorf("fold %d reused, but only fold %d had finished", tk.Fold, done[0].Fold)
		}
	}
	res, err := s.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Reused != 1 || res.Ran != 2 || len(reran) != 2 {
		t.Fatalf("restart: %d reused, %d ran (folds %v); want 1 reused, 2 ran", res.Reused, res.Ran, reran)
	}
	for _, f := range reran {
		if f == done[0].Fold {
			t.Errorf("fold %d finished in the first run and was trained again", f)
		}
	}
	again, err := e.Store.Get(context.Background(), done[0].Key())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, again) {
		t.Errorf("the finished task's stored result changed on restart:\n%s\n%s", first, again)
	}
	if len(res.Configurations) != 1 || len(res.Configurations[0].Folds) != 3 {
		t.Fatalf("summary: %+v, want 1 configuration of 3 folds", res.Configurations)
	}
}

// TestParseStrict: unknown keys and bad grids are refused with what to fix.
func TestParseStrict(t *testing.T) {
	for _, c := range []struct{ spec, want string }{
		{"from_dir: x\nmodels: [rf]\nwindows: [20]\nepochs: 3\n", "field epochs not found"},
		{"from_dir: x\nmodels: [rf]\nwindows: [20]\ncv: {mode: grouped, k: 3}\n", "field k not found"},
		{"models: [rf]\nwindows: [20]\n", "give from_dir"},
		{"from_dir: x\ndataset: d\nmodels: [rf]\n", "one of them"},
		{"from_dir: x\nmodels: [svm]\nwindows: [20]\n", "svm"},
		{"from_dir: x\nmodels: [rf]\nwindows: [0]\n", "windows: 0"},
		{"from_dir: x\nmodels: [rf]\nviews: [wan]\nwindows: [20]\n", `views: "wan"`},
		{"from_dir: x\nmodels: [rf]\nwindows: [20]\ncv: {mode: loo}\n", `cv.mode "loo"`},
		{"dataset: d\nmodels: [rf]\nwindows: [20]\n", "the dataset's own"},
		{"from_dir: x\nmodels: [rf]\nwindows: [20]\nmodel_flags: {device: cuda}\n", "model_flags.device"},
		{"", "is empty"},
	} {
		_, err := Parse(strings.NewReader(c.spec), "bad.yaml")
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bad.yaml") {
			t.Errorf("spec %q: error %v, want one naming bad.yaml and %q", c.spec, err, c.want)
		}
	}
	s, err := Parse(strings.NewReader("from_dir: x\nmodels: [rf, blstm]\nviews: [lan, napt]\nwindows: [20, 40, 100]\nmodel_flags: {epochs: [1, 2], hidden: 8}\n"), "ok.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cs := s.Configurations()
	// The forest ignores epochs and hidden: one forest per view and window.
	if len(cs) != 2*3+2*3*2 {
		t.Fatalf("%d configurations, want 6 forests and 12 BLSTMs", len(cs))
	}
	for _, c := range cs {
		if (c.Model == "rf") != (c.ModelFlags == nil) || (c.Model == "blstm" && c.ModelFlags["hidden"] != "8") {
			t.Errorf("%s: model flags %v", c.Label(), c.ModelFlags)
		}
	}
	hashes := map[string]bool{}
	for _, c := range cs {
		hashes[c.Hash()] = true
	}
	if len(hashes) != len(cs) || s.CV.Mode != train.CVGrouped || s.CV.Folds != 5 {
		t.Errorf("%d distinct hashes of %d configurations; cv %+v (want grouped, 5)", len(hashes), len(cs), s.CV)
	}
}

// TestExamplesParse: the specs shipped in examples/ stay valid, with the
// grids their comments describe.
func TestExamplesParse(t *testing.T) {
	for name, want := range map[string]int{"sweep-window-study.yaml": 3, "sweep-napt-vpn.yaml": 4, "sweep-cluster.yaml": 4} {
		f, err := os.Open(filepath.Join("../../examples", name))
		if err != nil {
			t.Fatal(err)
		}
		s, err := Parse(f, name)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if n := len(s.Configurations()); n != want {
			t.Errorf("%s: %d configurations, want %d", name, n, want)
		}
	}
}
