package label

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/budget"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/pair"
	"github.com/homemole/homemole/schemas"
)

// sessionPair gathers the LAN and WAN sessions of one home that share a
// base name ("lan-session-01" and "wan-session-01").
type sessionPair struct {
	key, home string
	taps      [2]tapBuffer // TapLAN, TapWAN
	// last is when the pair last received a batch it did not hold yet
	// (redeliveries do not count: they come while the producer is dead).
	last time.Time
}

// tapBuffer is one tap's session as received so far, keyed by first
// offset. Batches may come in any order: a restarted labeler gets the
// batches nobody had fetched at once, and the ones its predecessor held
// only when their ack wait runs out.
type tapBuffer struct {
	held map[uint64]heldBatch
	// next is where the run of batches from offset 0 held so far ends,
	// final whether it ends with the final batch: kept as batches come, so
	// that a long session is not walked again for each of its batches.
	next  uint64
	final bool
}

type heldBatch struct {
	batch *schemas.Batch
	d     *bus.Delivery
	size  int64 // what it takes from the hold budget
}

// chain returns the session's batches in order when they run without a gap
// from offset 0 (where the agent starts every session) to a final batch,
// nil while any is missing.
func (t *tapBuffer) chain() []heldBatch {
	for !t.final {
		hb, ok := t.held[t.next]
		if !ok {
			return nil
		}
		if hb.batch.Final {
			t.final = true
			break
		}
		n := len(hb.batch.Packets)
		if n == 0 {
			return nil // only a final batch may be empty
		}
		next := hb.batch.Packets[n-1].Offset + 1
		if next <= t.next {
			// Decoding refuses offsets that do not rise; this walk
			// must end whatever it is given.
			return nil
		}
		t.next = next
	}
	var out []heldBatch
	for next := uint64(0); ; {
		hb, ok := t.held[next]
		if !ok {
			return nil
		}
		out = append(out, hb)
		if hb.batch.Final {
			return out
		}
		n := len(hb.batch.Packets)
		if n == 0 {
			// Only a final batch may be empty; anything else would loop.
			return nil
		}
		last := next
		if next = hb.batch.Packets[n-1].Offset + 1; next <= last {
			return nil
		}
	}
}

// Held is the number of session pairs held unpublished or unacked.
func (l *Labeler) Held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.pairs)
}

// BaseName is a session's name without its tap prefix: what pairs a WAN
// session with its LAN session (campaign.SessionName prefixes the tap).
func BaseName(tap, session string) string {
	return strings.TrimPrefix(session, tap+"-")
}

// hold keeps a batch of a paired home unacked until both taps' sessions are
// complete, then labels and publishes the pair and acks every batch of it.
func (l *Labeler) hold(ctx context.Context, conn *bus.Conn, h *homeIndex, d *bus.Delivery, log *slog.Logger) error {
	b := d.Batch
	var ti int
	switch b.Tap {
	case TapLAN:
	case TapWAN:
		ti = 1
	default:
		return bus.Permanent(fmt.Errorf("batch %s: tap %q: the labeler knows the lan and wan taps", b.MsgID(), b.Tap))
	}
	key := b.Home + "/" + BaseName(b.Tap, b.Session)
	l.work.Lock()
	defer l.work.Unlock()
	if _, ok := l.released[key]; ok {
		// The pair was published (released by the idle timeout, or a
		// redelivery of one that completed): a batch of it that comes now
		// goes out on its own rather than wait for a partner that was
		// already published. A copy already published is deduplicated by
		// its message id.
		if b.Tap == TapWAN {
			return l.publishUnpaired(ctx, conn, h, d)
		}
		out := labelLAN(h, b)
		if err := conn.Publish(ctx, schemas.LabeledSubject(out.Campaign, out.Home, out.View), out); err != nil {
			return err
		}
		l.count(b.Home, TapLAN, h, out, 0, 0)
		return d.Ack()
	}
	l.mu.Lock()
	sp, ok := l.pairs[key]
	if !ok {
		sp = &sessionPair{key: key, home: b.Home}
		sp.taps[0].held = map[uint64]heldBatch{}
		sp.taps[1].held = map[uint64]heldBatch{}
		l.pairs[key] = sp
	}
	l.mu.Unlock()
	// A redelivery (its ack wait ran out while the pair waited for the
	// other tap) replaces the copy held, not acked: acked now, the batch
	// would be lost if this labeler died before the pair is published.
	t := &sp.taps[ti]
	prev, had := t.held[b.FirstOffset]
	// Held batches count against the home's and the labeler's byte
	// budgets: past them the batch is refused (retryable, so JetStream
	// brings it back later) rather than held until memory runs out.
	size := budget.BatchSize(b)
	if had {
		l.Budget.Release(b.Home, prev.size)
	}
	take := l.Budget.Take
	if len(sp.taps[0].held)+len(sp.taps[1].held) > 0 {
		// The pair is under way: this batch brings it closer to being
		// labeled and released, so it may pass the home's share (up to
		// twice it); only new pairs wait for the share. Otherwise a home
		// whose LAN sessions fill its share before their WAN sessions come
		// (the agent publishes a tap's files in turn) would stall.
		take = l.Budget.TakeToComplete
	}
	if err := take(b.Home, size); err != nil {
		if had {
			_ = l.Budget.TakeToComplete(b.Home, prev.size) // what was released a moment ago
		}
		l.dropIfEmpty(sp)
		return fmt.Errorf("hold batch %s of session pair %s: %w (raise the hold budget or shorten capture sessions: a session pair must fit in twice a home's share)", b.MsgID(), key, err)
	}
	t.held[b.FirstOffset] = heldBatch{batch: b, d: d, size: size}
	if !had {
		sp.last = time.Now() // redeliveries are no sign of life
	}
	lan, wan := sp.taps[0].chain(), sp.taps[1].chain()
	if lan == nil || wan == nil {
		return nil
	}
	if err := l.flushPair(ctx, conn, h, sp, lan, wan, log); err != nil {
		// Retryable: the pair stays held and this batch comes again.
		l.Budget.Release(b.Home, size)
		if had {
			t.held[b.FirstOffset] = prev
			_ = l.Budget.TakeToComplete(b.Home, prev.size)
		} else {
			delete(t.held, b.FirstOffset)
			t.next, t.final = 0, false // the run is walked again
		}
		return err
	}
	l.done(sp, log)
	return nil
}

// done acks every batch the pair holds, once it is published, and forgets
// the pair.
func (l *Labeler) done(sp *sessionPair, log *slog.Logger) {
	for _, tb := range sp.taps {
		for _, hb := range tb.held {
			// Batches off the chain (a stray copy of another cut) are acked
			// too: the session they claim to belong to is published.
			if err := hb.d.Ack(); err != nil {
				log.Warn("ack after publishing failed; the session pair will be republished identically", "pair", sp.key, "err", err)
			}
		}
	}
	for _, tb := range sp.taps {
		for _, hb := range tb.held {
			l.Budget.Release(hb.batch.Home, hb.size)
		}
	}
	l.mu.Lock()
	delete(l.pairs, sp.key)
	l.released[sp.key] = time.Now()
	l.mu.Unlock()
}

// dropIfEmpty forgets a session pair that holds no batch (its first one
// was refused), so that refused pairs leave nothing behind.
func (l *Labeler) dropIfEmpty(sp *sessionPair) {
	if len(sp.taps[0].held)+len(sp.taps[1].held) > 0 {
		return
	}
	l.mu.Lock()
	delete(l.pairs, sp.key)
	l.mu.Unlock()
}

// SessionResult is one session pair labeled: the labeled batches of both
// views, one per input batch, and the pairing.
type SessionResult struct {
	LAN, WAN []*schemas.Batch
	Pairing  pair.Result
	// PairErr is why the WAN session could not be paired at all (its
	// packets are then all Unlabeled), nil otherwise.
	PairErr error
	// Across counts the WAN packets paired with the tail of the LAN
	// session before.
	Across int
}

// LabelPair labels a LAN session from the inventory and its WAN session by
// pairing, batch by batch as they came. Inputs are left as they were.
func (l *Labeler) LabelPair(home string, lan, wan []*schemas.Batch) (*SessionResult, error) {
	h, ok := l.homes[home]
	if !ok {
		return nil, fmt.Errorf("home %q is not in campaign %s", home, l.campaign)
	}
	if !h.hasWAN {
		return nil, fmt.Errorf("home %s has no wan tap in campaign %s: its WAN view cannot be labeled", home, l.campaign)
	}
	res, _ := l.labelPair(h, home, "", lan, wan, nil)
	return res, nil
}

// lanTail is the end of a live home's last LAN session labeled: its LAN
// packets of the last two grace periods that no WAN packet of their own
// session was paired with. The WAN tap enters a slot a grace before the
// LAN tap, so the next WAN session's first packets find their LAN packets
// here (campaign.Live.Grace).
type lanTail struct {
	base   string // the session's base name
	pkts   []schemas.Packet
	labels []int32
}

// labelPair labels a session pair, pairing the WAN packets with the LAN
// packets of tail too. For a live home it returns the tail its LAN session
// leaves for the next.
func (l *Labeler) labelPair(h *homeIndex, home, base string, lan, wan []*schemas.Batch, tail *lanTail) (*SessionResult, *lanTail) {
	res := &SessionResult{}
	var lanPkts, wanPkts []schemas.Packet
	var lanLabels []int32
	if tail != nil {
		lanPkts = append(lanPkts, tail.pkts...)
		lanLabels = append(lanLabels, tail.labels...)
	}
	own := len(lanPkts) // lanPkts[own:] are the session's own
	for _, b := range lan {
		out := labelLAN(h, b)
		res.LAN = append(res.LAN, out)
		lanPkts = append(lanPkts, b.Packets...)
		lanLabels = append(lanLabels, out.Labels...)
	}
	for _, b := range wan {
		wanPkts = append(wanPkts, b.Packets...)
	}
	cfg := pair.Config{Mode: gateway.Mode(h.view), Home: h.lan}
	if cfg.Mode == gateway.VPN {
		cfg.Cipher = l.Cipher
	}
	pr, err := pair.Records(lanPkts, wanPkts, cfg)
	if err != nil {
		res.PairErr = fmt.Errorf("pair session %s/%s: %w", home, sessionOf(wan), err)
		pr = pair.Result{Pairs: make([]int64, len(wanPkts))}
		for i := range pr.Pairs {
			pr.Pairs[i] = -1
		}
	}
	res.Pairing = pr
	j := 0
	for _, b := range wan {
		out := labeledHeader(b, h.view, h.devices)
		for i := range b.Packets {
			p := b.Packets[i]
			p.StripAddresses()
			out.Packets[i] = p
			out.Labels[i] = schemas.Unlabeled
			if k := pr.Pairs[j]; k >= 0 {
				out.Labels[i] = lanLabels[k]
			}
			j++
		}
		res.WAN = append(res.WAN, out)
	}
	used := make([]bool, len(lanPkts))
	for _, k := range pr.Pairs {
		if k >= 0 {
			used[k] = true
			if k < int64(own) {
				res.Across++
			}
		}
	}
	if !h.live[TapLAN] || !h.live[TapWAN] || len(lanPkts) == own {
		return res, nil
	}
	var last int64
	for _, p := range lanPkts[own:] {
		last = max(last, p.TsNs)
	}
	next := &lanTail{base: base}
	from := last - 2*int64(h.rotation.Grace)
	for i := own; i < len(lanPkts); i++ {
		if p := &lanPkts[i]; !used[i] && p.TsNs >= from && p.Direction != schemas.DirLocal {
			next.pkts = append(next.pkts, *p)
			next.labels = append(next.labels, lanLabels[i])
		}
	}
	return res, next
}

func sessionOf(bs []*schemas.Batch) string {
	if len(bs) == 0 {
		return "(empty)"
	}
	return bs[0].Session
}

// flushPair labels a complete pair and publishes both views, waiting until
// the stream has stored every batch.
func (l *Labeler) flushPair(ctx context.Context, conn *bus.Conn, h *homeIndex, sp *sessionPair, lanHeld, wanHeld []heldBatch, log *slog.Logger) error {
	home, key := sp.home, sp.key
	batches := func(hs []heldBatch) []*schemas.Batch {
		out := make([]*schemas.Batch, len(hs))
		for i, hb := range hs {
			out[i] = hb.batch
		}
		return out
	}
	// The tail of the home's previous session, when this one follows it.
	tail := l.tails[home]
	base := strings.TrimPrefix(key, home+"/")
	if tail != nil && tail.base >= base {
		tail = nil
	}
	res, next := l.labelPair(h, home, base, batches(lanHeld), batches(wanHeld), tail)
	if res.PairErr != nil {
		log.Warn("WAN session left unlabeled", "pair", key, "err", res.PairErr)
	}
	log.Info("session pair labeled", "pair", key, "view", h.view, "wan_packets", len(res.Pairing.Pairs),
		"paired", res.Pairing.Paired, "pairing_rate", res.Pairing.Rate())
	labeled := func(b *schemas.Batch) string { return schemas.LabeledSubject(b.Campaign, b.Home, b.View) }
	if err := conn.PublishAll(ctx, labeled, append(append([]*schemas.Batch(nil), res.LAN...), res.WAN...)); err != nil {
		return fmt.Errorf("labeled batches of session pair %s: %w", key, err)
	}
	if next != nil {
		l.tails[home] = next
	}
	unpaired := len(res.Pairing.Pairs) - res.Pairing.Paired
	for _, out := range res.LAN {
		l.count(home, TapLAN, h, out, 0, 0)
	}
	for i, out := range res.WAN {
		p, u := 0, 0
		if i == 0 {
			p, u = res.Pairing.Paired, unpaired
		}
		l.count(home, TapWAN, h, out, p, u)
	}
	if res.Across > 0 {
		l.mu.Lock()
		ts := l.stats[home].PerTap[TapWAN]
		ts.PairedAcross += res.Across
		l.stats[home].PerTap[TapWAN] = ts
		l.mu.Unlock()
	}
	return nil
}
