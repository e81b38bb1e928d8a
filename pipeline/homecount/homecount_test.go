package homecount

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/heartbeat"
	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/pipeline/realhome/realhometest"
)

// TestHeartbeatCountOnRealUnits learns heartbeats from the early half of the
// IoT Sentinel captures and counts 1..5 units of each type that has one in
// homes assembled from the later, held-out half, beyond the emulated NAPT.
func TestHeartbeatCountOnRealUnits(t *testing.T) {
	devs := realhometest.Devices(t)
	ctx := context.Background()
	var all []float64
	typesWith := 0
	for _, d := range devs {
		ps, err := LearnEarly(ctx, d, realhome.EarlySessions)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) == 0 {
			continue
		}
		late := len(realhome.LateSessions.Pick(d.Files))
		var units []int
		for n := 1; n <= late; n++ {
			units = append(units, n)
		}
		pts, err := Run(ctx, devs, ps, nil, Config{Device: d.Name, Units: units, Homes: 3, Others: 3, Duration: 100 * time.Second,
			Sessions: realhome.LateSessions, View: gateway.NAPT, Seed: 1, Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		typesWith++
		var line strings.Builder
		for _, p := range pts {
			e, exact := Err(p.HB, p.Truth())
			all = append(all, e)
			fmt.Fprintf(&line, " n=%d active %v said %v err %.0f%% (%d/%d exact);", p.N, p.Active, p.HB, 100*e, exact, p.Homes)
			if len(p.HB) != 3 || p.Homes != 3 {
				t.Fatalf("%s n=%d: %d estimates of %d homes, want 3", d.Name, p.N, len(p.HB), p.Homes)
			}
		}
		t.Logf("%s (%s every %s):%s", d.Name, ps[0].Key, ps[0].Period.Round(time.Millisecond), line.String())
	}
	if typesWith == 0 {
		t.Fatal("no device type showed a heartbeat in its early captures")
	}
	mean := 0.0
	for _, e := range all {
		mean += e
	}
	mean /= float64(len(all))
	t.Logf("%d types with a heartbeat; mean count error over types and n: %.1f %%", typesWith, 100*mean)
	// Measured 25 % (README): a guard against the estimator getting worse,
	// not a target; the captures are short setups with few heartbeats.
	if mean > 0.35 {
		t.Fatalf("mean heartbeat count error %.1f %%, was 25 %%", 100*mean)
	}
}

// TestSteadyCountOnRealUnits decides from every IoT Sentinel type's own
// captures which types steady connections count (heartbeat.Eligibility,
// settled before any home), then counts n = 1, 3, 6 and 10 units (a subset
// of 1..10, to keep the test short) of each eligible type in 5 homes per n
// assembled from distinct captures with 3 other devices, beyond the
// emulated NAPT and on the LAN. The counter fits nothing to any capture:
// the only thing it takes from the type is the service that names it.
//
// The bound: a type every capture of which keeps its connection is counted
// within 10 % at every n. A type admitted with one capture in ten that
// keeps none (HomeMaticPlug, TP-LinkPlugHS100: the rule's 90 %) misses that
// unit whenever a home draws it, 10 % on average over homes by
// construction, and a sample of homes lands on either side of it; for them
// the test holds what the rule promises: no home is counted over, and none
// under by more than the captures that keep no connection.
func TestSteadyCountOnRealUnits(t *testing.T) {
	devs := realhometest.Devices(t)
	ctx := context.Background()
	types, err := SteadyEligibility(ctx, devs, heartbeat.DefaultSteady())
	if err != nil {
		t.Fatal(err)
	}
	var eligible []heartbeat.TypeService
	for _, ts := range types {
		if ts.Eligible {
			eligible = append(eligible, ts)
			t.Logf("%-20s eligible: one steady connection of %s in %d of %d captures; family %v", ts.Device, ts.Service, ts.One, ts.Captures, ts.Family)
		} else {
			t.Logf("%-20s not eligible: %s", ts.Device, ts.Why)
		}
	}
	var names []string
	for _, ts := range eligible {
		names = append(names, ts.Device)
	}
	// What the rule found when it was written; a change in the rule or
	// the reader shows here first.
	if got, want := strings.Join(names, " "), "EdnetGateway HomeMaticPlug Lightify TP-LinkPlugHS100 TP-LinkPlugHS110"; got != want {
		t.Fatalf("eligible types %q, want %q", got, want)
	}
	for _, view := range []gateway.Mode{gateway.NAPT, ""} {
		for _, ts := range eligible {
			pts, err := Run(ctx, devs, nil, nil, Config{Device: ts.Device, Units: []int{1, 3, 6, 10}, Homes: 5, Others: 3, Duration: 100 * time.Second,
				Sessions: realhome.AllSessions, View: view, Seed: 1, Dir: t.TempDir(), Steady: &ts})
			if err != nil {
				t.Fatal(err)
			}
			var line strings.Builder
			mean := 0.0
			for _, p := range pts {
				e, exact := Err(p.Combined, p.Truth())
				mean += e / float64(len(pts))
				fmt.Fprintf(&line, " n=%d want %v said %v err %.1f%% (%d/%d exact);", p.N, p.Truth(), p.Combined, 100*e, exact, p.Homes)
				if ts.One == ts.Captures && e > 0.10+1e-9 {
					t.Errorf("%s %q n=%d: count error %.1f %%, want at most 10 %%", ts.Device, view, p.N, 100*e)
				}
				for i, said := range p.Combined {
					if want := p.Truth()[i]; said > want || said < want-(ts.Captures-ts.One) {
						t.Errorf("%s %q n=%d home %d: counted %d of %d units; %d of its captures keep no connection", ts.Device, view, p.N, i, said, want, ts.Captures-ts.One)
					}
				}
			}
			t.Logf("%s %q: mean %.1f %%;%s", ts.Device, view, 100*mean, line.String())
		}
	}
}

// TestCombine: on a LAN the host count, else steady connections, else IP
// ID sequences, else the larger of heartbeat and sequence profiles.
func TestCombine(t *testing.T) {
	for _, c := range []struct{ hb, sp, steady, hosts, chains, want int }{
		{3, 2, -1, -1, -1, 3},
		{-1, -1, -1, -1, -1, 0},
		{1, 2, 5, -1, 4, 5},
		{1, 2, -1, -1, 4, 4},
		{1, 2, 5, 6, 4, 6},
		{1, 2, -1, 0, -1, 0},
	} {
		if got := Combine(c.hb, c.sp, c.steady, c.hosts, c.chains); got != c.want {
			t.Errorf("Combine(hb %d, sp %d, steady %d, hosts %d, chains %d) = %d, want %d", c.hb, c.sp, c.steady, c.hosts, c.chains, got, c.want)
		}
	}
}

// TestRunUnitCounters: home count's homes counted by the unit counters,
// each with the captures a home did not draw on: on the LAN by the host
// counter, beyond the NAPT by IP ID sequences (Aria: one sequence a unit),
// and a type that steady connections count (Lightify) by them first.
func TestRunUnitCounters(t *testing.T) {
	devs := realhometest.Devices(t)
	ctx := context.Background()
	lan, err := NewHostCounter(ctx, devs)
	if err != nil {
		t.Fatal(err)
	}
	wan, err := NewWANHostCounter(ctx, devs, DefaultChains())
	if err != nil {
		t.Fatal(err)
	}
	steady, err := SteadyEligibility(ctx, devs, heartbeat.DefaultSteady())
	if err != nil {
		t.Fatal(err)
	}
	var lightify *heartbeat.TypeService
	for i := range steady {
		if steady[i].Device == "Lightify" && steady[i].Eligible {
			lightify = &steady[i]
		}
	}
	if lightify == nil {
		t.Fatal("Lightify keeps no steady connection, want one")
	}
	for _, c := range []struct {
		device string
		view   gateway.Mode
		steady *heartbeat.TypeService
		by     func(Point) []int
	}{
		{"Aria", "", nil, func(p Point) []int { return p.Hosts }},
		{"Aria", gateway.NAPT, nil, func(p Point) []int { return p.Chains }},
		{"Lightify", gateway.NAPT, lightify, func(p Point) []int { return p.Steady }},
	} {
		pts, err := Run(ctx, devs, nil, nil, Config{Device: c.device, Units: []int{1, 4}, Homes: 2, Others: 3, Duration: 100 * time.Second,
			Sessions: realhome.AllSessions, View: c.view, Seed: 1, Dir: t.TempDir(), Steady: c.steady, Hosts: lan, Chains: wan})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pts {
			by := c.by(p)
			t.Logf("%s %q n=%d: hosts %v chains %v steady %v combined %v, truth %v", c.device, c.view, p.N, p.Hosts, p.Chains, p.Steady, p.Combined, p.Truth())
			for i := range p.Combined {
				if by[i] < 0 || p.Combined[i] != by[i] {
					t.Errorf("%s %q n=%d home %d: combined %d, want the count of its counter, %d", c.device, c.view, p.N, i, p.Combined[i], by[i])
				}
			}
			if e, _ := Err(p.Combined, p.Truth()); e > 0.25 {
				t.Errorf("%s %q n=%d: count error %.1f %%", c.device, c.view, p.N, 100*e)
			}
		}
	}
}
