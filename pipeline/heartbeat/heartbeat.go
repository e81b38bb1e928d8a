// Package heartbeat counts units of a device type from the periodic packets
// their idle firmware sends to its cloud: a keepalive of one size to one
// server port every T seconds. Sequence-profile counting (pipeline/detect)
// learns from superposed copies of one unit's bursts, and a sparse device
// sends too few bursts for it; its heartbeats, though, come from every unit
// at a phase of its own, and real units' clocks drift apart, so the phases
// stay distinct. The count is the number of heartbeat trains: chains of
// beats one period apart, followed through the drift.
//
// Where a type keeps one cloud connection per unit, timing is not needed
// at all: steady.go counts the connections, which stay apart beyond a NAPT
// (each gets an external port of its own), and decides from the types'
// own captures which types that holds for.
package heartbeat

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// Key is what a heartbeat looks like on the wire beyond a NAPT: transport,
// server port and IP length survive translation, the addresses and the
// device's own port do not.
type Key struct {
	Transport uint8
	Port      int32
	IPLen     uint16
}

func (k Key) String() string { return fmt.Sprintf("%s len %d", Service{k.Transport, k.Port}, k.IPLen) }

func (s Service) String() string {
	proto := fmt.Sprintf("proto %d", s.Transport)
	switch s.Transport {
	case 6:
		proto = "tcp"
	case 17:
		proto = "udp"
	}
	return fmt.Sprintf("%s/%d", proto, s.Port)
}

// Beat is one outbound packet, a heartbeat candidate.
type Beat struct {
	TsNs int64
	Key  Key
}

// BeatOf is the beat of an outbound IP packet (the home's direction, as
// the decoder set it); false for any other.
func BeatOf(p *schemas.Packet) (Beat, bool) {
	if p.Direction != schemas.DirOutbound || p.Transport == 0 {
		return Beat{}, false
	}
	return Beat{TsNs: p.TsNs, Key: Key{Transport: p.Transport, Port: p.DPort, IPLen: p.IPLen}}, true
}

// Profile is one heartbeat of a device type.
type Profile struct {
	Device string
	Key    Key
	Period time.Duration
	// Sessions is how many training sessions showed it.
	Sessions int
	// Jitter is the median distance of a gap from the period in training:
	// a beat is chained within a few jitters of when it is due, so that
	// units a little out of phase are not taken for one.
	Jitter time.Duration
}

// Config bounds what counts as a heartbeat.
type Config struct {
	// MinPeriod keeps the packets of one burst (a TLS record split in
	// segments) from passing as a heartbeat.
	MinPeriod time.Duration
	// MinBeats is how many packets of one key a session needs.
	MinBeats int
	// Spread is how far (a share of the period) the gaps of a heartbeat
	// may stray from its period.
	Spread float64
	// MinSessions is how many training sessions must show a heartbeat: one
	// session's regular packets may be a retry loop of that session.
	MinSessions int
	// MaxProfiles is how many heartbeats per device type are kept.
	MaxProfiles int
}

// DefaultConfig: beats at least 2 s apart, 3 per session, gaps within 25 %,
// seen in two sessions.
func DefaultConfig() Config {
	return Config{MinPeriod: 2 * time.Second, MinBeats: 3, Spread: 0.25, MinSessions: 2, MaxProfiles: 3}
}

// Learn finds the heartbeats of one device type in its sessions (each its
// own outbound beats): keys whose gaps in a session are regular, with a
// period that agrees across the sessions that show it.
func Learn(device string, sessions [][]Beat, cfg Config) []Profile {
	periods := map[Key][]time.Duration{}
	jitters := map[Key][]time.Duration{}
	for _, s := range sessions {
		byKey := map[Key][]int64{}
		for _, b := range s {
			byKey[b.Key] = append(byKey[b.Key], b.TsNs)
		}
		for k, ts := range byKey {
			if p, j, ok := regular(ts, cfg); ok {
				periods[k] = append(periods[k], p)
				jitters[k] = append(jitters[k], j)
			}
		}
	}
	var out []Profile
	for k, ps := range periods {
		slices.Sort(ps)
		med := ps[len(ps)/2]
		agree := 0
		for _, p := range ps {
			if within(p, med, cfg.Spread) {
				agree++
			}
		}
		if agree >= cfg.MinSessions {
			js := jitters[k]
			slices.Sort(js)
			out = append(out, Profile{Device: device, Key: k, Period: med, Sessions: agree, Jitter: js[len(js)/2]})
		}
	}
	slices.SortFunc(out, func(a, b Profile) int {
		if c := cmp.Compare(b.Sessions, a.Sessions); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Period, b.Period); c != 0 {
			return c
		}
		return cmp.Compare(a.Key.String(), b.Key.String())
	})
	if len(out) > cfg.MaxProfiles {
		out = out[:cfg.MaxProfiles]
	}
	return out
}

func within(d, period time.Duration, spread float64) bool {
	diff := d - period
	if diff < 0 {
		diff = -diff
	}
	return float64(diff) <= spread*float64(period)
}

// regular is the median gap of one key's packets, and the median distance
// of a gap from it, when most gaps are within the spread of it and it is at
// least MinPeriod.
func regular(ts []int64, cfg Config) (period, jitter time.Duration, ok bool) {
	if len(ts) < cfg.MinBeats {
		return 0, 0, false
	}
	slices.Sort(ts)
	gaps := make([]time.Duration, 0, len(ts)-1)
	for i := 1; i < len(ts); i++ {
		gaps = append(gaps, time.Duration(ts[i]-ts[i-1]))
	}
	s := slices.Clone(gaps)
	slices.Sort(s)
	med := s[len(s)/2]
	if med < cfg.MinPeriod {
		return 0, 0, false
	}
	good := 0
	dev := make([]time.Duration, 0, len(gaps))
	for _, g := range gaps {
		if within(g, med, cfg.Spread) {
			good++
		}
		dev = append(dev, max(g-med, med-g))
	}
	slices.Sort(dev)
	return med, dev[len(dev)/2], good*4 >= len(gaps)*3
}

// MinTolerance is the least a beat may stray from when it is due: capture
// timestamps and forwarding add that much on their own.
const MinTolerance = 20 * time.Millisecond

// tolerance is how far from due a beat of p is still chained: a few
// jitters, at least MinTolerance, at most the spread of the period.
func (p Profile) tolerance(spread float64) int64 {
	return min(int64(spread*float64(p.Period)), max(4*int64(p.Jitter), int64(MinTolerance)))
}

// Trains is how many units the beats of p's key show at once: beats are
// chained to the train whose next beat is due closest to them (within a few
// of p's jitters, at most the spread; a train may skip one beat), else they start a train. A train of
// one beat is a stray packet of that size. A unit whose beats break off
// (lost, or the firmware busy) restarts as a new train after the old one
// ended, so the count is the most trains alive at one time, not all trains.
func Trains(beats []Beat, p Profile, spread float64, fromNs, toNs int64) int {
	var ts []int64
	for _, b := range beats {
		if b.Key == p.Key && b.TsNs >= fromNs && b.TsNs < toNs {
			ts = append(ts, b.TsNs)
		}
	}
	slices.Sort(ts)
	type train struct {
		first, last int64
		n           int
	}
	var trains []train
	per := int64(p.Period)
	tol := p.tolerance(spread)
	for _, t := range ts {
		best, bestErr := -1, int64(-1)
		for i, tr := range trains {
			for k := int64(1); k <= 2; k++ {
				e := t - (tr.last + k*per)
				if e < 0 {
					e = -e
				}
				if e <= tol && (best < 0 || e < bestErr) {
					best, bestErr = i, e
				}
			}
		}
		if best < 0 {
			trains = append(trains, train{first: t, last: t, n: 1})
			continue
		}
		trains[best].last = t
		trains[best].n++
	}
	// The most trains alive at once: +1 at a train's first beat, -1 after
	// its last, swept in time order (ends before starts at one instant).
	type edge struct {
		at int64
		d  int
	}
	var edges []edge
	for _, tr := range trains {
		if tr.n >= 2 {
			edges = append(edges, edge{tr.first, 1}, edge{tr.last + 1, -1})
		}
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if c := cmp.Compare(a.at, b.at); c != 0 {
			return c
		}
		return cmp.Compare(a.d, b.d)
	})
	alive, most := 0, 0
	for _, e := range edges {
		alive += e.d
		most = max(most, alive)
	}
	return most
}

// ReadBeats reads the outbound beats of a capture decoded with home;
// keep, when not nil, picks the packets (a device's MAC on a LAN tap).
func ReadBeats(ctx context.Context, path string, home features.HomeConfig, keep func(*schemas.Packet) bool) ([]Beat, error) {
	return ReadAs(ctx, "heartbeats", path, home, keep, BeatOf)
}

// ReadAs reads what as makes of the packets of a capture decoded with
// home (those it takes); keep, when not nil, picks the packets first. An
// error says it was reading what (heartbeats, flows) of path.
func ReadAs[T any](ctx context.Context, what, path string, home features.HomeConfig, keep func(*schemas.Packet) bool, as func(*schemas.Packet) (T, bool)) ([]T, error) {
	var out []T
	_, err := capture.ReadFile(ctx, path, home, func(p *schemas.Packet) error {
		if keep != nil && !keep(p) {
			return nil
		}
		if v, ok := as(p); ok {
			out = append(out, v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s of %s: %w", what, path, err)
	}
	return out, nil
}
