package label

import (
	"cmp"
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
)

// idleOf is how long a session pair of the home may go without a batch; 0
// waits for ever. A home of capture files waits for ever unless the
// labeler's IdleTimeout says otherwise: a killed agent resumes its files
// where it stopped, however much later. A home with a watched folder waits
// as a live one: its other tap may never write the counterpart.
func (l *Labeler) idleOf(h *homeIndex) time.Duration {
	switch {
	case l.IdleTimeout > 0:
		return l.IdleTimeout
	case h.live[TapLAN] || h.live[TapWAN] || h.watched[TapLAN] || h.watched[TapWAN]:
		return h.rotation.IdleTimeout
	}
	return 0
}

// Sweeper calls Sweep until ctx ends, often enough that a pair is released
// within a tenth of its timeout after it expired; with no timeout it
// returns at once.
func (l *Labeler) Sweeper(ctx context.Context, conn *bus.Conn, log *slog.Logger) {
	var timeouts []time.Duration
	for _, h := range l.homes {
		timeouts = append(timeouts, l.idleOf(h))
	}
	campaign.Sweep(ctx, timeouts, func(now time.Time) error { return l.Sweep(ctx, conn, now, log) }, func(err error) {
		log.Warn("releasing idle session pairs failed; trying again", "err", err)
	})
}

// Sweep releases every session pair that has received no new batch for its
// home's idle timeout: its producer died (agent killed, gateway lost power)
// and the final batches will never come. What is held is labeled and
// published as it is, the LAN view from the inventory, the WAN view by
// pairing with whatever LAN packets came (a WAN session without its LAN
// session is published unlabeled and counted unpaired), then acked; the
// pair counts as cut short. Batches of it that come later go out on their
// own. Nothing is held forever.
func (l *Labeler) Sweep(ctx context.Context, conn *bus.Conn, now time.Time, log *slog.Logger) error {
	l.work.Lock()
	defer l.work.Unlock()
	l.mu.Lock()
	var idle []*sessionPair
	for _, sp := range l.pairs {
		if d := l.idleOf(l.homes[sp.home]); d > 0 && now.Sub(sp.last) >= d {
			idle = append(idle, sp)
		}
	}
	var longest time.Duration
	for _, h := range l.homes {
		longest = max(longest, l.idleOf(h))
	}
	for key, at := range l.released {
		// A batch of a pair released this long ago is no redelivery any
		// more: its producer would long have been cut short again.
		if now.Sub(at) > 2*longest+l.ackWait() {
			delete(l.released, key)
		}
	}
	l.mu.Unlock()
	slices.SortFunc(idle, func(a, b *sessionPair) int { return cmp.Compare(a.key, b.key) })
	for _, sp := range idle {
		h := l.homes[sp.home]
		lan, wan := sp.taps[0].sorted(), sp.taps[1].sorted()
		if err := l.flushPair(ctx, conn, h, sp, lan, wan, log); err != nil {
			return err
		}
		log.Warn("session pair cut short: no batch for the idle timeout, its producer died; published what came",
			"pair", sp.key, "lan_batches", len(lan), "wan_batches", len(wan), "idle", now.Sub(sp.last).Round(time.Second))
		l.mu.Lock()
		if st := l.stats[sp.home]; st != nil { // flushPair counted its batches
			st.CutShort++
		}
		l.mu.Unlock()
		l.done(sp, log)
	}
	return nil
}

func (l *Labeler) ackWait() time.Duration {
	if l.AckWait > 0 {
		return l.AckWait
	}
	return 10 * time.Minute
}

// sorted is every batch held, in offset order, gaps and all.
func (t *tapBuffer) sorted() []heldBatch {
	out := make([]heldBatch, 0, len(t.held))
	for _, hb := range t.held {
		out = append(out, hb)
	}
	slices.SortFunc(out, func(a, b heldBatch) int { return cmp.Compare(a.batch.FirstOffset, b.batch.FirstOffset) })
	return out
}
