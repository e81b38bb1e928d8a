package homecount

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/pipeline/realhome/realhometest"
	"github.com/homemole/homemole/schemas"
)

// onlineHome is a home assembled from the IoT Sentinel captures (two
// Arias, two EdimaxCams and six other devices, a quarter of an hour), its LAN
// tap's packets, and a host model learned from every capture but those it
// drew on.
func onlineTestHome(t *testing.T) (*HostModel, *realhome.Home, []schemas.Packet) {
	t.Helper()
	ctx := context.Background()
	hc, err := NewHostCounter(ctx, realhometest.Devices(t))
	if err != nil {
		t.Fatal(err)
	}
	h, err := realhome.Assemble(ctx, hc.devs, realhome.Config{Devices: 8, Units: map[string]int{"Aria": 2, "EdimaxCam1": 2},
		Duration: 15 * time.Minute, Sessions: realhome.AllSessions, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	var used []string
	for _, u := range h.Units {
		used = append(used, u.Session)
	}
	pkts, err := readHome(ctx, h, filepath.Join(t.TempDir(), "home.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	return hc.Model(used), h, pkts
}

// lanBatches cuts a home's packets into a tap's batches of size packets,
// the last one final.
func lanBatches(c, home string, pkts []schemas.Packet, size int) []*schemas.Batch {
	var out []*schemas.Batch
	for lo := 0; lo < len(pkts); lo += size {
		hi := min(lo+size, len(pkts))
		out = append(out, &schemas.Batch{Kind: schemas.KindPackets, Campaign: c, Home: home, Tap: "lan", Source: c + "/" + home + "/lan/lan.pcap",
			Session: "session-1", FirstOffset: uint64(lo), Final: hi == len(pkts), Packets: pkts[lo:hi]})
	}
	return out
}

// published is one Publish call.
type published struct {
	subject, id string
	data        []byte
}

// recorder records what an Online publishes; fail, when set, may refuse a
// publish (the n-th of the recorder, from 1).
type recorder struct {
	mu   sync.Mutex
	msgs []published
	n    int
	fail func(n int) bool
}

func (r *recorder) publish(_ context.Context, subject, id string, data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	if r.fail != nil && r.fail(r.n) {
		return errors.New("injected: SEEN refused the window")
	}
	r.msgs = append(r.msgs, published{subject, id, slices.Clone(data)})
	return nil
}

// memStates is a StateStore in memory that counts its saves.
type memStates struct {
	mu    sync.Mutex
	m     map[string][]byte
	saves int
}

func (s *memStates) Load(_ context.Context, campaign, home, tap string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.m[campaign+"."+home+"."+tap]
	return d, ok, nil
}

func (s *memStates) Save(_ context.Context, campaign, home, tap string, state []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	s.m[campaign+"."+home+"."+tap] = slices.Clone(state)
	s.saves++
	return nil
}

// seqOf is batch i's stream position: other homes' batches lie between.
func seqOf(i int) uint64 { return uint64(3*i + 7) }

// deduped is what a stream that deduplicates by message id keeps of msgs,
// in order; a message id published again with other bytes fails the test.
func deduped(t *testing.T, msgs []published) []published {
	t.Helper()
	var out []published
	at := map[string]int{}
	for _, m := range msgs {
		if i, ok := at[m.id]; ok {
			if string(out[i].data) != string(m.data) {
				t.Errorf("window %s published again with other contents:\n%s\n%s", m.id, out[i].data, m.data)
			}
			continue
		}
		at[m.id] = len(out)
		out = append(out, m)
	}
	return out
}

// TestOnlineHostsAsLiveHome feeds a held-out home's LAN batches of 50
// packets through Online: it publishes, on the home's SEEN subject under
// HostsMsgID, exactly the windows one LiveHome fed the same packets
// directly returns, as Seen messages of the campaign and home, and the
// home's units are counted in them.
func TestOnlineHostsAsLiveHome(t *testing.T) {
	m, h, pkts := onlineTestHome(t)
	cfg := DefaultLiveConfig()
	direct := cfg
	direct.Gateway = h.GatewayMAC
	lh, err := NewLiveHome(m, direct)
	if err != nil {
		t.Fatal(err)
	}
	var want []schemas.SeenWindow
	for i := range pkts {
		want = append(want, lh.Add(&pkts[i])...)
	}
	want = append(want, lh.Flush()...)

	var rec recorder
	var asked []string
	var told int
	o := &Online{Model: m, Config: cfg, Publish: rec.publish,
		Gateways: func(c, home string) schemas.MAC {
			asked = append(asked, c+"/"+home)
			return h.GatewayMAC
		},
		OnWindow: func(schemas.Seen) { told++ }}
	batches := lanBatches("spring", "home-1", pkts, 50)
	for i, b := range batches {
		if err := o.HandleAt(context.Background(), seqOf(i), b); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
	if !slices.Equal(asked, []string{"spring/home-1"}) {
		t.Errorf("the gateway hook was asked for %v, want spring/home-1 once", asked)
	}
	if told != len(rec.msgs) {
		t.Errorf("OnWindow told of %d windows, %d published", told, len(rec.msgs))
	}
	if len(want) < 50 {
		t.Fatalf("the LiveHome judged %d windows of %d packets: the test wants a longer home", len(want), len(pkts))
	}
	var got []schemas.SeenWindow
	ids := map[string]bool{}
	for _, p := range rec.msgs {
		s, err := schemas.DecodeSeen(p.data)
		if err != nil {
			t.Fatal(err)
		}
		if p.subject != schemas.SeenSubject("spring", "home-1") || s.Campaign != "spring" || s.Home != "home-1" || s.Method != MethodHosts {
			t.Errorf("window %d on %s: campaign %q, home %q, method %q", s.StartNs, p.subject, s.Campaign, s.Home, s.Method)
		}
		if p.id != HostsMsgID("spring", "home-1", MethodHosts, s.StartNs) || ids[p.id] {
			t.Errorf("window %d: message id %q (repeated: %v)", s.StartNs, p.id, ids[p.id])
		}
		ids[p.id] = true
		got = append(got, s.SeenWindow)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Online published %d windows, a LiveHome fed directly judged %d; they differ", len(got), len(want))
		for i := range min(len(got), len(want)) {
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Errorf("first difference, window %d:\nonline %+v\ndirect %+v", i, got[i], want[i])
				break
			}
		}
	}
	// The units are counted: the home's Arias, and both its EdimaxCams
	// (counted as their family) in one window.
	most := map[string]int{}
	for _, w := range got {
		for _, d := range w.Detections {
			most[d.Device] = max(most[d.Device], d.Count)
		}
	}
	t.Logf("%d packets, %d batches, %d windows; most units counted in a window: %v", len(pkts), len(batches), len(got), most)
	if most["Aria"] < 1 || most["EdimaxCam"] != 2 {
		t.Errorf("most units counted in a window: %v, want an Aria and both EdimaxCams", most)
	}
	// The gateway a campaign names is never counted: name an EdimaxCam
	// unit so, and only the other is.
	cam := slices.IndexFunc(h.Units, func(u realhome.Unit) bool { return u.Device == "EdimaxCam1" })
	var named recorder
	o = &Online{Model: m, Config: cfg, Publish: named.publish, Gateways: func(string, string) schemas.MAC { return h.Units[cam].MAC }}
	for i, b := range batches {
		if err := o.HandleAt(context.Background(), seqOf(i), b); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
	cams, hosts := 0, 0
	for _, p := range named.msgs {
		s, err := schemas.DecodeSeen(p.data)
		if err != nil {
			t.Fatal(err)
		}
		hosts += s.Hosts
		for _, d := range s.Detections {
			if d.Device == "EdimaxCam" {
				cams = max(cams, d.Count)
			}
		}
	}
	all := 0
	for _, w := range got {
		all += w.Hosts
	}
	if cams != 1 || hosts >= all {
		t.Errorf("an EdimaxCam named the gateway: at most %d EdimaxCams counted in a window, %d hosts in all windows (%d unnamed); want one and fewer", cams, hosts, all)
	}
	if HostsMsgID("spring", "home-1", MethodHosts, 5) == HostsMsgID("spring", "home-1", MethodIPID, 5) {
		t.Error("a LAN and a WAN host count of one window share a message id")
	}
	if HostsMsgID("spring", "home-1", MethodHosts, 5) == fmt.Sprintf("%s|%d", schemas.SeenSubject("spring", "home-1"), 5) {
		t.Error("HostsMsgID is the sequence-profile detector's message id: the two methods would dedupe each other")
	}
}

// TestOnlineHostsRestart stops an Online half way through a home's
// batches and starts a fresh one on the same StateStore, which is handed
// the last handled batch again (its ack was lost) and then the rest; and
// a third whose publishes fail twice half way through a batch, which is
// then delivered again. After deduplication by message id each publishes
// exactly the windows of an uninterrupted run, with the same contents: no
// window missing, none repeated with other counts.
func TestOnlineHostsRestart(t *testing.T) {
	m, h, pkts := onlineTestHome(t)
	ctx := context.Background()
	batches := lanBatches("spring", "home-1", pkts, 50)
	gw := func(string, string) schemas.MAC { return h.GatewayMAC }
	online := func(st StateStore, rec *recorder) *Online {
		return &Online{Model: m, Config: DefaultLiveConfig(), Gateways: gw, States: st, Publish: rec.publish}
	}

	var whole recorder
	wholeStates := &memStates{}
	o := online(wholeStates, &whole)
	for i, b := range batches {
		if err := o.HandleAt(ctx, seqOf(i), b); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
	if wholeStates.saves != len(batches) {
		t.Errorf("%d states saved for %d batches", wholeStates.saves, len(batches))
	}
	st, _, _ := wholeStates.Load(ctx, "spring", "home-1", "lan")
	t.Logf("%d windows; the home's saved table is %d bytes", len(whole.msgs), len(st))
	if len(st) == 0 || len(st) > 1<<20 {
		t.Errorf("the saved table is %d bytes: want some, and under NATS's 1 MiB payload", len(st))
	}

	// Restarted half way: the first Online handles half of the batches,
	// a fresh one gets the last of them again and then the rest.
	var cut recorder
	states := &memStates{}
	half := len(batches) / 2
	first := online(states, &cut)
	for i, b := range batches[:half] {
		if err := first.HandleAt(ctx, seqOf(i), b); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
	before := len(cut.msgs)
	second := online(states, &cut)
	for i := half - 1; i < len(batches); i++ {
		if err := second.HandleAt(ctx, seqOf(i), batches[i]); err != nil {
			t.Fatalf("batch %d after the restart: %v", i, err)
		}
		if i == half-1 && len(cut.msgs) != before {
			t.Errorf("the batch the saved table covers, delivered again, published %d windows", len(cut.msgs)-before)
		}
	}
	if before == 0 || len(cut.msgs) == before {
		t.Fatalf("%d windows before the restart, %d after: the restart was not mid-stream", before, len(cut.msgs)-before)
	}

	// Two publishes refused half way through: the batch fails, and is
	// delivered again.
	var flaky recorder
	flaky.fail = func(n int) bool { return n == len(whole.msgs)/2 || n == len(whole.msgs)/2+1 }
	third := online(&memStates{}, &flaky)
	failed := 0
	for i := 0; i < len(batches); i++ {
		if err := third.HandleAt(ctx, seqOf(i), batches[i]); err != nil {
			failed++
			if failed > 2 {
				t.Fatalf("batch %d failed %d times: %v", i, failed, err)
			}
			i-- // delivered again
		}
	}
	if failed != 2 {
		t.Errorf("%d batches failed, want 2 refused publishes", failed)
	}

	want := deduped(t, whole.msgs)
	if len(want) != len(whole.msgs) {
		t.Errorf("the uninterrupted run published %d windows under %d ids", len(whole.msgs), len(want))
	}
	for name, rec := range map[string]*recorder{"restarted": &cut, "refused twice": &flaky} {
		got := deduped(t, rec.msgs)
		if len(got) != len(want) {
			t.Errorf("%s: %d windows, uninterrupted %d", name, len(got), len(want))
		}
		for i := range min(len(got), len(want)) {
			if got[i].id != want[i].id || string(got[i].data) != string(want[i].data) {
				t.Errorf("%s, window %d: %s\n%s\nuninterrupted: %s\n%s", name, i, got[i].id, got[i].data, want[i].id, want[i].data)
				break
			}
		}
	}
}

// TestOnlineHostsRefuses: a labeled batch, a WAN tap's batch (no source
// MACs) and, with saved tables, a batch without a stream position are
// refused with errors that say what to fix, publishing and saving
// nothing; a batch mixing frames with and without a source MAC is
// counted, and a home refused a batch goes on from its saved table.
func TestOnlineHostsRefuses(t *testing.T) {
	m, _, pkts := onlineTestHome(t)
	ctx := context.Background()
	var rec recorder
	states := &memStates{}
	o := &Online{Model: m, Config: DefaultLiveConfig(), States: states, Publish: rec.publish}
	lan := lanBatches("spring", "home-1", pkts, 500)
	if len(lan) < 3 {
		t.Fatalf("%d batches: want three or more", len(lan))
	}
	if err := o.HandleAt(ctx, 1, lan[0]); err != nil {
		t.Fatal(err)
	}
	published, saved := len(rec.msgs), states.saves

	labeled := *lan[1]
	labeled.Kind = schemas.KindLabeled
	err := o.HandleAt(ctx, 2, &labeled)
	if err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "PACKETS") {
		t.Errorf("a labeled batch: %v, want a refusal naming the PACKETS stream", err)
	}
	wan := *lan[1]
	wan.Tap = "wan"
	wan.Packets = slices.Clone(lan[1].Packets)
	for i := range wan.Packets {
		wan.Packets[i].StripAddresses()
	}
	err = o.HandleAt(ctx, 2, &wan)
	if err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "--tap lan") {
		t.Errorf("a WAN batch: %v, want a refusal saying the counter needs --tap lan", err)
	}
	// The same WAN packets under the lan tap: the home's table must not
	// take them either.
	wan.Tap = "lan"
	if err := o.HandleAt(ctx, 2, &wan); err == nil || !errors.Is(err, ErrRefused) {
		t.Errorf("packets without source MACs on the lan tap: %v, want a refusal", err)
	}
	if err := o.HandleAt(ctx, 0, lan[1]); err == nil || !strings.Contains(err.Error(), "stream position") {
		t.Errorf("a batch without a stream position, with saved tables: %v, want an error saying it needs one", err)
	}
	if len(rec.msgs) != published || states.saves != saved {
		t.Errorf("refused batches published %d windows and saved %d tables", len(rec.msgs)-published, states.saves-saved)
	}
	// An empty final batch is no WAN batch; one that mixes frames with
	// and without a source MAC is counted.
	mixed := *lan[1]
	mixed.Packets = slices.Clone(lan[1].Packets)
	mixed.Packets[0].SrcMAC = schemas.MAC{}
	if err := o.HandleAt(ctx, 2, &mixed); err != nil {
		t.Errorf("a batch with one frame without a source MAC: %v", err)
	}
	if err := o.HandleAt(ctx, 3, &schemas.Batch{Kind: schemas.KindPackets, Campaign: "spring", Home: "home-1", Tap: "lan", Source: "x", Final: true}); err != nil {
		t.Errorf("an empty final batch: %v", err)
	}

	// What a refused batch did is forgotten: after it, the home counts as
	// one that never saw it.
	var a, b recorder
	clean := &Online{Model: m, Config: DefaultLiveConfig(), Publish: a.publish}
	refused := &Online{Model: m, Config: DefaultLiveConfig(), States: &memStates{}, Publish: b.publish}
	for i, batch := range lan {
		if err := clean.HandleAt(ctx, uint64(2*i+1), batch); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			late := wan
			late.Packets = slices.Clone(wan.Packets)
			for j := range late.Packets {
				late.Packets[j].TsNs += int64(time.Hour)
			}
			if err := refused.HandleAt(ctx, uint64(2*i), &late); err == nil {
				t.Fatal("a batch without source MACs, an hour later, was counted")
			}
		}
		if err := refused.HandleAt(ctx, uint64(2*i+1), batch); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := deduped(t, b.msgs), deduped(t, a.msgs); !reflect.DeepEqual(got, want) {
		t.Errorf("after a refused batch: %d windows; never refused: %d; they differ", len(got), len(want))
	}
	if len(a.msgs) == 0 {
		t.Error("no window published")
	}
}

// TestOnlineHostsStaleTable: after an upgrade that changed the keys, a
// home's table saved by the earlier build is not refused for ever (every
// batch of the home would fail): the home starts afresh, says so in the
// log, and counts as a home never seen.
func TestOnlineHostsStaleTable(t *testing.T) {
	m, _, pkts := onlineTestHome(t)
	ctx := context.Background()
	batches := lanBatches("spring", "home-1", pkts, 500)
	var clean, rec recorder
	fresh := &Online{Model: m, Config: DefaultLiveConfig(), States: &memStates{}, Publish: clean.publish}
	states := &memStates{m: map[string][]byte{"spring.home-1.lan": []byte(`{"version":1,"seq":99999,"hosts":[]}`)}}
	var log bytes.Buffer
	upgraded := &Online{Model: m, Config: DefaultLiveConfig(), States: states, Publish: rec.publish,
		Log: slog.New(slog.NewTextHandler(&log, nil))}
	for i, b := range batches {
		if err := fresh.HandleAt(ctx, seqOf(i), b); err != nil {
			t.Fatal(err)
		}
		if err := upgraded.HandleAt(ctx, seqOf(i), b); err != nil {
			t.Fatalf("batch %d over a table of the earlier version: %v", i, err)
		}
	}
	if len(rec.msgs) == 0 || !slices.EqualFunc(rec.msgs, clean.msgs, func(a, b published) bool { return a.id == b.id && bytes.Equal(a.data, b.data) }) {
		t.Errorf("over a stale table %d windows published, a fresh home %d, or they differ", len(rec.msgs), len(clean.msgs))
	}
	if !strings.Contains(log.String(), "earlier version") || !strings.Contains(log.String(), "home-1") {
		t.Errorf("log %q: want the home started afresh named", log.String())
	}
	if got := states.m["spring.home-1.lan"]; !bytes.Contains(got, []byte(`"version":2`)) {
		t.Errorf("the table saved after the upgrade: %.60s, want this build's version", got)
	}
}
