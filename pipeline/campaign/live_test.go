package campaign

import (
	"strings"
	"testing"
	"time"
)

func TestLiveDefaults(t *testing.T) {
	c := loadTestdata(t, "good.yaml")
	l := c.Homes[1].Live
	if l.Rotation != 15*time.Minute || l.Grace != time.Second || l.MaxPackets != DefaultMaxPackets || l.IdleTimeout != 31*time.Minute {
		t.Fatalf("live defaults %+v", l)
	}
	// Only the live home has an idle timeout: a file home's killed agent
	// resumes its files, however much later.
	if idle := IdleTimeouts(c); len(idle) != 1 || idle["home-2"] != 31*time.Minute {
		t.Errorf("idle timeouts %v: want home-2 (live) alone, 31m", idle)
	}
	short := Live{Rotation: 2 * time.Second}
	short.Defaults()
	if short.Grace != 200*time.Millisecond || short.Validate() != nil {
		t.Fatalf("a 2s rotation should default to a 200ms grace and validate: %+v %v", short, short.Validate())
	}
	bad := Live{Rotation: 7 * time.Minute, Grace: 5 * time.Minute, MaxPackets: 10, IdleTimeout: time.Minute}
	err := bad.Validate()
	for _, want := range []string{"rotation 7m0s", "max_packets 10", "grace 5m0s", "idle_timeout 1m0s"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validation of %+v should say %q: %v", bad, want, err)
		}
	}
}

// TestSlots: slots are UTC-aligned whatever the instant, the WAN tap's edges
// come Grace earlier, and session names sort as their starts do.
func TestSlots(t *testing.T) {
	l := Live{Rotation: 15 * time.Minute, Grace: time.Second}
	at := func(s string) int64 {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm.UnixNano()
	}
	for _, c := range []struct {
		tap, ts, slot string
	}{
		{"lan", "2026-12-04T18:14:59.999Z", "2026-12-04T18:00:00Z"},
		{"lan", "2026-12-04T18:15:00Z", "2026-12-04T18:15:00Z"},
		{"wan", "2026-12-04T18:14:58.9Z", "2026-12-04T18:00:00Z"},
		// A WAN packet a grace before the edge already belongs to the next
		// slot: its LAN packet may come after the edge.
		{"wan", "2026-12-04T18:14:59Z", "2026-12-04T18:15:00Z"},
		{"lan", "1969-12-31T23:59:59Z", "1969-12-31T23:45:00Z"},
	} {
		got := l.SlotStart(at(c.ts) + int64(l.Shift(c.tap)))
		if got != at(c.slot) {
			t.Errorf("%s packet at %s: slot %s, want %s", c.tap, c.ts, time.Unix(0, got).UTC().Format(time.RFC3339Nano), c.slot)
		}
	}
	a := LiveSessionName("lan", at("2026-12-04T18:15:00Z"))
	b := LiveSessionName("lan", at("2026-12-04T18:15:00.25Z"))
	c := LiveSessionName("lan", at("2026-12-04T18:30:00Z"))
	if a != "lan-20261204T181500_000Z" || b != "lan-20261204T181500_250Z" || !(a < b && b < c) {
		t.Errorf("names %s %s %s: want lan-20261204T181500_000Z first, sorted as their starts", a, b, c)
	}
	if w := LiveSessionName("wan", at("2026-12-04T18:15:00Z")); strings.TrimPrefix(w, "wan-") != strings.TrimPrefix(a, "lan-") {
		t.Errorf("the taps name one slot differently: %s, %s", a, w)
	}
}
