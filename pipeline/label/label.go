// Package label is the labeler worker: it labels each home's LAN packets
// from the home's device inventory, pairs the WAN packets of homes with a
// WAN tap with their LAN packets so that they inherit those labels, strips
// the addresses, and republishes both as labeled batches. Labels come from
// the inventory and from nothing else.
package label

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/homemole/homemole/pipeline/budget"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/schemas"
)

// Tap names the labeler knows: the LAN tap is labeled from the inventory,
// the WAN tap by pairing.
const (
	TapLAN = "lan"
	TapWAN = "wan"
)

// Labeler labels batches of the homes of one campaign.
type Labeler struct {
	campaign string
	homes    map[string]*homeIndex

	// Cipher is the VPN cipher of the campaign's VPN homes; empty detects
	// it per session pair from the packet sizes.
	Cipher gateway.Cipher
	// AckWait is how long JetStream waits for the ack of a delivery the
	// labeler holds; a session pair is held until both its taps end, so
	// this bounds how long a capture session may take to publish.
	AckWait time.Duration
	// Budget bounds the bytes of the decoded batches held unacked while
	// session pairs wait for their other tap, in all and per home, so
	// that one home's long sessions neither exhaust the labeler nor take
	// the other homes' share. New sets DefaultHoldBytes and
	// DefaultHoldBytesPerHome.
	Budget *budget.Bytes
	// IdleTimeout, when set, replaces every home's live.idle_timeout: a
	// session pair that has received no batch for this long is released
	// as it is (see Sweep).
	IdleTimeout time.Duration

	mu    sync.Mutex
	stats map[string]*Stats // by home
	pairs map[string]*sessionPair
	// work serialises what changes held session pairs: the consumer's
	// handler and the sweeper.
	work sync.Mutex
	// tails holds, per live home, the end of its last LAN session labeled;
	// released the pairs let go, by key, and when.
	tails    map[string]*lanTail
	released map[string]time.Time
}

type homeIndex struct {
	macs    map[schemas.MAC]int32
	devices []schemas.Device
	// hasWAN: the campaign gives the home a WAN tap, so LAN sessions wait
	// for their WAN session to be paired with.
	hasWAN bool
	view   string // the WAN view: the gateway mode
	// files holds, per tap, the base names of the sessions its capture
	// files make, and live whether the tap reads an interface: a session
	// whose counterpart no file of the other tap makes is never waited for.
	// watched says the tap watches a folder whose files are not known
	// beforehand: its counterpart is waited for, as a live tap's, for the
	// home's idle timeout.
	files   map[string]map[string]bool
	live    map[string]bool
	watched map[string]bool
	lan     features.HomeConfig
	// rotation is the home's live settings, defaults filled in.
	rotation campaign.Live
}

// Stats counts one home's labeling.
type Stats struct {
	Batches   int
	Packets   int
	Labeled   int
	Unlabeled int
	// CutShort counts the sessions (a pair counts once) released by the
	// idle timeout without their final batches: their producer died.
	CutShort  int
	PerDevice map[string]int
	// PerTap splits Packets, Labeled and Unlabeled by tap and counts the
	// WAN tap's pairing.
	PerTap map[string]TapStats
}

// TapStats counts one tap of one home.
type TapStats struct {
	Packets, Labeled, Unlabeled int
	// Paired WAN packets found their LAN packet (and took its label, which
	// may be Unlabeled: the router's own traffic); Unpaired ones did not
	// and are kept, marked Unlabeled.
	Paired, Unpaired int
	// PairedAcross counts the WAN packets of live sessions paired with a
	// LAN packet of the session before (they crossed a slot edge).
	PairedAcross int
}

// PairingRate is the share of the tap's packets that were paired.
func (t TapStats) PairingRate() float64 {
	if t.Paired+t.Unpaired == 0 {
		return 0
	}
	return float64(t.Paired) / float64(t.Paired+t.Unpaired)
}

// The default hold budgets leave half of the labeler pod's 2 GiB limit
// (k8s/base/labeler.yaml) for labeling: a pair being labeled is copied
// once more into its labeled batches.
const (
	DefaultHoldBytes        = 1 << 30
	DefaultHoldBytesPerHome = 256 << 20
)

// New indexes the inventories of every home of the campaign.
func New(c *campaign.Campaign) (*Labeler, error) {
	hold, err := budget.New(DefaultHoldBytes, DefaultHoldBytesPerHome)
	if err != nil {
		return nil, err
	}
	l := &Labeler{campaign: c.Name, homes: map[string]*homeIndex{}, stats: map[string]*Stats{}, pairs: map[string]*sessionPair{},
		tails: map[string]*lanTail{}, released: map[string]time.Time{}, Budget: hold}
	for _, h := range c.Homes {
		idx, err := h.MACIndex()
		if err != nil {
			return nil, fmt.Errorf("home %s: %w", h.Name, err)
		}
		hc, err := features.HomeFromCampaign(h)
		if err != nil {
			return nil, err
		}
		hi := &homeIndex{macs: map[schemas.MAC]int32{}, lan: hc, files: map[string]map[string]bool{}, live: map[string]bool{}, watched: map[string]bool{}, rotation: h.Live}
		hi.rotation.Defaults()
		// Vocabulary in inventory order, so a home's label indexes are stable
		// across batches and restarts.
		for _, d := range h.Inventory {
			m, _ := schemas.ParseMAC(d.MAC)
			hi.macs[m] = int32(len(hi.devices))
			hi.devices = append(hi.devices, schemas.Device{Name: idx[m].Name, Category: idx[m].Category})
		}
		for _, t := range h.Taps {
			if t.Name == TapWAN {
				hi.hasWAN = true
			}
			if t.Interface != "" {
				hi.live[t.Name] = true
			}
			if t.Watch != "" {
				hi.watched[t.Name] = true
			}
			if hi.files[t.Name] == nil {
				hi.files[t.Name] = map[string]bool{}
			}
			for _, f := range t.Files {
				hi.files[t.Name][BaseName(t.Name, campaign.SessionName(t.Name, f))] = true
			}
		}
		if hi.hasWAN {
			mode, err := gateway.ParseMode(h.Gateway.Mode)
			if err != nil {
				return nil, fmt.Errorf("home %s has a WAN tap: gateway %w", h.Name, err)
			}
			hi.view = string(mode)
		}
		l.homes[h.Name] = hi
	}
	return l, nil
}

// check refuses batches this labeler can never label.
func (l *Labeler) check(in *schemas.Batch) (*homeIndex, error) {
	if in.Kind != schemas.KindPackets {
		return nil, bus.Permanent(fmt.Errorf("batch %s is of kind %q, the labeler reads packet batches", in.MsgID(), in.Kind))
	}
	if in.Campaign != l.campaign {
		return nil, bus.Permanent(fmt.Errorf("batch %s is of campaign %q, this labeler serves %q", in.MsgID(), in.Campaign, l.campaign))
	}
	h, ok := l.homes[in.Home]
	if !ok {
		return nil, bus.Permanent(fmt.Errorf("batch %s: home %q is not in campaign %s: add it to the campaign file", in.MsgID(), in.Home, l.campaign))
	}
	return h, nil
}

// Label turns one LAN packet batch into a labeled batch of view "lan". A
// packet belongs to the inventory device that sent it; failing that, to the
// one it was sent to (replies from the internet); when both ends are
// devices, the sender wins. Packets of no inventory device (the router,
// guests) are kept and marked Unlabeled.
func (l *Labeler) Label(in *schemas.Batch) (*schemas.Batch, error) {
	h, err := l.check(in)
	if err != nil {
		return nil, err
	}
	if in.Tap != TapLAN {
		// A WAN batch alone carries no labels: it is labeled by pairing
		// with its LAN session (Handle), never from the inventory.
		return nil, bus.Permanent(fmt.Errorf("batch %s: tap %q: only the lan tap can be labeled from the inventory", in.MsgID(), in.Tap))
	}
	out := labelLAN(h, in)
	l.count(in.Home, TapLAN, h, out, 0, 0)
	return out, nil
}

// labelLAN labels by MAC and strips the addresses; in is left as it was.
func labelLAN(h *homeIndex, in *schemas.Batch) *schemas.Batch {
	out := labeledHeader(in, "lan", h.devices)
	for i := range in.Packets {
		p := in.Packets[i]
		lab := schemas.Unlabeled
		if d, ok := h.macs[p.SrcMAC]; ok {
			lab = d
		} else if d, ok := h.macs[p.DstMAC]; ok {
			lab = d
		}
		// Addresses never leave the labeler.
		p.StripAddresses()
		out.Packets[i] = p
		out.Labels[i] = lab
	}
	return out
}

// labeledHeader starts the labeled batch of one packet batch. It keeps the
// input's source, session and first offset, so its message id is as
// deterministic as the input's and a republished batch is deduplicated.
func labeledHeader(in *schemas.Batch, view string, devices []schemas.Device) *schemas.Batch {
	return &schemas.Batch{
		Kind: schemas.KindLabeled, Campaign: in.Campaign, Home: in.Home, View: view,
		Source: in.Source, Session: in.Session, FirstOffset: in.FirstOffset, Final: in.Final,
		Devices: devices, Labels: make([]int32, len(in.Packets)), Packets: make([]schemas.Packet, len(in.Packets)),
	}
}

// count adds a labeled batch to the home's and tap's counts.
func (l *Labeler) count(home, tap string, h *homeIndex, out *schemas.Batch, paired, unpaired int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.stats[home]
	if !ok {
		s = &Stats{PerDevice: map[string]int{}, PerTap: map[string]TapStats{}}
		l.stats[home] = s
	}
	labeled := 0
	for _, lab := range out.Labels {
		if lab != schemas.Unlabeled {
			labeled++
			s.PerDevice[h.devices[lab].Name]++
		}
	}
	n := len(out.Labels)
	s.Batches++
	s.Packets += n
	s.Labeled += labeled
	s.Unlabeled += n - labeled
	ts := s.PerTap[tap]
	ts.Packets += n
	ts.Labeled += labeled
	ts.Unlabeled += n - labeled
	ts.Paired += paired
	ts.Unpaired += unpaired
	s.PerTap[tap] = ts
}

// Stats returns a copy of the counts per home.
func (l *Labeler) Stats() map[string]Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]Stats, len(l.stats))
	for h, s := range l.stats {
		c := *s
		c.PerDevice = make(map[string]int, len(s.PerDevice))
		for k, v := range s.PerDevice {
			c.PerDevice[k] = v
		}
		c.PerTap = make(map[string]TapStats, len(s.PerTap))
		for k, v := range s.PerTap {
			c.PerTap[k] = v
		}
		out[h] = c
	}
	return out
}

// Run consumes the campaign's packet batches and publishes labeled ones,
// acking each input only after its output is stored in the LABELED stream.
func (l *Labeler) Run(ctx context.Context, conn *bus.Conn, durable string, log *slog.Logger) error {
	go l.Sweeper(ctx, conn, log)
	return conn.Consume(ctx, l.ConsumerConfig(durable), func(ctx context.Context, d *bus.Delivery) error {
		return l.Handle(ctx, conn, d, log)
	})
}

// ConsumerConfig is the durable consumer Run reads the campaign's packet
// batches through.
func (l *Labeler) ConsumerConfig(durable string) bus.ConsumerConfig {
	ackWait := l.AckWait
	if ackWait == 0 {
		ackWait = 10 * time.Minute
	}
	return bus.ConsumerConfig{
		Stream:  schemas.StreamPackets,
		Durable: durable,
		Filter:  schemas.PacketSubject(l.campaign, "*", "*"),
		// Session pairs are held unacked until both taps end.
		MaxAckPending: 100000,
		AckWait:       ackWait,
	}
}

// Handle takes one packet batch. A LAN batch of a home without a WAN tap
// is labeled, published and acked at once. Otherwise the batch joins its
// session pair (LAN and WAN session of the same base name) and stays
// unacked until both taps' final batches are in, the pair is labeled and
// both views are stored: a crash before that makes JetStream redeliver the
// pair, and deterministic message ids make the republish a no-op.
func (l *Labeler) Handle(ctx context.Context, conn *bus.Conn, d *bus.Delivery, log *slog.Logger) error {
	b := d.Batch
	// Campaign, home and tap are the subject's, which the server lets only
	// that home's agent publish on; a batch naming anything else is forged.
	if err := b.CheckSubject(d.Subject()); err != nil {
		return bus.Permanent(err)
	}
	h, err := l.check(b)
	if err != nil {
		return err
	}
	if !h.hasWAN || b.Tap == TapLAN && !h.expects(TapWAN, b.Session, TapLAN) {
		out, err := l.Label(b)
		if err != nil {
			return err
		}
		if err := conn.Publish(ctx, schemas.LabeledSubject(out.Campaign, out.Home, out.View), out); err != nil {
			return err
		}
		return d.Ack()
	}
	if b.Tap == TapWAN && !h.expects(TapLAN, b.Session, TapWAN) {
		// No LAN session to pair with will ever come: keep the packets,
		// unlabeled and counted, rather than hold them forever.
		return l.publishUnpaired(ctx, conn, h, d)
	}
	return l.hold(ctx, conn, h, d, log)
}

// publishUnpaired publishes a WAN batch with every packet unlabeled and
// counted as unpaired, and acks it.
func (l *Labeler) publishUnpaired(ctx context.Context, conn *bus.Conn, h *homeIndex, d *bus.Delivery) error {
	b := d.Batch
	out := labeledHeader(b, h.view, h.devices)
	for i := range b.Packets {
		p := b.Packets[i]
		p.StripAddresses()
		out.Packets[i], out.Labels[i] = p, schemas.Unlabeled
	}
	if err := conn.Publish(ctx, schemas.LabeledSubject(out.Campaign, out.Home, out.View), out); err != nil {
		return err
	}
	l.count(b.Home, TapWAN, h, out, 0, len(out.Packets))
	return d.Ack()
}

// expects reports whether the tap will publish the counterpart of a
// session of tap from: always for a live tap or a watched folder, else
// when one of its files makes a session of the same base name.
func (h *homeIndex) expects(tap, session, from string) bool {
	return h.live[tap] || h.watched[tap] || h.files[tap][BaseName(from, session)]
}
