package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// Stats summarises one pass over a source.
type Stats struct {
	// Packets is the number of frames read, decoded or not.
	Packets uint64
	// DecodeErrors is the number of frames the decoder rejected; they were
	// not passed on. FirstDecodeError says why the first one was rejected.
	DecodeErrors     uint64
	FirstDecodeError error
	// NotPackets is the number of frames that are the link's own, not a
	// packet a host sent (features.ErrNotPacket: a Wi-Fi capture's
	// beacons, acknowledgements and retransmissions); not passed on either.
	NotPackets uint64
	// OtherViews is the number of frames a cooked capture (`tcpdump -i
	// any` on a gateway) held beyond the view of the side read: copies on
	// the other side's, tunnel and loopback interfaces and a bridge's
	// second copies (CookedStats). The source left them out; Packets does
	// not count them.
	OtherViews uint64
	// Bytes is the wire length of all frames read.
	Bytes uint64
	// FirstTs and LastTs are the timestamps of the first and last frame read.
	FirstTs, LastTs time.Time
}

// Decoded is the number of frames passed on: read, less those rejected and
// those of the link's own.
func (s Stats) Decoded() uint64 { return s.Packets - s.DecodeErrors - s.NotPackets }

// Checking the context on every frame would cost more than decoding some of
// them; a few thousand frames take well under a millisecond.
const ctxCheckEvery = 4096

// ReadFile decodes every frame of a capture file as one tap stream of the
// given home and calls fn with each decoded packet. See Read.
func ReadFile(ctx context.Context, path string, home features.HomeConfig, fn func(*schemas.Packet) error) (Stats, error) {
	src, err := OpenFile(path)
	if err != nil {
		return Stats{}, err
	}
	st, err := Read(ctx, src, home, fn)
	if cerr := src.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return st, err
}

// ReadAll decodes every frame of a capture file as ReadFile does and
// returns the packets, in capture order: for a capture whose packets are
// all wanted at once.
func ReadAll(ctx context.Context, path string, home features.HomeConfig) ([]schemas.Packet, error) {
	var pkts []schemas.Packet
	_, err := ReadFile(ctx, path, home, func(p *schemas.Packet) error {
		pkts = append(pkts, *p)
		return nil
	})
	return pkts, err
}

// Read decodes every frame of src as one tap stream and calls fn with each
// decoded packet. The packet is reused: fn must copy what it keeps. Frames
// the decoder rejects are counted in Stats and skipped. A read error (a
// truncated or corrupt capture), an error from fn or the end of ctx stops
// the pass; the Stats returned with it cover what was read until then.
func Read(ctx context.Context, src Source, home features.HomeConfig, fn func(*schemas.Packet) error) (st Stats, err error) {
	return ReadFrames(ctx, src, home, func(_ Frame, p *schemas.Packet) error { return fn(p) })
}

// ReadFrames is Read for a caller that reads the frame beside its packet
// (the pairing's tunnel tracker finds a TCP tunnel's records in the
// segment's bytes). The frame's Data is valid only during the call.
func ReadFrames(ctx context.Context, src Source, home features.HomeConfig, fn func(Frame, *schemas.Packet) error) (st Stats, err error) {
	defer func() { st.OtherViews = LeftOut(src) }()
	dec := features.NewDecoder(home)
	var p schemas.Packet
	for {
		if st.Packets%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return st, fmt.Errorf("read capture: stopped after %d packets: %w", st.Packets, err)
			}
		}
		f, err := src.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return st, nil
			}
			return st, err
		}
		if st.Packets == 0 {
			st.FirstTs = f.CI.Timestamp
		}
		st.LastTs = f.CI.Timestamp
		st.Packets++
		st.Bytes += uint64(f.CI.Length)
		if err := dec.Decode(f.LinkType, f.Data, f.CI, f.Offset, &p); err != nil {
			if errors.Is(err, features.ErrNotPacket) {
				st.NotPackets++
				continue
			}
			if st.DecodeErrors == 0 {
				st.FirstDecodeError = err
			}
			st.DecodeErrors++
			continue
		}
		if err := fn(f, &p); err != nil {
			return st, fmt.Errorf("handle packet %d: %w", f.Offset, err)
		}
	}
}
