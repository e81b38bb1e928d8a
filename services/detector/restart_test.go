package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/detect"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/metrics"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/worker"
)

// TestRestartedDetectorHasNoGapNorDuplicate replays one held-out session
// into embedded JetStream under two campaigns. One detector reads the first
// from start to end; the second is stopped twice mid-stream (its context
// cancelled wherever it is, its connection closed) and started afresh on a
// new connection, as a restarted pod would be. The SEEN stream must hold
// the same windows for both, each once and in order: the checkpoint gave
// the restarted detector its place, and a window published again was
// deduplicated by its message id.
func TestRestartedDetectorHasNoGapNorDuplicate(t *testing.T) {
	ctx, log := embeddedtest.Context(t, 4*time.Minute), embeddedtest.Log()
	model, pkts, _ := trainedHome(ctx, t, log)
	srv, conn, st := embeddedtest.Start(ctx, t, log)
	// The detectors read the model from the object store, as a pod does.
	var buf bytes.Buffer
	if err := model.Save(&buf); err != nil {
		t.Fatal(err)
	}
	ep := endpoints.Config{S3: srv.S3Endpoint, S3Bucket: embeddedtest.Bucket, AccessKey: srv.S3AccessKey, SecretKey: srv.S3SecretKey}
	if _, err := st.Put(ctx, "models/home.spm", buf.Bytes(), "application/octet-stream"); err != nil {
		t.Fatal(err)
	}
	if _, err := loadModel(ctx, "", "models/nosuch.spm", ep); err == nil || !strings.Contains(err.Error(), "models/nosuch.spm") {
		t.Errorf("a missing model object: %v, want an error naming it", err)
	}
	model, err := loadModel(ctx, "", "models/home.spm", ep)
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close()
	connect := func() *bus.Conn {
		c, err := bus.Connect(ctx, bus.Config{URL: srv.NATSURL, Name: "test"}, log)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, c := range []string{"whole", "cut", "flaky"} {
		publishWAN(ctx, t, conn, c, "home-1", "session-04", pkts, 1024)
	}
	seen, err := conn.JS.Stream(ctx, bus.StreamSeen)
	if err != nil {
		t.Fatalf("no SEEN stream: %v", err)
	}
	end := pkts[len(pkts)-1].TsNs
	// stored is how many windows of campaign c the SEEN stream holds, and
	// whether the last one reaches the end of the session.
	stored := func(c string) (int, bool) {
		subject := schemas.SeenSubject(c, "home-1")
		info, err := seen.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			t.Fatal(err)
		}
		n := int(info.State.Subjects[subject])
		if n == 0 {
			return 0, false
		}
		last, err := seen.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			t.Fatal(err)
		}
		s, err := schemas.DecodeSeen(last.Data)
		if err != nil {
			t.Fatalf("SEEN holds a bad window: %v", err)
		}
		return n, s.EndNs >= end
	}
	cfg := func(c string) Config {
		return Config{Campaign: c, Home: "*", Homes: []string{"home-1"}, Tap: "wan", Step: 1, AckWait: 2 * time.Second}
	}
	// run runs a detector on its own connection until stop says so.
	// wrap, when set, changes the detector before it starts.
	run := func(c string, met *metrics.Metrics, wrap func(*detect.Online), stop func(n int, done bool) bool) int {
		t.Helper()
		rc := connect()
		defer rc.Close()
		runCtx, cancelRun := context.WithCancel(ctx)
		defer cancelRun()
		errc := make(chan error, 1)
		o, err := newOnline(ctx, rc, model, cfg(c))
		if err != nil {
			t.Fatal(err)
		}
		if wrap != nil {
			wrap(o)
		}
		go func() { errc <- serve(runCtx, rc, o, cfg(c), worker.Bare("detector", met, log)) }()
		for {
			if n, done := stored(c); stop(n, done) {
				break
			}
			select {
			case <-ctx.Done():
				n, _ := stored(c)
				t.Fatalf("campaign %s: the detector stored %d windows and did not finish", c, n)
			case err := <-errc:
				t.Fatalf("detector stopped: %v", err)
			case <-time.After(20 * time.Millisecond):
			}
		}
		cancelRun()
		if err := <-errc; err != nil && err != context.Canceled {
			t.Fatalf("detector: %v", err)
		}
		n, _ := stored(c)
		return n
	}
	finished := func(_ int, done bool) bool { return done }
	met := metrics.New("detector")
	run("whole", met, nil, finished)
	total, _ := stored("whole")
	if got := counter(t, met, SeenWindows); got != float64(total) {
		t.Errorf("%s = %v, SEEN holds %d windows", SeenWindows, got, total)
	}
	if got := counter(t, met, metrics.PacketsIn); got != float64(len(pkts)) {
		t.Errorf("%s = %v, the session has %d packets", metrics.PacketsIn, got, len(pkts))
	}
	if total < 100 {
		t.Fatalf("the uninterrupted run stored %d windows; the test wants a longer session", total)
	}
	// A window published again under its id is stored once.
	first := readSeen(ctx, t, conn, "whole")[0]
	data, err := json.Marshal(first)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := conn.JS.Publish(ctx, schemas.SeenSubject("whole", "home-1"), data, jetstream.WithMsgID(detect.SeenMsgID("whole", "home-1", first.StartNs)))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := stored("whole"); !ack.Duplicate || n != total {
		t.Errorf("a window published again: duplicate %v, SEEN holds %d windows, want %d", ack.Duplicate, n, total)
	}
	for _, share := range []int{1, 2} {
		// Past its share the detector's next window waits, and once the
		// test stops it every window fails: a fast detector would
		// otherwise store the rest between two polls (it did: 45, then
		// 120 of 120), and no restart would be tested.
		limit, stopped := share*total/3, make(chan struct{})
		hold := func(o *detect.Online) {
			publish := o.Publish
			o.Publish = func(ctx context.Context, subject, id string, data []byte) error {
				if n, _ := stored("cut"); n >= limit {
					select {
					case <-stopped:
					case <-ctx.Done():
					}
					return errors.New("the test stopped the detector")
				}
				return publish(ctx, subject, id, data)
			}
		}
		n := run("cut", nil, hold, func(n int, _ bool) bool {
			if n < limit {
				return false
			}
			close(stopped)
			return true
		})
		t.Logf("detector stopped with %d of %d windows stored", n, total)
		if n >= total {
			t.Fatalf("the detector finished before it was stopped: no restart was tested")
		}
	}
	run("cut", nil, nil, finished)
	// The restarted detector's checkpoint covers the session's last batch.
	cps, err := detect.OpenKVCheckpoints(ctx, conn.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	cp, ok, err := cps.Load(ctx, "cut", "home-1", "wan")
	packets, _ := conn.JS.Stream(ctx, schemas.StreamPackets)
	last, lerr := packets.GetLastMsgForSubject(ctx, schemas.PacketSubject("cut", "home-1", "wan"))
	if lerr != nil {
		t.Fatalf("the last batch of cut/home-1: %v", lerr)
	}
	if err != nil || !ok || cp.Seq != last.Sequence {
		t.Errorf("checkpoint of cut/home-1: %+v, found %v, %v; want it to cover the last batch at %d", cp, ok, err, last.Sequence)
	}

	// A batch the checkpoint covers, delivered again (its ack was lost), is
	// skipped by a detector that restarts: nothing is judged or published.
	lb, err := schemas.DecodeBatch(last.Data)
	if err != nil {
		t.Fatal(err)
	}
	again := &detect.Online{Model: model, Step: 1, Lag: 1, Checkpoints: cps, Replay: detect.StreamReplayer(conn.JS),
		Publish: func(_ context.Context, subject, id string, _ []byte) error {
			t.Errorf("a covered batch published %s to %s", id, subject)
			return nil
		}}
	if err := again.HandleAt(ctx, last.Sequence, lb); err != nil {
		t.Errorf("a covered batch delivered again: %v", err)
	}
	// SEEN refuses two windows in a row, half way through a batch: the
	// home's state is dropped and rebuilt from its checkpoint when the
	// batch comes again, so its packets are not counted twice.
	var calls, failed atomic.Int64
	run("flaky", nil, func(o *detect.Online) {
		publish := o.Publish
		o.Publish = func(ctx context.Context, subject, id string, data []byte) error {
			if n := calls.Add(1); n == 40 || n == 41 {
				failed.Add(1)
				return errors.New("injected: SEEN refused the window")
			}
			return publish(ctx, subject, id, data)
		}
	}, finished)
	if failed.Load() != 2 {
		t.Fatalf("%d publishes failed, want 2", failed.Load())
	}
	whole, cut, flaky := readSeen(ctx, t, conn, "whole"), readSeen(ctx, t, conn, "cut"), readSeen(ctx, t, conn, "flaky")
	for name, ws := range map[string][]schemas.Seen{"uninterrupted": whole, "restarted": cut, "refused twice": flaky} {
		for i := 1; i < len(ws); i++ {
			if d := ws[i].StartNs - ws[i-1].StartNs; d != int64(model.Config.Match.Bin) {
				t.Errorf("%s run: windows %d and %d start %d ns apart, want one bin (%d ns): a gap or a duplicate", name, i-1, i, d, int64(model.Config.Match.Bin))
			}
		}
	}
	if len(whole) != len(cut) || whole[0].StartNs != cut[0].StartNs || whole[len(whole)-1].StartNs != cut[len(cut)-1].StartNs {
		t.Fatalf("uninterrupted: %d windows from %d to %d; restarted twice: %d windows from %d to %d",
			len(whole), whole[0].StartNs, whole[len(whole)-1].StartNs, len(cut), cut[0].StartNs, cut[len(cut)-1].StartNs)
	}
	if len(flaky) != len(whole) || flaky[len(flaky)-1].StartNs != whole[len(whole)-1].StartNs {
		t.Fatalf("with two refused windows: %d windows, the last from %d; uninterrupted: %d to %d", len(flaky), flaky[len(flaky)-1].StartNs, len(whole), whole[len(whole)-1].StartNs)
	}
	var differ, flakyDiffer, busy int
	for i := range whole {
		if whole[i].Packets > 0 {
			busy++
		}
		if !sameDetections(whole[i], cut[i]) {
			differ++
		}
		if !sameDetections(whole[i], flaky[i]) {
			flakyDiffer++
		}
	}
	if flakyDiffer > 0 {
		t.Errorf("%d of %d windows judged differently after two refused windows", flakyDiffer, len(whole))
	}
	if busy == 0 {
		t.Error("no window counted a packet: the restart would not show whether packet counts come back")
	}
	t.Logf("SEEN: %d windows uninterrupted, %d restarted twice (0 missing, 0 duplicated); %d windows judged differently", len(whole), len(cut), differ)
	// The replay rebuilds the matcher from the batches it held: the same
	// packets give the same judgements.
	if differ > 0 {
		t.Errorf("%d of %d windows judged differently after the restarts", differ, len(whole))
	}
}

// readSeen is every window of campaign c's home-1 in the SEEN stream, in
// stream order.
func readSeen(ctx context.Context, t *testing.T, conn *bus.Conn, c string) []schemas.Seen {
	t.Helper()
	subject := schemas.SeenSubject(c, "home-1")
	s, err := conn.JS.Stream(ctx, bus.StreamSeen)
	if err != nil {
		t.Fatal(err)
	}
	var out []schemas.Seen
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if err == jetstream.ErrMsgNotFound {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		w, err := schemas.DecodeSeen(m.Data)
		if err != nil {
			t.Fatalf("SEEN at %d: %v", m.Sequence, err)
		}
		out = append(out, w)
		seq = m.Sequence + 1
	}
}

// counter is the value of a metric of met (summed over its series).
func counter(t *testing.T, met *metrics.Metrics, name string) float64 {
	t.Helper()
	mfs, err := met.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return v
}

// TestConsumerPartitions: the partitions' durable consumers split a
// campaign's homes, each home to exactly one, under names of their own; a
// detector of one home reads only it, unpartitioned.
func TestConsumerPartitions(t *testing.T) {
	homes := []string{"home-1", "home-2", "home-3", "home-4", "home-5", "home-6", "home-7"}
	readers := map[string][]string{}
	durables := map[string]bool{}
	for i := range 3 {
		cc := Config{Campaign: "spring", Homes: homes, Home: "*", Tap: "wan", Partition: bus.Partition{Index: i, Count: 3}}.Consumer()
		if durables[cc.Durable] || cc.Stream != schemas.StreamPackets || cc.MaxAckPending != 1 {
			t.Errorf("partition %d: %+v", i, cc)
		}
		durables[cc.Durable] = true
		for _, f := range cc.Filters {
			readers[f] = append(readers[f], cc.Durable)
		}
	}
	for _, h := range homes {
		if r := readers[schemas.PacketSubject("spring", h, "wan")]; len(r) != 1 {
			t.Errorf("%s is read by %v, want one partition", h, r)
		}
	}
	if len(readers) != len(homes) {
		t.Errorf("the partitions read %d subjects, the campaign has %d homes: %v", len(readers), len(homes), readers)
	}
	one := Config{Campaign: "spring", Homes: homes, Home: "home-2", Tap: "wan", Partition: bus.Partition{Index: 1, Count: 3}}.Consumer()
	if one.Filter != schemas.PacketSubject("spring", "home-2", "wan") || one.Filters != nil || one.Durable != "detector-spring-home-2-wan" {
		t.Errorf("one home: %+v", one)
	}
}

func sameDetections(a, b schemas.Seen) bool {
	// The packet counts come back with the replayed batches, so the
	// unknown-device rule judges a restarted home alike.
	if len(a.Detections) != len(b.Detections) || a.Packets != b.Packets || a.Confidence != b.Confidence || a.Unknown != b.Unknown {
		return false
	}
	for i := range a.Detections {
		if a.Detections[i].Device != b.Detections[i].Device || a.Detections[i].Count != b.Detections[i].Count {
			return false
		}
	}
	return true
}
