// Package homecount measures counting on real units: homes assembled from
// real per-device captures (pipeline/realhome) with n units of one type,
// seen beyond the emulated NAPT, each counted by the heartbeat estimator and
// by a sequence-profile counter, and the two combined.
//
// How the estimators combine. On a LAN tap every unit is a host (a MAC) of
// its own, and the host counter (HostCounter: a host is a unit when it
// sends a key of the unit's signature and its keys are nearest the unit's
// captures) counts it; nothing else is needed there. Beyond a NAPT, a type
// that steady connections count
// (heartbeat.Eligibility: one steady cloud connection per unit, in 90 % of
// its captures, of a service no other type shares unless it too keeps one
// per unit) is counted by them alone: each unit's connection is a flow of
// its own on either side of a NAPT, so nothing has to be told apart by
// timing. Else a type whose units each number their packets from one
// counter (HostCounter.ChainEligible) is counted by its IP ID sequences
// (LinkChains), which a NAPT keeps. Through a VPN tunnel, which hides the
// connections and the IDs, and for any other type: heartbeat trains alive
// at one time are distinct
// units (each keeps a phase of its own, and real units' clocks drift apart
// rather than together), so the heartbeat count is a lower bound that holds
// where the sequence-profile counter sees too little of a sparse device; the
// count is the larger of the two, and a type without a heartbeat (none
// learned from its training sessions) is counted by its sequence profiles
// alone. The members of an identical pair are counted by the sum of their
// types' counters.
package homecount

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/heartbeat"
	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/schemas"
)

// Counter is a sequence-profile counter: how many units of device it sees
// in the capture at path between fromNs and toNs (0: not detected).
type Counter interface {
	Count(ctx context.Context, path, device string, fromNs, toNs int64) (int, error)
}

// Config says which homes to assemble.
type Config struct {
	// Device is the type counted; Also, when set, is a second folder of
	// the same model (an identical pair) whose units count as Device's.
	Device, Also string
	// Units are the n to measure; each n needs n captures of the type.
	Units []int
	// Homes is how many homes (seeds) per n.
	Homes int
	// Others is how many other device types share each home.
	Others   int
	Duration time.Duration
	Sessions realhome.Split
	View     gateway.Mode
	Seed     uint64
	// Dir holds the assembled captures while they are counted.
	Dir string
	// Steady, when set and eligible, counts by steady connections of its
	// service; the units it is judged against are those of its family.
	Steady *heartbeat.TypeService
	// HeldOut, when set with Steady, decides per home again whether the
	// type is eligible and by which service, from every capture but the
	// home's own: a home it does not name that way gets no steady count
	// (Point.Unnamed), and its combined count falls back to the others'.
	HeldOut *CaptureServices
	// Hosts, when set (NewHostCounter's) and the view is the LAN, counts
	// the type's unit host by host with the model of every capture the
	// home did not draw on.
	Hosts *HostCounter
	// Chains, when set (NewWANHostCounter's) and the view is NAPT, counts
	// the type's unit by its IP ID sequences in each home whose other
	// captures make it eligible (HostCounter.ChainEligible).
	Chains *HostCounter
}

// Truth is, per home, the units the estimates are judged against: n, and
// any unit of a type of the counted family that the home drew among its
// other devices.
func (p Point) Truth() []int {
	if len(p.Want) == p.Homes {
		return p.Want
	}
	t := make([]int, p.Homes)
	for i := range t {
		t[i] = p.N
	}
	return t
}

// Point is the result for one n.
type Point struct {
	N     int
	Homes int
	// Estimates per home: heartbeat trains (-1: the type has no
	// heartbeat), sequence-profile count (-1: no counter), steady
	// connections (-1: the type is not counted by them), LAN hosts (-1:
	// not counted so), IP ID sequences (-1: not counted so), combined.
	HB, SP, Steady, Hosts, Chains, Combined []int
	// Want is, per home, the units of the counted types (Truth).
	Want []int
	// Unnamed counts the homes whose held-out captures did not make the
	// type eligible by its service (Config.HeldOut).
	Unnamed int
	// Active is, per home, the most units of the type active at one
	// instant (between a unit's first and last packet): the number a
	// count at one time can reach, as units' sessions overlap in part.
	Active []int
}

// Err is the mean relative count error |est-n|/n of a list of estimates
// against truths n (one per estimate), and how many were exactly right.
func Err(est, truth []int) (meanErr float64, exact int) {
	for i, e := range est {
		n := max(truth[i], 1)
		d := e - n
		if d < 0 {
			d = -d
		}
		meanErr += float64(d) / float64(n)
		if e == truth[i] {
			exact++
		}
	}
	return meanErr / float64(max(len(est), 1)), exact
}

// Combine is the count the estimators give together (see the package
// comment); -1 marks an estimator that had nothing to say.
func Combine(hb, sp, steady, hosts, chains int) int {
	switch {
	case hosts >= 0:
		return hosts
	case steady >= 0:
		return steady
	case chains >= 0:
		return chains
	}
	return max(hb, sp, 0)
}

// WANHome is the home side of a gateway's WAN capture: its one address.
func WANHome() features.HomeConfig {
	return features.HomeConfig{LANNets: []netip.Prefix{netip.PrefixFrom(gateway.DefaultConfig().WANAddr, 32)}}
}

// Run assembles cfg.Homes homes per n and counts cfg.Device in each.
// profiles are the type's heartbeats (none: no heartbeat estimate); sp may
// be nil.
func Run(ctx context.Context, devs []realhome.Device, profiles []heartbeat.Profile, sp Counter, cfg Config) ([]Point, error) {
	var out []Point
	for _, n := range cfg.Units {
		pt := Point{N: n}
		for k := range cfg.Homes {
			units := map[string]int{cfg.Device: n}
			if cfg.Also != "" {
				// An identical pair: n units split over the two folders.
				units = map[string]int{cfg.Device: n - n/2}
				if n/2 > 0 {
					units[cfg.Also] = n / 2
				}
			}
			seed := cfg.Seed + uint64(1000*n+k)
			h, err := realhome.Assemble(ctx, devs, realhome.Config{Devices: len(units) + cfg.Others, Units: units,
				Duration: cfg.Duration, Sessions: cfg.Sessions, Seed: seed})
			if err != nil {
				return out, fmt.Errorf("count %s, n = %d: %w", cfg.Device, n, err)
			}
			path := filepath.Join(cfg.Dir, fmt.Sprintf("%s-n%d-%d.pcap", cfg.Device, n, k))
			f, err := os.Create(path)
			if err != nil {
				return out, fmt.Errorf("count %s: %w", cfg.Device, err)
			}
			home := h.HomeConfig()
			if cfg.View == "" {
				err = h.WritePcap(f)
			} else {
				_, _, err = h.View(ctx, gateway.Config{Mode: cfg.View, Cipher: gateway.AES256GCM, Seed: seed}, f)
				home = WANHome()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return out, fmt.Errorf("count %s: write %s: %w", cfg.Device, path, err)
			}
			from, to := h.Start.UnixNano(), h.Start.Add(h.Duration).UnixNano()
			st := -1
			// A tunnel carries every connection inside one: beyond a VPN
			// gateway there are no connections to tell apart.
			named := cfg.Steady != nil && cfg.Steady.Eligible && cfg.View != gateway.VPN
			var used []string
			for _, u := range h.Units {
				used = append(used, u.Session)
			}
			if named && cfg.HeldOut != nil {
				named = false
				for _, ts := range cfg.HeldOut.Eligibility(used) {
					if ts.Device == cfg.Device && ts.Eligible && ts.Service == cfg.Steady.Service {
						named = true
					}
				}
				if !named {
					pt.Unnamed++
				}
			}
			if named {
				flows, err := heartbeat.ReadFlows(ctx, path, home, nil)
				if err != nil {
					return out, err
				}
				st = heartbeat.Steady(flows, []heartbeat.Service{cfg.Steady.Service}, heartbeat.DefaultSteady(), from, to)
			}
			hb := -1
			if len(profiles) > 0 {
				beats, err := heartbeat.ReadBeats(ctx, path, home, nil)
				if err != nil {
					return out, err
				}
				hb = heartbeat.Trains(beats, profiles[0], heartbeat.DefaultConfig().Spread, from, to)
			}
			spN := -1
			if sp != nil {
				spN = 0
				for _, d := range []string{cfg.Device, cfg.Also} {
					if d == "" {
						continue
					}
					c, err := sp.Count(ctx, path, d, from, to)
					if err != nil {
						return out, err
					}
					spN += c
				}
			}
			hostsN, chainsN, unitMembers := -1, -1, []string(nil)
			if cfg.Hosts != nil && cfg.View == "" {
				if hostsN, unitMembers, err = cfg.Hosts.countLAN(ctx, path, h, cfg.Device, used); err != nil {
					return out, err
				}
			}
			if cfg.Chains != nil && cfg.View == gateway.NAPT {
				if chainsN, unitMembers, err = cfg.Chains.countSequences(ctx, path, cfg.Device, used); err != nil {
					return out, err
				}
			}
			os.Remove(path)
			counted := []string{cfg.Device, cfg.Also}
			if cfg.Steady != nil && cfg.Steady.Eligible {
				counted = append(counted, cfg.Steady.Family...)
			}
			// The host and sequence counters count the type's unit: with
			// its family, where the home's training captures do not tell
			// the type from a look-alike.
			counted = append(counted, unitMembers...)
			pt.Active = append(pt.Active, mostActive(h, cfg.Device, cfg.Also))
			pt.Want = append(pt.Want, unitsOf(h, counted))
			pt.HB = append(pt.HB, hb)
			pt.SP = append(pt.SP, spN)
			pt.Steady = append(pt.Steady, st)
			pt.Hosts = append(pt.Hosts, hostsN)
			pt.Chains = append(pt.Chains, chainsN)
			pt.Combined = append(pt.Combined, Combine(hb, spN, st, hostsN, chainsN))
			pt.Homes++
		}
		out = append(out, pt)
	}
	return out, nil
}

// unitsOf is how many units of the devices named the home holds.
func unitsOf(h *realhome.Home, devices []string) int {
	n := 0
	for _, u := range h.Units {
		if u.Device != "" && slices.Contains(devices, u.Device) {
			n++
		}
	}
	return n
}

// mostActive is the most units of the devices named active at one time.
func mostActive(h *realhome.Home, devices ...string) int {
	first := map[int]int64{}
	last := map[int]int64{}
	for _, p := range h.Packets {
		d := h.Units[p.Unit].Device
		if d == "" || !slices.Contains(devices, d) {
			continue
		}
		if _, ok := first[p.Unit]; !ok {
			first[p.Unit] = p.TsNs
		}
		last[p.Unit] = p.TsNs
	}
	most := 0
	for _, f := range first {
		alive := 0
		for v, g := range first {
			if g <= f && last[v] >= f {
				alive++
			}
		}
		most = max(most, alive)
	}
	return most
}

// LearnEarly learns a device's heartbeats from its captures of split, its
// own packets (by MAC) decoded with the private ranges as the home.
func LearnEarly(ctx context.Context, d realhome.Device, split realhome.Split) ([]heartbeat.Profile, error) {
	var sessions [][]heartbeat.Beat
	for _, f := range split.Pick(d.Files) {
		mac := d.MAC
		bs, err := heartbeat.ReadBeats(ctx, f, features.PrivateHome(), func(p *schemas.Packet) bool { return p.SrcMAC == mac })
		if err != nil {
			return nil, err
		}
		sessions = append(sessions, bs)
	}
	return heartbeat.Learn(d.Name, sessions, heartbeat.DefaultConfig()), nil
}

// SteadyEligibility reads every capture of every device (its own packets,
// by MAC, the device alone) and decides which types steady connections
// count (heartbeat.Eligibility). It looks at no home: the rule is settled
// before anything is counted. What it learns of a type is the service
// (transport and server port) that names it; nothing of it is fit to how
// many units there are.
func SteadyEligibility(ctx context.Context, devs []realhome.Device, cfg heartbeat.SteadyConfig) ([]heartbeat.TypeService, error) {
	cs, err := ReadCaptureServices(ctx, devs, cfg)
	if err != nil {
		return nil, err
	}
	return cs.Eligibility(nil), nil
}

// CaptureServices is, per capture, the steady connections its device
// keeps (heartbeat.SteadyServices), read once so that eligibility can be
// decided again without the captures a home drew on.
type CaptureServices struct {
	cfg    heartbeat.SteadyConfig
	files  []string // in device order
	typ    map[string]string
	byFile map[string]map[heartbeat.Service]int
}

// ReadCaptureServices reads every capture of every device, its own packets
// by MAC.
func ReadCaptureServices(ctx context.Context, devs []realhome.Device, cfg heartbeat.SteadyConfig) (*CaptureServices, error) {
	cs := &CaptureServices{cfg: cfg, typ: map[string]string{}, byFile: map[string]map[heartbeat.Service]int{}}
	for _, d := range devs {
		for _, f := range d.Files {
			mac := d.MAC
			flows, err := heartbeat.ReadFlows(ctx, f, features.PrivateHome(), func(p *schemas.Packet) bool { return p.SrcMAC == mac })
			if err != nil {
				return nil, fmt.Errorf("steady connections of %s: %w", d.Name, err)
			}
			cs.files = append(cs.files, f)
			cs.typ[f] = d.Name
			cs.byFile[f] = heartbeat.SteadyServices(flows, cfg)
		}
	}
	return cs, nil
}

// Eligibility is heartbeat.Eligibility over every capture but those in
// skip.
func (cs *CaptureServices) Eligibility(skip []string) []heartbeat.TypeService {
	per := map[string][]map[heartbeat.Service]int{}
	for _, f := range cs.files {
		t := cs.typ[f]
		if _, ok := per[t]; !ok {
			per[t] = []map[heartbeat.Service]int{}
		}
		if !slices.Contains(skip, f) {
			per[t] = append(per[t], cs.byFile[f])
		}
	}
	return heartbeat.Eligibility(per, cs.cfg)
}

// countLAN counts the units of a device's unit in the LAN capture at path
// of home h, host by host (countUnits), with the model of every capture
// but those in used; it says the unit's members too.
func (hc *HostCounter) countLAN(ctx context.Context, path string, h *realhome.Home, device string, used []string) (int, []string, error) {
	hm := hc.Model(used)
	unit := hm.UnitOf(device)
	if unit < 0 {
		return -1, nil, nil
	}
	all, err := capture.ReadAll(ctx, path, h.HomeConfig())
	if err != nil {
		return 0, nil, fmt.Errorf("hosts of %s: %w", path, err)
	}
	members := hm.Units[unit].Members
	m := typeModel{sig: hm.sigs[unit], ck: hc.ck, model: members, skip: used}
	return countUnits(hostPackets(all), m, h.GatewayMAC), members, nil
}

// countSequences counts the IP ID sequences of a device's unit in the WAN
// capture at path beyond a NAPT, with the model of every capture but those
// in used, or -1 when those captures do not make the unit eligible
// (ChainEligible); it says the unit's members too. hc must be
// NewWANHostCounter's.
func (hc *HostCounter) countSequences(ctx context.Context, path, device string, used []string) (int, []string, error) {
	if ok, _, _ := hc.ChainEligible(evaluate.TypeOf(device), used); !ok || hc.chains == nil {
		return -1, nil, nil
	}
	hm := hc.Model(used)
	unit := hm.UnitOf(device)
	if unit < 0 {
		return -1, nil, nil
	}
	pkts, err := capture.ReadAll(ctx, path, WANHome())
	if err != nil {
		return 0, nil, fmt.Errorf("IP ID sequences of %s: %w", path, err)
	}
	n := 0
	for _, c := range LinkChains(pkts, hc.chainCfg) {
		if hm.Classify(c.Keys) == unit {
			n++
		}
	}
	return n, hm.Units[unit].Members, nil
}
