package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/label"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/tools/internal/servers"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// envBin names the folder with nats-server, minio, capture, labeler and
// windower; `go tool task cluster-test` builds them and sets it.
const envBin = "HOMEMOLE_CLUSTER_BIN"

// testBins finds the cluster binaries or skips the test.
func testBins(t *testing.T) bins {
	t.Helper()
	dir := os.Getenv(envBin)
	if dir == "" {
		t.Skipf("no cluster binaries: set %s to a folder holding nats-server, minio, capture, labeler and windower, "+
			"or run `go tool task cluster-test`, which builds them into %s and runs these tests", envBin, servers.BinDir)
	}
	b := bins{nats: filepath.Join(dir, "nats-server"), minio: filepath.Join(dir, "minio"), dir: dir}
	for _, f := range []string{b.nats, b.minio, filepath.Join(dir, "capture"), filepath.Join(dir, "labeler"), filepath.Join(dir, "windower")} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("%s: %v (run `go run ./tools/cluster --install` from the repository root)", f, err)
		}
	}
	return b
}

var testLog = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// fixture is the campaign every fault test builds and the embedded build
// of it they are held to.
var fixture struct {
	once sync.Once
	dir  string
	w    *workload
	ref  *result
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixture.dir != "" {
		os.RemoveAll(fixture.dir)
	}
	os.Exit(code)
}

// reference generates the fault tests' campaign (6 homes, 3 ten-minute
// sessions each, about 110,000 packets) and builds it embedded, once.
func reference(t *testing.T) (*workload, *result) {
	t.Helper()
	fixture.once.Do(func() {
		if fixture.dir, fixture.err = os.MkdirTemp("", "homemole-cluster-test-"); fixture.err != nil {
			return
		}
		if fixture.w, fixture.err = generate(filepath.Join(fixture.dir, "campaign"), 6, 3, 10*time.Minute); fixture.err != nil {
			return
		}
		fixture.ref, fixture.err = embeddedBuild(context.Background(), filepath.Join(fixture.dir, "embedded"), fixture.w, testLog)
	})
	if fixture.err != nil {
		t.Fatal(fixture.err)
	}
	return fixture.w, fixture.ref
}

// faultRun starts a cluster with two replicas of each worker and builds
// the campaign with fault running beside the capture agents, then holds
// the result to the embedded build: the same packets at every stage, none
// lost or duplicated, and every object byte-identical.
func faultRun(t *testing.T, fault func(ctx context.Context, k *Cluster) error, setup func(k *Cluster)) *Cluster {
	b := testBins(t)
	w, ref := reference(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	var err error
	dir := t.TempDir()
	if os.Getenv("HOMEMOLE_CLUSTER_KEEP") != "" {
		// Kept for a look at the workers' logs after the test.
		if dir, err = os.MkdirTemp("", "homemole-"+t.Name()+"-"); err != nil {
			t.Fatal(err)
		}
		t.Logf("cluster folder kept: %s", dir)
	}
	k, err := startCluster(ctx, dir, b, w, 2, testLog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	// Small batches, two awaiting an ack at a time, spread the build over
	// many messages and several seconds for the faults to land in: on an
	// idle machine the build would otherwise be over in about a second.
	k.Batch = 50
	k.captureArgs = func(string) []string { return []string{"--window", "2"} }
	if setup != nil {
		setup(k)
	}
	res, err := clusterBuild(ctx, k, 2, func(ctx context.Context) error { return fault(ctx, k) })
	if err != nil {
		t.Fatalf("%v (worker logs in %s)", err, k.dir)
	}
	t.Logf("cluster build under the fault: %s; published %s; labeled %s; %d packets windowed in %d windows, %d objects",
		res.elapsed.Round(time.Millisecond), res.counts.Published, res.counts.Labeled, res.counts.Windowed, res.counts.Windows, res.counts.Objects)
	if err := compare(res, ref); err != nil {
		t.Error(err)
	}
	t.Logf("test took %s", time.Since(start).Round(time.Millisecond))
	return k
}

// progress is how far the build is: batches in PACKETS and LABELED, and
// sessions windowed.
func progress(ctx context.Context, k *Cluster, js jetstream.JetStream, st store.Store) (packets, labeled uint64, parts int) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if s, err := js.Stream(ctx, schemas.StreamPackets); err == nil {
		packets = s.CachedInfo().State.Msgs
	}
	if s, err := js.Stream(ctx, schemas.StreamLabeled); err == nil {
		labeled = s.CachedInfo().State.Msgs
	}
	if spec, err := specOf(k.w.c); err == nil {
		parts, _ = countParts(ctx, st, spec)
	}
	return packets, labeled, parts
}

// waitFor polls progress until cond holds; it fails when the build ended
// first (the fault would have tested nothing).
func waitFor(ctx context.Context, k *Cluster, what string, cond func(packets, labeled uint64, parts int) bool) error {
	conn, err := k.Admin(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	st, err := k.Store(ctx)
	if err != nil {
		return err
	}
	for {
		p, l, parts := progress(ctx, k, conn.JS, st)
		if parts >= len(k.w.sessions) {
			return fmt.Errorf("%s: the build had ended (%d sessions windowed): the fault came too late", what, parts)
		}
		if cond(p, l, parts) {
			return nil
		}
		select {
		case <-ctx.Done():
			// The build ended (every session windowed) without the
			// condition: the fault never landed.
			return fmt.Errorf("%s: the build ended before the fault could land", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestKillWorkers SIGKILLs a labeler replica while its homes' batches
// still flow, then both windower replicas while each holds batches of
// unfinished sessions unacknowledged, and starts a replacement for each at
// once, as a Deployment would.
func TestKillWorkers(t *testing.T) {
	faultRun(t, func(ctx context.Context, k *Cluster) error {
		conn, err := k.Admin(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		// pending is how many batches a worker's consumer has unacked and
		// still to deliver.
		pending := func(stream, durable string) (ackPending int, delivered uint64) {
			// A consumer whose leader is being elected answers nothing: a
			// short wait keeps the watch from missing its moments.
			ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			c, err := conn.JS.Consumer(ctx, stream, durable)
			if err != nil {
				return 0, 0
			}
			info, err := c.Info(ctx)
			if err != nil {
				return 0, 0
			}
			return info.NumAckPending, info.Delivered.Consumer
		}
		// One loop watches for each kill's moment, so one worker's
		// quick finish cannot keep another's kill from landing.
		labeler := "labeler-" + k.w.c.Name + "-p0of2"
		var labelerAt uint64 // deliveries when the labeler was killed
		labelerKilled, labelerTookOver := false, false
		windowerKilled := [2]bool{}
		return waitFor(ctx, k, "kills", func(_, l uint64, _ int) bool {
			if !labelerKilled {
				// Early: p0's three homes cannot all be among the first
				// two agents, so its replacement has homes left to label.
				if _, d := pending(schemas.StreamPackets, labeler); l >= 20 && d > 0 {
					if err := k.KillWorker("labeler", 0); err != nil {
						t.Error(err)
					}
					labelerKilled, labelerAt = true, d
					t.Logf("labeler 0 killed after %d deliveries, and restarted", d)
				}
			} else if _, d := pending(schemas.StreamPackets, labeler); !labelerTookOver && d > labelerAt {
				labelerTookOver = true
				t.Logf("labeler 0's replacement took over: %d deliveries", d)
			}
			for i := range windowerKilled {
				if held, _ := pending(schemas.StreamLabeled, fmt.Sprintf("windower-cluster-v1-p%dof2", i)); !windowerKilled[i] && held > 0 {
					if err := k.KillWorker("windower", i); err != nil {
						t.Error(err)
					}
					windowerKilled[i] = true
					t.Logf("windower %d killed holding %d unacknowledged batches of unfinished sessions, and restarted", i, held)
				}
			}
			return labelerTookOver && windowerKilled[0] && windowerKilled[1]
		})
	}, nil)
}

// TestRestartNATSNode SIGKILLs one of the three NATS nodes mid-build and
// starts it again on its state three seconds later.
func TestRestartNATSNode(t *testing.T) {
	faultRun(t, func(ctx context.Context, k *Cluster) error {
		if err := waitFor(ctx, k, "NATS node kill", func(p, l uint64, _ int) bool { return p >= 100 }); err != nil {
			return err
		}
		node := k.NATS.Nodes[1]
		node.Kill()
		t.Logf("NATS node %s killed", node.Name)
		time.Sleep(3 * time.Second)
		if err := node.Restart(); err != nil {
			return err
		}
		t.Logf("NATS node %s back", node.Name)
		return nil
	}, nil)
}

// TestMinIOUnavailable stops MinIO once the first session is stored and
// starts it again five seconds later.
func TestMinIOUnavailable(t *testing.T) {
	faultRun(t, func(ctx context.Context, k *Cluster) error {
		if err := waitFor(ctx, k, "MinIO stop", func(_, _ uint64, parts int) bool { return parts >= 1 }); err != nil {
			return err
		}
		k.MinIO.Stop()
		t.Log("MinIO stopped")
		time.Sleep(5 * time.Second)
		if err := k.MinIO.Start(); err != nil {
			return err
		}
		t.Log("MinIO back")
		return nil
	}, nil)
}

// TestKillCaptureAgent SIGKILLs the first home's capture agent once it has
// published a few batches; the harness starts a new one, which must resume
// from its spool and progress files rather than publish from the start.
func TestKillCaptureAgent(t *testing.T) {
	var killed atomic.Bool
	var logFile string
	k := faultRun(t, func(ctx context.Context, k *Cluster) error { return nil }, func(k *Cluster) {
		// The first home's agent sends one batch of 10 packets at a time,
		// waiting for each ack: about 2,000 round trips, slow enough to be
		// killed mid-session. With batches of 50 an idle machine sometimes
		// finished all of them (0.2 s) before the kill landed.
		k.captureArgs = func(home string) []string {
			if home == k.w.c.Homes[0].Name {
				return []string{"--batch", "10", "--window", "1"}
			}
			return nil
		}
		k.onCapture = func(home string, p *servers.Proc) {
			if home != k.w.c.Homes[0].Name || killed.Load() {
				return
			}
			logFile = p.LogFile
			go func() {
				conn, err := k.Admin(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				defer conn.Close()
				// Killed once it has saved progress (every 200 ms) and
				// published some batches: before that a restart publishes
				// everything again, which dedup absorbs but tests nothing.
				subject := schemas.PacketSubject(k.w.c.Name, home, ">")
				progressFiles := filepath.Join(k.dir, "spool", home, "progress", "*.json")
				for {
					saved, _ := filepath.Glob(progressFiles)
					if len(saved) > 0 && subjectMsgs(context.Background(), conn.JS, schemas.StreamPackets, subject) >= 10 {
						break
					}
					select {
					case <-p.Exited():
						t.Errorf("the capture agent of %s ended before it could be killed", home)
						return
					case <-time.After(5 * time.Millisecond):
					}
				}
				if !p.Kill() {
					t.Errorf("the capture agent of %s ended before it could be killed", home)
					return
				}
				killed.Store(true)
				t.Logf("capture agent of %s killed", home)
			}()
		}
	})
	if !killed.Load() {
		t.Fatal("the capture agent was never killed: the test tested nothing")
	}
	out, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	// The second life's summary: it resumed past what the first published.
	if lives := strings.Count(string(out), "--- capture-"+k.w.c.Homes[0].Name+" started"); lives < 2 {
		t.Fatalf("the capture agent ran %d time(s): the kill landed after it had finished, so no restart was tested (log %s)", lives, logFile)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var summary string
	for _, l := range lines {
		if strings.HasPrefix(l, "home ") {
			summary = l
		}
	}
	t.Logf("restarted agent: %s", summary)
	// The restart resumes where the acknowledged progress ends: inside a
	// capture ("resumed past"), or past captures acknowledged whole, which
	// it passes over without counting. Either way it publishes fewer
	// packets than the home's captures hold.
	var resumed, published int
	if i := strings.Index(summary, " packets resumed past"); i > 0 {
		f := strings.Fields(summary[:i])
		fmt.Sscan(f[len(f)-1], &resumed)
	}
	if i := strings.Index(summary, " packets in "); i > 0 {
		f := strings.Fields(summary[:i])
		fmt.Sscan(f[len(f)-1], &published)
	}
	total := 0
	for _, tap := range k.w.c.Homes[0].Taps {
		for _, f := range tap.Files {
			total += len(capturetest.Packets(t, f, features.HomeConfig{}))
		}
	}
	t.Logf("the home's captures hold %d packets; the restarted agent published %d and resumed past %d inside a capture", total, published, resumed)
	if published == 0 || published >= total {
		t.Errorf("the restarted agent published %d of the home's %d packets: it did not resume from its progress (log %s)", published, total, logFile)
	}
}

// TestPermissions: clients speak TLS and log in; a home's capture agent may
// publish its own home's packets and nothing else; the workers may not
// publish where they have no business; the streams are replicated on
// three nodes.
func TestPermissions(t *testing.T) {
	b := testBins(t)
	w, _ := reference(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k := startNATS(t, b.nats, w)
	nc, tlsFiles := k.NATS, k.NATS.TLS
	admin, err := k.Admin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, name := range []string{schemas.StreamPackets, schemas.StreamLabeled} {
		s, err := admin.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info := s.CachedInfo()
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("stream %s: %d replicas, cluster %+v: want R3 with a leader and two followers", name, info.Config.Replicas, info.Cluster)
		} else {
			t.Logf("stream %s: R%d, leader %s, followers %s and %s", name, info.Config.Replicas, info.Cluster.Leader, info.Cluster.Replicas[0].Name, info.Cluster.Replicas[1].Name)
		}
	}

	home1, home2 := w.c.Homes[0].Name, w.c.Homes[1].Name
	connect := func(user string, auth bus.Auth, url string) (*bus.Conn, error) {
		return bus.Connect(ctx, bus.Config{URL: url, Replicas: 3, Name: "test-" + user, Auth: auth}, testLog)
	}
	agent, err := connect("capture-"+home1, k.Auth("capture-"+home1), nc.URL)
	if err != nil {
		t.Fatalf("the capture agent of %s cannot connect: %v", home1, err)
	}
	defer agent.Close()
	batch := func(home string) *schemas.Batch {
		return &schemas.Batch{Kind: schemas.KindPackets, Campaign: w.c.Name, Home: home, Tap: "lan", Source: "perm-test", Session: "lan-perm", Final: true,
			Packets: []schemas.Packet{{Offset: 0, DPort: 53, FrameLen: 80}}}
	}
	if err := agent.Publish(ctx, schemas.PacketSubject(w.c.Name, home1, "lan"), batch(home1)); err != nil {
		t.Fatalf("the capture agent of %s may not publish its own packets: %v", home1, err)
	}
	refused := func(c *bus.Conn, who, subject string) {
		t.Helper()
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		err := c.Publish(pctx, subject, batch(home2))
		last := c.NC.LastError()
		if err == nil || !errors.Is(last, nats.ErrPermissionViolation) || !strings.Contains(last.Error(), subject) {
			t.Errorf("%s publishing to %s: got %v (last connection error %v), want the publish refused with a permissions violation", who, subject, err, last)
			return
		}
		t.Logf("%s publishing to %s: %v", who, subject, last)
		if got := subjectMsgs(ctx, admin.JS, schemas.StreamPackets, subject); got != 0 {
			t.Errorf("%s: %d messages reached %s", who, got, subject)
		}
	}
	refused(agent, "the capture agent of "+home1, schemas.PacketSubject(w.c.Name, home2, "lan"))
	for _, user := range []string{"labeler", "windower"} {
		c, err := connect(user, k.Auth(user), nc.URL)
		if err != nil {
			t.Fatalf("%s cannot connect: %v", user, err)
		}
		refused(c, user, schemas.PacketSubject(w.c.Name, home2, "lan"))
		c.Close()
	}

	// Who may not connect at all.
	wrong := k.Auth("capture-" + home1)
	wrong.Password = "not-the-password"
	plain := strings.ReplaceAll(nc.URL, "tls://", "nats://")
	for _, c := range []struct {
		who  string
		auth bus.Auth
		url  string
	}{
		{"a client without a user", bus.Auth{CAFile: tlsFiles.CA}, nc.URL},
		{"a wrong password", wrong, nc.URL},
		{"a client that does not trust the CA", bus.Auth{User: wrong.User, Password: k.users["capture-"+home1].Password}, nc.URL},
		{"a plain-text client", bus.Auth{User: wrong.User, Password: k.users["capture-"+home1].Password}, plain},
	} {
		conn, err := connect("refused", c.auth, c.url)
		if err == nil {
			conn.Close()
			t.Errorf("%s connected", c.who)
			continue
		}
		if strings.Contains(err.Error(), k.users["capture-"+home1].Password) {
			t.Errorf("the error shows the password: %v", err)
		}
		t.Logf("%s: refused: %v", c.who, err)
	}
}

// subjectMsgs counts a stream's messages on subjects matching filter.
func subjectMsgs(ctx context.Context, js jetstream.JetStream, stream, filter string) uint64 {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

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
