package window

import (
	"testing"

	"github.com/homemole/homemole/schemas"
)

func TestCutInd(t *testing.T) {
	spec := Spec{Dataset: "d", Version: "v1", Kind: schemas.KindInd, Size: 4, Labels: []string{"plug", "cam"}}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	// plug at 0,2,4,6,8,10 s; cam at 1,3 s; one unlabeled packet at 5 s.
	var pkts []schemas.Packet
	var labels []int16
	for i, l := range []int16{0, 1, 0, 1, 0, -1, 0, 0, 0, 0, 0} {
		if i == 7 || i == 9 {
			continue
		}
		pkts = append(pkts, schemas.Packet{TsNs: int64(i) * 1e9, Offset: uint64(i), FrameLen: uint32(100 + i)})
		labels = append(labels, l)
	}
	ws := Cut(spec, "h", "lan", "s", pkts, labels)
	// plug: 6 packets -> a full window and a padded one; cam: 2 packets -> one padded window.
	if len(ws) != 3 {
		t.Fatalf("got %d windows, want 3", len(ws))
	}
	full, tail, cam := ws[0], ws[1], ws[2]
	if full.Len != 4 || tail.Len != 2 || cam.Len != 2 {
		t.Fatalf("lengths %d %d %d", full.Len, tail.Len, cam.Len)
	}
	// Intervals are measured inside the plug's own sequence: 0, 2, 2, 2 s.
	if full.Interval[0] != 0 || full.Interval[1] != 2 || full.Interval[3] != 2 {
		t.Errorf("plug intervals %v", full.Interval)
	}
	if tail.Interval[0] != 2 {
		t.Errorf("the interval at a window boundary is the gap to the previous packet of the stream: %v", tail.Interval[0])
	}
	for i := 0; i < 4; i++ {
		if full.Label[i] != 0 {
			t.Errorf("plug window holds label %d", full.Label[i])
		}
	}
	if tail.Label[2] != -1 || tail.Label[3] != -1 {
		t.Error("padding must be unlabeled")
	}
	if cam.Label[0] != 1 || cam.Interval[1] != 2 {
		t.Errorf("cam window %v %v", cam.Label, cam.Interval)
	}
	if full.ID == tail.ID || full.Group != GroupOf("h", "s") {
		t.Errorf("ids %s %s group %s", full.ID, tail.ID, full.Group)
	}
}

func TestCutNoise(t *testing.T) {
	spec := Spec{Dataset: "d", Version: "v1", Kind: schemas.KindNoise, Size: 3, Labels: []string{"plug", "cam"}}
	pkts := make([]schemas.Packet, 5)
	for i := range pkts {
		pkts[i].TsNs = int64(i) * 5e8
	}
	ws := Cut(spec, "h", "lan", "s", pkts, []int16{0, 1, -1, 0, 1})
	if len(ws) != 2 || ws[0].Len != 3 || ws[1].Len != 2 {
		t.Fatalf("got %d windows", len(ws))
	}
	if ws[0].Label[2] != -1 || ws[0].Interval[1] != 0.5 {
		t.Errorf("merged stream window %v %v", ws[0].Label, ws[0].Interval)
	}
}

func TestSpecValidate(t *testing.T) {
	for _, s := range []Spec{
		{Dataset: "", Version: "v1", Kind: "ind", Size: 100, Labels: []string{"a"}},
		{Dataset: "d", Version: "v 1", Kind: "ind", Size: 100, Labels: []string{"a"}},
		{Dataset: "d", Version: "v1", Kind: "mixed", Size: 100, Labels: []string{"a"}},
		{Dataset: "d", Version: "v1", Kind: "ind", Size: 1, Labels: []string{"a"}},
		{Dataset: "d", Version: "v1", Kind: "ind", Size: 100},
	} {
		if err := s.Validate(); err == nil {
			t.Errorf("%+v accepted", s)
		}
	}
}

func TestGroupOfJoinsTaps(t *testing.T) {
	if GroupOf("h", "lan-session-01") != GroupOf("h", "wan-session-01") {
		t.Error("the LAN and WAN views of one session must share a group, or a split leaks")
	}
	if GroupOf("h", "lan-session-01") == GroupOf("h", "lan-session-02") || GroupOf("h", "lan-x") == GroupOf("g", "lan-x") {
		t.Error("different sessions or homes share a group")
	}
}
