package bus

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/schemas"
)

// Headers of a dead letter. The original message's headers travel along
// under HeaderOrigPrefix, so a replay restores them.
const (
	HeaderReason     = "Homemole-Dlq-Reason"
	HeaderSubject    = "Homemole-Dlq-Subject"
	HeaderStream     = "Homemole-Dlq-Stream"
	HeaderStreamSeq  = "Homemole-Dlq-Stream-Seq"
	HeaderConsumer   = "Homemole-Dlq-Consumer"
	HeaderFailedAt   = "Homemole-Dlq-Failed-At"
	HeaderOrigPrefix = "Homemole-Dlq-Orig-"
	// HeaderReplayID is a random nonce drawn when the message is
	// dead-lettered: a replay is published under an id made of it (see
	// replayID).
	HeaderReplayID = "Homemole-Dlq-Replay-Id"
)

// deadLetterRetry is how long a message waits for another try when the
// dead-letter stream cannot take it: it is never terminated unkept.
const deadLetterRetry = 10 * time.Second

func (c *Conn) declareDeadLetters(ctx context.Context) error {
	return c.declareEach(ctx, jetstream.StreamConfig{Name: schemas.StreamDeadLetter, Subjects: []string{"hm.dlq.>"}})
}

// deadLetter keeps a message no consumer can ever process in the DLQ
// stream, with why, where it came from and its headers, and only then
// terminates it: `homemole dlq ls` shows it and `homemole dlq replay` puts
// it back once the cause is fixed (a home added to the campaign). The dead
// letter's own id is the original's stream sequence, so a worker that dies
// between the two steps keeps it once.
func (c *Conn) deadLetter(ctx context.Context, msg jetstream.Msg, consumer string, reason error) {
	meta, err := msg.Metadata()
	if err != nil {
		c.log.Error("dead letter without metadata; terminated unkept", "subject", msg.Subject(), "reason", reason, "err", err)
		_ = msg.Term()
		return
	}
	dl := nats.NewMsg(schemas.DeadLetterSubject(msg.Subject()))
	dl.Data = msg.Data()
	for k, vs := range msg.Headers() {
		for _, v := range vs {
			dl.Header.Add(HeaderOrigPrefix+k, v)
		}
	}
	dl.Header.Set(HeaderReason, oneLine(reason.Error()))
	dl.Header.Set(HeaderSubject, msg.Subject())
	dl.Header.Set(HeaderStream, meta.Stream)
	dl.Header.Set(HeaderStreamSeq, strconv.FormatUint(meta.Sequence.Stream, 10))
	dl.Header.Set(HeaderConsumer, consumer)
	dl.Header.Set(HeaderFailedAt, time.Now().UTC().Format(time.RFC3339Nano))
	dl.Header.Set(HeaderReplayID, rand.Text())
	id := fmt.Sprintf("dlq|%s|%d", meta.Stream, meta.Sequence.Stream)
	if _, err := c.JS.PublishMsg(ctx, dl, jetstream.WithMsgID(id)); err != nil {
		c.log.Warn("dead-letter stream refused a message; it stays for another try", "subject", msg.Subject(), "reason", reason, "err", err)
		_ = msg.NakWithDelay(deadLetterRetry)
		return
	}
	c.log.Error("message moved to the dead-letter stream (homemole dlq ls)", "subject", msg.Subject(), "consumer", consumer, "reason", reason)
	_ = msg.Term()
}

// oneLine keeps a header value on one line.
func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}

// DeadLetter is one message in the DLQ stream.
type DeadLetter struct {
	Seq       uint64    `json:"seq"`
	FailedAt  time.Time `json:"failed_at"`
	Subject   string    `json:"subject"`
	Stream    string    `json:"stream"`
	StreamSeq uint64    `json:"stream_seq"`
	Consumer  string    `json:"consumer"`
	Reason    string    `json:"reason"`
	MsgID     string    `json:"msg_id,omitempty"`
	Bytes     int       `json:"bytes"`

	data   []byte
	header nats.Header
}

// DeadLetters lists the dead letters whose original subject matches filter
// (a NATS subject pattern; empty: all), oldest first.
func (c *Conn) DeadLetters(ctx context.Context, filter string) ([]DeadLetter, error) {
	if err := c.declareDeadLetters(ctx); err != nil {
		return nil, err
	}
	s, err := c.deadLetterStream(ctx)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the dead-letter stream: %w", err)
	}
	var out []DeadLetter
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if noMessage(err) {
			continue // replayed and removed
		}
		if err != nil {
			return nil, fmt.Errorf("read dead letter %d: %w", seq, err)
		}
		dl := DeadLetter{
			Seq: seq, Subject: m.Header.Get(HeaderSubject), Stream: m.Header.Get(HeaderStream),
			Consumer: m.Header.Get(HeaderConsumer), Reason: m.Header.Get(HeaderReason),
			MsgID: m.Header.Get(HeaderOrigPrefix + jetstream.MsgIDHeader), Bytes: len(m.Data),
			data: m.Data, header: m.Header,
		}
		dl.StreamSeq, _ = strconv.ParseUint(m.Header.Get(HeaderStreamSeq), 10, 64)
		dl.FailedAt, _ = time.Parse(time.RFC3339Nano, m.Header.Get(HeaderFailedAt))
		if filter != "" && !subjectMatches(filter, dl.Subject) {
			continue
		}
		out = append(out, dl)
	}
	return out, nil
}

// Replay publishes dead letters back on their original subjects, with
// their original headers, and removes each from the DLQ once its stream
// has stored it. The republished message's id is the dead letter's own
// (see replayID; its original id would be taken for a duplicate of the
// message that failed), so replaying twice stores it once; what consumers
// make of it is deduplicated by their own deterministic ids. A replay the
// stream takes for a duplicate of anything but the dead letter's own
// earlier replay fails and keeps the dead letter.
func (c *Conn) Replay(ctx context.Context, letters []DeadLetter) (int, error) {
	return c.removeEach(ctx, letters, "remove replayed", func(dl DeadLetter) error {
		if dl.Subject == "" {
			return fmt.Errorf("dead letter %d names no subject to replay to", dl.Seq)
		}
		m := nats.NewMsg(dl.Subject)
		m.Data = dl.data
		for k, vs := range dl.header {
			orig, ok := strings.CutPrefix(k, HeaderOrigPrefix)
			if !ok || orig == jetstream.MsgIDHeader {
				continue
			}
			for _, v := range vs {
				m.Header.Add(orig, v)
			}
		}
		id := MsgID(dl.Subject, "replay:"+dl.replayID(), nil)
		ack, err := c.JS.PublishMsg(ctx, m, jetstream.WithMsgID(id))
		if err != nil {
			return fmt.Errorf("replay dead letter %d to %s: %w", dl.Seq, dl.Subject, err)
		}
		if ack.Duplicate {
			// JetStream deduplicates ids across the whole stream, and any
			// publisher may set any id: removing the dead letter on the
			// word of a duplicate would lose the batch whenever another
			// home published under its id first.
			if err := c.replayedBefore(ctx, ack, dl); err != nil {
				return fmt.Errorf("replay dead letter %d to %s: the stream took it for a duplicate of its message %d under id %q; the dead letter is kept: %w",
					dl.Seq, dl.Subject, ack.Sequence, id, err)
			}
			c.log.Info("dead letter was replayed before; removing it", "seq", dl.Seq, "subject", dl.Subject, "stream_seq", ack.Sequence)
		}
		return nil
	})
}

// replayID is the nonce the dead letter drew when it was kept. Dead
// letters kept before there were nonces get a digest of what only a
// reader of the DLQ knows in full (the batch and the failure time to the
// nanosecond) instead: their replay ids used to be the DLQ sequence,
// which another home could guess and publish under first. Either way a
// second replay of the same dead letter uses the same id.
func (dl DeadLetter) replayID() string {
	if n := dl.header.Get(HeaderReplayID); n != "" {
		return n
	}
	h := sha256.New()
	for _, k := range []string{HeaderStream, HeaderStreamSeq, HeaderSubject, HeaderFailedAt} {
		fmt.Fprintf(h, "%s=%q\n", k, dl.header.Get(k))
	}
	h.Write(dl.data)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// replayedBefore checks that the message a replay was deduplicated
// against is the dead letter's own earlier replay (the operator ran the
// replay twice, or its removal failed): the same batch on the same
// subject.
func (c *Conn) replayedBefore(ctx context.Context, ack *jetstream.PubAck, dl DeadLetter) error {
	if ack.Sequence == 0 {
		return errors.New("the stream did not say which message")
	}
	s, err := c.JS.Stream(ctx, ack.Stream)
	if err != nil {
		return fmt.Errorf("open stream %s to compare: %w", ack.Stream, err)
	}
	m, err := s.GetMsg(ctx, ack.Sequence)
	if err != nil {
		return fmt.Errorf("read message %d of %s to compare: %w", ack.Sequence, ack.Stream, err)
	}
	if m.Subject != dl.Subject || !bytes.Equal(m.Data, dl.data) {
		return fmt.Errorf("message %d of %s is another (subject %s, %d bytes): someone published under the replay's id", ack.Sequence, ack.Stream, m.Subject, len(m.Data))
	}
	return nil
}

// subjectMatches reports whether subject matches a NATS pattern with '*'
// and '>' wildcards.
func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(p) == len(s)
}

// noMessage reports the error of a message that is not there (any more).
func noMessage(err error) bool {
	var apiErr *jetstream.APIError
	if errors.Is(err, jetstream.ErrMsgNotFound) || errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound {
		return true
	}
	// DeleteMsg reports the server's error as text only: 10057 is its
	// "no message found".
	return errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) && strings.Contains(err.Error(), "err_code=10057")
}

// Discard removes dead letters for good: a forged batch, once looked at,
// has nothing to be replayed for.
func (c *Conn) Discard(ctx context.Context, letters []DeadLetter) (int, error) {
	return c.removeEach(ctx, letters, "discard", nil)
}

// removeEach runs do, when not nil, on each dead letter and then removes
// it from the DLQ (one already gone counts as removed), stopping at the
// first failure; it returns how many it removed. verb says in an error
// what the removal was for.
func (c *Conn) removeEach(ctx context.Context, letters []DeadLetter, verb string, do func(DeadLetter) error) (int, error) {
	s, err := c.deadLetterStream(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, dl := range letters {
		if do != nil {
			if err := do(dl); err != nil {
				return n, err
			}
		}
		if err := s.DeleteMsg(ctx, dl.Seq); err != nil && !noMessage(err) {
			return n, fmt.Errorf("%s dead letter %d: %w", verb, dl.Seq, err)
		}
		n++
	}
	return n, nil
}

// deadLetterStream opens the DLQ for a reader or remover, with the error
// each of them gives when it cannot.
func (c *Conn) deadLetterStream(ctx context.Context) (jetstream.Stream, error) {
	s, err := c.JS.Stream(ctx, schemas.StreamDeadLetter)
	if err != nil {
		return nil, fmt.Errorf("open the dead-letter stream: %w", err)
	}
	return s, nil
}
