package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/schemas/windowfile"
	"github.com/homemole/homemole/services/internal/cli"
)

// buildGenerated builds dataset NAME/v1 from a home generated with gen by
// `homemole build` (extra flags in args), in embedded mode under a
// temporary home, and returns that home and the manifest.
func buildGenerated(t *testing.T, name string, gen homegen.Config, args ...string) (home string, m *dataset.Manifest) {
	t.Helper()
	t.Setenv("HOMEMOLE_NATS_URL", "")
	t.Setenv("HOMEMOLE_S3_ENDPOINT", "")
	dir := t.TempDir()
	h, err := homegen.Generate(gen, filepath.Join(dir, "captures"))
	if err != nil {
		t.Fatal(err)
	}
	c := h.Campaign(name, "home-1")
	file := filepath.Join(dir, "campaign.yaml")
	if err := writeCampaign(file, c); err != nil {
		t.Fatal(err)
	}
	home = filepath.Join(dir, "state")
	ctx := context.Background()
	var out bytes.Buffer
	if err := runBuild(ctx, quiet(), &out, append([]string{"--home", home, "--campaign", file, "--dataset", name}, args...)); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	env := openHome(t, home)
	defer env.Close()
	if m, err = dataset.Load(ctx, env.Store, name, "v1"); err != nil {
		t.Fatal(err)
	}
	return home, m
}

// openHome opens the embedded servers of a test's state folder; close
// them before a command under test opens the folder itself.
func openHome(t *testing.T, home string) *endpoints.Env {
	t.Helper()
	ep := endpoints.FromEnv()
	ep.Home = home
	env, err := endpoints.Open(context.Background(), ep, "homemole-test", quiet())
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// exportFixture builds a small dataset ("js/v1", windows of 20 packets)
// from a generated home and returns its home with the Go reader's view of
// it.
func exportFixture(t *testing.T) (home string, m *dataset.Manifest, ws []*schemas.Window, object []byte) {
	t.Helper()
	home, m = buildGenerated(t, "js", homegen.Config{Seed: 3, Sessions: 2, SessionDuration: 3 * time.Minute}, "--kind", "noise", "--window", "20")
	env := openHome(t, home)
	defer env.Close()
	ctx := context.Background()
	var err error
	if ws, err = dataset.Windows(ctx, env.Store, m, nil); err != nil {
		t.Fatal(err)
	}
	if len(m.Groups) < 2 || len(ws) < 10 {
		t.Fatalf("the fixture has %d sessions and %d windows; the test needs two sessions and a few windows", len(m.Groups), len(ws))
	}
	if object, err = env.Store.Get(ctx, m.Parts[0].Objects[0].Key); err != nil {
		t.Fatal(err)
	}
	return home, m, ws, object
}

func TestDatasetExportCommands(t *testing.T) {
	ctx := context.Background()
	home, m, ws, object := exportFixture(t)
	dir := t.TempDir()

	t.Run("to-pcap range", func(t *testing.T) {
		path := filepath.Join(dir, "range.pcap")
		var out bytes.Buffer
		err := runDataset(ctx, quiet(), &out, []string{"to-pcap", "--home", home, "--dataset", "js", "--from", "2", "--to", "5", "--out", path})
		if err != nil {
			t.Fatal(err)
		}
		pkts := readCapture(t, path)
		var want []int32
		for _, w := range ws[2:5] {
			want = append(want, w.DPort[:w.Len]...)
		}
		if got := dports(pkts); !reflect.DeepEqual(got, want) {
			t.Errorf("windows 2..4 as pcap: destination ports %v, want %v", got, want)
		}
		if !strings.Contains(out.String(), strconv.Itoa(len(want))+" packets of 3 windows") {
			t.Errorf("to-pcap said %q", out.String())
		}
	})

	t.Run("to-pcap one window of one session", func(t *testing.T) {
		w := ws[len(ws)-1]
		path := filepath.Join(dir, "one.pcap")
		err := runDataset(ctx, quiet(), io.Discard, []string{"to-pcap", "--home", home, "--dataset", "js", "--session", w.Session, "--window", w.ID, "--out", path})
		if err != nil {
			t.Fatal(err)
		}
		pkts := readCapture(t, path)
		if len(pkts) != w.Len || pkts[0].TsNs != w.TsNs[0] || pkts[len(pkts)-1].FrameLen != uint32(w.FrameLen[w.Len-1]) {
			t.Errorf("window %s as pcap: %d packets, want %d with the window's timestamps and lengths", w.ID, len(pkts), w.Len)
		}
	})

	t.Run("export one session", func(t *testing.T) {
		path := filepath.Join(dir, "one.parquet")
		var out bytes.Buffer
		err := runDataset(ctx, quiet(), &out, []string{"export", "--home", home, "--dataset", "js", "--session", m.Groups[1], "--out", path})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, w := range ws {
			if w.Group == m.Groups[1] {
				n++
			}
		}
		if !strings.Contains(out.String(), strconv.Itoa(n)+" windows of 20 packets") {
			t.Errorf("export of session %s said %q, want %d windows", m.Groups[1], out.String(), n)
		}
	})

	t.Run("errors", func(t *testing.T) {
		for name, c := range map[string]struct {
			args  []string
			usage bool
			want  string
		}{
			"export without --out":  {[]string{"export", "--home", home, "--dataset", "js"}, true, "--out"},
			"to-pcap empty range":   {[]string{"to-pcap", "--home", home, "--dataset", "js", "--out", "x", "--from", "3", "--to", "3"}, true, "selects no window"},
			"to-pcap window and to": {[]string{"to-pcap", "--home", home, "--dataset", "js", "--out", "x", "--window", "w", "--to", "3"}, true, "not both"},
			"unknown session":       {[]string{"export", "--home", home, "--dataset", "js", "--out", filepath.Join(dir, "x"), "--session", "nope"}, false, "no session \"nope\""},
			"unknown window":        {[]string{"to-pcap", "--home", home, "--dataset", "js", "--out", filepath.Join(dir, "x"), "--window", "nope"}, false, "window_id column"},
		} {
			err := runDataset(ctx, quiet(), io.Discard, c.args)
			if err == nil || !strings.Contains(err.Error(), c.want) || errors.Is(err, cli.ErrUsage) != c.usage {
				t.Errorf("%s: got %v, want an error with %q (usage error: %v)", name, err, c.want, c.usage)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "x")); !os.IsNotExist(err) {
			t.Errorf("a failed command left its output file behind (%v)", err)
		}
	})

	// Readers outside Go: apache-arrow on one dataset object, DuckDB on the
	// Parquet export, through tools/jscheck.
	t.Run("javascript readers", func(t *testing.T) {
		jscheck := jscheckReady(t)
		pqPath := filepath.Join(dir, "all.parquet")
		if err := runDataset(ctx, quiet(), io.Discard, []string{"export", "--home", home, "--dataset", "js", "--out", pqPath}); err != nil {
			t.Fatal(err)
		}
		got := checkJSReaders(t, jscheck, dir, object, pqPath, ws)
		if v := got.Arrow.Metadata["homemole.window.version"]; v != strconv.Itoa(schemas.WindowSchemaVersion) {
			t.Errorf("apache-arrow sees window schema version %q", v)
		}
		if !reflect.DeepEqual(got.Parquet.Vocabulary, m.Labels) {
			t.Errorf("DuckDB reads the label vocabulary %q, the manifest has %q", got.Parquet.Vocabulary, m.Labels)
		}
	})
}

// checkJSReaders has tools/jscheck's readers read an Arrow object (written
// to dir) and the Parquet export pq, and fails where apache-arrow's windows
// differ from the Go reader's of the object, or DuckDB's from ws, the
// windows exported. It returns what they read, for further checks.
func checkJSReaders(t *testing.T, jscheck, dir string, object []byte, pq string, ws []*schemas.Window) jsResult {
	t.Helper()
	objPath := filepath.Join(dir, "object.arrow")
	if err := os.WriteFile(objPath, object, 0o644); err != nil {
		t.Fatal(err)
	}
	got := jsRead(t, jscheck, objPath, pq)
	objWindows, err := windowfile.Decode(object)
	if err != nil {
		t.Fatal(err)
	}
	if want := asJS(objWindows); !reflect.DeepEqual(got.Arrow.Windows, want) {
		t.Errorf("apache-arrow reads %d windows from the %d-byte object that differ from the Go reader's %d:\n got %v\nwant %v",
			len(got.Arrow.Windows), len(object), len(want), head(got.Arrow.Windows), head(want))
	}
	if want := asJS(ws); !reflect.DeepEqual(got.Parquet.Windows, want) {
		t.Errorf("DuckDB reads %d windows from the export %s that differ from the Go reader's %d:\n got %v\nwant %v",
			len(got.Parquet.Windows), pq, len(want), head(got.Parquet.Windows), head(want))
	}
	return got
}

// jsResult is what tools/jscheck's readers (apache-arrow, DuckDB) find in an
// Arrow object and a Parquet export.
type jsResult struct {
	Arrow struct {
		Metadata map[string]string `json:"metadata"`
		Windows  []jsWindow        `json:"windows"`
	} `json:"arrow"`
	Parquet struct {
		Vocabulary []string   `json:"labels_vocabulary"`
		Windows    []jsWindow `json:"windows"`
	} `json:"parquet"`
}

// jsRead runs tools/jscheck's readers on an object and an export.
func jsRead(t *testing.T, jscheck, object, parquet string) jsResult {
	t.Helper()
	cmd := exec.Command("node", "check.mjs", object, parquet)
	cmd.Dir = jscheck
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("node check.mjs: %v\n%s", err, stderr.String())
	}
	var got jsResult
	if err := json.Unmarshal(stdout, &got); err != nil {
		t.Fatalf("check.mjs printed %d bytes: %v", len(stdout), err)
	}
	return got
}

type jsWindow struct {
	ID       string  `json:"id"`
	NPackets int     `json:"n_packets"`
	Labels   []int16 `json:"labels"`
}

func asJS(ws []*schemas.Window) []jsWindow {
	out := make([]jsWindow, len(ws))
	for i, w := range ws {
		out[i] = jsWindow{ID: w.ID, NPackets: w.Len, Labels: w.Label}
	}
	return out
}

func head(ws []jsWindow) []jsWindow { return ws[:min(len(ws), 2)] }

// jscheckReady returns tools/jscheck with its npm dependencies installed,
// running `npm ci` when node_modules is missing or older than the lock file;
// it skips the test when node or npm is not installed.
func jscheckReady(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed, so the apache-arrow and DuckDB readers are not checked: `sudo apt-get install -y nodejs npm`", tool)
		}
	}
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "tools", "jscheck"))
	if err != nil {
		t.Fatal(err)
	}
	lock, err := os.Stat(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		t.Fatalf("tools/jscheck has no package-lock.json: %v", err)
	}
	if inst, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json")); err == nil && !inst.ModTime().Before(lock.ModTime()) {
		return dir
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s\n(the npm registry must be reachable once; after that node_modules is reused)", dir, err, out)
	}
	return dir
}

// readCapture decodes a capture the way `homemole features` does, with the
// LAN of reconstructed captures.
func readCapture(t *testing.T, path string) []schemas.Packet {
	t.Helper()
	return capturetest.Packets(t, path, features.HomeConfig{LANNets: []netip.Prefix{dataset.PcapLANNet}})
}

func dports(ps []schemas.Packet) []int32 {
	out := make([]int32, len(ps))
	for i, p := range ps {
		out[i] = p.DPort
	}
	return out
}

// TestLargeDatasetObjects: a busy session's windows make Arrow objects
// over 16 MiB (minio-go uploads them in parts, which the embedded S3 once
// stored with their chunk framing); the dataset verifies, and its Parquet
// export, also over 16 MiB, reads back in DuckDB window for window.
func TestLargeDatasetObjects(t *testing.T) {
	ctx := context.Background()
	home, m := buildGenerated(t, "big", homegen.Config{Seed: 5, Sessions: 5, SessionDuration: 220 * time.Minute, Household: homegen.HouseholdPaper},
		"--kind", "noise", "--window", "1000", "--cap", "0")
	var largest store.ObjectInfo
	for _, p := range m.Parts {
		for _, o := range p.Objects {
			if o.Size > largest.Size {
				largest = o
			}
		}
	}
	if largest.Size <= 16<<20 {
		t.Fatalf("the largest object is %d bytes; the test needs one over 16 MiB (a longer session)", largest.Size)
	}
	t.Logf("largest object %s: %.1f MiB", largest.Key, float64(largest.Size)/(1<<20))
	var out bytes.Buffer
	if err := runDataset(ctx, quiet(), &out, []string{"verify", "--home", home, "--dataset", "big"}); err != nil {
		t.Fatalf("verify: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "hashes and counts match") {
		t.Errorf("verify said %q", out.String())
	}
	dir := t.TempDir()
	pq := filepath.Join(dir, "big.parquet")
	if err := runDataset(ctx, quiet(), io.Discard, []string{"export", "--home", home, "--dataset", "big", "--out", pq}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(pq)
	if err != nil || fi.Size() <= 16<<20 {
		t.Fatalf("the export is %v bytes (%v); the test needs one over 16 MiB", fi.Size(), err)
	}
	t.Logf("Parquet export: %.1f MiB", float64(fi.Size())/(1<<20))
	check := exec.Command("sha256sum", "-c", "big.parquet.sha256")
	check.Dir = dir
	if sum, err := check.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c on the export's recorded hash: %v\n%s", err, sum)
	}
	env := openHome(t, home)
	object, err := env.Store.Get(ctx, largest.Key)
	if err != nil {
		env.Close()
		t.Fatal(err)
	}
	ws, err := dataset.Windows(ctx, env.Store, m, nil)
	env.Close()
	if err != nil {
		t.Fatal(err)
	}
	jscheck := jscheckReady(t)
	checkJSReaders(t, jscheck, dir, object, pq, ws)
}

// TestStoreCommandsOpenNoNATS: commands that only read objects work with
// a --nats nothing answers at, and start no JetStream in their state.
func TestStoreCommandsOpenNoNATS(t *testing.T) {
	home := filepath.Join(t.TempDir(), "state")
	t.Setenv("HOMEMOLE_S3_ENDPOINT", "")
	ctx := context.Background()
	for _, args := range [][]string{
		{"ls", "--home", home, "--nats", "nats://127.0.0.1:1"},
		{"verify", "--home", home, "--nats", "nats://127.0.0.1:1", "--dataset", "none"},
	} {
		var out bytes.Buffer
		err := runDataset(ctx, quiet(), &out, args)
		if args[0] == "ls" && err != nil {
			t.Errorf("dataset ls with an unreachable NATS: %v", err)
		}
		// verify of a dataset that is not there fails on the store, not on NATS.
		if args[0] == "verify" && (err == nil || strings.Contains(err.Error(), "nats") || !strings.Contains(err.Error(), "none")) {
			t.Errorf("dataset verify --dataset none: %v, want the store's answer about it", err)
		}
	}
	if _, err := os.Stat(filepath.Join(home, "nats")); !os.IsNotExist(err) {
		t.Errorf("dataset ls started JetStream (%s: %v)", filepath.Join(home, "nats"), err)
	}
}

// TestBuildNameIsDeprecated: one --dataset everywhere; build's old --name
// still works, says so, and may not contradict --dataset.
func TestBuildNameIsDeprecated(t *testing.T) {
	ctx := context.Background()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var out bytes.Buffer
	// No --campaign: the usage error comes after the flags are read.
	err := runDataset(ctx, log, &out, []string{"build", "--name", "d"})
	if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), "--campaign") {
		t.Errorf("build --name d without a campaign: %v", err)
	}
	if !strings.Contains(logs.String(), "--name is deprecated") || !strings.Contains(logs.String(), "use --dataset") {
		t.Errorf("no deprecation warning: %q", logs.String())
	}
	err = runBuild(ctx, log, &out, []string{"--name", "d", "--dataset", "e", "--campaign", "x.yaml"})
	if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), "disagree") {
		t.Errorf("--name d --dataset e: %v, want a usage error", err)
	}
}
