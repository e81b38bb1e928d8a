package label

import (
	"errors"
	"math"
	"net/netip"
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

func TestLabelPairInheritsAndStrips(t *testing.T) {
	c := testCampaign()
	c.Homes[0].Gateway.Mode = "napt"
	c.Homes[0].Taps = append(c.Homes[0].Taps, campaign.Tap{Name: "wan", Files: []string{"x.pcap"}})
	l, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	plug, router := schemas.MAC{2, 0, 0, 0, 0, 1}, schemas.MAC{2, 0, 0, 0, 0, 0xfe}
	lanIP, wanIP := netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("203.0.113.2")
	server, other := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("198.51.100.8")
	tcp := func(ts int64, off uint64, src, dst netip.Addr, sport int32, id uint16) schemas.Packet {
		return schemas.Packet{TsNs: ts, Offset: off, DPort: 443, SrcPort: sport, Direction: schemas.DirOutbound, IPLen: 60,
			Transport: 6, TCPFlags: 0x18, TCPSeq: 1000, IPID: id, SrcIP: src, DstIP: dst, ProtoBits: schemas.ProtoIP | schemas.ProtoTCP}
	}
	lp := tcp(1_000_000, 0, lanIP, server, 5000, 7)
	lp.SrcMAC, lp.DstMAC = plug, router
	lan := &schemas.Batch{Kind: schemas.KindPackets, Campaign: "c", Home: "h", Tap: "lan", Source: "l", Session: "lan-x", Final: true, Packets: []schemas.Packet{lp}}
	wan := &schemas.Batch{Kind: schemas.KindPackets, Campaign: "c", Home: "h", Tap: "wan", Source: "w", Session: "wan-x", Final: true, Packets: []schemas.Packet{
		tcp(1_000_200, 0, wanIP, server, 40000, 7), // the plug's packet, translated
		tcp(1_000_300, 1, wanIP, other, 40001, 9),  // no LAN packet
	}}
	res, err := l.LabelPair("h", []*schemas.Batch{lan}, []*schemas.Batch{wan})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.WAN[0].Labels; got[0] != 0 || got[1] != schemas.Unlabeled {
		t.Errorf("WAN labels %v, want [0 -1]", got)
	}
	if res.WAN[0].View != "napt" || res.LAN[0].View != "lan" || res.Pairing.Paired != 1 {
		t.Errorf("views %s/%s, %d paired", res.LAN[0].View, res.WAN[0].View, res.Pairing.Paired)
	}
	for _, b := range append(res.LAN, res.WAN...) {
		for _, p := range b.Packets {
			if p.SrcIP.IsValid() || p.DstIP.IsValid() || p.SrcPort != 0 || p.IPID != 0 || p.TCPSeq != 0 || !p.SrcMAC.IsZero() {
				t.Errorf("%s view: addresses left the labeler: %+v", b.View, p)
			}
		}
	}
	if !wan.Packets[0].SrcIP.IsValid() {
		t.Error("the input batch was modified")
	}
	if BaseName("wan", "wan-session-01") != BaseName("lan", "lan-session-01") {
		t.Error("wan-session-01 and lan-session-01 do not pair")
	}
}

// TestSessionChainAnyOrder: a restarted labeler receives the batches nobody
// had fetched before the ones its predecessor held (those come back only
// when their ack wait ends). The session is complete when its batches run
// from offset 0 to the final one, whatever order they came in.
func TestSessionChainAnyOrder(t *testing.T) {
	batch := func(first uint64, offsets []uint64, final bool) heldBatch {
		b := &schemas.Batch{FirstOffset: first, Final: final}
		for _, o := range offsets {
			b.Packets = append(b.Packets, schemas.Packet{Offset: o})
		}
		return heldBatch{batch: b}
	}
	// Offset 3 was undecodable: the second batch still starts at 3.
	a, b, c := batch(0, []uint64{0, 1, 2}, false), batch(3, []uint64{4, 5}, false), batch(6, nil, true)
	tb := tapBuffer{held: map[uint64]heldBatch{}}
	for i, hb := range []heldBatch{c, b} {
		tb.held[hb.batch.FirstOffset] = hb
		if got := tb.chain(); got != nil {
			t.Fatalf("after %d of the batches, without offset 0, the session is complete: %d batches", i+1, len(got))
		}
	}
	tb.held[0] = a
	got := tb.chain()
	if len(got) != 3 || got[0] != a || got[1] != b || got[2] != c {
		t.Fatalf("chain = %v, want the three batches in offset order", got)
	}
	// A non-final empty batch must not make the chain spin.
	tb = tapBuffer{held: map[uint64]heldBatch{0: batch(0, nil, false)}}
	if got := tb.chain(); got != nil {
		t.Fatalf("an empty non-final batch completed the session: %v", got)
	}
	// Nor batches whose offsets lead back to one already walked (decoding
	// refuses them; the walk must end whatever it holds): the last
	// offset 2^64 - 1 leads to 0, and a batch at 3 ending at 1 to 2.
	for _, held := range [][]heldBatch{
		{batch(0, []uint64{math.MaxUint64}, false)},
		{batch(0, []uint64{0, 1, 2}, false), batch(3, []uint64{1}, false)},
	} {
		tb = tapBuffer{held: map[uint64]heldBatch{}}
		for _, hb := range held {
			tb.held[hb.batch.FirstOffset] = hb
		}
		if got := tb.chain(); got != nil {
			t.Fatalf("batches whose offsets lead back completed the session: %v", got)
		}
	}
}

// TestWatchedTapsAreWaitedFor: a LAN session waits for its WAN session
// where the WAN tap watches a folder (its files are not known beforehand),
// for the home's idle timeout, as for a live tap; where the WAN tap's files
// make no such session, it does not wait.
func TestWatchedTapsAreWaitedFor(t *testing.T) {
	napt := campaign.Gateway{Mode: "napt", MAC: "02:00:5e:00:00:01", LANNets: []string{"192.168.1.0/24"}}
	c := &campaign.Campaign{Name: "c", Homes: []*campaign.Home{
		{Name: "watched", Gateway: napt, Taps: []campaign.Tap{{Name: "lan", Watch: "/captures/lan"}, {Name: "wan", Watch: "/captures/wan"}}},
		{Name: "files", Gateway: napt, Taps: []campaign.Tap{{Name: "lan", Files: []string{"/c/x.pcap"}}, {Name: "wan", Files: []string{"/c/y.pcap"}}}},
	}}
	l, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	w, f := l.homes["watched"], l.homes["files"]
	if !w.expects(TapWAN, "lan-x", TapLAN) || f.expects(TapWAN, "lan-x", TapLAN) {
		t.Errorf("a LAN session waits for its WAN session: watched %v, files %v; want true, false", w.expects(TapWAN, "lan-x", TapLAN), f.expects(TapWAN, "lan-x", TapLAN))
	}
	if got, want := l.idleOf(w), w.rotation.IdleTimeout; got != want || want == 0 {
		t.Errorf("a watched home's pairs wait %v; want its idle timeout %v", got, want)
	}
	if got := l.idleOf(f); got != 0 {
		t.Errorf("a home of files waits %v; want for ever (0)", got)
	}
}
