// Package window is the windowing worker: it gathers each capture session's
// labeled packets, cuts them into traffic windows of n packets and writes
// them as Arrow IPC objects with deterministic names, so a redelivered
// session rewrites the same bytes instead of adding a duplicate.
package window

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/schemas/windowfile"
)

// Spec is what a dataset build asks of the windower.
type Spec struct {
	Dataset string
	Version string
	Kind    string // schemas.KindInd or schemas.KindNoise
	Size    int    // packets per window
	// Labels is the dataset's label vocabulary (device names); a window's
	// labels index it. Devices outside it are treated as unlabeled.
	Labels []string
	// WindowsPerObject bounds an object's size; a session writes several.
	WindowsPerObject int
	// Views, when set, are the only views windowed ("lan", "napt", "vpn");
	// batches of other views are acknowledged and left out.
	Views []string `json:",omitempty"`
}

// RegisterFlags adds the spec's flags (all but the label vocabulary, which
// comes from the campaign's inventories) to fs.
func (s *Spec) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&s.Dataset, "dataset", "", "dataset name")
	fs.StringVar(&s.Version, "version", "v1", "dataset version")
	fs.StringVar(&s.Kind, "kind", schemas.KindInd, "ind: one device's own packets per window (pure IoT); noise: the home's merged stream")
	fs.IntVar(&s.Size, "window", 100, "packets per window (the paper studies 20, 40 and 100)")
}

// Validate refuses specs no window can be cut from.
func (s *Spec) Validate() error {
	if err := schemas.ValidateToken("dataset name", s.Dataset); err != nil {
		return err
	}
	if err := schemas.ValidateToken("dataset version", s.Version); err != nil {
		return err
	}
	if s.Kind != schemas.KindInd && s.Kind != schemas.KindNoise {
		return fmt.Errorf("window kind %q: want %s or %s", s.Kind, schemas.KindInd, schemas.KindNoise)
	}
	if s.Size < 2 || s.Size > 10000 {
		return fmt.Errorf("window size %d: want 2..10000 packets (the paper uses 20, 40, 100)", s.Size)
	}
	if len(s.Labels) == 0 || len(s.Labels) > 32767 {
		return fmt.Errorf("label vocabulary of %d devices: want 1..32767", len(s.Labels))
	}
	return nil
}

// Prefix is where the dataset's objects live.
func (s *Spec) Prefix() string { return path.Join("datasets", s.Dataset, s.Version) }

// Part records what one session contributed; the manifest is assembled from parts.
type Part struct {
	Home    string `json:"home"`
	View    string `json:"view"`
	Session string `json:"session"`
	Source  string `json:"source"`
	Packets int    `json:"packets"`
	// Unlabeled packets belong to no inventory device (the router, guests,
	// multicast from unknown hosts); Background packets belong to devices
	// this kind of dataset leaves out (non-IoT devices in ind windows).
	Unlabeled  int                `json:"unlabeled_packets"`
	Background int                `json:"background_packets"`
	Windows    int                `json:"windows"`
	PerDevice  map[string]int     `json:"windows_per_device"`
	Objects    []store.ObjectInfo `json:"objects"`
	Offsets    [2]uint64          `json:"offsets"` // lineage: first and last packet offset of the source
}

// PartSuffix names the per-session part records.
const PartSuffix = "_part.json"

// Windower cuts windows for one dataset spec.
type Windower struct {
	spec   Spec
	store  store.Store
	log    *slog.Logger
	labels map[string]int16
	// OnPart is called after a session's objects and part are stored.
	OnPart func(Part)
	// Accept, when set, picks the sessions this build windows; batches of
	// other sessions in the stream are acknowledged and left out.
	Accept func(home, session string) bool

	mu       sync.Mutex
	sessions map[string]*session
}

type session struct {
	home, view, id, source string
	next                   uint64 // offset expected in the next batch
	started                bool
	packets                []schemas.Packet
	labels                 []int16
	unlabeled, background  int
	pending                []*bus.Delivery
}

// New prepares a windower that writes through st.
func New(spec Spec, st store.Store, log *slog.Logger) (*Windower, error) {
	if spec.WindowsPerObject == 0 {
		spec.WindowsPerObject = 1024
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	lab := make(map[string]int16, len(spec.Labels))
	for i, n := range spec.Labels {
		lab[n] = int16(i)
	}
	return &Windower{spec: spec, store: st, log: log, labels: lab, sessions: map[string]*session{}}, nil
}

// Handle takes one labeled batch. It keeps the delivery unacknowledged until
// the session ends and its windows are stored: a crash before that makes
// JetStream redeliver the session, and the deterministic names make the
// rewrite harmless.
func (w *Windower) Handle(ctx context.Context, d *bus.Delivery) error {
	b := d.Batch
	if b.Kind != schemas.KindLabeled {
		return bus.Permanent(fmt.Errorf("batch %s is of kind %q, the windower reads labeled batches", b.MsgID(), b.Kind))
	}
	if w.Accept != nil && !w.Accept(b.Home, b.Session) || len(w.spec.Views) > 0 && !slices.Contains(w.spec.Views, b.View) {
		return d.Ack()
	}
	key := b.Home + "/" + b.View + "/" + b.Session
	w.mu.Lock()
	s, ok := w.sessions[key]
	if !ok {
		s = &session{home: b.Home, view: b.View, id: b.Session, source: b.Source, next: b.FirstOffset}
		w.sessions[key] = s
	}
	w.mu.Unlock()

	switch {
	case s.started && b.FirstOffset < s.next:
		// A redelivery of a batch already buffered: the session's pending
		// deliveries cover it; acking this copy loses nothing.
		return d.Ack()
	case s.started && b.FirstOffset > s.next:
		return fmt.Errorf("session %s: batch at offset %d arrived before offset %d; waiting for redelivery", key, b.FirstOffset, s.next)
	}
	s.started = true
	unlabeledBefore, backgroundBefore := s.unlabeled, s.background
	// Map the home's label vocabulary onto the dataset's.
	remap := make([]int16, len(b.Devices))
	for i, dev := range b.Devices {
		remap[i] = -1
		if l, ok := w.labels[dev.Name]; ok && (w.spec.Kind == schemas.KindNoise || dev.Category == "iot") {
			remap[i] = l
		}
	}
	for i := range b.Packets {
		l := int16(-1)
		switch {
		case b.Labels[i] < 0:
			s.unlabeled++
		case remap[b.Labels[i]] < 0:
			s.background++
		default:
			l = remap[b.Labels[i]]
		}
		s.packets = append(s.packets, b.Packets[i])
		s.labels = append(s.labels, l)
	}
	if n := len(b.Packets); n > 0 {
		s.next = b.Packets[n-1].Offset + 1
	}
	s.pending = append(s.pending, d)
	if !b.Final {
		return nil
	}
	part, err := w.flush(ctx, s)
	if err != nil {
		// Retryable: the session stays buffered; the final batch comes again.
		s.pending = s.pending[:len(s.pending)-1]
		s.packets = s.packets[:len(s.packets)-len(b.Packets)]
		s.labels = s.labels[:len(s.labels)-len(b.Packets)]
		s.next = b.FirstOffset
		s.unlabeled, s.background = unlabeledBefore, backgroundBefore
		return err
	}
	for _, p := range s.pending {
		if err := p.Ack(); err != nil {
			w.log.Warn("ack after flush failed; the session will be rewritten identically", "session", key, "err", err)
		}
	}
	w.mu.Lock()
	delete(w.sessions, key)
	w.mu.Unlock()
	if w.OnPart != nil {
		w.OnPart(part)
	}
	return nil
}

// flush cuts the session's windows, writes them and the part record.
func (w *Windower) flush(ctx context.Context, s *session) (Part, error) {
	ws := Cut(w.spec, s.home, s.view, s.id, s.packets, s.labels)
	part := Part{Home: s.home, View: s.view, Session: s.id, Source: s.source, Packets: len(s.packets),
		Unlabeled: s.unlabeled, Background: s.background, Windows: len(ws), PerDevice: map[string]int{}}
	if len(s.packets) > 0 {
		part.Offsets = [2]uint64{s.packets[0].Offset, s.packets[len(s.packets)-1].Offset}
	}
	for _, win := range ws {
		part.PerDevice[w.majority(win)]++
	}
	dir := path.Join(w.spec.Prefix(), s.view, s.home, s.id)
	for lo := 0; lo < len(ws); lo += w.spec.WindowsPerObject {
		hi := min(lo+w.spec.WindowsPerObject, len(ws))
		data, err := windowfile.Encode(w.spec.Size, ws[lo:hi])
		if err != nil {
			return part, fmt.Errorf("encode windows of session %s: %w", s.id, err)
		}
		key := path.Join(dir, fmt.Sprintf("%s-w%06d-%06d.arrow", w.spec.Kind, lo, hi-1))
		info, err := w.store.Put(ctx, key, data, "application/vnd.apache.arrow.file")
		if err != nil {
			return part, err
		}
		part.Objects = append(part.Objects, info)
	}
	pj, err := json.MarshalIndent(part, "", "  ")
	if err != nil {
		return part, err
	}
	if _, err := w.store.Put(ctx, path.Join(dir, PartSuffix), pj, "application/json"); err != nil {
		return part, err
	}
	return part, nil
}

// majority names the device most packets of a window belong to, for counts.
func (w *Windower) majority(win *schemas.Window) string {
	counts := map[int16]int{}
	for i := 0; i < win.Len; i++ {
		counts[win.Label[i]]++
	}
	best, bestN := int16(-1), 0
	for l, n := range counts {
		if n > bestN || n == bestN && l < best {
			best, bestN = l, n
		}
	}
	if best < 0 {
		return "(unlabeled)"
	}
	return w.spec.Labels[best]
}

// GroupOf is the unit cross-validation keeps on one side of a split: a
// home's capture session, whatever tap saw it. "lan-session-01" and
// "wan-session-01" are the same traffic seen twice, so they share a group.
func GroupOf(home, session string) string {
	if i := strings.IndexByte(session, '-'); i >= 0 {
		session = session[i+1:]
	}
	return home + "/" + session
}

// Cut turns one session's packets into windows. Kind ind cuts each
// device's own sequence (packets of no device are left out); kind noise cuts
// the merged stream. The interval feature is recomputed inside the stream a
// window is cut from, and a short tail is padded, never dropped.
func Cut(spec Spec, home, view, sess string, pkts []schemas.Packet, labels []int16) []*schemas.Window {
	var out []*schemas.Window
	emit := func(stream string, idx []int) {
		for lo := 0; lo < len(idx); lo += spec.Size {
			hi := min(lo+spec.Size, len(idx))
			win := schemas.NewWindow(spec.Size)
			win.ID = fmt.Sprintf("%s/%s/%s/%s/%s/%d", view, home, sess, spec.Kind, stream, lo/spec.Size)
			win.Home, win.Session, win.View, win.Kind, win.Group = home, sess, view, spec.Kind, GroupOf(home, sess)
			win.Len = hi - lo
			for j := lo; j < hi; j++ {
				k := idx[j]
				var gap float32
				if j > 0 {
					gap = float32(pkts[k].TsNs-pkts[idx[j-1]].TsNs) / 1e9
				}
				win.Set(j-lo, &pkts[k], gap, int32(labels[k]))
			}
			out = append(out, win)
		}
	}
	if spec.Kind == schemas.KindNoise {
		idx := make([]int, len(pkts))
		for i := range idx {
			idx[i] = i
		}
		emit("all", idx)
		return out
	}
	byDev := map[int16][]int{}
	for i, l := range labels {
		if l >= 0 {
			byDev[l] = append(byDev[l], i)
		}
	}
	devs := make([]int, 0, len(byDev))
	for l := range byDev {
		devs = append(devs, int(l))
	}
	sort.Ints(devs)
	for _, l := range devs {
		emit(spec.Labels[l], byDev[int16(l)])
	}
	return out
}

// SpecKey is where a build records its spec, so that the manifest can be
// assembled by any process once the windowers are done.
func (s *Spec) SpecKey() string { return path.Join(s.Prefix(), "_spec.json") }

// SaveSpec records the spec; a spec already there must be the same.
func SaveSpec(ctx context.Context, st store.Store, s Spec) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if old, err := st.Get(ctx, s.SpecKey()); err == nil && string(old) != string(data) {
		return fmt.Errorf("dataset %s/%s was started with another spec (%s): choose another version", s.Dataset, s.Version, st.Location(s.SpecKey()))
	}
	_, err = st.Put(ctx, s.SpecKey(), data, "application/json")
	return err
}

// LoadSpec reads the spec a build recorded.
func LoadSpec(ctx context.Context, st store.Store, dataset, version string) (Spec, error) {
	s := Spec{Dataset: dataset, Version: version}
	data, err := st.Get(ctx, s.SpecKey())
	if err != nil {
		return s, fmt.Errorf("dataset %s/%s has no recorded spec: was a windower started for it? %w", dataset, version, err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("spec %s: %w", st.Location(s.SpecKey()), err)
	}
	return s, s.Validate()
}
