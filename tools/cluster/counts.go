package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/schemas"
)

// Stage counts what one stream holds of a campaign, packet by packet.
type Stage struct {
	Messages int // batches in the stream
	Packets  int // packets in them, duplicates included
	Unique   int // distinct (home, session, tap or view, offset)
	// Dups are packets stored more than once; Holes offsets missing below
	// the highest of their session (every session starts at offset 0).
	Dups, Holes int
	// Digest sums a hash of every distinct packet record and its label, so
	// two streams holding the same packets, batched differently and in any
	// order, have the same digest.
	Digest uint64
}

func (s Stage) String() string {
	return fmt.Sprintf("%d packets (%d distinct, %d duplicated, %d missing) in %d batches, digest %016x", s.Packets, s.Unique, s.Dups, s.Holes, s.Messages, s.Digest)
}

// countStream reads every message of a stream with an ordered consumer. A
// cluster may answer a pull for a consumer just made on another node with
// "no responders" until the interest has spread: a failed read starts over.
func countStream(ctx context.Context, js jetstream.JetStream, stream string) (Stage, error) {
	var err error
	for try := 0; try < 5; try++ {
		var st Stage
		if st, err = countStreamOnce(ctx, js, stream); err == nil {
			return st, nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return Stage{}, fmt.Errorf("count stream %s: %w", stream, err)
}

func countStreamOnce(ctx context.Context, js jetstream.JetStream, stream string) (Stage, error) {
	var st Stage
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return st, err
	}
	total := s.CachedInfo().State.Msgs
	if total == 0 {
		return st, nil
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return st, err
	}
	// seen holds a bit per offset of each session: a map of 20 million
	// keys (the soak's) would take gigabytes, the bits 2.5 MB.
	seen := map[string][]uint64{}
	top := map[string]uint64{}
	for read := uint64(0); read < total; {
		batch, err := cons.Fetch(int(min(512, total-read)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return st, err
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			b, err := schemas.DecodeBatch(msg.Data())
			if err != nil {
				return st, fmt.Errorf("%s: %w", msg.Subject(), err)
			}
			st.Messages++
			tv := b.Tap
			if b.Kind == schemas.KindLabeled {
				tv = b.View
			}
			sess := b.Home + "/" + b.Session + "/" + tv
			for i, p := range b.Packets {
				st.Packets++
				bits := seen[sess]
				w, bit := p.Offset/64, uint64(1)<<(p.Offset%64)
				for uint64(len(bits)) <= w {
					bits = append(bits, 0)
				}
				seen[sess] = bits
				if bits[w]&bit != 0 {
					st.Dups++
					continue
				}
				bits[w] |= bit
				key := fmt.Sprintf("%s/%d", sess, p.Offset)
				st.Unique++
				if p.Offset+1 > top[sess] {
					top[sess] = p.Offset + 1
				}
				label := int32(0)
				if b.Labels != nil {
					label = b.Labels[i]
				}
				h := fnv.New64a()
				fmt.Fprintf(h, "%s|%+v|%d", key, p, label)
				st.Digest += h.Sum64()
			}
		}
		if err := batch.Error(); err != nil {
			return st, err
		}
		if n == 0 {
			return st, fmt.Errorf("read %d of %d messages of %s: no more arrive", read, total, stream)
		}
		read += uint64(n)
	}
	for _, n := range top {
		st.Holes += int(n)
	}
	st.Holes -= st.Unique
	return st, nil
}

// Counts are a build's per-stage figures.
type Counts struct {
	Published, Labeled Stage
	Windowed           int // packets in the manifest's windows' sessions
	Windows            int
	Objects            int // objects of the dataset, manifest included
}
