package window

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"unsafe"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
)

// A live session runs for as long as its rotation, and a windower serves
// many: held whole until its final batch, a session would keep every
// delivery unacknowledged (JetStream stops delivering at MaxAckPending) and
// every packet in memory. With Spec.FlushWindows or Spec.SessionBudget a
// session is written as it goes instead:
//
//   - Until its first flush a session is buffered as before; one that ends
//     first is written whole, exactly as without these settings.
//   - A batch that leaves FlushWindows finished windows, or takes the
//     packets held past SessionBudget, flushes: the finished windows are
//     stored as objects named by their place in the session, the
//     unfinished tail of each window stream is stored as the session's
//     checkpoint (StateSuffix), and only then are the batches acknowledged.
//   - A windower that gets a batch of a session it does not hold resumes
//     from the checkpoint; redeliveries of batches before it are acked.
//
// Flushes happen after whole batches, where the session's packets alone
// decide, so a crash and a restart write the same objects, byte for byte,
// as an uninterrupted run.

// StateSuffix names a session's checkpoint, beside its objects.
const StateSuffix = "_state.json"

// packetCost is what one held packet counts against a budget: the record
// and its label.
const packetCost = int64(unsafe.Sizeof(schemas.Packet{})) + 2

// incState is a session being written as it goes, as checkpointed.
type incState struct {
	// Next is the offset of the first batch not in the checkpoint.
	Next       uint64              `json:"next"`
	Packets    int                 `json:"packets"`
	Unlabeled  int                 `json:"unlabeled_packets"`
	Background int                 `json:"background_packets"`
	Offsets    [2]uint64           `json:"offsets"`
	FirstTs    int64               `json:"first_ts_ns,omitempty"`
	Windows    int                 `json:"windows"` // windows stored
	PerDevice  map[string]int      `json:"windows_per_device"`
	CapScores  map[string][]uint64 `json:"cap_scores,omitempty"`
	Objects    []store.ObjectInfo  `json:"objects"`
	Streams    []*winStream        `json:"streams"` // ind: by label; noise: one
	// ready are finished windows not stored yet; empty in a checkpoint.
	ready []*schemas.Window
}

// winStream is one stream windows are cut from (a device's packets, or the
// merged stream) and its unfinished window.
type winStream struct {
	Name  string `json:"name"`
	Label int16  `json:"label"` // ind: the device; noise: -1
	Index int    `json:"index"` // the number of the stream's next window
	// PrevTs is the stream's packet before Pkts[0], for its interval.
	PrevTs  int64            `json:"prev_ts"`
	HasPrev bool             `json:"has_prev"`
	Pkts    []schemas.Packet `json:"packets"`
	Labels  []int16          `json:"labels"`
}

func (w *Windower) incremental() bool { return w.spec.FlushWindows > 0 || w.spec.SessionBudget > 0 }

// held is the bytes of packets the session holds.
func (s *session) held() int64 {
	if s.inc == nil {
		return int64(s.npackets) * packetCost
	}
	n := 0
	for _, win := range s.inc.ready {
		n += win.Len
	}
	for _, st := range s.inc.Streams {
		n += len(st.Pkts)
	}
	return int64(n) * packetCost
}

// heldBytesLocked is the bytes of packets all sessions hold; w.mu is held.
func (w *Windower) heldBytesLocked() int64 {
	var n int64
	for _, s := range w.sessions {
		n += s.held()
	}
	return n
}

// HeldBytes is the bytes of packets the windower holds.
func (w *Windower) HeldBytes() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.heldBytesLocked()
}

func (w *Windower) drop(key string) {
	w.mu.Lock()
	delete(w.sessions, key)
	w.mu.Unlock()
}

// restore resumes a session from its checkpoint, if it has one.
func (w *Windower) restore(ctx context.Context, s *session) error {
	data, err := w.store.Get(ctx, path.Join(w.sessionDir(s), StateSuffix))
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the checkpoint of session %s/%s: %w", s.home, s.id, err)
	}
	st := &incState{}
	if err := json.Unmarshal(data, st); err != nil {
		// Retryable, not permanent: terminating the session's batches would
		// lose them; they wait (and say why) until the checkpoint is fixed.
		return fmt.Errorf("checkpoint %s is damaged (%w): remove it and the session's objects, and its batches will be windowed again from the start once redelivered", w.store.Location(path.Join(w.sessionDir(s), StateSuffix)), err)
	}
	s.inc, s.started, s.next, s.durable = st, true, st.Next, st.Next
	s.npackets, s.unlabeled, s.background = st.Packets, st.Unlabeled, st.Background
	return nil
}

// handleIncremental takes a batch whose labels Handle appended to s.labels
// from index from on.
func (w *Windower) handleIncremental(ctx context.Context, key string, s *session, d *bus.Delivery, from int) error {
	b := d.Batch
	s.pending[b.FirstOffset] = d
	s.npackets += len(b.Packets)
	if n := len(b.Packets); n > 0 {
		s.next = b.Packets[n-1].Offset + 1
	}
	if s.inc == nil {
		s.chunks = append(s.chunks, b.Packets)
		w.countFinished(s, s.labels[from:])
		if b.Final {
			// Never flushed: written whole, as without these settings.
			return w.closeSession(ctx, key, s)
		}
		if !w.flushDue(s) {
			return nil
		}
		// The first flush: the session so far goes through the streams.
		s.inc = &incState{PerDevice: map[string]int{}}
		if w.spec.Cap > 0 {
			s.inc.CapScores = map[string][]uint64{}
		}
		i := 0
		for _, c := range s.chunks {
			for j := range c {
				if i == 0 {
					s.inc.Offsets[0], s.inc.FirstTs = c[j].Offset, c[j].TsNs
				}
				s.inc.Offsets[1] = c[j].Offset
				w.feed(s, &c[j], s.labels[i])
				i++
			}
		}
		s.chunks, s.labels = nil, nil
	} else {
		for i := range b.Packets {
			w.feed(s, &b.Packets[i], s.labels[from+i])
		}
		s.labels = s.labels[:0]
		if n := len(b.Packets); n > 0 {
			s.inc.Offsets[1] = b.Packets[n-1].Offset
		}
	}
	s.inc.Packets, s.inc.Unlabeled, s.inc.Background, s.inc.Next = s.npackets, s.unlabeled, s.background, s.next
	d.Batch = nil // its packets are in the streams
	if b.Final {
		return w.closeSession(ctx, key, s)
	}
	if !w.flushDue(s) {
		return nil
	}
	if err := w.checkpoint(ctx, s); err != nil {
		// The session starts again from its last checkpoint when its
		// batches come again.
		w.drop(key)
		return err
	}
	return nil
}

// flushDue says whether the batch just taken makes the session flush.
func (w *Windower) flushDue(s *session) bool {
	if w.spec.SessionBudget > 0 && s.held() >= w.spec.SessionBudget {
		return true
	}
	if w.spec.FlushWindows == 0 {
		return false
	}
	if s.inc != nil {
		return len(s.inc.ready) >= w.spec.FlushWindows
	}
	return s.finished >= w.spec.FlushWindows
}

// countFinished adds a batch's labels to the full windows the session's
// packets make before its first flush, stream by stream.
func (w *Windower) countFinished(s *session, labels []int16) {
	if s.perStream == nil {
		s.perStream = make([]int, len(w.spec.Labels)+1) // the last: the merged stream
	}
	for _, l := range labels {
		i := len(s.perStream) - 1
		if w.spec.Kind != schemas.KindNoise {
			if l < 0 {
				continue
			}
			i = int(l)
		}
		if s.perStream[i]++; s.perStream[i]%w.spec.Size == 0 {
			s.finished++
		}
	}
}

// feed adds one packet to its stream; a stream that fills a window hands
// it to the ready list.
func (w *Windower) feed(s *session, p *schemas.Packet, label int16) {
	st := s.inc
	var ws *winStream
	if w.spec.Kind == schemas.KindNoise {
		if len(st.Streams) == 0 {
			st.Streams = []*winStream{{Name: "all", Label: -1}}
		}
		ws = st.Streams[0]
	} else {
		if label < 0 {
			return // no device of this dataset: counted, not windowed
		}
		i, found := slices.BinarySearchFunc(st.Streams, label, func(a *winStream, l int16) int { return int(a.Label) - int(l) })
		if !found {
			st.Streams = slices.Insert(st.Streams, i, &winStream{Name: w.spec.Labels[label], Label: label})
		}
		ws = st.Streams[i]
	}
	ws.Pkts = append(ws.Pkts, *p)
	ws.Labels = append(ws.Labels, label)
	if len(ws.Pkts) == w.spec.Size {
		st.ready = append(st.ready, w.window(s, ws))
	}
}

// window cuts the stream's unfinished window, padded when short, as cut
// does: the interval is measured within the stream.
func (w *Windower) window(s *session, ws *winStream) *schemas.Window {
	win := schemas.NewWindows(1, w.spec.Size)[0]
	win.ID = s.view + "/" + s.home + "/" + s.id + "/" + w.spec.Kind + "/" + ws.Name + "/" + strconv.Itoa(ws.Index)
	win.Home, win.Session, win.View, win.Kind, win.Group = s.home, s.id, s.view, w.spec.Kind, GroupOf(s.home, s.id)
	win.Len = len(ws.Pkts)
	prev, has := ws.PrevTs, ws.HasPrev
	for j := range ws.Pkts {
		var gap float32
		if has {
			gap = float32(ws.Pkts[j].TsNs-prev) / 1e9
		}
		win.Set(j, &ws.Pkts[j], gap, int32(ws.Labels[j]))
		prev, has = ws.Pkts[j].TsNs, true
	}
	ws.PrevTs, ws.HasPrev = prev, has
	ws.Index++
	ws.Pkts, ws.Labels = ws.Pkts[:0], ws.Labels[:0]
	return win
}

// store writes the ready windows as objects and counts them.
func (w *Windower) storeReady(ctx context.Context, s *session) error {
	st := s.inc
	if len(st.ready) == 0 {
		return nil
	}
	infos, err := w.putObjects(ctx, w.sessionDir(s), s.id, st.ready, st.Windows)
	if err != nil {
		return err
	}
	w.tally(st.ready, st.PerDevice, st.CapScores)
	st.Objects = append(st.Objects, infos...)
	st.Windows += len(st.ready)
	st.ready = nil
	return nil
}

// checkpoint stores the finished windows and the unfinished tail, then
// acknowledges every batch the session took.
func (w *Windower) checkpoint(ctx context.Context, s *session) error {
	if err := w.storeReady(ctx, s); err != nil {
		return err
	}
	data, err := json.Marshal(s.inc)
	if err != nil {
		return err
	}
	if _, err := w.store.Put(ctx, path.Join(w.sessionDir(s), StateSuffix), data, "application/json"); err != nil {
		return err
	}
	s.durable = s.next
	w.ackPending(s)
	return nil
}

func (w *Windower) ackPending(s *session) {
	for off, p := range s.pending {
		if err := p.Ack(); err != nil {
			w.log.Warn("ack after storing failed; the batch will be taken again and rewrite the same bytes", "session", s.home+"/"+s.id, "err", err)
		}
		delete(s.pending, off)
	}
}

// closeSession writes what is left of a session and its part, acks its
// batches and forgets it. A session never flushed is written whole.
func (w *Windower) closeSession(ctx context.Context, key string, s *session) error {
	var part Part
	var err error
	if s.inc == nil {
		part, err = w.flush(ctx, s)
	} else {
		part, err = w.finish(ctx, s)
	}
	if err != nil {
		w.drop(key)
		return err
	}
	w.ackPending(s)
	w.drop(key)
	if w.OnPart != nil {
		w.OnPart(part)
	}
	return nil
}

// finish pads the streams' unfinished windows (in stream order), stores
// them with the ready ones, then the part.
func (w *Windower) finish(ctx context.Context, s *session) (Part, error) {
	st := s.inc
	for _, ws := range st.Streams {
		if len(ws.Pkts) > 0 {
			st.ready = append(st.ready, w.window(s, ws))
		}
	}
	if err := w.storeReady(ctx, s); err != nil {
		return Part{}, err
	}
	part := Part{Home: s.home, View: s.view, Session: s.id, Source: s.source, Packets: st.Packets,
		Unlabeled: st.Unlabeled, Background: st.Background, Windows: st.Windows, PerDevice: st.PerDevice,
		Objects: st.Objects, Offsets: st.Offsets, FirstTs: st.FirstTs, CapScores: st.CapScores, CutShort: s.cutShort}
	pj, err := json.MarshalIndent(part, "", "  ")
	if err != nil {
		return part, err
	}
	if _, err := w.store.Put(ctx, path.Join(w.sessionDir(s), PartSuffix), pj, "application/json"); err != nil {
		return part, err
	}
	return part, nil
}
