package homecount

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/schemas"
)

// HostsConfig says how units of one type are counted on the LAN, host by
// host: per n in Units, Homes homes with n units of Type (a hardware type:
// the units of an identical pair come from both its folders) from distinct
// captures and Others other devices, each Duration long.
type HostsConfig struct {
	Type     string
	Units    []int
	Homes    int
	Others   int
	Duration time.Duration
	Seed     uint64
	// Dir holds the assembled captures while they are counted.
	Dir string
	// Live is how the live count's windows are made; zero: DefaultLiveConfig.
	Live LiveConfig
	// IPv6 makes the homes IPv6-only (realhome.Config.IPv6); the model
	// still learns from the IPv4 captures.
	IPv6 bool
	// SLAAC gives the IPv6-only homes' hosts addresses that name their MACs
	// (realhome.Config.SLAAC).
	SLAAC bool
	// IDOffsets shifts each unit's IPv4 IDs (realhome.Config.IDOffsets).
	IDOffsets bool
	// Relay puts every unit of the homes behind one MAC-NAT repeater
	// (realhome.Config.Relay).
	Relay bool
	// NoDHCP leaves the units' DHCP out (realhome.Config.NoDHCP): homes
	// whose devices joined before the tap started.
	NoDHCP bool
}

// HostsPoint is the count of one n: per home, the hosts counted, the
// units the home holds of what was counted (n, and any unit of its family
// drawn among the other devices), and what was counted:
// the type's folders, or the family the home's training captures could not
// tell apart (HostCounter).
//
// Windows and LiveRight are the live count (LiveHome, the detector's): the
// windows of the homes that held a packet, and those where the count of
// the type's unit was the units of it that sent in the window.
type HostsPoint struct {
	N            int
	Count, Units []int
	Counted      [][]string
	Windows      int
	LiveRight    int
}

// HostCounter counts the units of a type on a LAN, where each unit is a
// host (a MAC) of its own: a host is a unit when its traffic is the type's
// (typeModel.isModel), learned per home from every capture the home did not
// draw on, so no unit counted is one the counter learned from. A type whose
// captures those key sets take for another's (captureKeys.families) is
// counted with its family: which of two look-alikes a unit is cannot be
// told, but that it is one of them can. It reads every capture's keys once
// and serves every type.
type HostCounter struct {
	devs []realhome.Device
	ck   captureKeys
	sim  captureSimilarity
	// traffic is sim without the DHCP names: families are of what the
	// devices send (newHostCounter).
	traffic captureSimilarity
	// chains is, for a counter of what crosses the gateway
	// (NewWANHostCounter), each capture's IP ID sequences.
	chains   map[string]int
	chainCfg ChainConfig
}

// NewHostCounter reads the keys of every capture of devs (the device
// alone, by its MAC).
func NewHostCounter(ctx context.Context, devs []realhome.Device) (*HostCounter, error) {
	ck, err := readCaptureKeys(ctx, devs, nil, nil)
	if err != nil {
		return nil, err
	}
	return newHostCounter(devs, ck, nil, ChainConfig{}), nil
}

// newHostCounter is the counter of the captures' keys ck. Its families are
// learned without the DHCP names (traffic): a name tells look-alikes
// apart only where the host gives it, once a lease, and a detector that
// starts on a home whose devices have been up for hours sees no name until
// their renewals, nor does an IPv6-only home. Look-alikes split by their
// names would then be counted by a coin flip between them; as one family
// they are counted right, named or not.
func newHostCounter(devs []realhome.Device, ck captureKeys, chains map[string]int, cfg ChainConfig) *HostCounter {
	return &HostCounter{devs: devs, ck: ck, sim: ck.similarities(), traffic: ck.withoutNames().similarities(), chains: chains, chainCfg: cfg}
}

// Types are the hardware types of the device folders (evaluate.TypeOf:
// both folders of an identical pair are one), in folder order.
func (hc *HostCounter) Types() []string {
	var types []string
	for _, d := range hc.devs {
		if t := evaluate.TypeOf(d.Name); !slices.Contains(types, t) {
			types = append(types, t)
		}
	}
	return types
}

// Folders are the device folders of a hardware type, and the captures they
// hold together.
func (hc *HostCounter) Folders(typ string) (names []string, captures int) {
	for _, d := range hc.devs {
		if evaluate.TypeOf(d.Name) == typ {
			names = append(names, d.Name)
			captures += len(d.Files)
		}
	}
	return names, captures
}

// spread deals n units over a type's folders, each to the folder with the
// most captures left, so both folders of a pair lend units.
func (hc *HostCounter) spread(folders []string, n int) map[string]int {
	left := map[string]int{}
	for _, d := range hc.devs {
		if slices.Contains(folders, d.Name) {
			left[d.Name] = len(d.Files)
		}
	}
	units := map[string]int{}
	for range n {
		best := folders[0]
		for _, f := range folders[1:] {
			if left[f] > left[best] {
				best = f
			}
		}
		units[best]++
		left[best]--
	}
	return units
}

// Run counts the units of cfg.Type (a hardware type, Types) in cfg.Homes
// homes per n. Every n must leave MinSignatureCaptures of the type's
// captures out of the home to learn its signature from.
func (hc *HostCounter) Run(ctx context.Context, cfg HostsConfig) ([]HostsPoint, error) {
	var out []HostsPoint
	err := hc.eachHome(ctx, cfg, "count hosts", func(n int) { out = append(out, HostsPoint{N: n}) }, func(h *heldOutHome) error {
		pt := &out[len(out)-1]
		// The type's unit: its folders, or the family the home's training
		// captures do not tell apart.
		hm := hc.Model(h.used)
		unit := hm.UnitOf(h.hardware[0])
		model := hm.Units[unit].Members
		m := typeModel{sig: hm.sigs[unit], ck: hc.ck, model: model, skip: h.used}
		all, err := readHome(ctx, h.Home, filepath.Join(cfg.Dir, h.name+".pcap"))
		if err != nil {
			return err
		}
		pt.Count = append(pt.Count, countUnits(hostPackets(all), m, h.GatewayMAC))
		windows, right, err := liveRight(hm, unit, h.Home, all, nil, cfg.Live)
		if err != nil {
			return fmt.Errorf("live: %w", err)
		}
		pt.Windows += windows
		pt.LiveRight += right
		pt.Units = append(pt.Units, unitsOf(h.Home, model))
		pt.Counted = append(pt.Counted, model)
		return nil
	})
	return out, err
}

// heldOutHome is one home eachHome assembled: n units of the type from
// distinct captures, and the sessions it drew on (any type's), which the
// count must not learn from.
type heldOutHome struct {
	*realhome.Home
	hardware []string // the type's device folders
	used     []string
	seed     uint64
	name     string // for its files: what, type, n and home
}

// eachHome assembles cfg.Homes homes per n of cfg.Units, each with n units
// of cfg.Type and cfg.Others other devices, and calls point at each n's
// start and home for each home. Every n must leave MinSignatureCaptures of
// the type's captures out of the home to learn from. Errors are wrapped
// with what (the count's name), the type and n.
func (hc *HostCounter) eachHome(ctx context.Context, cfg HostsConfig, what string, point func(n int), home func(*heldOutHome) error) error {
	hardware, captures := hc.Folders(cfg.Type)
	if len(hardware) == 0 {
		return fmt.Errorf("%s: no device folder of type %s", what, cfg.Type)
	}
	for _, n := range cfg.Units {
		if n < 1 || n+MinSignatureCaptures > captures {
			return fmt.Errorf("%s of %s: n = %d: the type has %d captures, and %d must stay out of the home to learn from", what, cfg.Type, n, captures, MinSignatureCaptures)
		}
		point(n)
		for k := range cfg.Homes {
			if err := ctx.Err(); err != nil {
				return err
			}
			seed := cfg.Seed + uint64(1000*n+k)
			units := hc.spread(hardware, n)
			h, err := realhome.Assemble(ctx, hc.devs, realhome.Config{Devices: len(units) + cfg.Others, Units: units,
				Duration: cfg.Duration, Sessions: realhome.AllSessions, Seed: seed, IPv6: cfg.IPv6, SLAAC: cfg.SLAAC, IDOffsets: cfg.IDOffsets, Relay: cfg.Relay, NoDHCP: cfg.NoDHCP})
			if err != nil {
				return fmt.Errorf("%s of %s, n = %d: %w", what, cfg.Type, n, err)
			}
			ho := &heldOutHome{Home: h, hardware: hardware, seed: seed,
				name: strings.ReplaceAll(fmt.Sprintf("%s-%s-n%d-%d", what, cfg.Type, n, k), " ", "-")}
			for _, u := range h.Units {
				ho.used = append(ho.used, u.Session)
			}
			if err := home(ho); err != nil {
				return fmt.Errorf("%s of %s, n = %d: %w", what, cfg.Type, n, err)
			}
		}
	}
	return nil
}

// countUnits is how many hosts of the home, the gateway excepted, are
// units of the model by everything they sent.
func countUnits(pkts []hostPacket, m typeModel, gateway schemas.MAC) int {
	n := 0
	for _, keys := range hostKeys(pkts, gateway, math.MaxInt64) {
		if m.isModel(keys) {
			n++
		}
	}
	return n
}

// Nearest is the leave-one-out result of naming every capture by the type
// of the capture whose keys are nearest its own (the host rule without the
// signature), over hardware types: how far the keys alone tell types apart.
type Nearest struct {
	Captures, Right int
	// Misses counts the captures named wrong, by "truth -> named".
	Misses map[string]int
}

// Nearest names every capture by its nearest other (ties to the first by
// file name).
func (hc *HostCounter) Nearest() Nearest {
	res := Nearest{Misses: map[string]int{}}
	cs := hc.sim
	all := make([]int, len(cs.files))
	for i := range all {
		all[i] = i
	}
	for i, f := range cs.files {
		nearest := cs.nearest(i, all)
		if nearest < 0 {
			continue
		}
		res.Captures++
		truth, named := evaluate.TypeOf(hc.ck.typ[f]), evaluate.TypeOf(hc.ck.typ[cs.files[nearest]])
		if truth == named {
			res.Right++
		} else {
			res.Misses[truth+" -> "+named]++
		}
	}
	return res
}

// Unseen is what the host rule makes of devices of a type it never
// learned: every capture of each type, with all of that type's captures
// left out of what the counter learns from, is a host to name.
type Unseen struct {
	Captures int
	// Counted names the captures counted as a unit of another type, by
	// "truth -> counted as".
	Counted map[string]int
}

// Totals are the captures counted as another type's unit, and those of
// them counted as another vendor's: types of one vendor share a name's
// prefix (evaluate.FamilyName), two that share none are of two vendors,
// but where maker says otherwise.
func (u Unseen) Totals() (counted, acrossVendors int) {
	for k, n := range u.Counted {
		counted += n
		if truth, named, _ := strings.Cut(k, " -> "); strings.Contains(evaluate.FamilyName([]string{maker(truth), maker(named)}), "/") {
			acrossVendors += n
		}
	}
	return counted, acrossVendors
}

// maker is a type's vendor where IoT Sentinel's name of it does not say
// it (Smarter makes both the coffee machine and the kettle), or the name.
func maker(typ string) string {
	switch typ {
	case "SmarterCoffee", "iKettle2":
		return "Smarter"
	}
	return typ
}

// Unseen asks, for every capture, whether the host rule (typeModel.isModel)
// would count it as a unit of the type its keys are nearest, with its own
// type left out of training: a host that sends a key only that type sends
// and is nearest its captures is a false unit; any other is counted as
// nothing.
func (hc *HostCounter) Unseen() Unseen {
	res := Unseen{Counted: map[string]int{}}
	cs := hc.sim
	for _, typ := range hc.Types() {
		folders, _ := hc.Folders(typ)
		var kept, left []int
		var skip []string
		for i, f := range cs.files {
			if slices.Contains(folders, hc.ck.typ[f]) {
				left = append(left, i)
				skip = append(skip, f)
			} else {
				kept = append(kept, i)
			}
		}
		// One model per type a capture is nearest: its signature depends
		// on that type and on what is left out, not on the capture.
		models := map[string]typeModel{}
		counts := hc.ck.counts(skip)
		for _, i := range left {
			res.Captures++
			nearest := cs.nearest(i, kept)
			if nearest < 0 {
				continue
			}
			named := evaluate.TypeOf(hc.ck.typ[cs.files[nearest]])
			m, ok := models[named]
			if !ok {
				model, _ := hc.Folders(named)
				m = typeModel{sig: counts.signature(model), ck: hc.ck, model: model, skip: skip}
				models[named] = m
			}
			if m.isModel(hc.ck.keys[cs.files[i]]) {
				res.Counted[typ+" -> "+named]++
			}
		}
	}
	return res
}

// liveRight plays a home's packets through the live counter (LiveHome,
// the gateway not named: the counter finds it) with the host model hm,
// and says how many windows it judged and in how many the count of the
// unit was the home's units of its folders that sent a frame in the
// window (the truth, from the home's own frames); with need (units of the
// home), only in the windows where each of them sent a frame.
func liveRight(hm *HostModel, unit int, h *realhome.Home, pkts []schemas.Packet, need []int, cfg LiveConfig) (windows, right int, err error) {
	members := hm.Units[unit].Members
	var sent []unitFrame
	for _, p := range h.Packets {
		if p.Unit >= 0 && p.Unit < len(h.Units) && slices.Contains(members, h.Units[p.Unit].Device) &&
			len(p.Data) >= 12 && schemas.MAC(p.Data[6:12]) == h.FrameMAC(p.Unit) {
			sent = append(sent, unitFrame{p.TsNs, p.Unit})
		}
	}
	return judgeLive(hm, unit, pkts, sent, need, cfg)
}

// unitFrame is a frame of a home's unit: when, and which unit.
type unitFrame struct {
	TsNs int64
	Unit int
}

// judgeLive plays pkts through a LiveHome with hm and says how many
// windows it judged and in how many its count of the unit was the units
// that sent a frame of sent (ascending) in the window. With need, only
// the windows where every unit of need sent a frame are judged.
func judgeLive(hm *HostModel, unit int, pkts []schemas.Packet, sent []unitFrame, need []int, cfg LiveConfig) (windows, right int, err error) {
	if cfg == (LiveConfig{}) {
		cfg = DefaultLiveConfig()
	}
	lh, err := NewLiveHome(hm, cfg)
	if err != nil {
		return 0, 0, err
	}
	judge := func(ws []schemas.SeenWindow) {
		for _, w := range ws {
			active := map[int]bool{}
			for _, f := range sent {
				if f.TsNs >= w.StartNs && f.TsNs < w.EndNs {
					active[f.Unit] = true
				}
			}
			if slices.ContainsFunc(need, func(u int) bool { return !active[u] }) {
				continue
			}
			windows++
			if countOf(w, hm.Units[unit].Name) == len(active) {
				right++
			}
		}
	}
	for i := range pkts {
		judge(lh.Add(&pkts[i]))
	}
	judge(lh.Flush())
	return windows, right, nil
}
