// Package bus joins the workers through NATS JetStream: it declares the
// streams, publishes batches with deterministic message ids, and runs durable
// pull consumers that ack a message only after its handler has stored what
// it produced.
package bus

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/schemas"
)

// Config says where JetStream is and how streams are laid out.
type Config struct {
	URL string
	// Replicas of each stream: 1 embedded, 3 on a cluster.
	Replicas int
	// DedupWindow is how long JetStream remembers message ids. A capture
	// agent that restarts within it republishes without duplicates.
	DedupWindow time.Duration
	// Name identifies the connection in server monitoring.
	Name string
	// RetryConnect lets Connect return while the server is unreachable: the
	// client keeps trying in the background and the streams are declared
	// once the server answers (and again after every reconnect, in case the
	// server came back without its state). For capture agents, which spool
	// to disk meanwhile; every other worker is better off failing at once.
	RetryConnect bool
	// NoReconnectBuffer makes publishes fail at once while the connection is
	// down instead of waiting in the client's reconnect buffer. A spooling
	// publisher needs it: buffered messages would reach the server after the
	// reconnect, behind its back and ahead of the spool it drains in order.
	NoReconnectBuffer bool
	// ReconnectWait is the pause between reconnect attempts (nats.go's
	// default, 2 s, when zero).
	ReconnectWait time.Duration
	// Auth is who the connection is and which servers it trusts (none: an
	// anonymous plain-text connection, as to the embedded server).
	Auth Auth
	// IDKey, when set, makes this connection's message ids unguessable to
	// other publishers (see MsgID). Capture agents set it from their own
	// credentials (Auth.IDKey): JetStream deduplicates ids stream-wide, so
	// a home that could predict another home's ids could have that home's
	// batches dropped as duplicates by publishing them first.
	IDKey []byte
	// Retention limits the streams and makes the connection warn when they
	// are nearly reached (see Retention).
	Retention Retention
}

// Conn is a JetStream connection with the streams declared.
type Conn struct {
	NC  *nats.Conn
	JS  jetstream.JetStream
	log *slog.Logger

	cfg       Config
	declare   chan struct{} // RetryConnect: the server answered; declare the streams
	closed    chan struct{}
	closeOnce sync.Once
}

// asyncAckTimeout bounds how long nats.go keeps an asynchronous publish
// waiting for its ack. Callers time out sooner and retry on their own terms;
// this only makes sure a publish whose ack was lost is eventually released.
const asyncAckTimeout = time.Minute

// Connect dials NATS and declares the PACKETS, LABELED and SEEN streams
// idempotently, so every worker can start in any order.
func Connect(ctx context.Context, cfg Config, log *slog.Logger) (*Conn, error) {
	if err := CheckReplicas(cfg.Replicas); err != nil {
		return nil, err
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.DedupWindow == 0 {
		cfg.DedupWindow = time.Hour
	}
	if cfg.Auth.fileErr != nil {
		return nil, cfg.Auth.fileErr
	}
	if cfg.Auth.envErr != nil {
		return nil, cfg.Auth.envErr
	}
	if err := cfg.Auth.plainCredentials(cfg.URL); err != nil {
		if cfg.Auth.RequireTLS {
			return nil, err
		}
		log.Warn("NATS credentials go over plain text: anyone on the path reads them (--require-tls refuses this)", "err", err)
	}
	c := &Conn{log: log, cfg: cfg, declare: make(chan struct{}, 1), closed: make(chan struct{})}
	wake := func() {
		select {
		case c.declare <- struct{}{}:
		default:
		}
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.Timeout(5 * time.Second),
		nats.RetryOnFailedConnect(cfg.RetryConnect),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		// A RetryConnect connection that could not connect at first reports
		// its first success here rather than as a reconnect.
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connected", "url", nc.ConnectedUrlRedacted())
			if cfg.RetryConnect {
				wake()
			}
		}),
		// Permission violations come back asynchronously: a publish to a
		// subject the user may not use is dropped by the server and only
		// this says why.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Error("NATS error", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted())
			if cfg.RetryConnect {
				wake()
			}
		}),
	}
	if cfg.NoReconnectBuffer {
		opts = append(opts, nats.ReconnectBufSize(-1))
	}
	if cfg.ReconnectWait > 0 {
		opts = append(opts, nats.ReconnectWait(cfg.ReconnectWait))
	}
	opts = append(opts, cfg.Auth.options()...)
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w (%s)", redactURL(cfg.URL), err, fixConnect(err))
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(asyncAckTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("open JetStream on %s: %w", redactURL(cfg.URL), err)
	}
	c.NC, c.JS = nc, js
	if cfg.RetryConnect && !nc.IsConnected() {
		log.Warn("NATS is unreachable; retrying in the background", "url", redactURL(cfg.URL), "fix", fixUnreachable)
	} else if err := c.declareAtStart(ctx); err != nil {
		if !cfg.RetryConnect {
			nc.Close()
			return nil, err
		}
		// A cluster moving a stream's leader answers again in seconds.
		log.Warn("declaring streams failed; retrying in the background", "err", err)
		wake()
	}
	if cfg.RetryConnect {
		go c.declareLoop()
	}
	if cfg.Retention.set() {
		go c.watchRetention(cfg.Retention)
	}
	return c, nil
}

// fixConnect says what to check when a connection fails.
func fixConnect(err error) string {
	msg := strings.ToLower(err.Error())
	switch {
	case errors.Is(err, nats.ErrAuthorization) || strings.Contains(msg, "authorization") || strings.Contains(msg, "authentication"):
		return "check the user: HOMEMOLE_NATS_USER and HOMEMOLE_NATS_PASSWORD, or HOMEMOLE_NATS_CREDS"
	case strings.Contains(msg, "tls") || strings.Contains(msg, "x509") || strings.Contains(msg, "secure connection"):
		return "check TLS: HOMEMOLE_NATS_CA names the CA of the servers' certificates, and tls:// URLs"
	}
	return fixUnreachable
}

const fixUnreachable = "is the server running? set --nats or HOMEMOLE_NATS_URL, or leave both empty for the embedded server"

// StreamSeen keeps the online detector's windows (hm.seen.<campaign>.<home>,
// schemas.Seen), each under an id of its home and window start, so a
// window republished after a restart is stored once.
const StreamSeen = "SEEN"

// DetectorCheckpoints is the JetStream key-value bucket (stream
// KV_hm_detector) where the online detector keeps each home's place.
const DetectorCheckpoints = "hm_detector"

// DetectorHostTables is the JetStream key-value bucket (stream
// KV_hm_detector_hosts) where the detector counting LAN hosts (--hosts)
// keeps each home's host table.
const DetectorHostTables = "hm_detector_hosts"

// streamNames are the data streams: the retention limits are theirs.
var streamNames = []string{schemas.StreamPackets, schemas.StreamLabeled, StreamSeen}

func (c *Conn) declareStreams(ctx context.Context) error {
	return c.declareEach(ctx,
		jetstream.StreamConfig{Name: schemas.StreamPackets, Subjects: []string{"hm.pkt.>"}},
		jetstream.StreamConfig{Name: schemas.StreamLabeled, Subjects: []string{"hm.lbl.>"}},
		jetstream.StreamConfig{Name: StreamSeen, Subjects: []string{"hm.seen.>"}},
	)
}

// declareEach declares streams as Connect wants them, leaving alone those
// already laid out so.
func (c *Conn) declareEach(ctx context.Context, streams ...jetstream.StreamConfig) error {
	for _, sc := range streams {
		sc.Storage = jetstream.FileStorage
		sc.Replicas = c.cfg.Replicas
		sc.Duplicates = c.cfg.DedupWindow
		sc.Retention = jetstream.LimitsPolicy
		// The retention limits are the data streams'; dead letters stay
		// until someone looks at them (homemole dlq discard).
		retention := c.cfg.Retention
		if !slices.Contains(streamNames, sc.Name) {
			retention = Retention{}
		}
		retention.apply(&sc)
		// A stream already laid out as wanted is left alone: a capture
		// agent may read stream information but not change streams. More
		// replicas than asked for count as wanted: a worker started
		// without HOMEMOLE_NATS_REPLICAS=3 must not scale a cluster's
		// streams down.
		s, err := c.JS.Stream(ctx, sc.Name)
		switch {
		case err == nil:
			have := s.CachedInfo().Config
			if slices.Equal(have.Subjects, sc.Subjects) && have.Replicas >= sc.Replicas && have.Duplicates == sc.Duplicates && have.Storage == sc.Storage &&
				retention.satisfied(have) {
				continue
			}
			if !retention.set() {
				// Keep the limits another worker set.
				sc.MaxAge, sc.MaxBytes, sc.Discard = have.MaxAge, have.MaxBytes, have.Discard
			}
		case !errors.Is(err, jetstream.ErrStreamNotFound):
			// Not an answer (a cluster electing the stream's leader): no
			// reason to try to change the stream.
			return fmt.Errorf("look up stream %s on %s: %w", sc.Name, redactURL(c.cfg.URL), err)
		}
		if _, err := c.JS.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("declare stream %s on %s: %w (is JetStream enabled on the server, and may this user declare streams?)", sc.Name, redactURL(c.cfg.URL), err)
		}
	}
	return nil
}

// errCodeNoPeers is JetStream's "no suitable peers for placement": a
// cluster whose nodes have not all met yet (a CI run on a loaded machine
// saw it a second after the 3 nodes started) cannot place a stream of 3
// replicas. It is also what too few nodes for the replicas asked for says;
// then the retries end at startupDeclareWait with this error.
const errCodeNoPeers jetstream.ErrorCode = 10005

// startupDeclareWait bounds how long Connect keeps declaring the streams
// while the servers answer but cannot yet (a cluster that has just started
// or restarted elects the streams' leaders for a few seconds).
const startupDeclareWait = 30 * time.Second

// declareTry bounds one try at declaring the streams, at start and on
// every reconnect. In a cluster a JetStream request that reaches a stream
// whose leader is being elected can go unanswered, and a try bounded by
// the caller's context alone would wait out all of it (a test's 2-minute
// deadline, once, on a fresh 3-node cluster) instead of asking again.
const declareTry = 10 * time.Second

// declareAtStart declares the streams, retrying transient failures for up
// to startupDeclareWait: a worker started beside a fresh cluster must not
// exit because the cluster was still electing.
func (c *Conn) declareAtStart(ctx context.Context) error {
	deadline := time.Now().Add(startupDeclareWait)
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		tctx, cancel := context.WithTimeout(ctx, declareTry)
		err := c.declareStreams(tctx)
		cancel()
		// Timeouts and "unavailable" only: a server without JetStream
		// (no responders) or a user who may not declare streams should
		// hear so at once.
		var apiErr *jetstream.APIError
		electing := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
			errors.As(err, &apiErr) && (apiErr.Code == 503 || apiErr.ErrorCode == errCodeNoPeers)
		if err == nil || !electing || ctx.Err() != nil || time.Now().Add(wait).After(deadline) {
			return err
		}
		c.log.Warn("declaring streams failed; retrying", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// declareLoop declares the streams whenever a RetryConnect connection
// (re)connects, retrying while the server is up but JetStream is not ready
// (a restarting server answers before it has recovered its streams).
func (c *Conn) declareLoop() {
	for {
		select {
		case <-c.closed:
			return
		case <-c.declare:
		}
		for wait := 100 * time.Millisecond; c.NC.IsConnected(); wait = min(2*wait, 5*time.Second) {
			ctx, cancel := context.WithTimeout(context.Background(), declareTry)
			err := c.declareStreams(ctx)
			cancel()
			if err == nil {
				break
			}
			c.log.Warn("declaring streams failed; retrying", "err", err, "in", wait)
			select {
			case <-c.closed:
				return
			case <-time.After(wait):
			}
		}
	}
}

// Close drains the connection so acks and publishes in flight complete.
func (c *Conn) Close() {
	c.closeOnce.Do(func() { close(c.closed) })
	if err := c.NC.Drain(); err != nil {
		c.NC.Close()
	}
}

// PublishAsync hands one encoded batch to JetStream under msgID and returns
// without waiting; the future reports the stream's ack. The caller bounds
// how many it keeps in flight, and must not reuse data before the future
// has resolved: nats.go republishes it itself when no stream answered yet.
func (c *Conn) PublishAsync(subject, msgID string, data []byte) (jetstream.PubAckFuture, error) {
	// While disconnected nats.go fails a message with headers for lack of
	// the server's feature list, an error that would hide the real cause.
	if !c.NC.IsConnected() {
		return nil, fmt.Errorf("publish batch %s to %s: not connected to NATS at %s", msgID, subject, redactURL(c.cfg.URL))
	}
	f, err := c.JS.PublishMsgAsync(&nats.Msg{Subject: subject, Data: data}, jetstream.WithMsgID(MsgID(subject, msgID, c.cfg.IDKey)))
	if err != nil {
		return nil, fmt.Errorf("publish batch %s to %s: %w", msgID, subject, err)
	}
	return f, nil
}

// PublishAll publishes batches without waiting between them, each under
// the subject subject gives it and its message id, and then waits for
// every ack, so that a sender of a known set of batches (a labeled session
// pair, a test's capture) waits once for all of them. Each batch is
// encoded into a buffer of its own: an async publish may still hold the
// last one.
func (c *Conn) PublishAll(ctx context.Context, subject func(*schemas.Batch) string, batches []*schemas.Batch) error {
	futures := make([]jetstream.PubAckFuture, 0, len(batches))
	for _, b := range batches {
		data, err := b.AppendBinary(nil)
		if err != nil {
			return err
		}
		f, err := c.PublishAsync(subject(b), b.MsgID(), data)
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish batch %s: %w", batches[i].MsgID(), err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Publish sends one batch synchronously and waits for the stream's ack. The
// message id makes a retried publish a no-op.
func (c *Conn) Publish(ctx context.Context, subject string, b *schemas.Batch) error {
	data, err := b.AppendBinary(nil)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	if _, err := c.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(MsgID(subject, b.MsgID(), c.cfg.IDKey))); err != nil {
		return fmt.Errorf("publish batch %s to %s: %w", b.MsgID(), subject, err)
	}
	return nil
}

// MsgID is the JetStream message id a batch id is published under: scoped
// to the subject, so ids of different homes never meet, and, with a key,
// followed by a tag only the key's holder can compute. The server
// deduplicates by id across the whole stream and lets a publisher set any
// id, so scoping alone would not do: home-1 could publish on its own
// subject under the id home-2 will use, and home-2's genuine batch would
// be dropped as its duplicate. The tag is deterministic, so a restarted
// agent still republishes under the same ids.
func MsgID(subject, id string, key []byte) string {
	scoped := subject + "|" + id
	if len(key) == 0 {
		return scoped
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(scoped))
	return scoped + "|" + hex.EncodeToString(m.Sum(nil)[:16])
}

// ErrPermanent marks a message that can never be processed (malformed,
// unknown home): it is terminated and counted, not retried.
var ErrPermanent = errors.New("permanent failure")

// Permanent wraps err as a permanent failure.
func Permanent(err error) error { return fmt.Errorf("%w: %w", ErrPermanent, err) }

// Delivery is one message handed to a consumer's handler. The handler calls
// Ack once what it produced from the batch is stored; it may keep the
// Delivery and ack later (the windower acks a session's batches after the
// session's windows are written).
type Delivery struct {
	Batch *schemas.Batch
	msg   jetstream.Msg
}

// Ack acknowledges the message; JetStream will not deliver it again.
func (d *Delivery) Ack() error { return d.msg.Ack() }

// Seq is the message's position in its stream (0 if the server did not
// say): a worker that checkpoints records how far it got by it.
func (d *Delivery) Seq() uint64 {
	md, err := d.msg.Metadata()
	if err != nil {
		return 0
	}
	return md.Sequence.Stream
}

// Subject is the subject the message arrived on.
func (d *Delivery) Subject() string { return d.msg.Subject() }

// ConsumerConfig declares one durable pull consumer.
type ConsumerConfig struct {
	Stream  string
	Durable string
	Filter  string
	// Filters, when not nil, replaces Filter with several subjects (a
	// partition's homes, see Partition). An empty list matches nothing:
	// Consume then idles until ctx ends, as a replica without homes must.
	Filters []string
	// MaxAckPending bounds how many messages may wait for an ack; the
	// windower holds a session's messages until the session ends.
	MaxAckPending int
	AckWait       time.Duration
	// RetryFor bounds how long a message whose handler keeps failing with
	// a retryable error is retried before it is moved to the dead letters
	// (homemole dlq replay puts it back). A message waiting out its retry
	// delay still takes one of the MaxAckPending slots, so without a bound
	// messages that can never succeed (a session that never starts, for
	// the windower) stop the consumer for every home it reads. 0: three
	// ack waits and at least minRetryFor, so that an object store or NATS
	// down for minutes is waited out, and so are a batch that waits for a
	// dead worker's batches, which come back only after their ack wait,
	// and one refused for room while the pair or session ahead of it waits
	// out its idle timeout.
	RetryFor time.Duration
}

// minRetryFor is the least time a retryable failure is retried by default:
// over twice a home's default idle timeout (31 min). A labeler's or
// windower's batch refused for room waits for the session pair or session
// ahead of it, which, when its producer died, only that timeout releases;
// a new session's batches must not be dead-lettered just before it does.
const minRetryFor = 70 * time.Minute

// maxRetryDelay caps the growing delay between a failing message's
// deliveries: long enough not to spin on a message that waits for long,
// short enough that one that can go on (room freed, an earlier batch
// arrived) is not kept waiting.
const maxRetryDelay = 10 * time.Second

// failureForgotten is how long after its last failure a message is
// forgotten by its consumer (it succeeded on another worker, or was
// dead-lettered): retried, it comes back within maxRetryDelay.
const failureForgotten = 5 * time.Minute

// Consume delivers batches to handle until ctx ends. A batch that fails to
// decode, does not match its subject (see DecodeMsg) or whose handler
// says it is Permanent can never succeed: it is moved to the dead-letter
// stream with the reason (see deadLetter). So is a batch of a newer version
// than this worker reads, to be replayed once the workers are upgraded. Any
// other handler error naks the message for redelivery, after a delay that
// grows with its failures, until it has failed for cc.RetryFor: then it too
// is moved to the dead letters.
func (c *Conn) Consume(ctx context.Context, cc ConsumerConfig, handle func(context.Context, *Delivery) error) error {
	if cc.MaxAckPending == 0 {
		cc.MaxAckPending = 1000
	}
	if cc.AckWait == 0 {
		cc.AckWait = 2 * time.Minute
	}
	if cc.RetryFor == 0 {
		cc.RetryFor = max(3*cc.AckWait, minRetryFor)
	}
	filter, filters := cc.Filter, []string(nil)
	if cc.Filters != nil {
		if len(cc.Filters) == 0 {
			c.log.Warn("consumer has no subjects to read (a partition without homes); idling", "consumer", cc.Durable)
			<-ctx.Done()
			return ctx.Err()
		}
		filter, filters = "", cc.Filters
		if len(filters) == 1 {
			filter, filters = filters[0], nil
		}
	}
	// A cluster electing a new stream leader (a node restarting) answers
	// nothing for a few seconds: declaring the consumer is retried then,
	// rather than ending a worker that would only be restarted.
	var cons jetstream.Consumer
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		// Permanent failures are kept there: it must exist first.
		err := c.declareDeadLetters(ctx)
		if err != nil {
			if ctx.Err() != nil || !transient(err) {
				return err
			}
			c.log.Warn("declaring the dead-letter stream failed; retrying", "err", err, "in", wait)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			continue
		}
		cons, err = c.JS.CreateOrUpdateConsumer(ctx, cc.Stream, jetstream.ConsumerConfig{
			Durable:        cc.Durable,
			FilterSubject:  filter,
			FilterSubjects: filters,
			AckPolicy:      jetstream.AckExplicitPolicy,
			MaxAckPending:  cc.MaxAckPending,
			AckWait:        cc.AckWait,
			DeliverPolicy:  jetstream.DeliverAllPolicy,
		})
		if err == nil {
			break
		}
		if ctx.Err() != nil || !transient(err) {
			return fmt.Errorf("declare consumer %s on %s: %w", cc.Durable, cc.Stream, err)
		}
		c.log.Warn("declaring the consumer failed; retrying", "consumer", cc.Durable, "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	// A pull request lost while a cluster elects the consumer's leader (a
	// consumer just made, a node restarting) is noticed by its missing
	// heartbeats and sent again: a 5 s expiry bounds that stall to seconds
	// rather than the 30 s of nats.go's default.
	it, err := cons.Messages(jetstream.PullMaxMessages(64), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		return fmt.Errorf("consume %s from %s: %w", cc.Durable, cc.Stream, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	fails := &failures{seen: map[uint64]failure{}}
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			c.log.Warn("fetch from JetStream failed; retrying", "consumer", cc.Durable, "err", err)
			continue
		}
		b, err := DecodeMsg(msg.Subject(), msg.Data())
		if err != nil {
			c.deadLetter(ctx, msg, cc.Durable, err)
			continue
		}
		if err := handle(ctx, &Delivery{Batch: b, msg: msg}); err != nil {
			if errors.Is(err, ErrPermanent) {
				c.deadLetter(ctx, msg, cc.Durable, err)
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.retry(ctx, msg, cc, fails, b.MsgID(), err)
			continue
		}
		fails.forget(msg)
	}
}

// DecodeMsg reads the batch of a message stored under subject, as Consume
// does before any handler sees it. A message that does not decode, or whose
// batch does not match its subject (schemas.Batch.CheckSubject), can never
// be processed: the error wraps ErrPermanent and Consume dead-letters the
// message with it. So can one from a newer producer (it wraps
// schemas.ErrUnknownVersion too), until the workers are upgraded and it is
// replayed. A worker that reads the stream back outside Consume (the
// detector's replay) calls this too, so that it skips exactly the messages
// its handler was never given.
func DecodeMsg(subject string, data []byte) (*schemas.Batch, error) {
	b, err := schemas.DecodeBatch(data)
	if errors.Is(err, schemas.ErrUnknownVersion) {
		// Not nak'ed for a newer worker: while it waited it would hold one
		// of the consumer's ack slots, and every home's batches would wait
		// behind enough such messages (one, for the detector) for as long
		// as no newer worker comes.
		return nil, Permanent(fmt.Errorf("%w; replay it once the workers are upgraded (homemole dlq replay)", err))
	}
	if err != nil {
		return nil, Permanent(fmt.Errorf("undecodable batch: %w", err))
	}
	// The subject is the one name of a batch the server vouches for.
	if err := b.CheckSubject(subject); err != nil {
		return nil, Permanent(err)
	}
	return b, nil
}

// failures remembers, by stream sequence, the messages of one consumer
// whose handler failed with a retryable error and are to come again.
//
// The count is this worker's own, not the server's: a server-side
// MaxDeliver, or the delivery count of a message's metadata, also counts
// the redeliveries of messages a worker holds on purpose (the labeler's
// and windower's sessions outlive their ack wait), and a server that
// reaches MaxDeliver drops the message from its pending list, so a held
// batch would be lost, unkept, if its worker then died. A restarted
// worker starts counting again, which only delays giving up.
type failures struct {
	seen  map[uint64]failure
	swept time.Time
}

type failure struct {
	first, last time.Time
	n           int
}

// record counts one more failure of msg at now and returns its tally.
func (f *failures) record(seq uint64, now time.Time) failure {
	if now.Sub(f.swept) > failureForgotten {
		for s, fl := range f.seen {
			if now.Sub(fl.last) > failureForgotten {
				delete(f.seen, s)
			}
		}
		f.swept = now
	}
	fl, ok := f.seen[seq]
	if !ok {
		fl.first = now
	}
	fl.last = now
	fl.n++
	f.seen[seq] = fl
	return fl
}

// forget drops what is known of msg's failures: it succeeded.
func (f *failures) forget(msg jetstream.Msg) {
	if len(f.seen) == 0 {
		return
	}
	if md, err := msg.Metadata(); err == nil {
		delete(f.seen, md.Sequence.Stream)
	}
}

// retry naks a message whose handler failed with a retryable error, to
// come again after a delay that doubles with each failure up to
// maxRetryDelay, or, once it has failed for cc.RetryFor, moves it to the
// dead letters: no retryable failure may hold a consumer's ack slot for
// ever.
func (c *Conn) retry(ctx context.Context, msg jetstream.Msg, cc ConsumerConfig, fails *failures, id string, err error) {
	md, merr := msg.Metadata()
	if merr != nil {
		c.log.Warn("batch failed; will be redelivered", "subject", msg.Subject(), "id", id, "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	now := time.Now()
	fl := fails.record(md.Sequence.Stream, now)
	if failing := now.Sub(fl.first); failing >= cc.RetryFor {
		c.deadLetter(ctx, msg, cc.Durable, fmt.Errorf("gave up after %d failed deliveries over %v (the consumer retries for %v): %w",
			fl.n, failing.Round(time.Second), cc.RetryFor, err))
		return
	}
	delay := min(time.Second<<min(fl.n-1, 16), maxRetryDelay)
	c.log.Warn("batch failed; will be redelivered", "subject", msg.Subject(), "id", id, "failures", fl.n, "in", delay,
		"dead_letter_in", (cc.RetryFor - now.Sub(fl.first)).Round(time.Second), "err", err)
	_ = msg.NakWithDelay(delay)
}

// transient reports errors a JetStream cluster gives while it moves a
// stream's leader, while its nodes have not all met (no peers to place a
// stream on: a worker declared the dead-letter stream 56 ms after it
// started, on a 3-node cluster a CI run had just brought up, and exited),
// or while a client reconnects: worth a retry.
func transient(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) ||
		errors.As(err, &apiErr) && (apiErr.Code == 503 || apiErr.ErrorCode == errCodeNoPeers)
}
