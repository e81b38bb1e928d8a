package train

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/schemas"
)

// twoDevices makes ind windows of two devices, a session (group) each
// window's: device 0 talks TLS in small frames, device 1 DNS in large
// ones, with noise so that not every packet is telling.
func twoDevices(rng *rand.Rand, sessions, perSession, n int) []*schemas.Window {
	var ws []*schemas.Window
	for s := range sessions {
		dev := int16(s % 2)
		for k := range perSession {
			w := schemas.NewWindow(n)
			w.ID, w.Group, w.Len = fmt.Sprintf("s%d/%d", s, k), fmt.Sprintf("h/s%d", s), n
			for i := range n {
				w.DPort[i], w.FrameLen[i] = 443, 80+rng.Int32N(60)
				if dev == 1 {
					w.DPort[i], w.FrameLen[i] = 53, 400+rng.Int32N(200)
				}
				if rng.Float64() < 0.2 { // shared background: either device
					w.DPort[i], w.FrameLen[i] = 123, 90
				}
				w.Interval[i] = float32(rng.ExpFloat64())
				w.ProtoBits[i] = schemas.ProtoIP | schemas.ProtoUDP
				w.Direction[i] = schemas.DirOutbound
				w.Label[i] = dev
			}
			ws = append(ws, w)
		}
	}
	return ws
}

func TestCalibrate(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	log := embeddedtest.Log()
	fit := twoDevices(rng, 6, 10, 20)
	m, err := Spec{Name: "rf", Learn: learn.Config{Seed: 1}, Trees: 20}.Fit(context.Background(), fit, 2, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	trained := NewKindSets(2)
	trained.Add(fit...)
	held := twoDevices(rng, 20, 3, 20)
	h, err := Calibrate(m, held, trained, 2, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	o := h.Unknown
	t.Logf("%+v", *o)
	if o.Score != ScoreMeanProb || o.Hosts != 20 || len(o.Sessions) != 20 {
		t.Errorf("calibrated %+v: want the mean probability over 20 held-out hosts", *o)
	}
	// Each test's threshold is the 5th percentile of 20 hosts, the second
	// lowest, so each calls at most one known host (5 %) unknown and the
	// two together at most two (10 %).
	f := o.Familiarity
	if o.FalseUnknown > 0.1 || o.Threshold <= 0.5 || o.Threshold > 1 || f == nil || f.Threshold < 0.5 || f.Threshold > 1 {
		t.Errorf("thresholds %.3f and %+v call %.3f of known hosts unknown: want above 0.5 and at most 10 %%", o.Threshold, f, o.FalseUnknown)
	}
	if !o.IsUnknown(o.Threshold-1e-9, 1) || o.IsUnknown(o.Threshold, 1) {
		t.Error("a familiar host is unknown exactly when its confidence is below the threshold")
	}
	if !o.IsUnknown(1, f.Threshold-1e-9) || o.IsUnknown(1, f.Threshold) {
		t.Error("a confident host is unknown exactly when its familiarity is below the threshold")
	}
	if !slices.Equal(f.Kinds[1], trained.Sorted()[1]) || len(f.Kinds[0]) == 0 {
		t.Errorf("the rule judges familiarity against kinds %v, not those of the training windows", f.Kinds)
	}
	var none *OpenSet
	if none.IsUnknown(0, 0) {
		t.Error("a model without a threshold never says unknown")
	}

	if _, err := Calibrate(m, held, trained, 2, 1); err == nil || !strings.Contains(err.Error(), "quantile") {
		t.Errorf("quantile 1: %v, want an error naming it", err)
	}
	unlabeled := twoDevices(rng, 2, 1, 20)
	for _, w := range unlabeled {
		for i := range w.Label {
			w.Label[i] = -1
		}
	}
	if _, err := Calibrate(m, unlabeled, trained, 2, 0.05); err == nil || !strings.Contains(err.Error(), "known devices") {
		t.Errorf("no labeled packet: %v, want an error saying what is missing", err)
	}
}

// TestFamiliarityCatchesConfidentStranger: a device the model never saw
// sends DNS, as device 1 does, but in frames of sizes neither device ever
// sent. The forest, which splits on length thresholds, names it device 1
// as surely as device 1 itself; only the familiarity test says unknown.
func TestFamiliarityCatchesConfidentStranger(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	fit := twoDevices(rng, 6, 10, 20)
	m, err := Spec{Name: "rf", Learn: learn.Config{Seed: 1}, Trees: 20}.Fit(context.Background(), fit, 2, nil, embeddedtest.Log())
	if err != nil {
		t.Fatal(err)
	}
	trained := NewKindSets(2)
	trained.Add(fit...)
	h, err := Calibrate(m, twoDevices(rng, 20, 3, 20), trained, 2, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	o := h.Unknown
	host := func(ws []*schemas.Window) (best int, conf, familiar float64) {
		preds, lp, err := Label(m, ws)
		if err != nil {
			t.Fatal(err)
		}
		var tally Tally
		for i, w := range ws {
			for j := range w.Len {
				tally.Add(int(preds[i][j]), Row(lp, ws, i, j), PacketKind(w, j))
			}
		}
		best, _, conf, _ = tally.Decide()
		return best, conf, tally.Familiarity(o.Familiarity, best)
	}

	known := twoDevices(rng, 2, 3, 20)[3:] // session 1: device 1
	if best, conf, familiar := host(known); best != 1 || o.IsUnknown(conf, familiar) {
		t.Errorf("a held-out session of device 1: named %d at confidence %.3f, familiarity %.3f; want device 1, known", best, conf, familiar)
	}
	stranger := twoDevices(rng, 2, 3, 20)[3:]
	for _, w := range stranger {
		for i := range w.Len {
			w.DPort[i], w.FrameLen[i], w.Label[i] = 53, 1000+rng.Int32N(100), -1
		}
	}
	best, conf, familiar := host(stranger)
	t.Logf("the stranger: named %d at confidence %.3f (threshold %.3f), familiarity %.3f (threshold %.3f)", best, conf, o.Threshold, familiar, o.Familiarity.Threshold)
	if best != 1 || o.IsUnknown(conf, 1) {
		t.Fatalf("the stranger is named %d at confidence %.3f: the test needs one the model takes for device 1 with confidence", best, conf)
	}
	if familiar != 0 || !o.IsUnknown(conf, familiar) {
		t.Errorf("the stranger's frames are of no size device 1 sent, yet its familiarity is %.3f and unknown is %v", familiar, o.IsUnknown(conf, familiar))
	}
}

func TestCalibrateBySplit(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	log := embeddedtest.Log()
	spec := Spec{Name: "rf", Learn: learn.Config{Seed: 2}, Trees: 20}
	ws := twoDevices(rng, 10, 5, 20)
	h, err := CalibrateBySplit(context.Background(), spec, ws, 2, 5, 0.05, log)
	if err != nil || h == nil {
		t.Fatalf("calibrated %v, %v", h, err)
	}
	o := h.Unknown
	// Five sessions a device over five folds: every session is held out
	// once, by a model that never saw it.
	if o == nil || o.Hosts != 10 || len(o.Sessions) != 10 {
		t.Fatalf("calibrated %+v: want each of the 10 sessions held out once", o)
	}
	for i := range o.Sessions[1:] {
		if o.Sessions[i] == o.Sessions[i+1] {
			t.Errorf("session %s held out twice", o.Sessions[i])
		}
	}
	if o.Threshold <= 0 || o.Threshold > 1 {
		t.Errorf("calibrated %+v", *o)
	}

	// Device 1 has one session (h/s1), which stays in every fold's
	// training; device 0's four are each held out once.
	var lone []*schemas.Window
	for _, w := range twoDevices(rng, 8, 3, 20) {
		if w.Label[0] == 0 || w.Group == "h/s1" {
			lone = append(lone, w)
		}
	}
	if h, err = CalibrateBySplit(context.Background(), spec, lone, 2, 5, 0.05, log); err != nil || h == nil {
		t.Fatalf("calibrated %v, %v", h, err)
	}
	o = h.Unknown
	if o == nil || o.Hosts != 4 || slices.Contains(o.Sessions, "h/s1") {
		t.Errorf("one session of device 1: calibrated %+v, want device 0's 4 sessions only", o)
	}

	// One session per device: nothing to hold out, no threshold.
	if o, err := CalibrateBySplit(context.Background(), spec, twoDevices(rng, 2, 5, 20), 2, 5, 0.05, log); err != nil || o != nil {
		t.Errorf("one session a device: %+v, %v; want no threshold and no error", o, err)
	}
	if _, err := CalibrateBySplit(context.Background(), spec, ws, 2, 1, 0.05, log); err == nil || !strings.Contains(err.Error(), "folds") {
		t.Errorf("one fold: %v, want an error naming the folds", err)
	}
}

// TestMetaWithoutThreshold reads a model.json written before the open-set
// rule: it has none, and names every host.
func TestMetaWithoutThreshold(t *testing.T) {
	var meta Meta
	if err := json.Unmarshal([]byte(`{"model":"rf","labels":["a","b"],"window":20,"seed":1}`), &meta); err != nil {
		t.Fatal(err)
	}
	if meta.Unknown != nil || meta.Unknown.IsUnknown(0, 0) {
		t.Errorf("an old model.json gained a threshold: %+v", meta.Unknown)
	}
	meta.Unknown = &OpenSet{Score: ScoreMeanProb, Threshold: 0.4, Quantile: 0.05, Hosts: 9, Familiarity: &Familiarity{Threshold: 0.8, Kinds: [][]uint64{{1, 1 << 40}, {2}}}}
	js, err := json.Marshal(meta)
	if err != nil {
		t.Fatal(err)
	}
	var back Meta
	if err := json.Unmarshal(js, &back); err != nil || back.Unknown == nil || back.Unknown.Threshold != 0.4 || back.Unknown.Hosts != 9 || back.Unknown.Score != ScoreMeanProb ||
		back.Unknown.Familiarity == nil || back.Unknown.Familiarity.Threshold != 0.8 || !slices.EqualFunc(back.Unknown.Familiarity.Kinds, meta.Unknown.Familiarity.Kinds, slices.Equal) {
		t.Errorf("model.json round trip: %s -> %+v (%v)", js, back.Unknown, err)
	}
	if err := back.Unknown.check(len(back.Labels)); err != nil {
		t.Errorf("the round-tripped rule is refused: %v", err)
	}
}

// TestLoadModelRefusesBadThreshold stores a model whose model.json carries
// a rule predict could not apply: loading it names the file and the fix.
func TestLoadModelRefusesBadThreshold(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(11, 12))
	log := embeddedtest.Log()
	m, err := Spec{Name: "rf", Learn: learn.Config{Seed: 1}, Trees: 5}.Fit(ctx, twoDevices(rng, 2, 4, 20), 2, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	_, _, st := embeddedtest.Start(ctx, t, log)
	for name, o := range map[string]*OpenSet{
		"score":       {Score: "entropy", Threshold: 0.5},
		"threshold":   {Score: ScoreMeanProb, Threshold: 7},
		"familiarity": {Score: ScoreMeanProb, Threshold: 0.5, Familiarity: &Familiarity{Threshold: -1, Kinds: [][]uint64{{1}, {2}}}},
		"kinds":       {Score: ScoreMeanProb, Threshold: 0.5, Familiarity: &Familiarity{Threshold: 0.9, Kinds: [][]uint64{{1}}}},
		"sorted":      {Score: ScoreMeanProb, Threshold: 0.5, Familiarity: &Familiarity{Threshold: 0.9, Kinds: [][]uint64{{1}, {3, 2}}}},
	} {
		if err := SaveModel(ctx, st, "bad-"+name, m, Meta{Model: "rf", Labels: []string{"a", "b"}, Window: 20, Unknown: o}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := LoadModel(ctx, st, "bad-"+name); err == nil || !strings.Contains(err.Error(), "model.json") || !strings.Contains(err.Error(), name) {
			t.Errorf("a model.json with a bad %s: %v, want an error naming the file and the field", name, err)
		}
	}
}

// TestFamiliesFromCalibration: of three devices, two send the same traffic
// (one firmware in two products). The calibration folds' held-out
// sessions show the model torn between those two, so they are one family,
// and the third stays alone; the confusion behind it counts every
// held-out packet once.
func TestFamiliesFromCalibration(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	var ws []*schemas.Window
	packets := 0
	for s := range 18 {
		dev := int16(s % 3)
		for k := range 4 {
			w := schemas.NewWindow(20)
			w.ID, w.Group, w.Len = fmt.Sprintf("s%d/%d", s, k), fmt.Sprintf("h/s%d", s), 20
			for i := range w.Len {
				w.DPort[i], w.FrameLen[i] = 443, 80+rng.Int32N(60)
				if dev > 0 { // devices 1 and 2: the same DNS traffic
					w.DPort[i], w.FrameLen[i] = 53, 400+rng.Int32N(200)
				}
				w.Interval[i] = float32(rng.ExpFloat64())
				w.ProtoBits[i] = schemas.ProtoIP | schemas.ProtoUDP
				w.Direction[i] = schemas.DirOutbound
				w.Label[i] = dev
			}
			packets += w.Len
			ws = append(ws, w)
		}
	}
	spec := Spec{Name: "rf", Learn: learn.Config{Seed: 3}, Trees: 20}
	h, err := CalibrateBySplit(context.Background(), spec, ws, 3, 3, 0.05, embeddedtest.Log())
	if err != nil || h == nil {
		t.Fatalf("calibrated %v, %v", h, err)
	}
	held := 0
	for _, row := range h.Confusion {
		for _, n := range row {
			held += n
		}
	}
	if held != packets {
		t.Errorf("the held-out confusion counts %d packets of %d: each training packet is held out once", held, packets)
	}
	labels := []string{"AcmeCam", "AcmeBulb", "AcmePlug"}
	fams, err := h.Families(labels)
	if err != nil {
		t.Fatal(err)
	}
	if len(fams) != 1 || !slices.Equal(fams[0], []string{"AcmeBulb", "AcmePlug"}) {
		t.Fatalf("families %v (confusion %v), want [AcmeBulb AcmePlug] alone", fams, h.Confusion)
	}
	if _, err := h.Families(labels[:2]); err == nil {
		t.Error("families over fewer labels than classes: no error")
	}
}
