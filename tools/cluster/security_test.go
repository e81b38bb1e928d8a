package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/label"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/tools/internal/servers"
)

// testNATSBin finds nats-server alone, for tests that need no MinIO and no
// worker binaries, or skips the test.
func testNATSBin(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(envBin)
	if dir == "" {
		t.Skipf("no cluster binaries: set %s to a folder holding nats-server, or run `go tool task cluster-test` or `go tool task security-test`, which build it into %s", envBin, servers.BinDir)
	}
	bin := filepath.Join(dir, "nats-server")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("%s: %v (run `go run ./tools/cluster --install` from the repository root)", bin, err)
	}
	return bin
}

// startNATS starts the 3-node TLS cluster alone, with the campaign's
// users, for tests that need neither MinIO nor worker processes.
func startNATS(t *testing.T, bin string, w *workload) *Cluster {
	t.Helper()
	dir := t.TempDir()
	tlsFiles, err := servers.NewTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	users := usersFor(w.c)
	var list []servers.User
	for _, u := range users {
		list = append(list, u)
	}
	nc, err := servers.StartNATSCluster(bin, filepath.Join(dir, "nats"), 3, tlsFiles, list)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return &Cluster{NATS: nc, users: users, log: testLog, w: w}
}

// TestSecurityInboxAndForgery (findings 1 and 3) runs against the real
// 3-node TLS cluster with a user per worker and per home, as the cluster
// tool sets it up. A labeler labels home-2's genuine batch while home-1's
// agent (its own user, password and the CA: everything a home's agent has)
// tries to read what the labeler pulls through the inboxes, and publishes,
// on its own subject, a batch claiming to be home-2's. home-1 must receive
// nothing of home-2's, and its forgery must end in the dead-letter stream,
// not in LABELED.
func TestSecurityInboxAndForgery(t *testing.T) {
	bin := testNATSBin(t)
	dir := t.TempDir()
	w, err := generate(filepath.Join(dir, "campaign"), 2, 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := startNATS(t, bin, w)
	nc, tlsFiles, users := k.NATS, k.NATS.TLS, k.users
	admin, err := k.Admin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	home1, home2 := w.c.Homes[0].Name, w.c.Homes[1].Name

	// The eavesdropper: home-1's credentials, nats.go's shared inbox, and
	// subscriptions on every inbox it can name.
	var (
		mu         sync.Mutex
		violations []string
	)
	u1 := users["capture-"+home1]
	spy, err := nats.Connect(nc.URL, nats.UserInfo(u1.Name, u1.Password), nats.RootCAs(tlsFiles.CA),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			violations = append(violations, err.Error())
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Close()
	var overheard atomic.Int64
	for _, subj := range []string{"_INBOX.>", "_INBOX.labeler.>", "_INBOX.capture-" + home2 + ".>", ">"} {
		if _, err := spy.Subscribe(subj, func(m *nats.Msg) {
			if strings.Contains(string(m.Data), home2) {
				overheard.Add(1)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}

	// The labeler, in-process, as the labeler user.
	l, err := label.New(w.c)
	if err != nil {
		t.Fatal(err)
	}
	lconn, err := bus.Connect(ctx, bus.Config{URL: nc.URL, Replicas: 3, Name: "test-labeler", Auth: k.Auth("labeler")}, testLog)
	if err != nil {
		t.Fatal(err)
	}
	defer lconn.Close()
	// No deadline, as a worker runs: each JetStream request then times out
	// on its own and is retried, where one lost while the cluster elects a
	// leader would otherwise wait out the test's whole deadline.
	lctx, stopLabeler := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(lctx, lconn, "labeler-"+w.c.Name, testLog) }()
	defer func() {
		stopLabeler()
		<-done
	}()

	// The windower, in-process, as the windower user, writing to an
	// embedded S3: its permissions on the cluster are exercised too.
	wenv, err := endpoints.Open(ctx, endpoints.Config{Home: t.TempDir(), NATSURL: nc.URL, Replicas: 3, S3Bucket: "homemole", NATSAuth: k.Auth("windower")}, "test-windower", testLog)
	if err != nil {
		t.Fatal(err)
	}
	defer wenv.Close()
	spec, err := specOf(w.c)
	if err != nil {
		t.Fatal(err)
	}
	win, err := window.New(spec, wenv.Store, testLog)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWindower := context.WithCancel(context.Background())
	wdone := make(chan error, 1)
	go func() {
		wdone <- wenv.Bus.Consume(wctx, bus.ConsumerConfig{Stream: schemas.StreamLabeled, Durable: "windower-" + w.c.Name, Filter: "hm.lbl." + w.c.Name + ".>"}, win.Handle)
	}()
	defer func() {
		stopWindower()
		<-wdone
	}()

	batch := func(home string) *schemas.Batch {
		b := &schemas.Batch{Kind: schemas.KindPackets, Campaign: w.c.Name, Home: home, Tap: "lan", Source: w.c.Name + "/" + home + "/lan/session-01.pcap", Session: "lan-session-01", Final: true}
		for i := range 20 {
			b.Packets = append(b.Packets, schemas.Packet{Offset: uint64(i), TsNs: int64(i) * 1e6, DPort: 443, FrameLen: 90})
		}
		return b
	}
	agent := func(home string) *bus.Conn {
		auth := k.Auth("capture-" + home)
		c, err := bus.Connect(ctx, bus.Config{URL: nc.URL, Replicas: 3, Name: "test-capture-" + home, Auth: auth, IDKey: auth.IDKey()}, testLog)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	agent1, agent2 := agent(home1), agent(home2)
	forged := batch(home2)
	forged.Source = w.c.Name + "/" + home1 + "/lan/session-01.pcap"
	if err := agent1.Publish(ctx, schemas.PacketSubject(w.c.Name, home1, "lan"), forged); err != nil {
		t.Fatalf("home-1 publishing on its own subject: %v", err)
	}
	if err := agent2.Publish(ctx, schemas.PacketSubject(w.c.Name, home2, "lan"), batch(home2)); err != nil {
		t.Fatal(err)
	}
	var dls []bus.DeadLetter
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		// Each look bounded: a request lost while the cluster elects the
		// DLQ stream's leader would otherwise wait out the whole test.
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		dls, err = admin.DeadLetters(pctx, "")
		labeled := subjectMsgs(pctx, admin.JS, schemas.StreamLabeled, schemas.LabeledSubject(w.c.Name, home2, ">"))
		pcancel()
		_, perr := wenv.Store.Get(ctx, spec.Prefix()+"/lan/"+home2+"/lan-session-01/_part.json")
		if err == nil && len(dls) >= 1 && labeled >= 1 && perr == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s: %d dead letters (%v), %d labeled batches of %s, its session windowed: %v", len(dls), err, labeled, home2, perr)
		}
	}
	_ = spy.Flush()
	time.Sleep(500 * time.Millisecond)
	labeled2 := subjectMsgs(ctx, admin.JS, schemas.StreamLabeled, schemas.LabeledSubject(w.c.Name, home2, ">"))
	if labeled2 != 1 {
		t.Errorf("LABELED holds %d batches of %s, want its genuine one only", labeled2, home2)
	}
	if len(dls) != 1 || dls[0].Subject != schemas.PacketSubject(w.c.Name, home1, "lan") || !strings.Contains(dls[0].Reason, "does not match its subject") {
		t.Errorf("dead letters %+v: want home-1's forgery, refused as not matching its subject", dls)
	}
	objs, err := wenv.Store.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if !strings.HasPrefix(o.Key, spec.Prefix()+"/lan/"+home2+"/lan-session-01/") && !strings.HasSuffix(o.Key, "_spec.json") {
			t.Errorf("object %s: only home-2's genuine session should have been windowed", o.Key)
		}
	}
	if n := overheard.Load(); n != 0 {
		t.Errorf("home-1 overheard %d messages carrying %s's batches", n, home2)
	}
	mu.Lock()
	refused := len(violations)
	mu.Unlock()
	if refused < 4 {
		t.Errorf("%d of home-1's 4 subscriptions were refused: %v", refused, violations)
	}
	t.Logf("attack: home-1 subscribes to _INBOX.>, _INBOX.labeler.>, home-2's inbox and > | expected: refused, nothing overheard | observed: %d subscriptions refused, %d of home-2's messages overheard", refused, overheard.Load())
	t.Logf("attack: home-1 publishes a batch claiming home-2 on the TLS cluster | expected: dead-lettered, not labeled | observed: %d dead letters (%s), %d labeled batches of home-2 (its genuine one, windowed: %d objects)", len(dls), dls[0].Reason, labeled2, len(objs))
}
