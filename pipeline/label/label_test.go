package label

import (
	"errors"
	"testing"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/schemas"
)

func testCampaign() *campaign.Campaign {
	c := &campaign.Campaign{Name: "c", Homes: []*campaign.Home{{
		Name: "h", Taps: []campaign.Tap{{Name: "lan", Files: []string{"x.pcap"}}},
		Inventory: []campaign.Device{
			{MAC: "02:00:00:00:00:01", Name: "plug", Category: "iot"},
			{MAC: "02:00:00:00:00:02", Name: "phone", Category: "non-iot"},
		},
	}}}
	c.Defaults()
	return c
}

func TestLabelByInventory(t *testing.T) {
	l, err := New(testCampaign())
	if err != nil {
		t.Fatal(err)
	}
	plug, phone := schemas.MAC{2, 0, 0, 0, 0, 1}, schemas.MAC{2, 0, 0, 0, 0, 2}
	router, bcast := schemas.MAC{2, 0, 0, 0, 0, 0xfe}, schemas.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	in := &schemas.Batch{Kind: schemas.KindPackets, Campaign: "c", Home: "h", Tap: "lan", Source: "s", Session: "x", Packets: []schemas.Packet{
		{Offset: 0, SrcMAC: plug, DstMAC: router},  // the plug sends: plug
		{Offset: 1, SrcMAC: router, DstMAC: plug},  // a reply to the plug: plug
		{Offset: 2, SrcMAC: phone, DstMAC: plug},   // device to device: the sender
		{Offset: 3, SrcMAC: router, DstMAC: bcast}, // nobody's
		{Offset: 4, SrcMAC: phone, DstMAC: bcast},  // phone broadcast
	}}
	out, err := l.Label(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []int32{0, 0, 1, schemas.Unlabeled, 1}
	for i, w := range want {
		if out.Labels[i] != w {
			t.Errorf("packet %d: label %d, want %d", i, out.Labels[i], w)
		}
		if !out.Packets[i].SrcMAC.IsZero() || !out.Packets[i].DstMAC.IsZero() {
			t.Errorf("packet %d: MACs left the labeler", i)
		}
	}
	if out.Kind != schemas.KindLabeled || out.View != "lan" || len(out.Devices) != 2 || out.MsgID() == in.MsgID() {
		t.Errorf("labeled batch header wrong: %+v", out)
	}
	st := l.Stats()["h"]
	if st.Packets != 5 || st.Unlabeled != 1 || st.PerDevice["plug"] != 2 || st.PerDevice["phone"] != 2 {
		t.Errorf("stats %+v", st)
	}
	if in.Packets[0].SrcMAC != plug {
		t.Error("the input batch was modified")
	}
}

func TestLabelRefusesWhatItCannotLabel(t *testing.T) {
	l, err := New(testCampaign())
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string]*schemas.Batch{
		"unknown home":   {Kind: schemas.KindPackets, Campaign: "c", Home: "elsewhere", Tap: "lan"},
		"other campaign": {Kind: schemas.KindPackets, Campaign: "d", Home: "h", Tap: "lan"},
		"wan tap":        {Kind: schemas.KindPackets, Campaign: "c", Home: "h", Tap: "wan"},
		"labeled input":  {Kind: schemas.KindLabeled, Campaign: "c", Home: "h", View: "lan"},
	} {
		if _, err := l.Label(b); !errors.Is(err, bus.ErrPermanent) {
			t.Errorf("%s: got %v, want a permanent failure", name, err)
		}
	}
}
