package defensestudy

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/internal/sentineldata"

	"github.com/homemole/homemole/internal/chromiumtest"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/forest"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/gateway/defense"
	"github.com/homemole/homemole/pipeline/homegen"
)

const sentinelDir = "../../../shared/data/iot-sentinel-dev"

// TestStudyRF runs the forest on four IoT Sentinel devices, five captures
// each, under NAPT, undefended and under three defences: the undefended
// attack must beat always guessing one device (0.25), the costs must be
// those of each defence (none free but the undefended view).
func TestStudyRF(t *testing.T) {
	sentineldata.Need(t)
	specs := parseSpecs(t, "none", "pad:mtu", "cbr:20", "pad:mtu+cbr:20", "mimic:EdimaxPlug1101W")
	fc := smallForest(20)
	rows, err := Run(context.Background(), Config{Dir: sentinelDir, Devices: []string{"Aria", "D-LinkCam", "HueBridge", "TP-LinkPlugHS100"},
		MaxFiles: 5, Defenses: specs, Gateway: gateway.Config{Mode: gateway.NAPT}, Folds: 5, Window: 20, Seed: 1, Forest: fc})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(specs) {
		t.Fatalf("%d rows for %d defences", len(rows), len(specs))
	}
	for _, r := range rows {
		t.Logf("%+v", r)
		if r.Sessions != 20 {
			t.Errorf("%s: %d test sessions, want 20 (every capture held out once)", r.Defense, r.Sessions)
		}
	}
	if rows[0].SessionAccuracy <= 0.25 || rows[0].ByteOverhead != 0 || rows[0].LatencyMsMean != 0 {
		t.Errorf("undefended: %+v: want session accuracy above 0.25 and no cost", rows[0])
	}
	// One type per session, found by the verdict: detection F1 is above
	// chance's where the session accuracy is.
	if rows[0].DetectionF1 <= 0.25 || rows[0].DetectionF1 > 1 {
		t.Errorf("undefended: detection F1 %.3f, want in (0.25, 1]", rows[0].DetectionF1)
	}
	// mimic:DEVICE adds the other device's bursts: dummies, no padding, no wait.
	if m := rows[4]; m.PacketOverhead <= 0 || m.LatencyMsMean != 0 {
		t.Errorf("mimic: %+v: want dummies and no wait", m)
	}
	if rows[1].ByteOverhead <= 0 || rows[1].PacketOverhead != 0 {
		t.Errorf("pad:mtu: %+v: want bytes, no packets added", rows[1])
	}
	if rows[2].PacketOverhead <= 0 || rows[2].LatencyMsP99 <= 0 || rows[3].ByteOverhead <= rows[2].ByteOverhead {
		t.Errorf("cbr:20 %+v, pad:mtu+cbr:20 %+v: want dummies, waits, and padding to cost more", rows[2], rows[3])
	}
}

// TestPareto checks the front on a handmade set: per attack, a defence is
// on it unless another is at most as costly and leaves the attacker at
// most as accurate, one of them strictly.
func TestPareto(t *testing.T) {
	rows := []Row{
		{Defense: "none", Attack: "rf", SessionAccuracy: 0.9},
		{Defense: "a", Attack: "rf", SessionAccuracy: 0.5, KBps: 4},
		{Defense: "b", Attack: "rf", SessionAccuracy: 0.6, KBps: 5}, // dominated by a
		{Defense: "c", Attack: "rf", SessionAccuracy: 0.2, KBps: 30},
		{Defense: "d", Attack: "rf", SessionAccuracy: 0.5, KBps: 4},    // ties a: neither dominates
		{Defense: "b", Attack: "blstm", SessionAccuracy: 0.6, KBps: 5}, // alone for its attack
	}
	want := []bool{true, true, false, true, true, true}
	if got := Pareto(rows); !slices.Equal(got, want) {
		t.Errorf("front %v, want %v", got, want)
	}
}

// TestReportInChromium runs a small study and opens its HTML report in
// headless Chromium: every row, every plot point and every device's
// accuracy must be in the page it renders.
func TestReportInChromium(t *testing.T) {
	sentineldata.Need(t)
	chromium := chromiumtest.Find(t)
	specs := parseSpecs(t, "none", "pad:mtu", "cbr:20")
	fc := smallForest(10)
	devices := []string{"Aria", "D-LinkCam", "HueBridge"}
	rows, err := Run(context.Background(), Config{Dir: sentinelDir, Devices: devices, MaxFiles: 3, Defenses: specs,
		Gateway: gateway.Config{Mode: gateway.NAPT}, Folds: 3, Window: 20, Seed: 1, Forest: fc})
	if err != nil {
		t.Fatal(err)
	}
	page, err := HTML(rows)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "report.html")
	if err := os.WriteFile(file, page, 0o644); err != nil {
		t.Fatal(err)
	}
	dom := chromiumtest.Run(t, chromium, "--dump-dom", "file://"+file)
	for _, r := range rows {
		if !strings.Contains(dom, fmt.Sprintf(`data-defense="%s" data-attack="%s"><td>%s</td>`, r.Defense, r.Attack, r.Defense)) {
			t.Errorf("row %s/%s is not in the rendered table", r.Defense, r.Attack)
		}
		if len(r.PerDevice) != len(devices) {
			t.Errorf("%s: accuracy of %d devices, want %d: %v", r.Defense, len(r.PerDevice), len(devices), r.PerDevice)
		}
	}
	for _, class := range []string{`class="row`, `class="point"`, `class="device-row"`} {
		if n := strings.Count(dom, class); n != len(rows) {
			t.Errorf("%d of %s rendered, want %d", n, class, len(rows))
		}
	}
	for _, d := range devices {
		if !strings.Contains(dom, "<th>"+d+"</th>") {
			t.Errorf("no per-device column for %s", d)
		}
	}
	if !strings.Contains(dom, `class="front"`) || !strings.Contains(dom, "<svg") {
		t.Error("no plot with a Pareto front in the rendered page")
	}
}

// TestStudyGeneratedHome runs the forest on a generated home: every
// session capture holds every device, each device's packets picked by its
// MAC; undefended the forest must beat always guessing one device.
func TestStudyGeneratedHome(t *testing.T) {
	_, homes := generatedHomes(t, homegen.Config{Seed: 1, Sessions: 3, SessionDuration: 5 * time.Minute})
	fc := smallForest(10)
	rows, err := Run(context.Background(), Config{Homes: homes, Defenses: parseSpecs(t, "none"),
		Gateway: gateway.Config{Mode: gateway.NAPT}, Folds: 3, Window: 20, Seed: 1, Forest: fc})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d devices: %+v", len(homes), rows[0])
	if want := len(homes) * 3; rows[0].Sessions != want {
		t.Errorf("%d sessions, want %d (every device in every capture)", rows[0].Sessions, want)
	}
	if rows[0].SessionAccuracy <= 1/float64(len(homes)) {
		t.Errorf("undefended: session accuracy %.3f, want above %.3f", rows[0].SessionAccuracy, 1/float64(len(homes)))
	}
}

// TestDetectionF1 checks device detection on a handmade set of verdicts:
// per type 2tp / (2tp + fp + fn) over the sessions, averaged over the
// types held out; EdimaxCam1 and EdimaxCam2 are one type.
func TestDetectionF1(t *testing.T) {
	names := []string{"Aria", "HueBridge", "EdimaxCam1", "EdimaxCam2"}
	var d detection
	d.add(names, 0, []int{0})    // Aria found: tp Aria
	d.add(names, 0, []int{1})    // HueBridge for Aria: fp HueBridge, fn Aria
	d.add(names, 1, []int{1, 0}) // both found: tp HueBridge, fp Aria
	d.add(names, 2, []int{3})    // the same camera type: tp
	d.add(names, 3, nil)         // nothing found: fn the camera
	// Aria: tp 1, fp 1, fn 1 -> 0.5; HueBridge: tp 1, fp 1 -> 2/3; camera: tp 1, fn 1 -> 2/3.
	want := (0.5 + 2.0/3 + 2.0/3) / 3
	if got := d.macroF1(); math.Abs(got-want) > 1e-12 {
		t.Errorf("macro F1 %.6f, want %.6f", got, want)
	}
}

// TestStudyActivity runs the user-activity attack in the study on a
// generated home: undefended, the smart plug's switchings are found in
// its held-out sessions with F1 >= 0.9, and every defence's row reports
// what is left of it, stp's among them.
func TestStudyActivity(t *testing.T) {
	h, homes := generatedHomes(t, homegen.Config{Seed: 5, Sessions: 4, SessionDuration: 15 * time.Minute})
	acts := Switchings(h)
	if acts == nil || len(acts.At) < 8 {
		t.Fatalf("switchings %+v: want 8 or more", acts)
	}
	specs := parseSpecs(t, "none", "stp:30")
	fc := smallForest(5)
	rows, err := Run(context.Background(), Config{Homes: homes, Defenses: specs, Actions: acts,
		Gateway: gateway.Config{Mode: gateway.NAPT}, Folds: 2, Window: 20, Seed: 1, Forest: fc})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.ActivityF1 == nil || r.Activity == nil {
			t.Fatalf("%s: no activity_f1", r.Defense)
		}
		t.Logf("%s: activity F1 %.3f %+v", r.Defense, *r.ActivityF1, *r.Activity)
		if r.Activity.Actions != len(acts.At) {
			t.Errorf("%s: %d switchings judged, want every one of the %d (each session is held out once)", r.Defense, r.Activity.Actions, len(acts.At))
		}
	}
	if f := *rows[0].ActivityF1; f < 0.9 {
		t.Errorf("undefended activity F1 %.3f, want >= 0.9", f)
	}
	if *rows[1].ActivityF1 > *rows[0].ActivityF1 {
		t.Errorf("stp:30 activity F1 %.3f above the undefended %.3f", *rows[1].ActivityF1, *rows[0].ActivityF1)
	}
}

// TestSurvey: the peak is the most WAN packets one way in one second of
// any studied capture, counted here again from each packet forwards; the
// longest span is the longest capture's, first WAN packet to last.
func TestSurvey(t *testing.T) {
	if _, err := os.Stat(sentinelDir); err != nil {
		t.Skipf("IoT Sentinel captures not at %s: %v", sentinelDir, err)
	}
	cfg := Config{Dir: sentinelDir, Devices: []string{"Aria", "HueBridge"}, MaxFiles: 2, Gateway: gateway.Config{Mode: gateway.NAPT}, Seed: 1}
	tr, err := Survey(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	peak, where := tr.Peak, tr.PeakIn
	devs, err := deviceDirs(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want, at := 0, ""
	var longest time.Duration
	for _, d := range devs {
		for k, f := range d.Files[:2] {
			view, _, err := wanView(context.Background(), cfg, f, uint64(k))
			if err != nil {
				t.Fatal(err)
			}
			if len(view) > 0 {
				longest = max(longest, time.Duration(view[len(view)-1].TS-view[0].TS))
			}
			for i, p := range view {
				way := defense.Outbound(p.Frame, gateway.DefaultConfig().WANAddr)
				n := 0
				for _, q := range view[i:] {
					if q.TS >= p.TS+int64(time.Second) {
						break
					}
					if defense.Outbound(q.Frame, gateway.DefaultConfig().WANAddr) == way {
						n++
					}
				}
				if n > want {
					want, at = n, f
				}
			}
		}
	}
	t.Logf("peak %d packets/s in %s; longest %s in %s", peak, where, tr.Longest, tr.LongestIn)
	if peak != want || where != at || peak < 2 {
		t.Errorf("peak %d in %s, want %d in %s", peak, where, want, at)
	}
	if tr.Longest != longest || longest < time.Second {
		t.Errorf("longest span %s, want %s", tr.Longest, longest)
	}
}

// parseSpecs parses a study's defences; one that does not parse fails the
// test.
func parseSpecs(t *testing.T, texts ...string) []defense.Spec {
	t.Helper()
	var specs []defense.Spec
	for _, s := range texts {
		sp, err := defense.ParseSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		specs = append(specs, sp)
	}
	return specs
}

// smallForest is the default forest cut to a few trees, to keep the tests
// short, on one worker.
func smallForest(trees int) forest.Config {
	fc := forest.DefaultConfig()
	fc.Trees, fc.Workers = trees, 1
	return fc
}

// generatedHomes generates cfg's home and takes its devices as the
// study's homes.
func generatedHomes(t *testing.T, cfg homegen.Config) (*homegen.Home, []campaign.DeviceDir) {
	t.Helper()
	h, err := homegen.Generate(cfg, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	homes, err := GeneratedHome(h)
	if err != nil {
		t.Fatal(err)
	}
	return h, homes
}

// blind is a session attack whose detectors find nothing.
type blind struct{}

func (blind) Name() string { return "blind" }

func (blind) Detect(_ context.Context, _, test []Session, _ []string, _ uint64) ([][]int, error) {
	return make([][]int, len(test)), nil
}

// TestNothingFoundGuessesTheCommonest: a session attack that finds no
// device names the commonest device of its training sessions, so it
// scores what always guessing scores, and detects nothing.
func TestNothingFoundGuessesTheCommonest(t *testing.T) {
	names := []string{"A", "B", "C"}
	// Device 1 has the most sessions in every fold's training set.
	var sessions []session
	var fold []int
	for i, d := range []int{1, 1, 1, 1, 0, 2, 1, 1} {
		sessions = append(sessions, session{device: d, file: fmt.Sprint(i)})
		fold = append(fold, i%2)
	}
	var row Row
	if err := judge(context.Background(), Config{Folds: 2}, blind{}, names, sessions, fold, &row); err != nil {
		t.Fatal(err)
	}
	if row.Sessions != 8 || row.SessionAccuracy != 0.75 || row.TypeAccuracy != 0.75 {
		t.Errorf("%d sessions, session accuracy %g, type accuracy %g; want 8, and 0.75 (B's share) for both", row.Sessions, row.SessionAccuracy, row.TypeAccuracy)
	}
	if row.DetectionF1 != 0 {
		t.Errorf("detection F1 %g with nothing found, want 0", row.DetectionF1)
	}
}
