package detect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/schemas"
)

// CheckpointVersion is the version of a Checkpoint; others are refused.
const CheckpointVersion = 1

// Checkpoint is one home's place in the online detector: the next window
// to judge, and the PACKETS stream positions that got it there. Every
// window ending before Next is published; the batches up to Seq are
// handled; the matcher still held the packets of the batches from From
// (From > Seq: none).
type Checkpoint struct {
	Version int    `json:"version"`
	Next    int64  `json:"next_bin"`
	Jumps   uint64 `json:"jumps"`
	Seq     uint64 `json:"seq"`
	From    uint64 `json:"from_seq"`
}

// DecodeCheckpoint reads a checkpoint as Checkpoints store it.
func DecodeCheckpoint(data []byte) (Checkpoint, error) {
	var cp Checkpoint
	if err := json.Unmarshal(data, &cp); err != nil {
		return cp, fmt.Errorf("decode checkpoint: %w", err)
	}
	if cp.Version != CheckpointVersion {
		return cp, fmt.Errorf("checkpoint version %d, this detector reads %d", cp.Version, CheckpointVersion)
	}
	if cp.Seq == 0 || cp.From == 0 || cp.From > cp.Seq+1 {
		return cp, fmt.Errorf("checkpoint covers stream positions %d to %d: not a range a detector writes", cp.From, cp.Seq)
	}
	return cp, nil
}

// Checkpoints keeps the homes' checkpoints, one per campaign, home and tap.
type Checkpoints interface {
	Load(ctx context.Context, campaign, home, tap string) (Checkpoint, bool, error)
	Save(ctx context.Context, campaign, home, tap string, cp Checkpoint) error
}

// Replayer reads a home's packet batches of one tap from stream position
// from to position to (inclusive), in order, into fn.
type Replayer func(ctx context.Context, campaign, home, tap string, from, to uint64, fn func(seq uint64, b *schemas.Batch) error) error

// CheckpointBucket is the JetStream key-value bucket of the detectors'
// checkpoints (its stream is KV_<bucket>).
const CheckpointBucket = bus.DetectorCheckpoints

// KVCheckpoints keeps checkpoints in a JetStream key-value bucket under
// <campaign>.<home>.<tap>: a restarted detector anywhere in the cluster
// finds them, replicated as the streams are.
type KVCheckpoints struct {
	*bus.HomeKV
}

// OpenKVCheckpoints declares the bucket (idempotently) and opens it.
func OpenKVCheckpoints(ctx context.Context, js jetstream.JetStream, replicas int) (*KVCheckpoints, error) {
	kv, err := bus.OpenHomeKV(ctx, js, CheckpointBucket, "online detector checkpoints, one per campaign, home and tap", replicas)
	if err != nil {
		return nil, err
	}
	return &KVCheckpoints{kv}, nil
}

// Load reads a home's checkpoint; false when it has none.
func (k *KVCheckpoints) Load(ctx context.Context, campaign, home, tap string) (Checkpoint, bool, error) {
	data, ok, err := k.Get(ctx, campaign, home, tap)
	if err != nil || !ok {
		return Checkpoint{}, false, err
	}
	cp, err := DecodeCheckpoint(data)
	if err != nil {
		// Reading it again gives the same bytes: only deleting it helps.
		return cp, false, bus.Permanent(fmt.Errorf("checkpoint %s/%s: %w (delete it, %s, to start the home afresh)", CheckpointBucket, bus.HomeKey(campaign, home, tap), err, k.Forget(campaign, home, tap)))
	}
	return cp, true, nil
}

// Save writes a home's checkpoint.
func (k *KVCheckpoints) Save(ctx context.Context, campaign, home, tap string, cp Checkpoint) error {
	data, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	return k.Put(ctx, campaign, home, tap, data)
}

// StreamReplayer reads batches back from the PACKETS stream one by one
// (the next message of the home's subject at or after a position), so a
// replay touches only the home's messages. A message Consume dead-letters
// (undecodable, or not matching its subject: bus.DecodeMsg) stays in the
// stream and was never handled: the replay steps over it as Consume did,
// and log counts it. A batch at from that is gone (removed by the stream's
// retention) will never come back: that error wraps bus.ErrPermanent.
func StreamReplayer(js jetstream.JetStream, log *slog.Logger) Replayer {
	return func(ctx context.Context, campaign, home, tap string, from, to uint64, fn func(uint64, *schemas.Batch) error) error {
		s, err := js.Stream(ctx, schemas.StreamPackets)
		if err != nil {
			return fmt.Errorf("open stream %s: %w", schemas.StreamPackets, err)
		}
		subject := schemas.PacketSubject(campaign, home, tap)
		skipped := 0
		for seq := from; seq <= to; {
			msg, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break // nothing of the home's left after seq
			}
			if err != nil {
				return fmt.Errorf("read %s at %d: %w (were the stream's messages removed by its retention? delete the checkpoint to start afresh)", subject, seq, err)
			}
			if seq == from && msg.Sequence != from {
				return bus.Permanent(fmt.Errorf("the batch at %d the checkpoint starts from is gone from %s (removed by the stream's retention?); delete the checkpoint to start the home afresh", from, schemas.StreamPackets))
			}
			if msg.Sequence > to {
				break
			}
			seq = msg.Sequence + 1
			b, err := bus.DecodeMsg(msg.Subject, msg.Data)
			if errors.Is(err, bus.ErrPermanent) {
				skipped++
				continue
			}
			if err != nil {
				return fmt.Errorf("batch at %d: %w", msg.Sequence, err)
			}
			if err := fn(msg.Sequence, b); err != nil {
				return err
			}
		}
		if skipped > 0 {
			log.Warn("replay stepped over messages the consumer dead-lettered", "subject", subject, "from", from, "to", to, "skipped", skipped)
		}
		return nil
	}
}
