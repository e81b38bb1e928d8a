package campaign

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Live is how a home's interface taps cut their endless capture into
// capture sessions, and how long the workers downstream wait for a session
// whose producer went quiet.
type Live struct {
	// Rotation is how long a live capture session lasts (default 15m).
	// Sessions run between UTC-aligned slot edges (15m cuts at :00, :15,
	// :30 and :45) and are named after their start, so the LAN and WAN
	// taps of a home name a slot's sessions alike and the labeler pairs
	// them. It must divide a day.
	Rotation time.Duration `yaml:"rotation,omitempty"`
	// MaxPackets caps a live session (default 1,000,000). A tap whose
	// session reaches it ends the session early for every tap of the home
	// at once, so a busy home's sessions stay small enough to hold.
	MaxPackets int `yaml:"max_packets,omitempty"`
	// Grace is how much earlier the WAN tap's session edges come than the
	// LAN tap's (default 1s, a tenth of Rotation when that is less). A
	// packet crosses the gateway in far less (5 ms NAPT, 20 ms VPN): with
	// the WAN edge earlier, a WAN packet's LAN packet lies in the LAN
	// session of the same slot or in the last two Grace of the slot
	// before, which the labeler keeps to pair with.
	Grace time.Duration `yaml:"grace,omitempty"`
	// IdleTimeout closes a session of this home that has received no batch
	// for this long (default two rotations plus a minute): its agent was
	// killed or its gateway lost power, and its final batch will never
	// come. The labeler and the windower record the session as cut short.
	IdleTimeout time.Duration `yaml:"idle_timeout,omitempty"`
}

// Defaults for live taps.
const (
	DefaultRotation   = 15 * time.Minute
	DefaultMaxPackets = 1_000_000
	DefaultGrace      = time.Second
)

// Defaults fills the settings left out.
func (l *Live) Defaults() {
	if l.Rotation == 0 {
		l.Rotation = DefaultRotation
	}
	if l.MaxPackets == 0 {
		l.MaxPackets = DefaultMaxPackets
	}
	if l.Grace == 0 {
		l.Grace = min(DefaultGrace, l.Rotation/10)
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = 2*l.Rotation + time.Minute
	}
}

// Validate checks the live settings (after defaults).
func (l *Live) Validate() error {
	var errs []error
	const day = 24 * time.Hour
	if l.Rotation < time.Second || l.Rotation > day || day%l.Rotation != 0 {
		errs = append(errs, fmt.Errorf("rotation %s: want a duration of 1s to 24h that divides a day (20s, 1m, 15m, 1h), so that every home's slots start at the same instants", l.Rotation))
	}
	if l.MaxPackets < 1000 {
		errs = append(errs, fmt.Errorf("max_packets %d: want at least 1000 packets per session", l.MaxPackets))
	}
	if l.Grace <= 0 || l.Grace > l.Rotation/4 {
		errs = append(errs, fmt.Errorf("grace %s: want more than a packet takes to cross the gateway (20ms under VPN) and at most a quarter of the rotation (%s)", l.Grace, l.Rotation/4))
	}
	if l.IdleTimeout <= l.Rotation {
		errs = append(errs, fmt.Errorf("idle_timeout %s: want more than the rotation (%s): a quiet tap sends nothing until its session ends", l.IdleTimeout, l.Rotation))
	}
	return errors.Join(errs...)
}

// Shift is how much later than its own timestamps a packet of tap is
// placed in the slots: the WAN tap's edges come Grace earlier.
func (l Live) Shift(tap string) time.Duration {
	if tap == "wan" {
		return l.Grace
	}
	return 0
}

// SlotStart is the start of the UTC-aligned slot that holds instant t
// (Unix nanoseconds, already shifted).
func (l Live) SlotStart(t int64) int64 {
	r := int64(l.Rotation)
	m := t % r
	if m < 0 {
		m += r
	}
	return t - m
}

// LiveSessionName names the live session of tap that starts at start (Unix
// nanoseconds): the same for every tap of a home, and ordered as the
// sessions are, for names of one home compare as their starts do.
func LiveSessionName(tap string, start int64) string {
	u := time.Unix(0, start).UTC()
	return fmt.Sprintf("%s-%s_%03dZ", tap, u.Format("20060102T150405"), u.Nanosecond()/1e6)
}

// IsLive reports whether the home has an interface tap.
func (h *Home) IsLive() bool {
	for _, t := range h.Taps {
		if t.Interface != "" {
			return true
		}
	}
	return false
}

// IdleTimeouts maps each home with an interface tap to its idle timeout.
// Homes of capture files have none: a killed agent resumes their files
// where it stopped, however much later, so their sessions are waited for.
func IdleTimeouts(c *Campaign) map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, h := range c.Homes {
		if h.IsLive() {
			l := h.Live
			l.Defaults()
			out[h.Name] = l.IdleTimeout
		}
	}
	return out
}

// Sweep calls sweep until ctx ends, every tenth of the shortest of the
// idle timeouts (at most every 10 ms), so that what outlived its timeout
// is released within a tenth of it; a failed sweep goes to failed and is
// tried again next time. Without a positive timeout it returns at once.
// The labeler's and the windower's sweepers run on it.
func Sweep(ctx context.Context, timeouts []time.Duration, sweep func(now time.Time) error, failed func(error)) {
	every := time.Duration(0)
	for _, d := range timeouts {
		if d/10 > 0 && (every == 0 || d/10 < every) {
			every = d / 10
		}
	}
	if every == 0 {
		return
	}
	t := time.NewTicker(max(every, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := sweep(time.Now()); err != nil && ctx.Err() == nil {
			failed(err)
		}
	}
}
