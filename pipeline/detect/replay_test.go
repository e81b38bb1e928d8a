package detect

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/detect/scene"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/schemas"
)

// homeBatches cuts packets into a home's wan batches of n, as its capture
// agent publishes them: the packets numbered from 0 in the order given.
func homeBatches(campaign, home string, pkts []schemas.Packet, n int) []*schemas.Batch {
	pkts = slices.Clone(pkts)
	for i := range pkts {
		pkts[i].Offset = uint64(i)
	}
	var out []*schemas.Batch
	for lo := 0; lo < len(pkts); lo += n {
		hi := min(lo+n, len(pkts))
		out = append(out, &schemas.Batch{Kind: schemas.KindPackets, Campaign: campaign, Home: home, Tap: "wan",
			Source: campaign + "/" + home + "/wan/wan.pcap", Session: "wan-1", FirstOffset: uint64(lo), Packets: pkts[lo:hi]})
	}
	return out
}

// store puts data on subject in PACKETS and returns its stream position.
func store(ctx context.Context, t *testing.T, conn *bus.Conn, subject string, data []byte) uint64 {
	t.Helper()
	ack, err := conn.JS.Publish(ctx, subject, data)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// storeBatch puts b on its home's wan subject and returns its position.
func storeBatch(ctx context.Context, t *testing.T, conn *bus.Conn, b *schemas.Batch) uint64 {
	t.Helper()
	data, err := b.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	return store(ctx, t, conn, schemas.PacketSubject(b.Campaign, b.Home, b.Tap), data)
}

// sameWindows says whether two runs published the same windows, judged
// alike (the scores aside).
func sameWindows(a, b []schemas.Seen) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d windows, want %d", len(b), len(a))
	}
	for i := range a {
		x, y := a[i], b[i]
		same := x.StartNs == y.StartNs && x.Packets == y.Packets && x.Unknown == y.Unknown && len(x.Detections) == len(y.Detections)
		for j := 0; same && j < len(x.Detections); j++ {
			same = x.Detections[j].Device == y.Detections[j].Device && x.Detections[j].Count == y.Detections[j].Count
		}
		if !same {
			return fmt.Errorf("window %d: %+v, want %+v", i, y, x)
		}
	}
	return nil
}

// collect is a Publish that keeps the windows in *to.
func collect(to *[]schemas.Seen) func(context.Context, string, string, []byte) error {
	return func(_ context.Context, _, _ string, data []byte) error {
		s, err := schemas.DecodeSeen(data)
		if err != nil {
			return err
		}
		*to = append(*to, s)
		return nil
	}
}

// TestRestartReplaysPastDeadLetteredMessages: a home publishes an
// undecodable message and a batch naming another home between two genuine
// batches. Consume dead-letters both, but they stay in PACKETS, inside the
// range a checkpoint's replay reads back. A detector restarted before
// every batch must step over them as Consume did, and publish the windows
// of one that never restarted. Before, the replay stopped at the first
// ("decode batch: not a HomeMole batch (bad magic)"), and the home's
// batch was retried for ever.
func TestRestartReplaysPastDeadLetteredMessages(t *testing.T) {
	ctx, log := embeddedtest.Context(t, 2*time.Minute), embeddedtest.Log()
	_, conn, _ := embeddedtest.Start(ctx, t, log)
	m := smallModel(t)
	beat, _, noise := synthetic(5, 1.9e18)
	batches := homeBatches("c", "h", packetsOf(scene.Superpose(beat, noise)), 100)
	batches[len(batches)-1].Final = true
	subject := schemas.PacketSubject("c", "h", "wan")

	forged := *batches[0]
	forged.Home, forged.Source = "other", "c/other/wan/wan.pcap"
	forgedData, err := forged.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	mid := len(batches) / 2
	seqs := make([]uint64, len(batches))
	var junk []uint64
	for i, b := range batches {
		if i == mid {
			junk = append(junk, store(ctx, t, conn, subject, []byte("not a batch")), store(ctx, t, conn, subject, forgedData))
		}
		seqs[i] = storeBatch(ctx, t, conn, b)
	}
	for _, seq := range junk {
		data, err := getMsg(ctx, conn, seq)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bus.DecodeMsg(subject, data); !errors.Is(err, bus.ErrPermanent) {
			t.Fatalf("message %d: Consume would not dead-letter it (%v): the test plants nothing", seq, err)
		}
	}

	var whole []schemas.Seen
	ref := &Online{Model: m, Step: 1, Lag: 1, Publish: collect(&whole)}
	for _, b := range batches {
		if err := ref.Handle(ctx, b); err != nil {
			t.Fatal(err)
		}
	}

	cps, err := OpenKVCheckpoints(ctx, conn.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	replay, across := StreamReplayer(conn.JS, log), 0
	var restarted []schemas.Seen
	for i, b := range batches {
		o := &Online{Model: m, Step: 1, Lag: 1, Checkpoints: cps, Publish: collect(&restarted),
			Replay: func(ctx context.Context, campaign, home, tap string, from, to uint64, fn func(uint64, *schemas.Batch) error) error {
				if from < junk[0] && to > junk[1] {
					across++
				}
				return replay(ctx, campaign, home, tap, from, to, fn)
			}}
		if err := o.HandleAt(ctx, seqs[i], b); err != nil {
			t.Fatalf("batch %d of %d at %d, the dead-lettered messages at %v: %v", i, len(batches), seqs[i], junk, err)
		}
	}
	if across == 0 {
		t.Fatal("no restart replayed across the dead-lettered messages: the test shows nothing")
	}
	if err := sameWindows(whole, restarted); err != nil {
		t.Errorf("restarted before each batch: %v", err)
	}
	t.Logf("%d batches, 2 dead-lettered messages at %v; %d restarts replayed across them; %d windows as without restarts", len(batches), junk, across, len(restarted))
}

func getMsg(ctx context.Context, conn *bus.Conn, seq uint64) ([]byte, error) {
	s, err := conn.JS.Stream(ctx, schemas.StreamPackets)
	if err != nil {
		return nil, err
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		return nil, err
	}
	return m.Data, nil
}

// TestBrokenHomeDoesNotStallOthers: the detector's consumer holds one
// batch at a time (MaxAckPending 1), so a home whose batch is retried for
// ever stalls every home of its partition. A home whose checkpoint's
// batches retention removed, and one whose checkpoint is damaged, cannot be
// restored however often their batches come: those are dead-lettered, with
// the fix named, and the other home's windows go on. A restore that fails
// for a while (NATS unreachable) is retried, not dead-lettered.
func TestBrokenHomeDoesNotStallOthers(t *testing.T) {
	ctx, log := embeddedtest.Context(t, 2*time.Minute), embeddedtest.Log()
	_, conn, _ := embeddedtest.Start(ctx, t, log)
	m := smallModel(t)
	beat, _, noise := synthetic(5, 1.9e18)
	pkts := packetsOf(scene.Superpose(beat, noise))
	cps, err := OpenKVCheckpoints(ctx, conn.JS, 1)
	if err != nil {
		t.Fatal(err)
	}

	// gone: its checkpoint holds batches from its first, which retention
	// then removed. damaged: its checkpoint does not decode.
	gone := homeBatches("c", "gone", pkts, 100)
	var goneSeqs []uint64
	for _, b := range gone[:3] {
		goneSeqs = append(goneSeqs, storeBatch(ctx, t, conn, b))
	}
	if err := cps.Save(ctx, "c", "gone", "wan", Checkpoint{Version: CheckpointVersion, Next: 1, Seq: goneSeqs[2], From: goneSeqs[0]}); err != nil {
		t.Fatal(err)
	}
	packets, err := conn.JS.Stream(ctx, schemas.StreamPackets)
	if err != nil {
		t.Fatal(err)
	}
	if err := packets.DeleteMsg(ctx, goneSeqs[0]); err != nil {
		t.Fatal(err)
	}
	if err := cps.Put(ctx, "c", "damaged", "wan", []byte("{")); err != nil {
		t.Fatal(err)
	}
	fine := homeBatches("c", "fine", pkts, 100)
	damaged := homeBatches("c", "damaged", pkts, 100)
	for i := range 4 {
		storeBatch(ctx, t, conn, gone[3+i])
		storeBatch(ctx, t, conn, damaged[i])
	}
	for _, b := range fine {
		storeBatch(ctx, t, conn, b)
	}

	var mu sync.Mutex
	var windows []schemas.Seen
	o := &Online{Model: m, Step: 1, Lag: 1, Checkpoints: cps, Replay: StreamReplayer(conn.JS, log),
		Publish: func(ctx context.Context, subject, id string, data []byte) error {
			mu.Lock()
			defer mu.Unlock()
			return collect(&windows)(ctx, subject, id, data)
		}}
	runCtx, stop := context.WithTimeout(ctx, 30*time.Second)
	defer stop()
	handled := 0
	err = conn.Consume(runCtx, bus.ConsumerConfig{Stream: schemas.StreamPackets, Durable: "detector-test", Filter: schemas.PacketSubject("c", "*", "wan"),
		MaxAckPending: 1, AckWait: time.Minute}, func(ctx context.Context, d *bus.Delivery) error {
		if err := o.HandleAt(ctx, d.Seq(), d.Batch); err != nil {
			return err
		}
		if d.Batch.Home == "fine" {
			if handled++; handled == len(fine) {
				stop()
			}
		}
		return d.Ack()
	})
	if handled < len(fine) {
		t.Fatalf("home fine: %d of %d batches handled in 30 s (%v): the broken homes stalled it", handled, len(fine), err)
	}
	if len(windows) == 0 {
		t.Error("home fine published no window")
	}
	for home, want := range map[string]struct {
		n      int
		reason string
	}{"gone": {6, "is gone from"}, "damaged": {4, "decode checkpoint"}} {
		dls, err := conn.DeadLetters(ctx, schemas.PacketSubject("c", home, "wan"))
		if err != nil {
			t.Fatal(err)
		}
		// gone's batches from its second on: the first was removed.
		if len(dls) != want.n || !strings.Contains(dls[0].Reason, want.reason) || !strings.Contains(dls[0].Reason, "start the home afresh") {
			t.Errorf("home %s: %d dead letters (%+v), want %d, the reason with %q and the fix", home, len(dls), dls, want.n, want.reason)
		}
	}
	if dls, err := conn.DeadLetters(ctx, schemas.PacketSubject("c", "fine", "wan")); err != nil || len(dls) != 0 {
		t.Errorf("home fine: %d dead letters, %v", len(dls), err)
	}

	// A replay that cannot reach NATS fails the batch for another try; the
	// next try restores the home.
	down := true
	flaky := &Online{Model: m, Step: 1, Lag: 1, Checkpoints: cps, Publish: collect(new([]schemas.Seen)),
		Replay: func(ctx context.Context, campaign, home, tap string, from, to uint64, fn func(uint64, *schemas.Batch) error) error {
			if down {
				return fmt.Errorf("read %s at %d: %w", schemas.PacketSubject(campaign, home, tap), from, nats.ErrTimeout)
			}
			return StreamReplayer(conn.JS, log)(ctx, campaign, home, tap, from, to, fn)
		}}
	last := fine[len(fine)-1]
	more := *last
	more.FirstOffset += uint64(len(last.Packets))
	more.Packets = slices.Clone(last.Packets)
	for i := range more.Packets {
		more.Packets[i].Offset += uint64(len(last.Packets))
	}
	seq := storeBatch(ctx, t, conn, &more)
	if err := flaky.HandleAt(ctx, seq, &more); err == nil || errors.Is(err, bus.ErrPermanent) {
		t.Fatalf("a replay that timed out: %v, want an error to retry", err)
	}
	down = false
	if err := flaky.HandleAt(ctx, seq, &more); err != nil {
		t.Fatalf("the same batch once NATS answers: %v", err)
	}
}

// TestFarFutureBatchIsNotHeldForEver: a home's batch whose last packet is
// stamped 2^62 ns (about 2116). The matcher drops that packet as an
// outlier, so the batch must leave the checkpoint's replay range as its
// honest packets do. Before, it was held by that stamp: every checkpoint
// started from it, each restart replayed the home's whole history since,
// and once retention removed it no restart could rebuild the home ("the
// batch ... is gone"). A capture that really resumes two hours later moves
// the present (README, "Timestamps far from the present"): a detector
// restarted before each of its batches still publishes the windows of one
// that never restarted.
func TestFarFutureBatchIsNotHeldForEver(t *testing.T) {
	ctx, log := embeddedtest.Context(t, 2*time.Minute), embeddedtest.Log()
	_, conn, _ := embeddedtest.Start(ctx, t, log)
	m := smallModel(t)
	const t0 = int64(1.9e18)
	beat, _, noise := synthetic(5, t0)
	honest := packetsOf(scene.Superpose(beat, noise))
	beat2, _, noise2 := synthetic(6, t0+int64(150*time.Minute))
	resumed := append(slices.Clone(honest), packetsOf(scene.Superpose(beat2, noise2))...)
	const forged = 2
	for _, c := range []struct {
		name string
		pkts []schemas.Packet
		far  bool
	}{{"far", honest, true}, {"jump", resumed, false}} {
		t.Run(c.name, func(t *testing.T) {
			batches := homeBatches(c.name, "h", c.pkts, 100)
			if !c.far {
				// The run of packets that moves the present starts in one
				// batch and ends in the next.
				cut := len(honest) + 8
				batches = append(homeBatches(c.name, "h", c.pkts[:cut], 100), homeBatches(c.name, "h", c.pkts[cut:], 100)...)
			}
			if c.far {
				b := batches[forged]
				b.Packets = slices.Clone(b.Packets)
				b.Packets[len(b.Packets)-1].TsNs = 1 << 62
			}
			seqs := make([]uint64, len(batches))
			for i, b := range batches {
				seqs[i] = storeBatch(ctx, t, conn, b)
			}
			var whole []schemas.Seen
			ref := &Online{Model: m, Step: 1, Lag: 1, Publish: collect(&whole)}
			for _, b := range batches {
				if err := ref.Handle(ctx, b); err != nil {
					t.Fatal(err)
				}
			}
			if st := ref.homes[c.name+"\x00h"].m.Stats(); c.far && st.Outliers != 1 || !c.far && st.Jumps != 1 {
				t.Fatalf("matcher %+v: the test plants no outlier or jump", st)
			}
			if !c.far {
				if err := windowsAcrossJumps(whole, m, true, honest, c.pkts[len(honest):]); err != nil {
					t.Errorf("without restarts: %v", err)
				}
			}

			cps, err := OpenKVCheckpoints(ctx, conn.JS, 1)
			if err != nil {
				t.Fatal(err)
			}
			replay, replayed := StreamReplayer(conn.JS, log), 0
			var restarted []schemas.Seen
			last := len(batches) - 1
			for i, b := range batches {
				if c.far && i == last {
					// Retention removes the forged batch and the ones before.
					packets, err := conn.JS.Stream(ctx, schemas.StreamPackets)
					if err != nil {
						t.Fatal(err)
					}
					if err := packets.Purge(ctx, jetstream.WithPurgeSubject(schemas.PacketSubject(c.name, "h", "wan")), jetstream.WithPurgeSequence(seqs[forged]+1)); err != nil {
						t.Fatal(err)
					}
				}
				o := &Online{Model: m, Step: 1, Lag: 1, Checkpoints: cps, Publish: collect(&restarted),
					Replay: func(ctx context.Context, campaign, home, tap string, from, to uint64, fn func(uint64, *schemas.Batch) error) error {
						return replay(ctx, campaign, home, tap, from, to, func(seq uint64, b *schemas.Batch) error {
							replayed++
							return fn(seq, b)
						})
					}}
				if err := o.HandleAt(ctx, seqs[i], b); err != nil {
					t.Fatalf("batch %d of %d at %d: %v", i, len(batches), seqs[i], err)
				}
			}
			cp, _, err := cps.Load(ctx, c.name, "h", "wan")
			if err != nil {
				t.Fatal(err)
			}
			if held := cp.Seq + 1 - cp.From; held > 6 {
				t.Errorf("checkpoint %+v holds %d of %d batches, want at most a window's (6)", cp, held, len(batches))
			}
			if err := sameWindows(whole, restarted); err != nil {
				t.Errorf("restarted before each batch: %v", err)
			}
			t.Logf("%d batches, %d replayed over %d restarts; the last checkpoint holds batches %d to %d; %d windows as without restarts", len(batches), replayed, len(batches), cp.From, cp.Seq, len(restarted))
		})
	}
}

// windowsAcrossJumps checks the windows of captures separated by pauses
// longer than the matcher's horizon, as the README promises ("Timestamps
// far from the present"): with one window per bin (Step 1) none is
// published twice, none lies in a pause, and each capture's windows start
// again with its first bin; with tails, each capture but the last also
// ends its windows with its last bin (the matcher still held it when the
// next began). At
// most one window per bin of traffic: before, the windows started again
// from the first capture's held bins, republished them and went on one per
// step of the pause, 1,115 windows for an hour of traffic two hours apart.
func windowsAcrossJumps(ws []schemas.Seen, m *Model, tails bool, segs ...[]schemas.Packet) error {
	bin := int64(m.Config.Match.Bin)
	bins := 0
	for _, s := range segs {
		bins += int(s[len(s)-1].TsNs/bin - s[0].TsNs/bin + 1)
	}
	if len(ws) > bins {
		return fmt.Errorf("%d windows for %d bins of traffic: windows for the pauses, or twice", len(ws), bins)
	}
	for i, w := range ws {
		if i > 0 && w.EndNs <= ws[i-1].EndNs {
			return fmt.Errorf("window %d ends at %d, window %d at %d: not one window per step forward", i-1, ws[i-1].EndNs, i, w.EndNs)
		}
		for k := 1; k < len(segs); k++ {
			last, first := segs[k-1][len(segs[k-1])-1].TsNs/bin, segs[k][0].TsNs/bin
			if w.StartNs > last*bin && w.EndNs <= first*bin {
				return fmt.Errorf("window %d (%d to %d) lies in pause %d, bins %d to %d", i, w.StartNs, w.EndNs, k, last+1, first-1)
			}
		}
	}
	ends := func(b int64) bool {
		return slices.ContainsFunc(ws, func(w schemas.Seen) bool { return w.EndNs == (b+1)*bin })
	}
	for k, s := range segs {
		if first := s[0].TsNs / bin; !ends(first) {
			return fmt.Errorf("capture %d: no window ends with its first bin %d", k, first)
		}
		if last := s[len(s)-1].TsNs / bin; tails && k < len(segs)-1 && !ends(last) {
			return fmt.Errorf("capture %d: no window ends with its last bin %d", k, last)
		}
	}
	return nil
}
