package detect

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/detect/scene"
	"github.com/homemole/homemole/pipeline/learn/modelfiletest"
	"github.com/homemole/homemole/pipeline/seqprofile"
	"github.com/homemole/homemole/schemas"
)

func tcpV(ttl, payload, flags int32) seqprofile.Vector {
	return seqprofile.Vector{ttl, 40 + payload, 6, flags, 5840, 0, payload}
}

// synthetic is a tiny corpus: a heartbeat device, a UDP beacon and noise,
// thirty minutes each, starting at t0.
func synthetic(seed uint64, t0 int64) (beat, beacon, noise []seqprofile.Stamped) {
	rng := rand.New(rand.NewPCG(seed, 1))
	for ts := t0 + rng.Int64N(30e9); ts < t0+1800e9; ts += 30e9 + rng.Int64N(2e9) {
		for i, v := range []seqprofile.Vector{tcpV(255, 0, 2), tcpV(50, 0, 0x12), tcpV(255, 117, 0x18), tcpV(50, 0, 0x10)} {
			beat = append(beat, seqprofile.Stamped{TsNs: ts + int64(i)*40e6, V: v})
		}
	}
	for ts := t0 + rng.Int64N(20e9); ts < t0+1800e9; ts += 20e9 + rng.Int64N(1e9) {
		beacon = append(beacon, seqprofile.Stamped{TsNs: ts, V: seqprofile.Vector{64, 76, 17, 0, 0, 0, 48}}, seqprofile.Stamped{TsNs: ts + 30e6, V: seqprofile.Vector{50, 60, 17, 0, 0, 0, 32}})
	}
	for ts := t0; ts < t0+1800e9; ts += rng.Int64N(3e9) {
		noise = append(noise, seqprofile.Stamped{TsNs: ts, V: tcpV(64, int32(rng.IntN(1400)), 0x18)})
	}
	return beat, beacon, noise
}

func smallModel(t testing.TB) *Model {
	t.Helper()
	var c scene.Corpus
	beatDev := seqprofile.DeviceTraffic{Device: "heartbeat"}
	beaconDev := seqprofile.DeviceTraffic{Device: "beacon"}
	for s := range 3 {
		beat, beacon, noise := synthetic(uint64(s), int64(s)*3600e9+1.7e18)
		beatDev.Sessions = append(beatDev.Sessions, seqprofile.Session{File: "s", Device: beat})
		beaconDev.Sessions = append(beaconDev.Sessions, seqprofile.Session{File: "s", Device: beacon})
		c.Background = append(c.Background, noise)
	}
	c.Devices = []seqprofile.DeviceTraffic{beatDev, beaconDev}
	cfg := DefaultConfig()
	cfg.DetectorSamples, cfg.CounterSamples, cfg.CNN.Epochs, cfg.MaxCount = 300, 60, 6, 10
	m, err := Train(context.Background(), &c, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// saveAndLoad writes m as a model file and reads it back, as sp train and
// the detector do; the copy is closed when the test ends.
func saveAndLoad(t *testing.T, m *Model) (*Model, []byte) {
	t.Helper()
	var buf bytes.Buffer
	if err := m.Save(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := Load(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("load the saved model: %v", err)
	}
	t.Cleanup(back.Close)
	return back, buf.Bytes()
}

func TestModelSaveLoadDetect(t *testing.T) {
	m := smallModel(t)
	back, file := saveAndLoad(t, m)
	// A header claiming a window of a billion bins is refused before the
	// CNNs it describes are allocated.
	huge := modelfiletest.EditMeta(t, file, len(modelFile.Magic), func(meta map[string]any) {
		meta["config"].(map[string]any)["window_bins"] = 1e9
	})
	if _, err := Load(bytes.NewReader(huge)); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("a model file whose metadata outgrows its weights: %v, want a corrupt-file error", err)
	}
	// A held-out stretch: the heartbeat device only, then both.
	beat, beacon, noise := synthetic(99, 1.8e18)
	stream := scene.Superpose(beat, scene.Cut(beacon, 1.8e18+900e9, 1.8e18+1800e9, 0), noise)
	ctx := context.Background()
	got, err := m.Detect(ctx, stream, 0)
	if err != nil {
		t.Fatal(err)
	}
	again, err := back.Detect(ctx, stream, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(got)
	b, _ := json.Marshal(again)
	if !bytes.Equal(a, b) {
		t.Fatalf("the loaded model judges differently:\n%s\n%s", a, b)
	}
	if len(got) != 5 {
		t.Fatalf("%d windows of 360 s over 30 min, want 5", len(got))
	}
	for i, w := range got {
		names := map[string]bool{}
		for _, d := range w.Detections {
			names[d.Device] = true
		}
		if !names["heartbeat"] {
			t.Errorf("window %d misses the heartbeat device: %+v", i, w.Detections)
		}
		if wantBeacon := w.EndNs > 1.8e18+900e9; wantBeacon != names["beacon"] {
			t.Errorf("window %d [%d s, %d s): beacon named %v, present %v", i, (w.StartNs-1.8e18)/1e9, (w.EndNs-1.8e18)/1e9, names["beacon"], wantBeacon)
		}
	}
	// Longer report windows take the best of model windows inside; a
	// window that is not a multiple of the bin is refused.
	long, err := m.Detect(ctx, stream, 15*time.Minute)
	if err != nil || len(long) != 2 {
		t.Errorf("15 min windows: %d, %v", len(long), err)
	}
	if _, err := m.Detect(ctx, stream, 365*time.Second); err == nil {
		t.Error("a window of 365 s with 10 s bins was accepted")
	}
	if _, err := Load(bytes.NewReader(file[:100])); err == nil {
		t.Error("a truncated model loaded")
	}
	if _, err := Load(bytes.NewReader([]byte("not a model at all"))); err == nil {
		t.Error("garbage loaded")
	}
}

func TestOnlinePublishesEveryStep(t *testing.T) {
	m := smallModel(t)
	beat, _, noise := synthetic(5, 1.9e18)
	stream := scene.Superpose(beat, noise)
	var subjects []string
	var seen []schemas.Seen
	o := &Online{Model: m, Step: 3, Lag: 1, Publish: func(_ context.Context, subject, _ string, data []byte) error {
		subjects = append(subjects, subject)
		s, err := schemas.DecodeSeen(data)
		if err != nil {
			return err
		}
		seen = append(seen, s)
		return nil
	}}
	if err := handleAll(o, packetsOf(stream)); err != nil {
		t.Fatal(err)
	}
	if len(seen) < 55 {
		t.Fatalf("%d reports over 30 min every 30 s, want about 60", len(seen))
	}
	for i, s := range seen {
		if subjects[i] != "hm.seen.c.h" || s.Campaign != "c" || s.Home != "h" || s.EndNs-s.StartNs != 360e9 {
			t.Fatalf("report %d: %s %+v", i, subjects[i], s)
		}
		if i > 0 && s.EndNs-seen[i-1].EndNs != 30e9 {
			t.Fatalf("reports %d and %d are %d s apart, want 30 s", i-1, i, (s.EndNs-seen[i-1].EndNs)/1e9)
		}
	}
	// After the first full window the heartbeat is named in every report.
	late := seen[len(seen)/2:]
	if !slices.ContainsFunc(late, func(s schemas.Seen) bool { return len(s.Detections) > 0 && s.Detections[0].Device == "heartbeat" }) {
		t.Errorf("the heartbeat device is never reported: %+v", late[0])
	}
	if _, err := (&Online{Model: m}).home("x"); err != nil {
		t.Fatal(err)
	}
	if err := o.Handle(context.Background(), &schemas.Batch{Kind: schemas.KindLabeled}); err == nil {
		t.Error("a labeled batch was accepted")
	}
}

// TestOnlineStartsAgainAfterJump: captures that resume after pauses
// longer than the matcher's horizon (README, "Timestamps far from the
// present"). The detector publishes the windows of the traffic, not one per
// step of each pause, whether a batch holds one jump or several, and
// whether the matcher still holds the old capture's bins (a pause under
// its span of a day) or slid them out (a longer one: the old capture's
// windows not judged before the batch that jumps go with its bins).
// Before, a pause under a day was a window per step of it (two hours: 720
// more), and the old capture's held windows were published twice.
func TestOnlineStartsAgainAfterJump(t *testing.T) {
	m := smallModel(t)
	const t0 = int64(1.9e18)
	capture := func(seed uint64, at time.Duration) []schemas.Packet {
		beat, _, noise := synthetic(seed, t0+int64(at))
		return packetsOf(scene.Superpose(beat, noise))
	}
	for _, c := range []struct {
		name  string
		at    []time.Duration // when each capture starts
		batch int             // packets per batch
		tails bool
	}{
		{"two hours later", []time.Duration{0, 150 * time.Minute}, 100, true},
		{"three captures in one batch", []time.Duration{0, 150 * time.Minute, 300 * time.Minute}, 1 << 20, true},
		{"past the span", []time.Duration{0, 26 * time.Hour}, 100, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var segs [][]schemas.Packet
			var pkts []schemas.Packet
			for i, at := range c.at {
				segs = append(segs, capture(uint64(5+i), at))
				pkts = append(pkts, segs[i]...)
			}
			var seen []schemas.Seen
			o := &Online{Model: m, Step: 1, Lag: 1, Publish: collect(&seen)}
			batches := homeBatches("c", "h", pkts, c.batch)
			batches[len(batches)-1].Final = true
			for _, b := range batches {
				if err := o.Handle(context.Background(), b); err != nil {
					t.Fatal(err)
				}
			}
			if st := o.homes["c\x00h"].m.Stats(); st.Jumps != uint64(len(c.at)-1) {
				t.Fatalf("matcher %+v: want %d jumps", st, len(c.at)-1)
			}
			if err := windowsAcrossJumps(seen, m, c.tails, segs...); err != nil {
				t.Error(err)
			}
			t.Logf("%d captures, %d packets in %d batches: %d windows", len(c.at), len(pkts), len(batches), len(seen))
		})
	}
}

// FuzzLoad: damaged model files are refused with an error, never a crash or
// an allocation their weights cannot back; what loads can judge a stream.
func FuzzLoad(f *testing.F) {
	modelfiletest.Seed(f, smallModel(f).Save, len(modelFile.Magic)+8)
	beat, _, noise := synthetic(7, 1.8e18)
	stream := scene.Superpose(scene.Cut(beat, 1.8e18, 1.8e18+400e9, 0), scene.Cut(noise, 1.8e18, 1.8e18+400e9, 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Load(bytes.NewReader(data))
		if err != nil {
			return
		}
		defer m.Close()
		if _, err := m.Detect(context.Background(), stream, 0); err != nil {
			return
		}
	})
}

// packetsOf turns a stream back into the packets an agent would publish.
func packetsOf(stream []seqprofile.Stamped) []schemas.Packet {
	var pkts []schemas.Packet
	for _, p := range stream {
		pkts = append(pkts, schemas.Packet{TsNs: p.TsNs, TTL: uint8(p.V[0]), IPLen: uint16(p.V[1]), Transport: uint8(p.V[2]), TCPFlags: uint16(p.V[3]),
			TCPWindow: uint16(p.V[4]), TCPOptionsLen: uint8(p.V[5]), PayloadLen: uint32(p.V[6])})
	}
	return pkts
}

// handleAll feeds packets to o as one home's batches of 100, the last one Final.
func handleAll(o *Online, pkts []schemas.Packet) error {
	for lo := 0; lo < len(pkts); lo += 100 {
		hi := min(lo+100, len(pkts))
		b := &schemas.Batch{Kind: schemas.KindPackets, Campaign: "c", Home: "h", Tap: "wan", Packets: pkts[lo:hi], Final: hi == len(pkts)}
		if err := o.Handle(context.Background(), b); err != nil {
			return err
		}
	}
	return nil
}
