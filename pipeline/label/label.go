// Package label is the labeler worker: it labels each home's LAN packets
// from the home's device inventory, strips the addresses, and republishes
// them as labeled batches. Labels come from the inventory and from nothing else.
package label

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/schemas"
)

// Labeler labels batches of the homes of one campaign.
type Labeler struct {
	campaign string
	homes    map[string]*homeIndex

	mu    sync.Mutex
	stats map[string]*Stats // by home
}

type homeIndex struct {
	macs    map[schemas.MAC]int32
	devices []schemas.Device
}

// Stats counts one home's labeling.
type Stats struct {
	Batches   int
	Packets   int
	Labeled   int
	Unlabeled int
	PerDevice map[string]int
}

// New indexes the inventories of every home of the campaign.
func New(c *campaign.Campaign) (*Labeler, error) {
	l := &Labeler{campaign: c.Name, homes: map[string]*homeIndex{}, stats: map[string]*Stats{}}
	for _, h := range c.Homes {
		idx, err := h.MACIndex()
		if err != nil {
			return nil, fmt.Errorf("home %s: %w", h.Name, err)
		}
		hi := &homeIndex{macs: map[schemas.MAC]int32{}}
		// Vocabulary in inventory order, so a home's label indexes are stable
		// across batches and restarts.
		for _, d := range h.Inventory {
			m, _ := schemas.ParseMAC(d.MAC)
			hi.macs[m] = int32(len(hi.devices))
			hi.devices = append(hi.devices, schemas.Device{Name: idx[m].Name, Category: idx[m].Category})
		}
		l.homes[h.Name] = hi
	}
	return l, nil
}

// Label turns one LAN packet batch into a labeled batch of view "lan". A
// packet belongs to the inventory device that sent it; failing that, to the
// one it was sent to (replies from the internet); when both ends are
// devices, the sender wins. Packets of no inventory device (the router,
// guests) are kept and marked Unlabeled.
func (l *Labeler) Label(in *schemas.Batch) (*schemas.Batch, error) {
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
	if in.Tap != "lan" {
		// WAN taps carry no MACs: they are labeled by pairing with LAN packets,
		// which a later stage adds. Refusing loudly beats labeling wrongly.
		return nil, bus.Permanent(fmt.Errorf("batch %s: tap %q: only the lan tap can be labeled from the inventory", in.MsgID(), in.Tap))
	}
	out := &schemas.Batch{
		Kind: schemas.KindLabeled, Campaign: in.Campaign, Home: in.Home, View: "lan",
		Source: in.Source, Session: in.Session, FirstOffset: in.FirstOffset, Final: in.Final,
		Devices: h.devices, Labels: make([]int32, len(in.Packets)), Packets: make([]schemas.Packet, len(in.Packets)),
	}
	st := l.homeStats(in.Home)
	l.mu.Lock()
	defer l.mu.Unlock()
	st.Batches++
	for i := range in.Packets {
		p := in.Packets[i]
		lab := schemas.Unlabeled
		if d, ok := h.macs[p.SrcMAC]; ok {
			lab = d
		} else if d, ok := h.macs[p.DstMAC]; ok {
			lab = d
		}
		// Addresses never leave the labeler.
		p.SrcMAC, p.DstMAC = schemas.MAC{}, schemas.MAC{}
		out.Packets[i] = p
		out.Labels[i] = lab
		st.Packets++
		if lab == schemas.Unlabeled {
			st.Unlabeled++
		} else {
			st.Labeled++
			st.PerDevice[h.devices[lab].Name]++
		}
	}
	return out, nil
}

func (l *Labeler) homeStats(home string) *Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.stats[home]
	if !ok {
		s = &Stats{PerDevice: map[string]int{}}
		l.stats[home] = s
	}
	return s
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
		out[h] = c
	}
	return out
}

// Run consumes the campaign's packet batches and publishes labeled ones,
// acking each input only after its output is stored in the LABELED stream.
func (l *Labeler) Run(ctx context.Context, conn *bus.Conn, durable string, log *slog.Logger) error {
	return conn.Consume(ctx, bus.ConsumerConfig{
		Stream:  schemas.StreamPackets,
		Durable: durable,
		Filter:  schemas.PacketSubject(l.campaign, "*", "*"),
	}, func(ctx context.Context, d *bus.Delivery) error {
		out, err := l.Label(d.Batch)
		if err != nil {
			return err
		}
		if err := conn.Publish(ctx, schemas.LabeledSubject(out.Campaign, out.Home, out.View), out); err != nil {
			return err
		}
		return d.Ack()
	})
}
