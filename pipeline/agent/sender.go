package agent

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// batchMeta is what the sender needs to know of a batch besides its bytes.
type batchMeta struct {
	subject, msgID  string
	source, session string
	first           uint64 // the batch's FirstOffset
	next            uint64 // where the source's next batch starts
	final           bool
	packets         int
	// live: a live session's batch, which no later run resumes, so it
	// leaves no progress file (a campaign of weeks would leave thousands).
	// Not spooled: a batch sent from the spool by a later run counts as a
	// file's.
	live bool
}

// outBatch is one encoded batch handed from the reader to the sender.
type outBatch struct {
	batchMeta
	data []byte
}

// entry is a batch the stream has not acknowledged yet. Entries are kept in
// publication order; the spooled ones are always a prefix, so that the spool
// alone (with the progress files) says where a restarted agent resumes.
type entry struct {
	batchMeta
	data []byte   // nil while the batch is only in the spool
	ref  spoolRef // ref.seg is nil until the batch is spooled
	fut  jetstream.PubAckFuture
	sent time.Time
	// abandoned: a publish of data was given up without its future
	// resolving; nats.go may still read data, so it is never reused.
	abandoned bool
}

func (e *entry) spooled() bool { return e.ref.seg != nil }

var errAckTimeout = errors.New("no acknowledgement in time")

// sender publishes batches in order with a bounded window, and keeps what
// JetStream has not acknowledged: in memory up to the window, then, while
// JetStream is unreachable, in the spool up to its limit. When neither has
// room it stops taking batches, which blocks the reader: backpressure,
// never loss.
type sender struct {
	cfg   *Config
	log   *slog.Logger
	pub   Publisher
	spool *spool        // nil without a spool folder
	book  *progressBook // nil without a spool folder
	bufs  *bufPool
	// onAck, onSpool and onFail report to the agent's statistics.
	onAck   func(*batchMeta)
	onSpool func()
	onFail  func()

	q         []*entry
	published int // q[:published] are published and not yet acknowledged
	inMemory  int // entries not in the spool: the tail of q
	healthy   bool
	backoff   time.Duration
	retrying  bool
	retry     *time.Timer
}

func (s *sender) run(ctx context.Context, in <-chan *outBatch) error {
	s.healthy = true
	s.retry = time.NewTimer(time.Hour)
	s.retry.Stop()
	defer s.retry.Stop()
	ackTimer := time.NewTimer(time.Hour)
	defer ackTimer.Stop()
	var tick <-chan time.Time
	if s.book != nil {
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		tick = t.C
	}
	open := true
	for {
		if err := s.pump(); err != nil {
			return s.stop(err)
		}
		if !open && len(s.q) == 0 {
			return s.stop(nil)
		}
		var inCh <-chan *outBatch
		if open && s.canAccept() {
			inCh = in
		}
		var okCh <-chan *jetstream.PubAck
		var errCh <-chan error
		var timeout <-chan time.Time
		if s.published > 0 {
			h := s.q[0]
			okCh, errCh = h.fut.Ok(), h.fut.Err()
			ackTimer.Reset(time.Until(h.sent.Add(s.cfg.AckTimeout)))
			timeout = ackTimer.C
		}
		var retryCh <-chan time.Time
		if s.retrying {
			retryCh = s.retry.C
		}
		var err error
		select {
		case b, ok := <-inCh:
			if !ok {
				open = false
				continue
			}
			err = s.accept(b)
		case <-okCh:
			err = s.acked()
		case perr := <-errCh:
			err = s.fail(perr)
		case <-timeout:
			err = s.fail(errAckTimeout)
		case <-retryCh:
			s.retrying = false
			err = s.probe()
		case <-tick:
			if ferr := s.book.flush(); ferr != nil {
				s.log.Warn("progress not saved; a restart may resend more", "err", ferr)
			}
		case <-ctx.Done():
			return s.stop(s.shutdown())
		}
		if err != nil {
			return s.stop(err)
		}
	}
}

// stop saves progress and closes the spool whatever ended the run.
func (s *sender) stop(cause error) error {
	errs := []error{cause}
	if s.book != nil {
		errs = append(errs, s.book.flush())
	}
	if s.spool != nil {
		errs = append(errs, s.spool.close())
	}
	return errors.Join(errs...)
}

// canAccept says whether one more batch has a place: in the spool when
// batches already wait there or JetStream is away, else in memory.
func (s *sender) canAccept() bool {
	if s.toSpool() {
		return s.spool.room(s.cfg.BatchBytes + spoolSlack)
	}
	return s.inMemory < s.cfg.Window
}

// toSpool: the next batch must go to the spool, behind the ones there.
func (s *sender) toSpool() bool {
	return s.spool != nil && s.inMemory == 0 && (len(s.q) > 0 || !s.healthy)
}

func (s *sender) accept(b *outBatch) error {
	e := &entry{batchMeta: b.batchMeta, data: b.data}
	if s.toSpool() {
		ref, err := s.spool.append(&e.batchMeta, e.data)
		if err != nil {
			return err
		}
		s.bufs.put(e.data)
		e.data, e.ref = nil, ref
		s.onSpool()
	} else {
		s.inMemory++
	}
	s.q = append(s.q, e)
	return nil
}

// pump publishes, while JetStream answers, as many batches as the window allows.
func (s *sender) pump() error {
	for s.healthy && s.published < len(s.q) && s.published < s.cfg.Window {
		if err := s.publish(s.q[s.published]); err != nil {
			var perr *publishError
			if errors.As(err, &perr) {
				return s.fail(perr.err)
			}
			return err
		}
		s.published++
	}
	return nil
}

// publishError is a publish JetStream refused or could not take; any other
// error of publish is the spool's and ends the run.
type publishError struct{ err error }

func (e *publishError) Error() string { return e.err.Error() }

func (s *sender) publish(e *entry) error {
	if e.data == nil {
		data, err := s.spool.read(e.ref, s.bufs.get())
		if err != nil {
			return err
		}
		e.data = data
	}
	fut, err := s.pub.PublishAsync(e.subject, e.msgID, e.data)
	if err != nil {
		return &publishError{err}
	}
	e.fut, e.sent = fut, time.Now()
	return nil
}

func (s *sender) acked() error {
	e := s.q[0]
	s.q[0] = nil
	s.q = s.q[1:]
	s.published--
	if !s.healthy {
		s.healthy, s.backoff = true, 0
		s.log.Info("JetStream answers again; sending what waited", "batches", len(s.q), "spooled", len(s.q)-s.inMemory)
	}
	if e.spooled() {
		if err := s.spool.ack(e.ref); err != nil {
			return err
		}
	} else {
		s.inMemory--
	}
	if !e.abandoned {
		s.bufs.put(e.data)
	}
	if s.book != nil && !e.live {
		s.book.advance(&e.batchMeta)
	}
	s.onAck(&e.batchMeta)
	return nil
}

// fail handles a publish that failed or timed out: every batch in flight is
// published again, in order, once a probe shows JetStream answers. Batches
// in memory move to the spool meanwhile, as far as it has room.
func (s *sender) fail(cause error) error {
	if s.healthy {
		s.onFail()
		where := "in memory"
		if s.spool != nil {
			where = "in the spool"
		}
		s.log.Warn("JetStream does not acknowledge; keeping batches "+where+" until it does", "err", cause, "waiting", len(s.q))
	} else {
		s.log.Debug("JetStream still unreachable", "err", cause, "retry_in", s.backoff)
	}
	s.healthy = false
	for _, e := range s.q[:s.published] {
		e.fut = nil
		e.abandoned = true
		if e.spooled() {
			e.data = nil
		}
	}
	s.published = 0
	s.backoff = min(max(2*s.backoff, retryMin), s.cfg.RetryMax)
	s.retry.Reset(s.backoff)
	s.retrying = true
	return s.spill()
}

// spill moves batches held in memory to the spool, oldest first, so that a
// crash during an outage loses nothing the capture cannot give again.
func (s *sender) spill() error {
	if s.spool == nil {
		return nil
	}
	for s.inMemory > 0 {
		e := s.q[len(s.q)-s.inMemory]
		if !s.spool.room(len(e.data) + spoolSlack) {
			return nil
		}
		ref, err := s.spool.append(&e.batchMeta, e.data)
		if err != nil {
			return err
		}
		if !e.abandoned {
			s.bufs.put(e.data)
		}
		e.data, e.ref = nil, ref
		s.inMemory--
		s.onSpool()
	}
	return nil
}

// probe publishes the oldest batch alone; its acknowledgement reopens the window.
func (s *sender) probe() error {
	if len(s.q) == 0 {
		s.healthy, s.backoff = true, 0
		return nil
	}
	if err := s.publish(s.q[0]); err != nil {
		var perr *publishError
		if errors.As(err, &perr) {
			return s.fail(perr.err)
		}
		return err
	}
	s.published = 1
	return nil
}

// shutdown gives the batches in flight a moment to be acknowledged, then
// spools what remains, so the next run neither loses nor resends them.
func (s *sender) shutdown() error {
	grace := time.NewTimer(s.cfg.ShutdownGrace)
	defer grace.Stop()
wait:
	for s.published > 0 {
		h := s.q[0]
		select {
		case <-h.fut.Ok():
			if err := s.acked(); err != nil {
				return err
			}
		case <-h.fut.Err():
			break wait
		case <-grace.C:
			break wait
		}
	}
	for _, e := range s.q[:s.published] {
		e.abandoned = true
	}
	if err := s.spill(); err != nil {
		return err
	}
	if s.inMemory > 0 && s.spool != nil {
		s.log.Warn("spool full at shutdown; the newest batches will be read from the capture again", "batches", s.inMemory)
	}
	return nil
}

// bufPool recycles batch buffers between the reader and the sender, so a
// steady stream allocates none.
type bufPool struct {
	free chan []byte
	size int
}

func newBufPool(n, size int) *bufPool { return &bufPool{free: make(chan []byte, n), size: size} }

func (p *bufPool) get() []byte {
	select {
	case b := <-p.free:
		return b[:0]
	default:
		return make([]byte, 0, p.size)
	}
}

func (p *bufPool) put(b []byte) {
	if cap(b) < p.size {
		return
	}
	select {
	case p.free <- b:
	default:
	}
}

const (
	retryMin         = 50 * time.Millisecond
	progressInterval = 200 * time.Millisecond
)
