// Package campaignstatus reports how a running campaign is doing, per home
// and tap, from what NATS JetStream and the object store already hold: the
// last batch of each PACKETS subject (live sessions and where they are),
// the durable consumers' lag, the datasets' part records (windows written,
// pairing), the hm.seen detections and the dead letters. The workers keep
// no extra state for it, so it works against any running campaign, and two
// samples a few seconds apart give the packet rates.
package campaignstatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
)

// Report is one look at the campaigns on the bus.
type Report struct {
	At time.Time `json:"at"`
	// RateOver is how far apart the two samples behind the packet rates
	// were (0: one sample, no rates yet).
	RateOver  Duration   `json:"rate_over"`
	Homes     []Home     `json:"homes"`
	Consumers []Consumer `json:"consumers"`
	// Notes say what could not be looked at and why (no hm.seen stream).
	Notes []string `json:"notes,omitempty"`
}

// Home is one home of one campaign.
type Home struct {
	Campaign string `json:"campaign"`
	Home     string `json:"home"`
	Taps     []Tap  `json:"taps"`
	// LabeledBatches counts the LABELED stream's batches per view.
	LabeledBatches map[string]uint64 `json:"labeled_batches,omitempty"`
	// Consumers names the durable consumers that read this home's
	// subjects; their lag is in Report.Consumers (a consumer's lag is over
	// every home it reads).
	Consumers []string `json:"consumers,omitempty"`
	Windowed  Windowed `json:"windowed"`
	// Pairing counts the labeled batches of the last Watcher.PairingWindow.
	Pairing *Pairing `json:"pairing,omitempty"`
	// Seen is the newest hm.seen message of the home, if a stream keeps
	// them or the server heard one.
	Seen *schemas.Seen `json:"seen,omitempty"`
	// LastError is the newest dead letter of the home's subjects.
	LastError *DeadLetter `json:"last_error,omitempty"`
}

// Tap is one tap's live session: the newest batch on its PACKETS subject.
type Tap struct {
	Name    string `json:"name"`
	Batches uint64 `json:"batches"` // in the stream now (retention may have dropped older ones)
	Session string `json:"session,omitempty"`
	// Offset is the offset after the newest batch's last packet: the
	// packets its session has published so far.
	Offset uint64 `json:"offset"`
	// Final says the session ended with its final batch; a live tap's next
	// session starts with its next batch.
	Final bool `json:"final,omitempty"`
	// LastBatch is when the stream stored the newest batch.
	LastBatch time.Time `json:"last_batch,omitzero"`
	// PacketsPerSec is the packets published between two samples over
	// their distance; nil with one sample. When the session changed in
	// between, only the new session's packets are counted: a lower bound.
	PacketsPerSec *float64 `json:"packets_per_sec,omitempty"`
}

// Windowed sums the part records (datasets/.../_part.json) of the home's
// sessions over every dataset built from the campaign.
type Windowed struct {
	Sessions int `json:"sessions"`
	CutShort int `json:"cut_short"`
	Windows  int `json:"windows"`
	Packets  int `json:"packets"`
	// Per view: packets windowed and those that carry a device label.
	Views    map[string]ViewCount `json:"views,omitempty"`
	Datasets []string             `json:"datasets,omitempty"`
}

// Pairing compares the WAN views' labeled share with the LAN view's in
// the labeled batches the labeler published lately. A WAN packet carries a
// label only when the labeler paired it with a LAN packet, and then its
// LAN packet's label, so the rate (WAN share over LAN share) is 1.0 when
// every WAN packet paired and falls with the unpaired ones. The labeler's
// own pairing counts live in its memory only.
type Pairing struct {
	Over Duration  `json:"over"`
	LAN  ViewCount `json:"lan"`
	WAN  ViewCount `json:"wan"`
	// Rate is nil without packets of both sides.
	Rate *float64 `json:"rate,omitempty"`
}

// ViewCount counts one view's packets and those with a device label.
type ViewCount struct {
	Packets int `json:"packets"`
	Labeled int `json:"labeled"`
}

// Consumer is one durable consumer's lag.
type Consumer struct {
	Stream     string   `json:"stream"`
	Name       string   `json:"name"`
	Filters    []string `json:"filters,omitempty"`
	Pending    uint64   `json:"pending"`     // in the stream, not delivered yet
	AckPending int      `json:"ack_pending"` // delivered, not acknowledged yet
}

// DeadLetter is the newest dead letter of a home.
type DeadLetter struct {
	Seq      uint64    `json:"seq"`
	FailedAt time.Time `json:"failed_at,omitzero"`
	Subject  string    `json:"subject"`
	Consumer string    `json:"consumer"`
	Reason   string    `json:"reason"`
}

// Duration is a time.Duration that reads as seconds in JSON.
type Duration time.Duration

// MarshalJSON writes the seconds.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).Seconds())
}

// Watcher collects reports. It keeps the previous sample of every tap, for
// the rates, the part records it has read (they do not change once
// written), and the hm.seen messages it heard on core NATS. Safe for
// concurrent use.
type Watcher struct {
	JS    jetstream.JetStream
	Store store.Store
	// Campaign, when set, names the campaign and its homes and taps: they
	// are reported even before their first batch. Otherwise every campaign
	// on the PACKETS stream is.
	Campaign *campaign.Campaign
	Log      *slog.Logger
	// PairingWindow is how far back the pairing counts look (default
	// DefaultPairingWindow).
	PairingWindow time.Duration

	mu    sync.Mutex
	prev  map[string]tapSample // by subject
	parts map[string]*window.Part
	seen  map[string]schemas.Seen // by campaign/home, heard on core NATS
}

type tapSample struct {
	at      time.Time
	session string
	offset  uint64
	// rate is the one that ended at this sample, over that long: a sample
	// taken too soon after reports it again.
	rate *float64
	over time.Duration
}

// Listen keeps the newest hm.seen message per home heard on core NATS, for
// homes whose detections no stream keeps. It returns the subscription to
// stop.
func (w *Watcher) Listen(nc *nats.Conn) (*nats.Subscription, error) {
	sub, err := nc.Subscribe("hm.seen.>", func(m *nats.Msg) {
		s, err := schemas.DecodeSeen(m.Data)
		if err != nil {
			return // not ours to judge here: the detector's consumers refuse it
		}
		parts := strings.Split(m.Subject, ".")
		if len(parts) != 4 {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.seen == nil {
			w.seen = map[string]schemas.Seen{}
		}
		key := parts[2] + "/" + parts[3]
		if old, ok := w.seen[key]; !ok || s.EndNs >= old.EndNs {
			w.seen[key] = s
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to hm.seen.>: %w", err)
	}
	return sub, nil
}

// Collect takes one sample and reports it; rates are against the previous
// sample at least minGap older (the page polls more often than rates are
// worth computing over).
func (w *Watcher) Collect(ctx context.Context) (*Report, error) {
	now := time.Now()
	r := &Report{At: now.UTC()}
	homes := map[string]*Home{}
	home := func(c, h string) *Home {
		k := c + "/" + h
		if homes[k] == nil {
			homes[k] = &Home{Campaign: c, Home: h}
		}
		return homes[k]
	}
	if w.Campaign != nil {
		for _, h := range w.Campaign.Homes {
			hh := home(w.Campaign.Name, h.Name)
			for _, t := range h.Taps {
				hh.Taps = append(hh.Taps, Tap{Name: t.Name})
			}
		}
	}
	campaignTok := "*"
	if w.Campaign != nil {
		campaignTok = w.Campaign.Name
	}
	packets, err := w.subjects(ctx, schemas.StreamPackets, "hm.pkt."+campaignTok+".>")
	if err != nil {
		return nil, err
	}
	samples := map[string]tapSample{}
	var pstream jetstream.Stream
	if len(packets) > 0 {
		if pstream, err = w.JS.Stream(ctx, schemas.StreamPackets); err != nil {
			return nil, fmt.Errorf("open stream %s: %w", schemas.StreamPackets, err)
		}
	}
	for subject, n := range packets {
		_, c, h, tap, err := schemas.ParseSubject(subject)
		if err != nil {
			continue
		}
		hh := home(c, h)
		t := Tap{Name: tap, Batches: n}
		m, err := pstream.GetLastMsgForSubject(ctx, subject)
		switch {
		case bus.NoMessage(err):
		case err != nil:
			return nil, fmt.Errorf("read the newest batch of %s: %w", subject, err)
		default:
			b, derr := schemas.DecodeBatch(m.Data)
			if derr != nil {
				r.Notes = append(r.Notes, fmt.Sprintf("newest batch of %s (stream sequence %d) is undecodable: %v", subject, m.Sequence, derr))
				break
			}
			t.Session, t.Offset, t.Final, t.LastBatch = b.Session, b.FirstOffset+uint64(len(b.Packets)), b.Final, m.Time.UTC()
			samples[subject] = tapSample{at: now, session: t.Session, offset: t.Offset}
		}
		mergeTap(hh, t)
	}
	w.rates(homes, samples, now, r)

	labeled, err := w.subjects(ctx, schemas.StreamLabeled, "hm.lbl."+campaignTok+".>")
	if err != nil {
		return nil, err
	}
	for subject, n := range labeled {
		if _, c, h, view, err := schemas.ParseSubject(subject); err == nil {
			hh := home(c, h)
			if hh.LabeledBatches == nil {
				hh.LabeledBatches = map[string]uint64{}
			}
			hh.LabeledBatches[view] = n
		}
	}
	if err := w.pairing(ctx, home, campaignTok, now); err != nil {
		return nil, err
	}
	if r.Consumers, err = w.consumers(ctx); err != nil {
		return nil, err
	}
	if err := w.windowed(ctx, home, campaignTok); err != nil {
		return nil, err
	}
	for _, hh := range homes {
		w.attribute(hh, r.Consumers)
	}
	if err := w.lastErrors(ctx, homes); err != nil {
		return nil, err
	}
	if note, err := w.devicesSeen(ctx, homes); err != nil {
		return nil, err
	} else if note != "" {
		r.Notes = append(r.Notes, note)
	}
	for _, hh := range homes {
		sort.Slice(hh.Taps, func(i, j int) bool { return hh.Taps[i].Name < hh.Taps[j].Name })
		r.Homes = append(r.Homes, *hh)
	}
	sort.Slice(r.Homes, func(i, j int) bool {
		a, b := r.Homes[i], r.Homes[j]
		return a.Campaign < b.Campaign || a.Campaign == b.Campaign && a.Home < b.Home
	})
	return r, nil
}

// DefaultPairingWindow is how far back the pairing counts look.
const DefaultPairingWindow = 10 * time.Minute

// minGap is the shortest distance between two samples a rate is taken
// over: closer samples keep the older one as the base.
const minGap = time.Second

// rates sets each tap's packets/s from the previous sample and keeps the
// new samples as the next base.
func (w *Watcher) rates(homes map[string]*Home, samples map[string]tapSample, now time.Time, r *Report) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.prev == nil {
		w.prev = map[string]tapSample{}
	}
	for _, hh := range homes {
		for i := range hh.Taps {
			t := &hh.Taps[i]
			subject := schemas.PacketSubject(hh.Campaign, hh.Home, t.Name)
			cur, ok := samples[subject]
			old, had := w.prev[subject]
			if !ok || !had {
				continue
			}
			d := now.Sub(old.at)
			if d < minGap {
				if old.rate != nil {
					t.PacketsPerSec = old.rate
					r.RateOver = max(r.RateOver, Duration(old.over))
				}
				continue
			}
			n := cur.offset
			if cur.session == old.session {
				n -= min(old.offset, cur.offset)
			}
			rate := float64(n) / d.Seconds()
			t.PacketsPerSec = &rate
			r.RateOver = max(r.RateOver, Duration(d))
			cur.rate, cur.over = &rate, d
			samples[subject] = cur
		}
	}
	for subject, s := range samples {
		if old, had := w.prev[subject]; !had || now.Sub(old.at) >= minGap {
			w.prev[subject] = s
		}
	}
}

func mergeTap(h *Home, t Tap) {
	for i := range h.Taps {
		if h.Taps[i].Name == t.Name {
			h.Taps[i] = t
			return
		}
	}
	h.Taps = append(h.Taps, t)
}

// subjects counts a stream's messages per subject matching filter; a
// stream not declared yet holds none.
func (w *Watcher) subjects(ctx context.Context, stream, filter string) (map[string]uint64, error) {
	s, err := w.JS.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, fmt.Errorf("read the subjects of stream %s: %w", stream, err)
	}
	return info.State.Subjects, nil
}

// consumers lists the durable consumers of the PACKETS and LABELED streams
// (labelers, windowers, detectors) with their lag.
func (w *Watcher) consumers(ctx context.Context) ([]Consumer, error) {
	var out []Consumer
	for _, name := range []string{schemas.StreamPackets, schemas.StreamLabeled} {
		s, err := w.JS.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open stream %s: %w", name, err)
		}
		l := s.ListConsumers(ctx)
		for ci := range l.Info() {
			if ci.Config.Durable == "" {
				continue // ordered readers, such as this package's own
			}
			c := Consumer{Stream: name, Name: ci.Name, Pending: ci.NumPending, AckPending: ci.NumAckPending, Filters: ci.Config.FilterSubjects}
			if ci.Config.FilterSubject != "" {
				c.Filters = append(c.Filters, ci.Config.FilterSubject)
			}
			out = append(out, c)
		}
		if err := l.Err(); err != nil {
			return nil, fmt.Errorf("list the consumers of stream %s: %w", name, err)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Stream > out[j].Stream || out[i].Stream == out[j].Stream && out[i].Name < out[j].Name
	})
	return out, nil
}

// attribute names the consumers that read a home's subjects.
func (w *Watcher) attribute(h *Home, cs []Consumer) {
	var subjects []string
	for _, t := range h.Taps {
		subjects = append(subjects, schemas.PacketSubject(h.Campaign, h.Home, t.Name))
	}
	for v := range h.LabeledBatches {
		subjects = append(subjects, schemas.LabeledSubject(h.Campaign, h.Home, v))
	}
	for _, c := range cs {
		if reads(c, subjects) {
			h.Consumers = append(h.Consumers, c.Name)
		}
	}
}

func reads(c Consumer, subjects []string) bool {
	for _, s := range subjects {
		if !strings.HasPrefix(s, map[string]string{schemas.StreamPackets: "hm.pkt.", schemas.StreamLabeled: "hm.lbl."}[c.Stream]) {
			continue
		}
		if len(c.Filters) == 0 {
			return true
		}
		for _, f := range c.Filters {
			if bus.SubjectMatches(f, s) {
				return true
			}
		}
	}
	return false
}

// windowed sums the part records of every dataset by the home their
// source names. Parts are read once: a part is written when its session
// is complete and not rewritten.
func (w *Watcher) windowed(ctx context.Context, home func(c, h string) *Home, campaignTok string) error {
	objs, err := w.Store.List(ctx, "datasets/")
	if err != nil {
		return fmt.Errorf("list the datasets' part records: %w", err)
	}
	w.mu.Lock()
	if w.parts == nil {
		w.parts = map[string]*window.Part{}
	}
	w.mu.Unlock()
	views := map[*Home]map[string]bool{}
	for _, o := range objs {
		if !strings.HasSuffix(o.Key, "/"+window.PartSuffix) {
			continue
		}
		w.mu.Lock()
		p, ok := w.parts[o.Key]
		w.mu.Unlock()
		if !ok {
			data, err := w.Store.Get(ctx, o.Key)
			if errors.Is(err, store.ErrNotFound) {
				continue // removed since the listing
			}
			if err != nil {
				return fmt.Errorf("read part record %s: %w", w.Store.Location(o.Key), err)
			}
			p = &window.Part{}
			if err := json.Unmarshal(data, p); err != nil {
				p = nil
				w.logWarn("part record unreadable; left out of the status", "key", w.Store.Location(o.Key), "err", err)
			}
			w.mu.Lock()
			w.parts[o.Key] = p
			w.mu.Unlock()
		}
		if p == nil {
			continue
		}
		c, h, _, err := schemas.ValidateSource(p.Source)
		if err != nil || campaignTok != "*" && c != campaignTok || h != p.Home {
			continue
		}
		hh := home(c, h)
		wd := &hh.Windowed
		wd.Sessions++
		if p.CutShort {
			wd.CutShort++
		}
		wd.Windows += p.Windows
		wd.Packets += p.Packets
		if wd.Views == nil {
			wd.Views = map[string]ViewCount{}
		}
		v := wd.Views[p.View]
		v.Packets += p.Packets
		v.Labeled += p.Packets - p.Unlabeled
		wd.Views[p.View] = v
		// datasets/<dataset>/<version>/...
		if ks := strings.SplitN(o.Key, "/", 4); len(ks) == 4 {
			ds := ks[1] + "/" + ks[2]
			if views[hh] == nil {
				views[hh] = map[string]bool{}
			}
			if !views[hh][ds] {
				views[hh][ds] = true
				wd.Datasets = append(wd.Datasets, ds)
			}
		}
	}
	for hh := range views {
		sort.Strings(hh.Windowed.Datasets)
	}
	return nil
}

func (w *Watcher) logWarn(msg string, args ...any) {
	if w.Log != nil {
		w.Log.Warn(msg, args...)
	}
}

// lastErrors reads the newest dead letter of each home's subjects.
func (w *Watcher) lastErrors(ctx context.Context, homes map[string]*Home) error {
	s, err := w.JS.Stream(ctx, schemas.StreamDeadLetter)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open the dead-letter stream: %w", err)
	}
	for _, hh := range homes {
		// hm.dlq.<pkt|lbl>.<campaign>.<home>.<tap|view>
		m, err := s.GetLastMsgForSubject(ctx, "hm.dlq.*."+hh.Campaign+"."+hh.Home+".*")
		if bus.NoMessage(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read the newest dead letter of %s/%s: %w", hh.Campaign, hh.Home, err)
		}
		dl := &DeadLetter{
			Seq: m.Sequence, Subject: m.Header.Get(bus.HeaderSubject),
			Consumer: m.Header.Get(bus.HeaderConsumer), Reason: m.Header.Get(bus.HeaderReason),
		}
		dl.FailedAt, _ = time.Parse(time.RFC3339Nano, m.Header.Get(bus.HeaderFailedAt))
		hh.LastError = dl
	}
	return nil
}

// devicesSeen reads each home's newest hm.seen message from the stream
// that keeps them, or else from what Listen heard; the note says when no
// stream keeps them.
func (w *Watcher) devicesSeen(ctx context.Context, homes map[string]*Home) (string, error) {
	var note string
	for _, hh := range homes {
		subject := schemas.SeenSubject(hh.Campaign, hh.Home)
		name, err := w.JS.StreamNameBySubject(ctx, subject)
		if err == nil {
			s, err := w.JS.Stream(ctx, name)
			if err != nil {
				return "", fmt.Errorf("open stream %s: %w", name, err)
			}
			m, err := s.GetLastMsgForSubject(ctx, subject)
			if err == nil {
				if seen, err := schemas.DecodeSeen(m.Data); err == nil {
					hh.Seen = &seen
					continue
				}
			} else if !bus.NoMessage(err) {
				return "", fmt.Errorf("read the newest detections of %s from stream %s: %w", subject, name, err)
			}
		} else {
			note = "no stream keeps hm.seen.>: devices seen are those heard since this status server started (the CLI hears none)"
		}
		w.mu.Lock()
		if s, ok := w.seen[hh.Campaign+"/"+hh.Home]; ok {
			hh.Seen = &s
		}
		w.mu.Unlock()
	}
	return note, nil
}

// pairing counts the labeled share of each home's LAN and WAN views in the
// labeled batches of the last PairingWindow, read through an ordered
// consumer (no durable state on the server).
func (w *Watcher) pairing(ctx context.Context, home func(c, h string) *Home, campaignTok string, now time.Time) error {
	over := w.PairingWindow
	if over <= 0 {
		over = DefaultPairingWindow
	}
	s, err := w.JS.Stream(ctx, schemas.StreamLabeled)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open stream %s: %w", schemas.StreamLabeled, err)
	}
	start := now.Add(-over)
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"hm.lbl." + campaignTok + ".>"},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
		// The server drops it soon after this read.
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("read the labeled batches of the last %s: %w", over, err)
	}
	counts := map[*Home]*Pairing{}
	for {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return fmt.Errorf("read the labeled batches of the last %s: %w", over, err)
		}
		n, left := 0, uint64(0)
		for m := range batch.Messages() {
			n++
			if meta, err := m.Metadata(); err == nil {
				left = meta.NumPending
			}
			b, err := schemas.DecodeBatch(m.Data())
			if err != nil || b.CheckSubject(m.Subject()) != nil {
				continue // the windower dead-letters it
			}
			hh := home(b.Campaign, b.Home)
			p := counts[hh]
			if p == nil {
				p = &Pairing{Over: Duration(over)}
				counts[hh] = p
			}
			side := &p.WAN
			if b.View == "lan" {
				side = &p.LAN
			}
			side.Packets += len(b.Labels)
			for _, l := range b.Labels {
				if l != schemas.Unlabeled {
					side.Labeled++
				}
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("read the labeled batches of the last %s: %w", over, err)
		}
		if n == 0 || left == 0 {
			break
		}
	}
	for hh, p := range counts {
		if p.LAN.Labeled > 0 && p.WAN.Packets > 0 {
			rate := (float64(p.WAN.Labeled) / float64(p.WAN.Packets)) / (float64(p.LAN.Labeled) / float64(p.LAN.Packets))
			p.Rate = &rate
		}
		hh.Pairing = p
	}
	return nil
}
