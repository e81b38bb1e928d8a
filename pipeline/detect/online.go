package detect

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/homemole/homemole/pipeline/seqprofile"
	"github.com/homemole/homemole/schemas"
)

// Online runs a model over homes' live packet batches: per home one
// Matcher, and every Step bins the CNN window that ends there is judged and
// its detections are published on hm.seen.<campaign>.<home>. It keeps only
// a window and a bin of time arrays per home. Safe for concurrent use.
type Online struct {
	Model *Model
	// Step is how many bins pass between two reports (1: every bin, 10 s
	// with the default bins).
	Step int
	// Lag is how many bins a window waits after it ends before it is
	// judged: a match is counted where it starts, and may complete up to a
	// few burst gaps later.
	Lag int
	// Publish sends one encoded schemas.Seen.
	Publish func(ctx context.Context, subject string, data []byte) error

	mu    sync.Mutex
	homes map[string]*onlineHome
}

type onlineHome struct {
	mu   sync.Mutex
	m    *seqprofile.Matcher
	next int64 // absolute bin where the next judged window ends
	// started says next is set; jumps is the Matcher's jump count when it was.
	started bool
	jumps   uint64
}

// home is one home's state, created at its first batch.
func (o *Online) home(key string) (*onlineHome, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.homes == nil {
		o.homes = map[string]*onlineHome{}
	}
	h := o.homes[key]
	if h == nil {
		m, err := o.Model.NewMatcher()
		if err != nil {
			return nil, err
		}
		h = &onlineHome{m: m}
		o.homes[key] = h
	}
	return h, nil
}

// Handle feeds one packet batch of one home and publishes the windows it
// completes. A batch's packets must come in time order per home (one tap
// per home, as the agent publishes them). A Final batch (the end of a
// capture session) judges the windows up to its last packet at once.
func (o *Online) Handle(ctx context.Context, b *schemas.Batch) error {
	if b.Kind != schemas.KindPackets {
		return fmt.Errorf("online detector: batch %s is not a packet batch; bind the detector to the PACKETS stream", b.MsgID())
	}
	h, err := o.home(b.Campaign + "\x00" + b.Home)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range b.Packets {
		p := &b.Packets[i]
		h.m.Add(p.TsNs, seqprofile.VectorOf(p))
	}
	arr := h.m.Arrays()
	if arr.Bins() == 0 {
		return nil
	}
	step, lag := int64(max(1, o.Step)), int64(max(0, o.Lag))
	w := int64(o.Model.Config.WindowBins)
	// A stream whose clock jumped (a capture resumed, a bad first
	// timestamp corrected) starts its windows again where it is now.
	if st := h.m.Stats(); !h.started || st.Jumps != h.jumps {
		h.next, h.started, h.jumps = arr.FirstBin+step, true, st.Jumps
	}
	// Windows that end before the held bins saw nothing: step over them
	// on the same grid rather than judge and publish each one.
	if h.next < arr.FirstBin {
		h.next += (arr.FirstBin - h.next + step - 1) / step * step
	}
	// The last bin that holds packets is still filling unless the session ended.
	done := arr.FirstBin + int64(arr.Bins()) - 1 - lag
	if b.Final {
		done = arr.FirstBin + int64(arr.Bins())
	}
	var ends []int64
	for ; h.next <= done; h.next += step {
		ends = append(ends, h.next)
	}
	if len(ends) == 0 {
		return nil
	}
	found, err := o.Model.Assess(arr, ends)
	if err != nil {
		return err
	}
	bin := int64(o.Model.Config.Match.Bin)
	subject := schemas.SeenSubject(b.Campaign, b.Home)
	for i, e := range ends {
		msg := schemas.Seen{Version: schemas.SeenVersion, Campaign: b.Campaign, Home: b.Home,
			SeenWindow: schemas.SeenWindow{StartNs: (e - w) * bin, EndNs: e * bin, Detections: found[i]}}
		if msg.Detections == nil {
			msg.Detections = []schemas.SeenDetection{}
		}
		data, err := json.Marshal(msg)
		if err != nil {
			return fmt.Errorf("online detector: encode detections: %w", err)
		}
		if err := o.Publish(ctx, subject, data); err != nil {
			return fmt.Errorf("online detector: publish to %s: %w", subject, err)
		}
	}
	// Keep one window and the lag of history: nothing older is read again.
	h.m.Trim(h.next - w - lag - 1)
	return nil
}
