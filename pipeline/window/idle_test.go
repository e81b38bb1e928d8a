package window

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/schemas/windowfile"
	"github.com/nats-io/nats.go/jetstream"
)

// TestIdleSessionCutShort: a session whose producer died mid-way (no final
// batch) is closed by the windower's idle timeout: its windows so far are
// written, its part says it was cut short, and every delivery is acked, so
// the consumer holds nothing. A session that ends normally is not marked.
func TestIdleSessionCutShort(t *testing.T) {
	ctx := embeddedtest.Context(t, 30*time.Second)
	spec := Spec{Dataset: "d", Version: "v1", Kind: schemas.KindNoise, Size: 10, Labels: []string{"plug", "cam", "bulb", "hub"}}
	// benchSession's batches: the dead session loses its last (final) one.
	dead := benchSession("h", "lan-dead", 400, 50, 1)
	dead = dead[:len(dead)-1]
	whole := benchSession("h", "lan-whole", 200, 50, 2)
	r := startWindowing(t, spec, append(dead, whole...), 0, time.Second)

	got := map[string]Part{}
	started := time.Now()
	for len(got) < 2 {
		select {
		case p := <-r.parts:
			got[p.Session] = p
			if p.Session == "lan-dead" && time.Since(started) < r.w.IdleTimeout {
				t.Errorf("the unfinished session was closed after %s, before its idle timeout", time.Since(started))
			}
		case <-ctx.Done():
			t.Fatalf("parts %v after %s; %d sessions held", got, time.Since(started), r.w.Held())
		}
	}
	if err := r.stop(); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	deadPkts := 0
	for _, b := range dead {
		deadPkts += len(b.Packets)
	}
	if p := got["lan-dead"]; !p.CutShort || p.Packets != deadPkts || p.Windows == 0 {
		t.Errorf("dead session's part: cut short %v, %d packets, %d windows; want cut short with its %d packets", p.CutShort, p.Packets, p.Windows, deadPkts)
	}
	if p := got["lan-whole"]; p.CutShort || p.Packets != 200 {
		t.Errorf("whole session's part: cut short %v, %d packets", p.CutShort, p.Packets)
	}
	data, err := r.st.Get(ctx, path.Join(spec.Prefix(), "lan", "h", "lan-dead", PartSuffix))
	if err != nil {
		t.Fatal(err)
	}
	var stored map[string]any
	if err := json.Unmarshal(data, &stored); err != nil || stored["cut_short"] != true {
		t.Errorf("stored part does not record the cut: %s", data)
	}
	// An ack is a message the server takes in its own time: on a loaded
	// machine the consumer's count can trail the windower's acks.
	acks, pending := r.ackPending(t)
	for deadline := time.Now().Add(5 * time.Second); (acks != 0 || pending != 0) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		acks, pending = r.ackPending(t)
	}
	if acks != 0 || pending != 0 || r.w.Held() != 0 {
		t.Errorf("after the sweep %d deliveries await an ack, %d are pending, %d sessions held: want none", acks, pending, r.w.Held())
	}
}

// embeddedServers starts the embedded NATS and S3 servers for one test.
func embeddedServers(tb testing.TB, log *slog.Logger) (*bus.Conn, store.Store) {
	_, conn, st := embeddedtest.Start(context.Background(), tb, log)
	return conn, st
}

// startWindowing runs a windower over the LABELED stream on fresh embedded
// servers; batches are published before it starts. With idle > 0 the
// windower closes sessions idle that long (its Sweeper runs).
type windowing struct {
	conn  *bus.Conn
	st    store.Store
	w     *Windower
	parts chan Part
	stop  func() error
	// durable is the windower's consumer.
	durable string
}

func startWindowing(t *testing.T, spec Spec, batches []*schemas.Batch, ackWait, idle time.Duration) *windowing {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	conn, st := embeddedServers(t, log)
	for _, b := range batches {
		if err := conn.Publish(ctx, schemas.LabeledSubject(b.Campaign, b.Home, b.View), b); err != nil {
			t.Fatal(err)
		}
	}
	w, err := New(spec, st, log)
	if err != nil {
		t.Fatal(err)
	}
	r := &windowing{conn: conn, st: st, w: w, parts: make(chan Part, 16)}
	w.OnPart = func(p Part) { r.parts <- p }
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	cc := ConsumerConfig(spec, batches[0].Campaign, ackWait)
	r.durable = cc.Durable
	if idle > 0 {
		w.IdleTimeout = idle
		go w.Sweeper(cctx)
	}
	go func() { done <- conn.Consume(cctx, cc, w.Handle) }()
	r.stop = func() error { cancel(); return <-done }
	return r
}

func (r *windowing) ackPending(t *testing.T) (acks, pending int) {
	t.Helper()
	ctx := context.Background()
	cons, err := r.conn.JS.Consumer(ctx, schemas.StreamLabeled, r.durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 1 << 30, 1 << 30 // not declared yet
	}
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.NumAckPending, int(info.NumPending)
}

// TestIncrementalWindowing: a session of 20,000 packets whose final batch
// has not come yet is written as it goes (every 10 finished windows): the
// windower acknowledges the batches it consumed, holds no more than the
// unfinished tail and one flush of packets, and ignores the redeliveries
// of a short ack wait. Once the final batch comes, the objects hold exactly
// the windows the whole session cuts into, byte for byte.
func TestIncrementalWindowing(t *testing.T) {
	spec := Spec{Dataset: "d", Version: "v1", Kind: schemas.KindNoise, Size: 50, Labels: []string{"plug", "cam", "bulb", "hub"},
		WindowsPerObject: 4, FlushWindows: 10}
	all := benchSession("h", "lan-long", 20000, 100, 3)
	r := startWindowing(t, spec, all[:len(all)-1], time.Second, 0)
	var maxHeld int64
	deadline := time.Now().Add(20 * time.Second)
	for {
		maxHeld = max(maxHeld, r.w.HeldBytes())
		acks, pending := r.ackPending(t)
		if pending == 0 && acks <= 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries await an ack and %d were not delivered after 20 s: the session is not written as it goes", acks, pending)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Redeliveries (the ack wait is 1 s) must not add copies.
	time.Sleep(1500 * time.Millisecond)
	maxHeld = max(maxHeld, r.w.HeldBytes())
	if bound := int64(spec.FlushWindows*spec.Size+100) * packetCost; maxHeld > bound {
		t.Errorf("the windower held %d bytes of packets; a flush every %d windows of %d plus a batch is %d", maxHeld, spec.FlushWindows, spec.Size, bound)
	}
	final := all[len(all)-1]
	if err := r.conn.Publish(context.Background(), schemas.LabeledSubject(final.Campaign, final.Home, final.View), final); err != nil {
		t.Fatal(err)
	}
	var part Part
	select {
	case part = <-r.parts:
	case <-time.After(20 * time.Second):
		t.Fatal("no part after the final batch")
	}
	if err := r.stop(); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	// The whole session, cut at once.
	var pkts []schemas.Packet
	var labels []int16
	for _, b := range all {
		pkts = append(pkts, b.Packets...)
		for _, l := range b.Labels {
			// The dataset's vocabulary, as Handle maps the home's.
			labels = append(labels, int16(-1))
			if l >= 0 {
				if i := slices.Index(spec.Labels, b.Devices[l].Name); i >= 0 {
					labels[len(labels)-1] = int16(i)
				}
			}
		}
	}
	whole := Cut(spec, "h", "lan", "lan-long", pkts, labels)
	if part.Packets != 20000 || part.Windows != len(whole) || part.CutShort {
		t.Fatalf("part: %d packets, %d windows (cut short %v); the whole session makes %d windows of 20000 packets", part.Packets, part.Windows, part.CutShort, len(whole))
	}
	n := 0
	for _, o := range part.Objects {
		var lo, hi int
		if _, err := fmt.Sscanf(path.Base(o.Key), "noise-w%06d-%06d.arrow", &lo, &hi); err != nil || lo != n {
			t.Fatalf("object %s: want the windows from %d on (%v)", o.Key, n, err)
		}
		got, err := r.st.Get(context.Background(), o.Key)
		if err != nil {
			t.Fatal(err)
		}
		want, err := windowfile.Encode(spec.Size, whole[lo:hi+1])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("object %s differs from the same windows cut from the whole session", o.Key)
		}
		n = hi + 1
	}
	if n != len(whole) {
		t.Fatalf("the objects hold %d windows of %d", n, len(whole))
	}
	t.Logf("%d windows in %d objects; at most %d bytes of packets held", n, len(part.Objects), maxHeld)
}

// TestConsumerBudget: past its consumer budget a windower refuses batches
// of new sessions until the sessions it holds are written, then takes them.
func TestConsumerBudget(t *testing.T) {
	spec := Spec{Dataset: "d", Version: "v1", Kind: schemas.KindNoise, Size: 50, Labels: []string{"plug", "cam", "bulb", "hub"}}
	a := benchSession("h", "lan-a", 1000, 100, 4)
	b := benchSession("h", "lan-b", 1000, 100, 5)
	// a's batches but its final one, then b's.
	r := startWindowing(t, spec, append(append([]*schemas.Batch{}, a[:len(a)-1]...), b...), time.Minute, 0)
	r.w.ConsumerBudget = 500 * packetCost
	deadline := time.Now().Add(5 * time.Second)
	for r.w.HeldBytes() < 900*packetCost && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if held, n := r.w.HeldBytes(), r.w.Held(); n != 1 || held != 900*packetCost {
		t.Fatalf("over its budget the windower holds %d sessions, %d bytes: want session a alone (%d bytes)", n, held, 900*packetCost)
	}
	final := a[len(a)-1]
	if err := r.conn.Publish(context.Background(), schemas.LabeledSubject(final.Campaign, final.Home, final.View), final); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for len(got) < 2 {
		select {
		case p := <-r.parts:
			got[p.Session] = p.Packets
		case <-time.After(20 * time.Second):
			t.Fatalf("parts %v: session b never got in after a was written", got)
		}
	}
	r.stop()
	if got["lan-a"] != 1000 || got["lan-b"] != 1000 {
		t.Fatalf("parts %v", got)
	}
}

// TestSecurityWindowPathTraversal (finding 1): a labeled batch whose
// session climbs out of the dataset ("../../../../victim/...") must write
// nothing anywhere: it goes to the dead-letter stream. Before, the windower
// wrote a part record and an Arrow object under datasets/victim/.
func TestSecurityWindowPathTraversal(t *testing.T) {
	ctx := embeddedtest.Context(t, 30*time.Second)
	log := slog.New(slog.DiscardHandler)
	env, err := endpoints.Open(ctx, endpoints.Config{Home: t.TempDir(), S3Bucket: "homemole"}, "security-test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	spec := Spec{Dataset: "ds", Version: "v1", Kind: schemas.KindNoise, Size: 4, Labels: []string{"plug"}}
	w, err := New(spec, env.Store, log)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- env.Bus.Consume(wctx, ConsumerConfig(spec, "c", 0), w.Handle)
	}()
	defer func() {
		stop()
		<-done
	}()
	labeled := func(home, session, source string) *schemas.Batch {
		b := &schemas.Batch{Kind: schemas.KindLabeled, Campaign: "c", Home: home, View: "lan", Source: source, Session: session,
			Final: true, Devices: []schemas.Device{{Name: "plug", Category: "iot"}}}
		for i := range 8 {
			b.Packets = append(b.Packets, schemas.Packet{Offset: uint64(i), TsNs: int64(i) * 1e6, FrameLen: 90})
			b.Labels = append(b.Labels, 0)
		}
		return b
	}
	subj := schemas.LabeledSubject("c", "home-2", "lan")
	for _, b := range []*schemas.Batch{
		labeled("home-2", "../../../../victim/v1/lan/home-2/lan-session-01", "c/home-2/lan/session-01.pcap"),
		labeled("home-2", "lan-session-01", "c/home-2/lan/../../x"),
		labeled("home-2", "lan-session-02", "c/home-2/lan/session-02.pcap"), // genuine
	} {
		if err := env.Bus.Publish(ctx, subj, b); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		objs, _ := env.Store.List(ctx, "datasets/ds/v1/lan/home-2/lan-session-02/")
		if len(objs) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the genuine session was never windowed")
		}
	}
	objs, err := env.Store.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var outside []string
	for _, o := range objs {
		if !strings.HasPrefix(o.Key, "datasets/ds/v1/lan/home-2/lan-session-02/") {
			outside = append(outside, o.Key)
		}
	}
	if len(outside) > 0 {
		t.Errorf("objects written outside the genuine session: %v", outside)
	}
	dls, err := env.Bus.DeadLetters(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 2 {
		t.Fatalf("%d dead letters, want the two forged batches: %+v", len(dls), dls)
	}
	t.Logf("attack: labeled batch with session ../../../../victim/... | expected: nothing written outside the dataset, dead-lettered | observed: %d objects outside, %d dead letters (%s)", len(outside), len(dls), dls[0].Reason)
}

// TestSecurityStoreRefusesClimbingKeys (finding 1): the store itself
// refuses keys with "..", "." or empty segments. The embedded S3 server
// resolves "../" on disk: such a key landed in another bucket.
func TestSecurityStoreRefusesClimbingKeys(t *testing.T) {
	ctx := context.Background()
	env, err := endpoints.Open(ctx, endpoints.Config{Home: t.TempDir(), S3Bucket: "homemole"}, "security-test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	refused := 0
	bad := []string{"../other-bucket/x.arrow", "datasets/d/v1/../../../../other/x", "datasets//x", "datasets/./x", "/datasets/x", "datasets\\..\\x", ""}
	for _, k := range bad {
		if _, err := env.Store.Put(ctx, k, []byte("x"), ""); !errors.Is(err, store.ErrBadKey) {
			t.Errorf("Put(%q): %v, want ErrBadKey", k, err)
		} else {
			refused++
		}
	}
	if _, err := store.Key("datasets", "ds", "v1", "lan", "home-2", ".."); !errors.Is(err, store.ErrBadKey) {
		t.Errorf("store.Key with a \"..\" segment: %v", err)
	}
	if _, err := env.Store.Put(ctx, "datasets/d/v1/lan/h/s/ind-w000000-000001.arrow", []byte("x"), ""); err != nil {
		t.Errorf("a well-formed key was refused: %v", err)
	}
	t.Logf("attack: object keys that climb (../, ./, //, \\) | expected: refused by the store | observed: %d of %d refused", refused, len(bad))
}

// TestSecuritySessionWithoutStart: a home whose labeled batches of a
// session never include offset 0 has them refused (they wait for the
// session's start) and, once that has lasted the consumer's RetryFor, moved
// to the dead letters. Retried for ever, as they were, enough of them (here
// as many as the consumer's ack slots, 100,000 in production) held every
// slot and no other home's session was windowed again.
func TestSecuritySessionWithoutStart(t *testing.T) {
	spec := Spec{Dataset: "d", Version: "v1", Kind: schemas.KindNoise, Size: 50, Labels: []string{"plug", "cam", "bulb", "hub"}}
	orphans := benchSession("h1", "lan-never-started", 400, 100, 4)[1:]
	good := benchSession("h2", "lan-good", 200, 100, 5)
	ctx := embeddedtest.Context(t, 60*time.Second)
	log := slog.New(slog.DiscardHandler)
	conn, st := embeddedServers(t, log)
	for _, b := range append(append([]*schemas.Batch{}, orphans...), good...) {
		if err := conn.Publish(ctx, schemas.LabeledSubject(b.Campaign, b.Home, b.View), b); err != nil {
			t.Fatal(err)
		}
	}
	w, err := New(spec, st, log)
	if err != nil {
		t.Fatal(err)
	}
	parts := make(chan Part, 4)
	w.OnPart = func(p Part) { parts <- p }
	cc := ConsumerConfig(spec, "c", time.Minute)
	cc.MaxAckPending, cc.RetryFor = len(orphans), 2*time.Second
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- conn.Consume(cctx, cc, w.Handle) }()
	defer func() { cancel(); <-done }()
	select {
	case p := <-parts:
		if p.Home != "h2" || p.Packets != 200 {
			t.Fatalf("part %+v: want h2's session", p)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("h2's session was not windowed: h1's batches of a session that never starts hold the consumer")
	}
	var dls []bus.DeadLetter
	for deadline := time.Now().Add(20 * time.Second); len(dls) < len(orphans); time.Sleep(50 * time.Millisecond) {
		if dls, err = conn.DeadLetters(ctx, ""); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d dead letters, want h1's %d batches", len(dls), len(orphans))
		}
	}
	for _, dl := range dls {
		if !strings.Contains(dl.Reason, "gave up") || !strings.Contains(dl.Subject, ".h1.") {
			t.Errorf("dead letter %+v: want one of h1's batches, given up", dl)
		}
	}
	t.Logf("attack: a home sends %d batches of a session whose first batch never comes, as many as the windower's ack slots | expected: the other homes windowed, the batches dead-lettered once the retry limit passes | observed: h2's session windowed, %d of h1's batches dead-lettered", len(orphans), len(dls))
}
