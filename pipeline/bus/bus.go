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
}

// Conn is a JetStream connection with the streams declared.
type Conn struct {
	NC  *nats.Conn
	JS  jetstream.JetStream
	log *slog.Logger
}

// Connect dials NATS and declares the PACKETS and LABELED streams
// idempotently, so every worker can start in any order.
func Connect(ctx context.Context, cfg Config, log *slog.Logger) (*Conn, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.DedupWindow == 0 {
		cfg.DedupWindow = time.Hour
	}
	nc, err := nats.Connect(cfg.URL,
		nats.Name(cfg.Name),
		nats.Timeout(5*time.Second),
		nats.RetryOnFailedConnect(false),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("NATS reconnected", "url", c.ConnectedUrlRedacted()) }),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w (is the server running? set --nats or HOMEMOLE_NATS_URL, or leave both empty for the embedded server)", cfg.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("open JetStream on %s: %w", cfg.URL, err)
	}
	c := &Conn{NC: nc, JS: js, log: log}
	for _, sc := range []jetstream.StreamConfig{
		{Name: schemas.StreamPackets, Subjects: []string{"hm.pkt.>"}},
		{Name: schemas.StreamLabeled, Subjects: []string{"hm.lbl.>"}},
	} {
		sc.Storage = jetstream.FileStorage
		sc.Replicas = cfg.Replicas
		sc.Duplicates = cfg.DedupWindow
		sc.Retention = jetstream.LimitsPolicy
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			nc.Close()
			return nil, fmt.Errorf("declare stream %s on %s: %w (is JetStream enabled on the server?)", sc.Name, cfg.URL, err)
		}
	}
	return c, nil
}

// Close drains the connection so acks and publishes in flight complete.
func (c *Conn) Close() {
	if err := c.NC.Drain(); err != nil {
		c.NC.Close()
	}
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

// AsyncPublisher keeps a bounded number of publishes in flight. When the
// window is full, Publish blocks: backpressure instead of unbounded memory.
type AsyncPublisher struct {
	js      jetstream.JetStream
	pending []jetstream.PubAckFuture
	window  int
}

// NewAsyncPublisher publishes with at most window unacknowledged batches.
func (c *Conn) NewAsyncPublisher(window int) *AsyncPublisher {
	if window <= 0 {
		window = 64
	}
	return &AsyncPublisher{js: c.JS, window: window}
}

// Publish queues one batch; it returns the first failure seen among earlier
// publishes, since JetStream acks arrive in order of completion.
func (p *AsyncPublisher) Publish(ctx context.Context, subject string, b *schemas.Batch) error {
	data, err := b.AppendBinary(nil)
	if err != nil {
		return err
	}
	if len(p.pending) >= p.window {
		if err := p.waitOldest(ctx); err != nil {
			return err
		}
	}
	f, err := p.js.PublishMsgAsync(&nats.Msg{Subject: subject, Data: data}, jetstream.WithMsgID(b.MsgID()))
	if err != nil {
		return fmt.Errorf("publish batch %s to %s: %w", b.MsgID(), subject, err)
	}
	p.pending = append(p.pending, f)
	return nil
}

func (p *AsyncPublisher) waitOldest(ctx context.Context) error {
	f := p.pending[0]
	p.pending = p.pending[1:]
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return fmt.Errorf("publish to %s: %w", f.Msg().Subject, err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Flush waits until every queued batch is acknowledged by the stream.
func (p *AsyncPublisher) Flush(ctx context.Context) error {
	for len(p.pending) > 0 {
		if err := p.waitOldest(ctx); err != nil {
			return err
		}
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
