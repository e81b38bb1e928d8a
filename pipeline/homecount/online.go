package homecount

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/homemole/homemole/schemas"
)

// ErrRefused marks a batch the host counter can never count (not a packet
// batch, or one of a tap without source MACs): delivering it again does
// not help, and a worker may set it aside (dead-letter it).
var ErrRefused = errors.New("batch refused by the host counter")

// StateStore keeps each home's host table (LiveHome.State), one per
// campaign, home and tap.
type StateStore interface {
	// Load reads a home's state; false when it has none.
	Load(ctx context.Context, campaign, home, tap string) ([]byte, bool, error)
	Save(ctx context.Context, campaign, home, tap string, state []byte) error
}

// HostsMsgID is the message id of a home's window counted by the host
// counter: the campaign, home, method (MethodHosts on a LAN tap, MethodIPID
// on a WAN tap) and window start, so a window republished after a restart
// is deduplicated. It differs from detect.SeenMsgID, and between the two
// methods, so windows of the same start on the same subject never take
// each other for a duplicate.
func HostsMsgID(campaign, home, method string, startNs int64) string {
	return schemas.SeenSubject(campaign, home) + "|" + method + "|" + strconv.FormatInt(startNs, 10)
}

// Online runs a host model over homes' live LAN packet batches: per home
// (campaign, home and tap) one LiveHome, whose windows are published on
// hm.seen.<campaign>.<home> as they complete. It is the host counter's
// detect.Online, simpler: a home's whole state is its host table, so a
// restart needs no replay of the stream. Safe for concurrent use.
//
// With States set, a home's table survives a restart: after the windows of
// a batch are published its table is saved with the stream position of
// the batch, and a restarted Online goes on from the saved table, skipping
// the batches it covers, so no window is skipped or repeated.
type Online struct {
	Model *HostModel
	// Config is how windows are counted; its Gateway is Gateways' answer
	// per home where Gateways is set.
	Config LiveConfig
	// Gateways, when set, is the gateway MAC a campaign names for a home
	// (the zero MAC where it names none, or "auto"): never counted.
	Gateways func(campaign, home string) schemas.MAC
	// Publish sends one encoded schemas.Seen under a message id that names
	// its window (HostsMsgID), so a window published twice is stored once.
	Publish func(ctx context.Context, subject, msgID string, data []byte) error
	// States keeps each home's table; nil keeps it in memory only (a home
	// whose batch failed then starts over with nothing seen).
	States StateStore
	// OnWindow, when set, is told of every window published.
	OnWindow func(schemas.Seen)
	// Log, when set, is told of a home started afresh because its saved
	// table was of an earlier version (ErrStaleTable).
	Log *slog.Logger

	mu    sync.Mutex
	homes map[string]*onlineHome
}

type onlineHome struct {
	mu sync.Mutex
	// live is nil until the home's first batch since it was (re)made
	// loads its saved table or starts one.
	live *LiveHome
	// seq is the stream position of the last batch the table took (0:
	// none).
	seq uint64
}

// home is one home's entry, made at its first batch.
func (o *Online) home(key string) *onlineHome {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.homes == nil {
		o.homes = map[string]*onlineHome{}
	}
	h := o.homes[key]
	if h == nil {
		h = &onlineHome{}
		o.homes[key] = h
	}
	return h
}

// Handle feeds one packet batch of one home's LAN tap and publishes the
// windows it completes, keeping the home's table in memory only.
func (o *Online) Handle(ctx context.Context, b *schemas.Batch) error {
	return o.HandleAt(ctx, 0, b)
}

// HandleAt is Handle for the batch at stream position seq (its PACKETS
// sequence; 0: unknown). A home's packets must come in time order (one
// batch at a time, as the agent publishes them). A Final batch (the end of
// a capture session) judges the windows up to its last packet at once.
// With States, a batch at or before the position of the home's saved
// table was handled already (a redelivery whose ack was lost) and is
// skipped; the caller acks a batch once HandleAt returns nil, by when its
// windows are published and the table covering it is saved. A batch that
// is not a packet batch, or whose every packet lacks a source MAC (a WAN
// tap's), is refused with an error wrapping ErrRefused.
func (o *Online) HandleAt(ctx context.Context, seq uint64, b *schemas.Batch) error {
	if b.Kind != schemas.KindPackets {
		return fmt.Errorf("host counter: batch %s is not a packet batch; bind the detector to the PACKETS stream: %w", b.MsgID(), ErrRefused)
	}
	if o.States != nil && seq == 0 {
		return fmt.Errorf("host counter: batch %s has no stream position; saved host tables need one (pass the PACKETS sequence to HandleAt)", b.MsgID())
	}
	if o.Model == nil || o.Publish == nil {
		return errors.New("host counter: no host model or no Publish: set both")
	}
	h := o.home(b.Campaign + "\x00" + b.Home + "\x00" + b.Tap)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := o.handle(ctx, h, seq, b); err != nil {
		// What was added before the failure would be added again at the
		// redelivery: start the home over from its saved table instead.
		h.live, h.seq = nil, 0
		return err
	}
	return nil
}

func (o *Online) handle(ctx context.Context, h *onlineHome, seq uint64, b *schemas.Batch) error {
	if h.live == nil {
		if err := o.open(ctx, h, b.Campaign, b.Home, b.Tap); err != nil {
			return err
		}
	}
	if seq != 0 && seq <= h.seq {
		return nil // handled before the restart, or its ack was lost
	}
	noMAC := h.live.NoMAC
	var windows []schemas.SeenWindow
	for i := range b.Packets {
		windows = append(windows, h.live.Add(&b.Packets[i])...)
	}
	if n := uint64(len(b.Packets)); n > 0 && h.live.NoMAC-noMAC == n {
		return fmt.Errorf("host counter: batch %s (%s/%s, tap %s): none of its %d packets has a source MAC: the host counter needs a LAN tap's batches (--tap lan): %w",
			b.MsgID(), b.Campaign, b.Home, b.Tap, n, ErrRefused)
	}
	if b.Final {
		windows = append(windows, h.live.Flush()...)
	}
	subject := schemas.SeenSubject(b.Campaign, b.Home)
	for _, w := range windows {
		msg := schemas.Seen{Version: schemas.SeenVersion, Campaign: b.Campaign, Home: b.Home, SeenWindow: w}
		data, err := json.Marshal(msg)
		if err != nil {
			return fmt.Errorf("host counter: encode a window: %w", err)
		}
		if err := o.Publish(ctx, subject, HostsMsgID(b.Campaign, b.Home, w.Method, w.StartNs), data); err != nil {
			return fmt.Errorf("host counter: publish to %s: %w", subject, err)
		}
		if o.OnWindow != nil {
			o.OnWindow(msg)
		}
	}
	h.seq = max(h.seq, seq)
	if o.States == nil {
		return nil
	}
	// Every batch handled moves the position at least: save it, so the
	// batch is skipped if it comes again.
	state, err := h.live.State(h.seq)
	if err != nil {
		return fmt.Errorf("host counter: home %s/%s: %w", b.Campaign, b.Home, err)
	}
	return o.States.Save(ctx, b.Campaign, b.Home, b.Tap, state)
}

// open loads a home's saved table, or starts an empty one.
func (o *Online) open(ctx context.Context, h *onlineHome, campaign, home, tap string) error {
	cfg := o.Config
	if o.Gateways != nil {
		cfg.Gateway = o.Gateways(campaign, home)
	}
	if o.States != nil {
		data, ok, err := o.States.Load(ctx, campaign, home, tap)
		if err != nil {
			return fmt.Errorf("host counter: load the host table of %s/%s (tap %s): %w", campaign, home, tap, err)
		}
		if ok {
			live, seq, err := RestoreLiveHome(o.Model, cfg, data)
			switch {
			case errors.Is(err, ErrStaleTable):
				// An upgrade: what the table knew is keyed otherwise now.
				// Its hosts are known again from what they send next; the
				// windows republished from here keep their message ids.
				if o.Log != nil {
					o.Log.Warn("host table of an earlier version: home started afresh", "campaign", campaign, "home", home, "tap", tap, "err", err)
				}
			case err != nil:
				return fmt.Errorf("host counter: the saved host table of %s/%s (tap %s): %w (delete it to start the home afresh)", campaign, home, tap, err)
			default:
				h.live, h.seq = live, seq
				return nil
			}
		}
	}
	live, err := NewLiveHome(o.Model, cfg)
	if err != nil {
		return err
	}
	h.live, h.seq = live, 0
	return nil
}
