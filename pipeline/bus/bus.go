// Package bus joins the workers through NATS JetStream: it declares the
// streams, publishes batches with deterministic message ids, and runs durable
// pull consumers that ack a message only after its handler has stored what
// it produced.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// Connect dials NATS and declares the PACKETS and LABELED streams
// idempotently, so every worker can start in any order.
func Connect(ctx context.Context, cfg Config, log *slog.Logger) (*Conn, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.DedupWindow == 0 {
		cfg.DedupWindow = time.Hour
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
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w (%s)", cfg.URL, err, fixUnreachable)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(asyncAckTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("open JetStream on %s: %w", cfg.URL, err)
	}
	c.NC, c.JS = nc, js
	if cfg.RetryConnect && !nc.IsConnected() {
		log.Warn("NATS is unreachable; retrying in the background", "url", cfg.URL, "fix", fixUnreachable)
	} else if err := c.declareStreams(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	if cfg.RetryConnect {
		go c.declareLoop()
	}
	return c, nil
}

const fixUnreachable = "is the server running? set --nats or HOMEMOLE_NATS_URL, or leave both empty for the embedded server"

func (c *Conn) declareStreams(ctx context.Context) error {
	for _, sc := range []jetstream.StreamConfig{
		{Name: schemas.StreamPackets, Subjects: []string{"hm.pkt.>"}},
		{Name: schemas.StreamLabeled, Subjects: []string{"hm.lbl.>"}},
	} {
		sc.Storage = jetstream.FileStorage
		sc.Replicas = c.cfg.Replicas
		sc.Duplicates = c.cfg.DedupWindow
		sc.Retention = jetstream.LimitsPolicy
		if _, err := c.JS.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("declare stream %s on %s: %w (is JetStream enabled on the server?)", sc.Name, c.cfg.URL, err)
		}
	}
	return nil
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
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
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
		return nil, fmt.Errorf("publish batch %s to %s: not connected to NATS at %s", msgID, subject, c.cfg.URL)
	}
	f, err := c.JS.PublishMsgAsync(&nats.Msg{Subject: subject, Data: data}, jetstream.WithMsgID(msgID))
	if err != nil {
		return nil, fmt.Errorf("publish batch %s to %s: %w", msgID, subject, err)
	}
	return f, nil
}

// Publish sends one batch synchronously and waits for the stream's ack. The
// message id makes a retried publish a no-op.
func (c *Conn) Publish(ctx context.Context, subject string, b *schemas.Batch) error {
	data, err := b.AppendBinary(nil)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	if _, err := c.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(b.MsgID())); err != nil {
		return fmt.Errorf("publish batch %s to %s: %w", b.MsgID(), subject, err)
	}
	return nil
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

// Subject is the subject the message arrived on.
func (d *Delivery) Subject() string { return d.msg.Subject() }

// ConsumerConfig declares one durable pull consumer.
type ConsumerConfig struct {
	Stream  string
	Durable string
	Filter  string
	// MaxAckPending bounds how many messages may wait for an ack; the
	// windower holds a session's messages until the session ends.
	MaxAckPending int
	AckWait       time.Duration
}

// Consume delivers batches to handle until ctx ends. A batch that fails to
// decode is terminated (it can never succeed); a newer batch version is
// nak'ed with a delay so a newer worker can take it; a handler error marked
// Permanent terminates the message, any other naks it for redelivery.
func (c *Conn) Consume(ctx context.Context, cc ConsumerConfig, handle func(context.Context, *Delivery) error) error {
	if cc.MaxAckPending == 0 {
		cc.MaxAckPending = 1000
	}
	if cc.AckWait == 0 {
		cc.AckWait = 2 * time.Minute
	}
	cons, err := c.JS.CreateOrUpdateConsumer(ctx, cc.Stream, jetstream.ConsumerConfig{
		Durable:       cc.Durable,
		FilterSubject: cc.Filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxAckPending: cc.MaxAckPending,
		AckWait:       cc.AckWait,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("declare consumer %s on %s: %w", cc.Durable, cc.Stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(64))
	if err != nil {
		return fmt.Errorf("consume %s from %s: %w", cc.Durable, cc.Stream, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			c.log.Warn("fetch from JetStream failed; retrying", "consumer", cc.Durable, "err", err)
			continue
		}
		b, err := schemas.DecodeBatch(msg.Data())
		if err != nil {
			if errors.Is(err, schemas.ErrUnknownVersion) {
				c.log.Warn("batch from a newer producer left for a newer worker", "subject", msg.Subject(), "err", err)
				_ = msg.NakWithDelay(time.Minute)
				continue
			}
			c.log.Error("malformed batch terminated", "subject", msg.Subject(), "err", err)
			_ = msg.Term()
			continue
		}
		if err := handle(ctx, &Delivery{Batch: b, msg: msg}); err != nil {
			if errors.Is(err, ErrPermanent) {
				c.log.Error("batch terminated", "subject", msg.Subject(), "id", b.MsgID(), "err", err)
				_ = msg.Term()
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.log.Warn("batch failed; will be redelivered", "subject", msg.Subject(), "id", b.MsgID(), "err", err)
			_ = msg.NakWithDelay(time.Second)
		}
	}
}
