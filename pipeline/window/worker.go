// Package window is the windowing worker: it gathers each capture session's
// labeled packets, cuts them into traffic windows of n packets and writes
// them as Arrow IPC objects with deterministic names, so a redelivered
// session rewrites the same bytes instead of adding a duplicate.
package window

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/schemas/windowfile"
)

// sessionDir is where a session's objects go; "" (which the store refuses)
// for names Handle would have refused.
func (w *Windower) sessionDir(s *session) string {
	dir, _ := store.Key("datasets", w.spec.Dataset, w.spec.Version, s.view, s.home, s.id)
	return dir
}

// Windower cuts windows for one dataset spec.
type Windower struct {
	spec   Spec
	store  store.Store
	log    *slog.Logger
	labels map[string]int16
	// OnPart is called after a session's objects and part are stored.
	OnPart func(Part)
	// Accept, when set, picks the sessions this build windows; batches of
	// other sessions in the stream are acknowledged and left out.
	Accept func(home, session string) bool
	// IdleTimeout, when set, closes a session that has received no new
	// batch for this long: its producer died and its final batch will
	// never come (see Sweep). IdleTimeouts, when it names the session's
	// home, replaces it for that home (campaign.IdleTimeouts).
	IdleTimeout  time.Duration
	IdleTimeouts map[string]time.Duration
	// ConsumerBudget, when set, bounds the bytes of packets all sessions
	// hold together: past it, a batch that would start a session is
	// refused for redelivery until the sessions held get written.
	ConsumerBudget int64

	mu       sync.Mutex
	sessions map[string]*session
	// work serialises what changes sessions: Handle and Sweep.
	work sync.Mutex
}

type session struct {
	home, view, id, source string
	next                   uint64 // offset expected in the next batch
	started                bool
	// chunks are the batches' own packet slices: the pending deliveries
	// hold the batches until the session is flushed anyway, and copying
	// the packets into one slice was most of the worker's time.
	chunks                [][]schemas.Packet
	npackets              int
	labels                []int16
	unlabeled, background int
	// pending are the deliveries not acknowledged yet, by first offset: a
	// redelivery replaces the copy held rather than add one.
	pending map[uint64]*bus.Delivery
	// last is when the session last took a new batch.
	last     time.Time
	cutShort bool
	// inc is the session written as it goes, once its first flush has
	// happened (Spec.FlushWindows, SessionBudget); nil before.
	inc *incState
	// durable is the offset before which every batch is stored, in
	// objects or a checkpoint: its redeliveries are acked at once.
	durable uint64
	// perStream and finished count packets per window stream and full
	// windows before the first flush.
	perStream []int
	finished  int
}

// New prepares a windower that writes through st.
func New(spec Spec, st store.Store, log *slog.Logger) (*Windower, error) {
	if spec.WindowsPerObject == 0 {
		spec.WindowsPerObject = 1024
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	lab := make(map[string]int16, len(spec.Labels))
	for i, n := range spec.Labels {
		lab[n] = int16(i)
	}
	return &Windower{spec: spec, store: st, log: log, labels: lab, sessions: map[string]*session{}}, nil
}

// Handle takes one labeled batch. It keeps the delivery unacknowledged until
// the session ends and its windows are stored: a crash before that makes
// JetStream redeliver the session, and the deterministic names make the
// rewrite harmless.
func (w *Windower) Handle(ctx context.Context, d *bus.Delivery) error {
	b := d.Batch
	if b.Kind != schemas.KindLabeled {
		return bus.Permanent(fmt.Errorf("batch %s is of kind %q, the windower reads labeled batches", b.MsgID(), b.Kind))
	}
	// Home, view and session become object keys: only names bound to the
	// subject and checked get that far (bus.Consume checks too; this keeps
	// the windower safe whoever hands it deliveries).
	if err := b.CheckSubject(d.Subject()); err != nil {
		return bus.Permanent(err)
	}
	if w.Accept != nil && !w.Accept(b.Home, b.Session) || len(w.spec.Views) > 0 && !slices.Contains(w.spec.Views, b.View) {
		return d.Ack()
	}
	key := b.Home + "/" + b.View + "/" + b.Session
	w.work.Lock()
	defer w.work.Unlock()
	w.mu.Lock()
	s, ok := w.sessions[key]
	if !ok {
		// Agents start every session at offset 0. A session begun at a
		// later batch would be cut with a hole: a windower replacing a dead
		// one gets the batches its predecessor had fetched only once their
		// ack wait runs out, after the batches nobody had fetched.
		if held := w.heldBytesLocked(); w.ConsumerBudget > 0 && held >= w.ConsumerBudget {
			w.mu.Unlock()
			return fmt.Errorf("session %s waits: the sessions held take %d bytes of the consumer budget of %d", key, held, w.ConsumerBudget)
		}
		s = &session{home: b.Home, view: b.View, id: b.Session, source: b.Source, next: 0, pending: map[uint64]*bus.Delivery{}}
		w.sessions[key] = s
	}
	w.mu.Unlock()
	if !ok && w.incremental() {
		// A session written as it goes resumes from its checkpoint.
		if err := w.restore(ctx, s); err != nil {
			w.drop(key)
			return err
		}
	}

	switch {
	case s.started && b.FirstOffset < s.durable:
		// Stored already, in objects or in the session's checkpoint.
		return d.Ack()
	case s.started && b.FirstOffset < s.next:
		// A redelivery of a batch already buffered (its ack wait ran out)
		// is the same JetStream message: acked now, it would be lost if
		// this worker died before the session is stored. It is acked with
		// the session's other deliveries, and replaces the copy held, so
		// that a long session does not gain a copy every ack wait.
		d.Batch = nil
		s.pending[b.FirstOffset] = d
		return nil
	case b.FirstOffset > s.next:
		// A worker killed while acking a session it had stored leaves the
		// batches it had not acked to come again without their start: they
		// would wait for it forever.
		if data, err := w.store.Get(ctx, w.sessionDir(s)+"/"+PartSuffix); err == nil {
			var stored Part
			if json.Unmarshal(data, &stored) == nil && stored.CutShort {
				// Not a remnant: its producer came back after the idle
				// timeout closed the session. Said, not silently dropped.
				w.log.Warn("batch of a session closed as cut short came late; left out of the dataset (raise the idle timeout)",
					"session", key, "offset", b.FirstOffset, "packets", len(b.Packets))
			}
			for _, p := range s.pending {
				_ = p.Ack()
			}
			_ = d.Ack()
			w.mu.Lock()
			delete(w.sessions, key)
			w.mu.Unlock()
			return nil
		}
		return fmt.Errorf("session %s: batch at offset %d arrived before offset %d; waiting for redelivery", key, b.FirstOffset, s.next)
	}
	s.started = true
	s.last = time.Now()
	unlabeledBefore, backgroundBefore := s.unlabeled, s.background
	// Map the home's label vocabulary onto the dataset's.
	remap := make([]int16, len(b.Devices))
	for i, dev := range b.Devices {
		remap[i] = -1
		if l, ok := w.labels[dev.Name]; ok && (w.spec.Kind == schemas.KindNoise || dev.Category == "iot") {
			remap[i] = l
		}
	}
	for i := range b.Packets {
		l := int16(-1)
		switch {
		case b.Labels[i] < 0:
			s.unlabeled++
		case remap[b.Labels[i]] < 0:
			s.background++
		default:
			l = remap[b.Labels[i]]
		}
		s.labels = append(s.labels, l)
	}
	if w.incremental() {
		return w.handleIncremental(ctx, key, s, d, len(s.labels)-len(b.Packets))
	}
	s.chunks = append(s.chunks, b.Packets)
	s.npackets += len(b.Packets)
	if n := len(b.Packets); n > 0 {
		s.next = b.Packets[n-1].Offset + 1
	}
	s.pending[b.FirstOffset] = d
	if !b.Final {
		return nil
	}
	part, err := w.flush(ctx, s)
	if err != nil {
		// Retryable: the session stays buffered; the final batch comes again.
		delete(s.pending, b.FirstOffset)
		s.chunks = s.chunks[:len(s.chunks)-1]
		s.npackets -= len(b.Packets)
		s.labels = s.labels[:len(s.labels)-len(b.Packets)]
		s.next = b.FirstOffset
		s.unlabeled, s.background = unlabeledBefore, backgroundBefore
		return err
	}
	for _, p := range s.pending {
		if err := p.Ack(); err != nil {
			w.log.Warn("ack after flush failed; the session will be rewritten identically", "session", key, "err", err)
		}
	}
	w.mu.Lock()
	delete(w.sessions, key)
	w.mu.Unlock()
	if w.OnPart != nil {
		w.OnPart(part)
	}
	return nil
}

// Sweeper calls Sweep until ctx ends, often enough that a session is
// closed within a tenth of IdleTimeout after it expired; without an
// IdleTimeout it does nothing.
func (w *Windower) Sweeper(ctx context.Context) {
	timeouts := append([]time.Duration{w.IdleTimeout}, slices.Collect(maps.Values(w.IdleTimeouts))...)
	campaign.Sweep(ctx, timeouts, func(now time.Time) error { return w.Sweep(ctx, now) }, func(err error) {
		w.log.Warn("closing idle sessions failed; trying again", "err", err)
	})
}

// Sweep closes every session that has taken no new batch for IdleTimeout:
// its producer died (an agent killed, a gateway without power) and the
// final batch will never come. Its windows so far are written, its part
// is marked cut short, and its deliveries are acknowledged, so nothing is
// held forever.
func (w *Windower) Sweep(ctx context.Context, now time.Time) error {
	w.work.Lock()
	defer w.work.Unlock()
	w.mu.Lock()
	var idle []string
	for key, s := range w.sessions {
		switch {
		case s.started && w.idleOf(s.home) > 0 && now.Sub(s.last) >= w.idleOf(s.home):
			idle = append(idle, key)
		case !s.started && len(s.pending) == 0:
			// Made by a batch that came before its session's start and was
			// sent back: nothing to keep until the start comes.
			delete(w.sessions, key)
		}
	}
	w.mu.Unlock()
	slices.Sort(idle)
	for _, key := range idle {
		s := w.sessions[key]
		s.cutShort = true
		n := s.npackets
		if err := w.closeSession(ctx, key, s); err != nil {
			return fmt.Errorf("close idle session %s: %w", key, err)
		}
		w.log.Warn("session cut short: no batch for the idle timeout, its producer died; windowed what came", "session", key, "packets", n)
	}
	return nil
}

// idleOf is the idle timeout of the home's sessions; 0 waits for ever.
func (w *Windower) idleOf(home string) time.Duration {
	if d, ok := w.IdleTimeouts[home]; ok {
		return d
	}
	return w.IdleTimeout
}

// Held is the number of sessions buffered and not yet written.
func (w *Windower) Held() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.sessions)
}

// WriteSession windows one whole session held in memory and stores its
// objects and part record, exactly as Handle does when a session's final
// batch arrives. labels index the spec's vocabulary; a negative label is an
// unlabeled packet.
func (w *Windower) WriteSession(ctx context.Context, home, view, sess, source string, pkts []schemas.Packet, labels []int16) (Part, error) {
	if len(labels) != len(pkts) {
		return Part{}, fmt.Errorf("window session %s/%s: %d labels for %d packets", home, sess, len(labels), len(pkts))
	}
	s := &session{home: home, view: view, id: sess, source: source, chunks: [][]schemas.Packet{pkts}, npackets: len(pkts), labels: labels, pending: map[uint64]*bus.Delivery{}}
	for i, l := range labels {
		switch {
		case int(l) >= len(w.spec.Labels):
			return Part{}, fmt.Errorf("window session %s/%s: packet %d has label %d, the vocabulary has %d devices", home, sess, i, l, len(w.spec.Labels))
		case l < 0:
			s.unlabeled++
		}
	}
	return w.flush(ctx, s)
}

// flush cuts the session's windows, writes them and the part record.
func (w *Windower) flush(ctx context.Context, s *session) (Part, error) {
	ws := cut(w.spec, s.home, s.view, s.id, s.chunks, s.labels)
	part := Part{Home: s.home, View: s.view, Session: s.id, Source: s.source, Packets: s.npackets,
		Unlabeled: s.unlabeled, Background: s.background, Windows: len(ws), PerDevice: map[string]int{}, CutShort: s.cutShort}
	if s.npackets > 0 {
		first, last := s.chunks[0], s.chunks[len(s.chunks)-1]
		for _, c := range s.chunks {
			if len(c) > 0 {
				first = c
				break
			}
		}
		for i := len(s.chunks) - 1; i >= 0; i-- {
			if len(s.chunks[i]) > 0 {
				last = s.chunks[i]
				break
			}
		}
		part.Offsets = [2]uint64{first[0].Offset, last[len(last)-1].Offset}
		part.FirstTs = first[0].TsNs
	}
	if w.spec.Cap > 0 {
		part.CapScores = map[string][]uint64{}
	}
	w.tally(ws, part.PerDevice, part.CapScores)
	dir, err := store.Key("datasets", w.spec.Dataset, w.spec.Version, s.view, s.home, s.id)
	if err != nil {
		return part, bus.Permanent(fmt.Errorf("window session %s of home %s, view %s: %w", s.id, s.home, s.view, err))
	}
	objects, err := w.putObjects(ctx, dir, s.id, ws, 0)
	if err != nil {
		return part, err
	}
	part.Objects = objects
	pj, err := json.MarshalIndent(part, "", "  ")
	if err != nil {
		return part, err
	}
	if _, err := w.store.Put(ctx, dir+"/"+PartSuffix, pj, "application/json"); err != nil {
		return part, err
	}
	return part, nil
}

// tally counts windows per device and keeps, per device, the Cap smallest
// cap scores (capScores is nil without a cap).
func (w *Windower) tally(ws []*schemas.Window, perDevice map[string]int, capScores map[string][]uint64) {
	for _, win := range ws {
		dev := DeviceOf(w.spec.Labels, win)
		perDevice[dev]++
		if capScores != nil {
			capScores[dev] = append(capScores[dev], CapScore(w.spec.CapSeed, win.ID))
		}
	}
	for dev, sc := range capScores {
		slices.Sort(sc)
		capScores[dev] = sc[:min(len(sc), w.spec.Cap)]
	}
}

// putsInFlight bounds a flush's concurrent object writes: encoding the next
// object while S3 stores the previous ones keeps both cores busy, and two
// writes in flight hide the round trip.
const putsInFlight = 2

// putObjects encodes the session's windows into objects of at most
// WindowsPerObject windows and stores them, returning them in window order.
// base is the session's index of ws[0], which names the objects.
func (w *Windower) putObjects(ctx context.Context, dir, sess string, ws []*schemas.Window, base int) ([]store.ObjectInfo, error) {
	per := w.spec.WindowsPerObject
	n := (len(ws) + per - 1) / per
	infos := make([]store.ObjectInfo, n)
	errs := make([]error, n)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, putsInFlight)
	var wg sync.WaitGroup
	for i := range n {
		lo, hi := i*per, min((i+1)*per, len(ws))
		data, err := windowfile.Encode(w.spec.Size, ws[lo:hi])
		if err != nil {
			errs[i] = fmt.Errorf("encode windows of session %s: %w", sess, err)
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		key := dir + "/" + fmt.Sprintf("%s-w%06d-%06d.arrow", w.spec.Kind, base+lo, base+hi-1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			infos[i], errs[i] = w.store.Put(ctx, key, data, "application/vnd.apache.arrow.file")
			if errs[i] != nil {
				cancel() // the session is retried whole; the other writes are wasted
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store windows of session %s: %w", sess, err)
	}
	return infos, nil
}

// DefaultAckWait is how long a delivery may stay unacked before JetStream
// redelivers it, unless told otherwise.
const DefaultAckWait = 10 * time.Minute

// ConsumerConfig is the durable consumer a windower of spec reads the
// campaign's labeled batches through, every view of every home. Each
// session's batches stay unacked until the session is stored, so the
// consumer must let many wait: a session is thousands of batches.
// ackWait 0 means DefaultAckWait.
func ConsumerConfig(spec Spec, campaign string, ackWait time.Duration) bus.ConsumerConfig {
	if ackWait == 0 {
		ackWait = DefaultAckWait
	}
	return bus.ConsumerConfig{
		Stream:        schemas.StreamLabeled,
		Durable:       "windower-" + spec.Dataset + "-" + spec.Version,
		Filter:        schemas.LabeledSubject(campaign, "*", "*"),
		MaxAckPending: 100000,
		AckWait:       ackWait,
	}
}
