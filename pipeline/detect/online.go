package detect

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"

	"github.com/homemole/homemole/pipeline/seqprofile"
	"github.com/homemole/homemole/schemas"
)

// Online runs a model over homes' live packet batches: per home one
// Matcher, and every Step bins the CNN window that ends there is judged and
// its detections are published on hm.seen.<campaign>.<home>. It keeps only
// a window and a bin of time arrays per home. Safe for concurrent use.
//
// With Checkpoints and Replay set, a home's place survives a restart: after
// the windows of a batch are published its checkpoint records the last
// window and the stream position covered, and a restarted Online rebuilds
// the home's matcher by replaying the batches the checkpoint says it still
// held, then judges the next window, so no window is skipped or repeated.
type Online struct {
	Model *Model
	// Step is how many bins pass between two reports (1: every bin, 10 s
	// with the default bins).
	Step int
	// Lag is how many bins a window waits after it ends before it is
	// judged: a match is counted where it starts, and may complete up to a
	// few burst gaps later.
	Lag int
	// Publish sends one encoded schemas.Seen under a message id that names
	// its window (SeenMsgID), so a window published twice is stored once.
	Publish func(ctx context.Context, subject, msgID string, data []byte) error
	// Checkpoints keeps each home's place; nil keeps it in memory only.
	Checkpoints Checkpoints
	// Replay reads a home's batches back from the stream (see Replayer);
	// needed with Checkpoints.
	Replay Replayer
	// OnWindow, when set, is told of every window published.
	OnWindow func(schemas.Seen)

	mu    sync.Mutex
	homes map[string]*onlineHome
}

type onlineHome struct {
	mu   sync.Mutex
	m    *seqprofile.Matcher
	next int64 // absolute bin where the next judged window ends
	// started says next is set; jumps is the Matcher's jump count when the
	// windows were last placed (the checkpoint records it).
	started bool
	jumps   uint64
	// jumped are the jumps of the matcher's present since then, oldest
	// first: judge places the windows around them.
	jumped []jump
	// restored says the home's checkpoint was read (and replayed).
	restored bool
	// seq is the stream position of the last batch handled (0: none).
	seq uint64
	// held are the batches whose packets the matcher may still read, oldest
	// first: where a replay must start.
	held []heldBatch
}

type heldBatch struct {
	seq uint64
	// lastBin is the last bin the matcher may read the batch's packets
	// at: its present once the batch was added (see add).
	lastBin int64
}

// jump is a move of a home's present, in absolute bins: from the old
// present's bin to the bin of the first packet of the run that moved it.
// kept says the arrays still held the old present's bin once it moved (a
// jump forward within the span): the old capture's last windows can still
// be judged.
type jump struct {
	from, to int64
	kept     bool
}

// SeenMsgID is the message id of a home's window: the campaign, home and
// window start, so a window republished after a restart is deduplicated.
func SeenMsgID(campaign, home string, startNs int64) string {
	return schemas.SeenSubject(campaign, home) + "|" + strconv.FormatInt(startNs, 10)
}

// home is one home's state, created at its first batch.
func (o *Online) home(key string) (*onlineHome, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.homes == nil {
		o.homes = map[string]*onlineHome{}
	}
	h := o.homes[key]
	if h == nil {
		m, err := o.Model.NewMatcher()
		if err != nil {
			return nil, err
		}
		h = &onlineHome{m: m}
		o.homes[key] = h
	}
	return h, nil
}

// forget drops a home's state: a batch that failed half way left it
// unknown, and the next one rebuilds it from the checkpoint.
func (o *Online) forget(key string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.homes, key)
}

// Handle feeds one packet batch of one home and publishes the windows it
// completes, keeping the home's place in memory only. A batch's packets
// must come in time order per home (one tap per home, as the agent
// publishes them). A Final batch (the end of a capture session) judges the
// windows up to its last packet at once.
func (o *Online) Handle(ctx context.Context, b *schemas.Batch) error {
	return o.HandleAt(ctx, 0, b)
}

// HandleAt is Handle for the batch at stream position seq (its PACKETS
// sequence; 0: unknown). With Checkpoints, a batch at or before the home's
// checkpoint was handled already (a redelivery whose ack was lost) and is
// skipped; the caller acks a batch once HandleAt returns nil, by when its
// windows are published and the checkpoint covering it is written. An
// error wrapping bus.ErrPermanent says the home cannot be restored from its
// checkpoint however often the batch comes (the checkpoint is damaged, or
// the batches it holds were removed): the caller dead-letters the batch
// rather than hold up the other homes behind it. Any other error is worth
// a retry.
func (o *Online) HandleAt(ctx context.Context, seq uint64, b *schemas.Batch) error {
	if b.Kind != schemas.KindPackets {
		return fmt.Errorf("online detector: batch %s is not a packet batch; bind the detector to the PACKETS stream", b.MsgID())
	}
	if o.Checkpoints != nil && seq == 0 {
		return fmt.Errorf("online detector: batch %s has no stream position; checkpoints need one", b.MsgID())
	}
	key := b.Campaign + "\x00" + b.Home
	h, err := o.home(key)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := o.handle(ctx, h, seq, b); err != nil {
		// What was added before the failure would be added again at the
		// redelivery: start the home over from its checkpoint instead.
		o.forget(key)
		return err
	}
	return nil
}

func (o *Online) handle(ctx context.Context, h *onlineHome, seq uint64, b *schemas.Batch) error {
	if o.Checkpoints != nil && !h.restored {
		if err := o.restore(ctx, h, b.Campaign, b.Home, b.Tap); err != nil {
			return err
		}
		h.restored = true
	}
	if seq != 0 && seq <= h.seq {
		return nil // handled before the restart or a lost ack
	}
	o.add(h, seq, b)
	if err := o.judge(ctx, h, b.Campaign, b.Home, b.Final); err != nil {
		return err
	}
	h.seq = max(h.seq, seq)
	if o.Checkpoints == nil {
		return nil
	}
	cp := Checkpoint{Version: CheckpointVersion, Next: h.next, Jumps: h.jumps, Seq: h.seq, From: h.seq + 1}
	if len(h.held) > 0 {
		cp.From = h.held[0].seq
	}
	return o.Checkpoints.Save(ctx, b.Campaign, b.Home, b.Tap, cp)
}

// add feeds a batch's packets to the home's matcher.
func (o *Online) add(h *onlineHome, seq uint64, b *schemas.Batch) {
	bin := int64(o.Model.Config.Match.Bin)
	jumps := h.m.Stats().Jumps
	n := jumps
	for i := range b.Packets {
		p := &b.Packets[i]
		h.m.Add(p.TsNs, seqprofile.VectorOf(p))
		// Each jump is noted as it happens: a batch may hold several (a
		// sparse stream moves on by runs), and only the matcher's last is
		// left to ask for once the batch is in.
		if st := h.m.Stats(); st.Jumps != n {
			n = st.Jumps
			from, to := h.m.LastJump()
			j := jump{from: from / bin, to: to / bin}
			j.kept = to > from && h.m.Arrays().FirstBin <= j.from
			h.jumped = append(h.jumped, j)
		}
	}
	if len(b.Packets) == 0 || seq == 0 {
		return
	}
	// The matcher counts a packet at its present, never later, and drops
	// one stamped far from it. The batch's own last stamp would hold it,
	// and every batch after it (trim stops at the first it may not drop),
	// until that time: one packet stamped 2^62 ns pinned the replay's
	// start until about 2116.
	now := h.m.Now() / bin
	if h.m.Stats().Jumps != jumps {
		// The present moved to a run of far packets that held batches may
		// have begun: a replay must read them again to move it too. Their
		// bins are of the old present (after a jump back, ahead of the new
		// one): they are held as long as this batch.
		for i := range h.held {
			h.held[i].lastBin = now
		}
	}
	h.held = append(h.held, heldBatch{seq: seq, lastBin: now})
}

// restore rebuilds a home from its checkpoint: the batches the matcher
// still held then are read again (their windows were published), and the
// next window is the checkpoint's.
func (o *Online) restore(ctx context.Context, h *onlineHome, campaign, home, tap string) error {
	cp, ok, err := o.Checkpoints.Load(ctx, campaign, home, tap)
	if err != nil || !ok {
		return err
	}
	if o.Replay == nil {
		return fmt.Errorf("online detector: home %s/%s has a checkpoint but the detector cannot replay the stream", campaign, home)
	}
	if cp.From <= cp.Seq {
		if err := o.Replay(ctx, campaign, home, tap, cp.From, cp.Seq, func(seq uint64, b *schemas.Batch) error {
			if b.Kind != schemas.KindPackets {
				return fmt.Errorf("replay of %s/%s: batch %s at %d is not a packet batch", campaign, home, b.MsgID(), seq)
			}
			o.add(h, seq, b)
			return nil
		}); err != nil {
			return fmt.Errorf("online detector: rebuild home %s/%s from its checkpoint (stream positions %d to %d): %w", campaign, home, cp.From, cp.Seq, err)
		}
	}
	// The replayed batches' jumps were judged before the checkpoint: its
	// next window is past them.
	h.next, h.started, h.seq = cp.Next, true, cp.Seq
	h.jumps, h.jumped = h.m.Stats().Jumps, h.jumped[:0]
	o.trim(h)
	return nil
}

// judge publishes the windows the home's matcher has completed.
func (o *Online) judge(ctx context.Context, h *onlineHome, campaign, home string, final bool) error {
	arr := h.m.Arrays()
	if arr.Bins() == 0 {
		return nil
	}
	step, lag := int64(max(1, o.Step)), int64(max(0, o.Lag))
	w := int64(o.Model.Config.WindowBins)
	if !h.started {
		h.next, h.started = arr.FirstBin+step, true
	}
	// Windows that end before the held bins saw nothing: step over them
	// on the same grid rather than judge and publish each one.
	if h.next < arr.FirstBin {
		h.next += (arr.FirstBin - h.next + step - 1) / step * step
	}
	ends := h.placeJumps(step)
	// The last bin that holds packets is still filling unless the session ended.
	done := arr.FirstBin + int64(arr.Bins()) - 1 - lag
	if final {
		done = arr.FirstBin + int64(arr.Bins())
	}
	for e := h.next; e <= done; e += step {
		ends = append(ends, e)
	}
	if len(ends) == 0 {
		// A jump may have moved the next window past bins no window will
		// read again.
		o.trim(h)
		return nil
	}
	found, err := o.Model.Assess(arr, ends)
	if err != nil {
		return err
	}
	bin := int64(o.Model.Config.Match.Bin)
	subject := schemas.SeenSubject(campaign, home)
	for i, e := range ends {
		msg := schemas.Seen{Version: schemas.SeenVersion, Campaign: campaign, Home: home,
			SeenWindow: schemas.SeenWindow{StartNs: (e - w) * bin, EndNs: e * bin, Detections: found[i]}}
		if msg.Detections == nil {
			msg.Detections = []schemas.SeenDetection{}
		}
		o.Model.mark(&msg.SeenWindow, arr, e-w, int(w))
		data, err := json.Marshal(msg)
		if err != nil {
			return fmt.Errorf("online detector: encode detections: %w", err)
		}
		if err := o.Publish(ctx, subject, SeenMsgID(campaign, home, msg.StartNs), data); err != nil {
			return fmt.Errorf("online detector: publish to %s: %w", subject, err)
		}
		if o.OnWindow != nil {
			o.OnWindow(msg)
		}
	}
	h.next = max(h.next, ends[len(ends)-1]+step)
	o.trim(h)
	return nil
}

// placeJumps moves the home's next window over the jumps of its present
// and returns the ends of the windows to judge before it. A stream whose
// clock jumped (a capture resumed after a pause, a bad first timestamp
// corrected) starts its windows again at its new present, as it started
// them at its first packet: the pause is no traffic, quiet or not, and a
// window per step of it would be a report about nothing (before, an hour
// of traffic two hours apart was 1,115 windows, and the first capture's
// last windows were published twice). After a jump forward whose old bins
// the matcher still holds, the old capture is over (its started matches
// were given up, and a packet near it is now an outlier), so its last
// windows are judged now, up to its last bin as a Final batch's are.
func (h *onlineHome) placeJumps(step int64) []int64 {
	jumped := h.jumped
	// A jump whose old bins are gone (back in time, past the span, or a
	// bad first timestamp outvoted) leaves nothing before it to judge.
	for i := len(jumped) - 1; i >= 0; i-- {
		if !jumped[i].kept {
			h.next = jumped[i].to + step
			jumped = jumped[i+1:]
			break
		}
	}
	var ends []int64
	for _, j := range jumped {
		for ; h.next <= j.from+1; h.next += step {
			ends = append(ends, h.next)
		}
		h.next = max(h.next, j.to+step)
	}
	h.jumped, h.jumps = h.jumped[:0], h.m.Stats().Jumps
	return ends
}

// trim keeps one window and the lag of history: nothing older is read again.
func (o *Online) trim(h *onlineHome) {
	first := h.next - int64(o.Model.Config.WindowBins) - int64(max(0, o.Lag)) - 1
	h.m.Trim(first)
	i := 0
	for i < len(h.held) && h.held[i].lastBin < first {
		i++
	}
	h.held = append(h.held[:0], h.held[i:]...)
}
