package homecount

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/heartbeat"
	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/pipeline/realhome/realhometest"
)

// TestPairsCountedTwo counts IoT Sentinel's four identical pairs on the LAN,
// 20 homes each, in windows of 20 s every 10 s, the model learned per home
// from the captures the home did not draw on. The target is a count of 2
// in 90 % of the windows where both are active, by the whole capture.
// (With the signature alone, before a host also had to be nearest one of
// the pair's captures, WeMoInsightSwitch/2 reached 89.4 %: a WeMoSwitch2
// unit among the other devices sent a message size only Insight switches
// show elsewhere.)
func TestPairsCountedTwo(t *testing.T) {
	hc, err := NewHostCounter(context.Background(), realhometest.Devices(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ a, b string }{
		{"EdimaxCam1", "EdimaxCam2"},
		{"EdnetCam1", "EdnetCam2"},
		{"WeMoInsightSwitch", "WeMoInsightSwitch2"},
		{"WeMoSwitch", "WeMoSwitch2"},
	} {
		res, err := hc.RunPair(context.Background(), PairConfig{A: c.a, B: c.b, Homes: 20, Others: 3, Duration: 100 * time.Second,
			Window: 20 * time.Second, Step: 10 * time.Second, Late: 20 * time.Second, Seed: 1, Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		share := float64(res.Right) / float64(max(res.Windows, 1))
		t.Logf("%s/%s: %d of %d windows where both are active counted 2 (%.1f %%; counts %v), live %d, 20 s late %d", c.a, c.b, res.Right, res.Windows, 100*share, res.Said, res.RightLive, res.RightLate)
		if res.Windows < 10 || share < 0.90 {
			t.Errorf("%s/%s: %d of %d windows counted 2, want at least 90 %% of at least 10", c.a, c.b, res.Right, res.Windows)
		}
		// Counted 20 s late, the pairs reached 86.4 % (EdnetCam1/2) to 100 %
		// when this was written; 80 % is a guard, not the target.
		if late := float64(res.RightLate) / float64(max(res.Windows, 1)); late < 0.80 || res.RightLive > res.Windows {
			t.Errorf("%s/%s: counted 2 live %d, 20 s late %d (%.1f %%), of %d windows: want late at least 80 %%", c.a, c.b, res.RightLive, res.RightLate, 100*late, res.Windows)
		}
		// The detector's own counter, a new host given a minute.
		if d := float64(res.DetectorRight) / float64(max(res.Detector, 1)); res.Detector < 10 || d < 0.90 {
			t.Errorf("%s/%s: the detector's counter right in %d of %d windows where both are active, want 90 %% of at least 10", c.a, c.b, res.DetectorRight, res.Detector)
		}
	}
	if _, err := hc.RunPair(context.Background(), PairConfig{A: "EdimaxCam1", B: "NoSuchCam", Homes: 1, Duration: time.Minute, Window: time.Second, Step: time.Second, Dir: t.TempDir()}); err == nil {
		t.Fatal("a pair with a missing folder measured, want an error naming it")
	}
}

// TestPairModelNeedsBoth checks the two conditions of typeModel.isModel on
// handmade key sets: a sibling that sends one key only the model was seen
// to send, but whose traffic is nearest its own type's, is not a unit of
// the model; nor is a host whose traffic is nearest the model's but that
// sends nothing only the model sends.
func TestPairModelNeedsBoth(t *testing.T) {
	shared, only, sib1, sib2, dhcp := udpKey(1900, 400), udpKey(1900, 410), udpKey(1900, 431), udpKey(1900, 433), udpKey(67, 328)
	ck := captureKeys{
		keys: map[string]map[heartbeat.Key]bool{
			"cam-a": keySet(shared, only, dhcp), "cam-b": keySet(shared, only, dhcp),
			"sw-a": keySet(shared, sib1, sib2, dhcp), "sw-b": keySet(sib1, sib2, dhcp),
		},
		typ: map[string]string{"cam-a": "Cam1", "cam-b": "Cam2", "sw-a": "Switch", "sw-b": "Switch"},
	}
	model := []string{"Cam1", "Cam2"}
	m := typeModel{sig: ck.signature(model, nil), ck: ck, model: model}
	if len(m.sig) != 1 || !m.sig[only] {
		t.Fatalf("signature %v, want only %v", m.sig, only)
	}
	for _, c := range []struct {
		name string
		sent map[heartbeat.Key]bool
		want bool
	}{
		{"a unit of the model", keySet(shared, only, dhcp), true},
		{"a sibling with the model's one key", keySet(only, sib1, sib2, dhcp), false},
		{"nearest the model without its key", keySet(shared, dhcp), false},
		{"DHCP alone", keySet(dhcp), false},
	} {
		if got := m.isModel(c.sent); got != c.want {
			t.Errorf("%s: isModel %v, want %v", c.name, got, c.want)
		}
	}
}

// TestNamedHostIsItsModel: a host that gives the DHCP name only the
// model's captures give is a unit of it, even when its other keys are
// nearer a sibling's; a name another type gives too decides nothing.
func TestNamedHostIsItsModel(t *testing.T) {
	name := func(h uint16) heartbeat.Key {
		return heartbeat.Key{Transport: 17, Port: DHCPOption + dhcpHostName, IPLen: h}
	}
	shared, own, sib, sib2, platform := udpKey(443, 100), udpKey(443, 120), udpKey(443, 130), udpKey(443, 140), name(7)
	ck := captureKeys{
		keys: map[string]map[heartbeat.Key]bool{
			"siren-a": keySet(shared, own, name(1), platform), "siren-b": keySet(shared, own, name(1)),
			"water-a": keySet(shared, sib, sib2, name(2), platform), "water-b": keySet(shared, sib, sib2, name(2)),
		},
		typ: map[string]string{"siren-a": "Siren", "siren-b": "Siren", "water-a": "Water", "water-b": "Water"},
	}
	model := []string{"Siren"}
	m := typeModel{sig: ck.signature(model, nil), ck: ck, model: model}
	if !m.sig[name(1)] || m.sig[platform] {
		t.Fatalf("signature %v: want the siren's name in it and the platform's out", m.sig)
	}
	for _, c := range []struct {
		what string
		sent map[heartbeat.Key]bool
		want bool
	}{
		{"named a siren, nearer the water sensor", keySet(shared, sib, sib2, name(1)), true},
		{"named a water sensor", keySet(shared, sib, sib2, name(2)), false},
		{"the platform's name, nearer the water sensor", keySet(shared, sib, sib2, platform), false},
		{"no name, the siren's key, nearest the siren", keySet(shared, own), true},
	} {
		if got := m.isModel(c.sent); got != c.want {
			t.Errorf("%s: isModel %v, want %v", c.what, got, c.want)
		}
	}
	// A name is a chip's SDK's as often as a model's: an ESP8266 kettle
	// that sends nothing but its DHCP request and IGMP names itself
	// "ESP_...", and so may a plug of a type never learned, whose traffic
	// is far nearer another plug's. The name decides only among near
	// captures: the named unit's must be at least half as near as any.
	dhcp, igmp, esp, plug := udpKey(67, 316), heartbeat.Key{Transport: 2, Port: -1, IPLen: 8}, name(3), name(4)
	ps := []heartbeat.Key{udpKey(443, 1), udpKey(443, 2), udpKey(443, 3), udpKey(443, 4), udpKey(443, 5), udpKey(443, 6)}
	ck = captureKeys{
		keys: map[string]map[heartbeat.Key]bool{
			"kettle-a": keySet(dhcp, igmp, esp), "kettle-b": keySet(dhcp, igmp, esp),
			"plug-a": keySet(append(ps, dhcp, plug)...), "plug-b": keySet(append(ps, dhcp, plug)...),
		},
		typ: map[string]string{"kettle-a": "Kettle", "kettle-b": "Kettle", "plug-a": "Plug", "plug-b": "Plug"},
	}
	model = []string{"Kettle"}
	m = typeModel{sig: ck.signature(model, nil), ck: ck, model: model}
	if !m.sig[esp] {
		t.Fatalf("signature %v: want the kettle's name in it", m.sig)
	}
	if !m.isModel(keySet(dhcp, igmp, esp)) {
		t.Error("a kettle: not counted as one")
	}
	if m.isModel(keySet(append(ps, dhcp, esp)...)) {
		t.Error("a plug of an unlearned type named as the kettles are, its traffic a plug's: counted as a kettle")
	}
}

// TestKeySetFamilies groups types whose captures' nearest other capture
// is another type's: two kettles that send the same keys are one family,
// a plug whose captures are nearest each other is in none, and a capture
// left out (a home's own) is not matched at all.
func TestKeySetFamilies(t *testing.T) {
	dhcp, kettle, plug, plug2 := udpKey(67, 336), udpKey(2081, 60), udpKey(9999, 80), udpKey(9999, 90)
	ck := captureKeys{
		keys: map[string]map[heartbeat.Key]bool{
			"a1": keySet(dhcp, kettle), "a2": keySet(dhcp, kettle),
			"b1": keySet(dhcp, kettle), "b2": keySet(dhcp, kettle),
			"p1": keySet(dhcp, plug, plug2), "p2": keySet(dhcp, plug, plug2), "p3": keySet(dhcp, plug),
		},
		typ: map[string]string{"a1": "iKettle2", "a2": "iKettle2", "b1": "SmarterCoffee", "b2": "SmarterCoffee", "p1": "Plug", "p2": "Plug", "p3": "Plug"},
	}
	cs := ck.similarities()
	got := ck.families(cs, nil)
	if len(got) != 1 || !slices.Equal(got[0], []string{"SmarterCoffee", "iKettle2"}) {
		t.Errorf("families %v, want only the kettles", got)
	}
	// Without b's captures nothing is confused: no family.
	if got := ck.families(cs, []string{"b1", "b2"}); len(got) != 0 {
		t.Errorf("families without SmarterCoffee's captures %v, want none", got)
	}
}

func udpKey(port int32, ipLen uint16) heartbeat.Key {
	return heartbeat.Key{Transport: 17, Port: port, IPLen: ipLen}
}

func keySet(ks ...heartbeat.Key) map[heartbeat.Key]bool {
	m := map[heartbeat.Key]bool{}
	for _, x := range ks {
		m[x] = true
	}
	return m
}

// TestFamiliesOfTraffic: two types whose captures differ only by their
// DHCP names are one family of the host model, for the names tell them
// apart only where a host gives one: named or nameless, a unit of either
// is counted as the family, and a third type stays a unit of its own.
func TestFamiliesOfTraffic(t *testing.T) {
	name := func(h uint16) heartbeat.Key { return nameKey(h) }
	shared, own, plug := udpKey(443, 100), udpKey(443, 120), udpKey(9999, 80)
	ck := captureKeys{keys: map[string]map[heartbeat.Key]bool{}, typ: map[string]string{}}
	var devs []realhome.Device
	for _, d := range []struct {
		typ  string
		keys []heartbeat.Key
	}{
		{"Siren", []heartbeat.Key{shared, own, name(1)}},
		{"Water", []heartbeat.Key{shared, own, name(2)}},
		{"Plug", []heartbeat.Key{shared, plug}},
	} {
		dev := realhome.Device{Name: d.typ}
		for i := range 3 {
			f := fmt.Sprintf("%s-%d", d.typ, i)
			ck.keys[f], ck.typ[f] = keySet(d.keys...), d.typ
			dev.Files = append(dev.Files, f)
		}
		devs = append(devs, dev)
	}
	if fams := ck.families(ck.similarities(), nil); len(fams) != 0 {
		t.Fatalf("with the names the captures' families are %v: want none, for this test to say anything", fams)
	}
	m := newHostCounter(devs, ck, nil, ChainConfig{}).Model(nil)
	fam := m.UnitOf("Siren")
	if fam < 0 || m.UnitOf("Water") != fam || m.UnitOf("Plug") == fam {
		t.Fatalf("units %+v: want Siren and Water one family, Plug apart", m.Units)
	}
	for _, c := range []struct {
		what string
		sent map[heartbeat.Key]bool
		want int
	}{
		{"a named siren", keySet(shared, own, name(1)), fam},
		{"a named water sensor", keySet(shared, own, name(2)), fam},
		{"a nameless one", keySet(shared, own), fam},
		{"a plug", keySet(shared, plug), m.UnitOf("Plug")},
	} {
		if got := m.Classify(c.sent); got != c.want {
			t.Errorf("%s: unit %d, want %d", c.what, got, c.want)
		}
	}
}
