package window

import (
	"context"
	"encoding/json"
	"flag"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
)

// The score is part of the dataset format (schemas/FORMAT.md): a change
// would change which windows every capped dataset keeps. The value was
// reproduced in Python from the description in FORMAT.md.
func TestCapScoreIsFrozen(t *testing.T) {
	if got := CapScore(1, "lan/h/lan-s1/ind/plug/0"); got != 0x3a6e618d502e0f1a {
		t.Errorf("CapScore changed: %#x", got)
	}
	if CapScore(1, "lan/h/s/ind/plug/17") == CapScore(2, "lan/h/s/ind/plug/17") {
		t.Error("the seed does not change the score")
	}
}

func TestPartCarriesSmallestCapScores(t *testing.T) {
	st := store.NewMemory()
	spec := Spec{Dataset: "d", Version: "v1", Kind: schemas.KindInd, Size: 2, Labels: []string{"plug", "cam"}, Cap: 3, CapSeed: 4, WindowsPerObject: 2}
	w, err := New(spec, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	var pkts []schemas.Packet
	var labels []int16
	for i := range 20 {
		pkts = append(pkts, schemas.Packet{TsNs: int64(i), Offset: uint64(i)})
		labels = append(labels, int16(min(i%4, 1))) // plug 5 packets, cam 15
	}
	labels[3] = -1
	part, err := w.WriteSession(context.Background(), "h", "lan", "lan-s1", "src", pkts, labels)
	if err != nil {
		t.Fatal(err)
	}
	if part.Unlabeled != 1 || part.PerDevice["plug"] != 3 || part.PerDevice["cam"] != 7 || len(part.Objects) != 5 {
		t.Fatalf("part %+v", part)
	}
	ws := Cut(spec, "h", "lan", "lan-s1", pkts, labels)
	var cam []uint64
	for _, win := range ws {
		if DeviceOf(spec.Labels, win) == "cam" {
			cam = append(cam, CapScore(spec.CapSeed, win.ID))
		}
	}
	slices.Sort(cam)
	if !slices.Equal(part.CapScores["cam"], cam[:3]) || len(part.CapScores["plug"]) != 3 {
		t.Errorf("cap scores %v, want the cam's 3 smallest %v", part.CapScores, cam[:3])
	}
	var stored Part
	if err := json.Unmarshal(st.Snapshot()["datasets/d/v1/lan/h/lan-s1/"+PartSuffix], &stored); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(stored.CapScores, part.CapScores) {
		t.Error("cap scores do not survive the part record's JSON")
	}
	if _, err := w.WriteSession(context.Background(), "h", "lan", "s", "src", pkts[:1], []int16{2}); err == nil {
		t.Error("a label outside the vocabulary was windowed")
	}
}

func TestCutOverBatchesIsCut(t *testing.T) {
	for _, kind := range []string{schemas.KindInd, schemas.KindNoise} {
		spec := Spec{Dataset: "d", Version: "v1", Kind: kind, Size: 3, Labels: []string{"a", "b", "c"}}
		var pkts []schemas.Packet
		var labels []int16
		for i := range 31 {
			pkts = append(pkts, schemas.Packet{TsNs: int64(i * i), Offset: uint64(i), FrameLen: uint32(i)})
			labels = append(labels, int16(i%4)-1)
		}
		want := Cut(spec, "h", "lan", "s", pkts, labels)
		got := cut(spec, "h", "lan", "s", [][]schemas.Packet{pkts[:7], nil, pkts[7:20], pkts[20:]}, labels)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: windows cut over batches differ from windows cut over one slice", kind)
		}
	}
}

func TestCapFlags(t *testing.T) {
	var s Spec
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	s.RegisterFlags(fs)
	if s.Cap != 5000 {
		t.Errorf("default cap %d, the paper keeps 5000 windows per device", s.Cap)
	}
	if err := fs.Parse([]string{"--cap", "0", "--cap-seed", "9"}); err != nil || s.Cap != 0 || s.CapSeed != 9 {
		t.Errorf("flags gave cap %d seed %d: %v", s.Cap, s.CapSeed, err)
	}
	s = Spec{Dataset: "d", Version: "v1", Kind: "ind", Size: 100, Labels: []string{"a"}, Cap: -1}
	if err := s.Validate(); err == nil || !strings.Contains(err.Error(), "cap") {
		t.Errorf("negative cap: %v", err)
	}
}
