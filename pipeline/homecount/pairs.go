package homecount

import (
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/heartbeat"
	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/schemas"
)

// Signature is what the hosts of one device model send on a LAN and no
// other model does: the keys (transport, the service's port, IP payload
// length; hostKey) that at least two of its captures show, less those that
// any capture of another type shows (DHCP, IGMP, DNS to the router and the
// like, and what a look-alike of the same platform sends too: WeMo's
// switches, Insight switches and Link share a cloud and most of its
// message sizes). The two folders of an identical pair are one model, so
// their captures learn one signature.
type Signature map[heartbeat.Key]bool

// MinSignatureCaptures is how many captures must show a key for it to be
// in a signature: one capture's key may be that session's chance.
const MinSignatureCaptures = 2

// hostPacket is one packet a LAN host sent, by its MAC.
type hostPacket struct {
	TsNs int64
	Host schemas.MAC
	Key  heartbeat.Key
}

// captureKeys is, per capture, the keys with a transport its device sent
// (the device alone, by its MAC), and which type each capture is of.
type captureKeys struct {
	keys map[string]map[heartbeat.Key]bool
	typ  map[string]string
}

// readCaptureKeys reads every capture's keys: of the packets its device
// sent (by its MAC) that keep takes (nil: all of them). each, when set, is
// handed each capture's packets too.
func readCaptureKeys(ctx context.Context, devs []realhome.Device, keep func(*schemas.Packet) bool, each func(file string, pkts []schemas.Packet)) (captureKeys, error) {
	ck := captureKeys{keys: map[string]map[heartbeat.Key]bool{}, typ: map[string]string{}}
	for _, d := range devs {
		for _, f := range d.Files {
			mac := d.MAC
			pkts, err := heartbeat.ReadAs(ctx, "capture keys", f, features.PrivateHome(),
				func(p *schemas.Packet) bool { return p.SrcMAC == mac && (keep == nil || keep(p)) },
				func(p *schemas.Packet) (schemas.Packet, bool) { return *p, true })
			if err != nil {
				return ck, err
			}
			// Frames without a transport (ARP and the like) tell no
			// type from another.
			var kr hostKeyer
			var hps []hostPacket
			keys := map[heartbeat.Key]bool{}
			for i := range pkts {
				hps = kr.packets(hps[:0], &pkts[i])
				for _, hp := range hps {
					if hp.Key.Transport != 0 {
						keys[hp.Key] = true
					}
				}
			}
			ck.keys[f], ck.typ[f] = keys, d.Name
			if each != nil {
				each(f, pkts)
			}
		}
	}
	return ck, nil
}

// signature learns the model of the types named from every capture but
// those in skip (a home's own sessions).
func (ck captureKeys) signature(model []string, skip []string) Signature {
	return ck.counts(skip).signature(model)
}

// keyCounts is, per device folder, how many of its captures show each key,
// and over all folders: what every signature of one home is learned from,
// counted once for all of them.
type keyCounts struct {
	byFolder map[string]map[heartbeat.Key]int
	total    map[heartbeat.Key]int
}

// counts counts the keys of every capture but those in skip.
func (ck captureKeys) counts(skip []string) keyCounts {
	kc := keyCounts{byFolder: map[string]map[heartbeat.Key]int{}, total: map[heartbeat.Key]int{}}
	for f, keys := range ck.keys {
		if slices.Contains(skip, f) {
			continue
		}
		t := ck.typ[f]
		if kc.byFolder[t] == nil {
			kc.byFolder[t] = map[heartbeat.Key]int{}
		}
		for k := range keys {
			kc.byFolder[t][k]++
			kc.total[k]++
		}
	}
	return kc
}

// signature is the keys that at least MinSignatureCaptures of the model's
// captures (its folders together) show and no capture of another folder.
func (kc keyCounts) signature(model []string) Signature {
	own := map[heartbeat.Key]int{}
	for _, f := range model {
		for k, n := range kc.byFolder[f] {
			own[k] += n
		}
	}
	sig := Signature{}
	for k, n := range own {
		if n >= MinSignatureCaptures && n == kc.total[k] {
			sig[k] = true
		}
	}
	return sig
}

// typeModel is what a home's counter knows of a type (an identical pair's
// two folders are one): its signature, and the key sets of the captures it
// learned from (every capture of every type but the home's own), to say
// which one a host's traffic is nearest.
type typeModel struct {
	sig   Signature
	ck    captureKeys
	model []string
	skip  []string
}

// isModel says whether a host that sent keys is a unit of the model. Two
// things must hold. It sent a key of the signature: something no other type
// was seen to send. And the capture whose keys are nearest its own
// (Jaccard similarity over the keys with a transport) is one of the
// model's. The signature alone counts a platform sibling that happens to
// send one key which, outside this home, only the model's captures show
// (a WeMo switch's firmware sends some of the Insight switches' message
// sizes); the nearest capture alone would count a host of a type seen
// nowhere in training whose traffic is nearest the model's. Together a host
// is counted when its traffic as a whole looks most like the model's and
// it shows something only the model sends.
//
// But a host that gives a DHCP name of the signature (DHCPOption: the
// model's name, which no other type's capture gives) is a unit of the
// model when the model's nearest capture is at least half as near as any
// other's. Two look-alikes of one platform (D-Link's siren and water
// sensor) send nearly the same keys, and when a home leaves two captures
// of one to learn from, a unit's keys can be nearer the other's captures;
// the name it gives itself is one key of some seventy, which Jaccard
// similarity weighs as any other. Half, not any: a name is a chip SDK's
// as often as a model's (an ESP8266 kettle names itself "ESP_..."), and a
// device of a type never learned that keeps its SDK's name, but whose
// traffic is another type's, is not the kettle.
func (m typeModel) isModel(keys map[heartbeat.Key]bool) bool {
	signed, named := false, false
	for k := range keys {
		named = named || m.sig[k] && k.Port >= DHCPOption
		signed = signed || m.sig[k]
	}
	if !signed {
		return false
	}
	own, other := 0.0, 0.0
	for f, ck := range m.ck.keys {
		if slices.Contains(m.skip, f) {
			continue
		}
		j := similarity(keys, ck)
		if slices.Contains(m.model, m.ck.typ[f]) {
			own = max(own, j)
		} else {
			other = max(other, j)
		}
	}
	return own >= other || named && 2*own >= other
}

// similarity is the Jaccard similarity of two key sets.
func similarity(a, b map[heartbeat.Key]bool) float64 {
	inter := 0
	for k := range a {
		if b[k] {
			inter++
		}
	}
	return float64(inter) / float64(max(len(a)+len(b)-inter, 1))
}

// captureSimilarity is the similarity of every two captures' key sets,
// computed once: a home's families compare every capture with every other
// but the home's own.
type captureSimilarity struct {
	files []string // sorted
	sim   [][]float64
}

// withoutNames is the key sets without the DHCP names.
func (ck captureKeys) withoutNames() captureKeys {
	out := captureKeys{keys: map[string]map[heartbeat.Key]bool{}, typ: ck.typ}
	for f, keys := range ck.keys {
		out.keys[f] = map[heartbeat.Key]bool{}
		for k := range keys {
			if k.Port < DHCPOption {
				out.keys[f][k] = true
			}
		}
	}
	return out
}

func (ck captureKeys) similarities() captureSimilarity {
	cs := captureSimilarity{files: slices.Sorted(maps.Keys(ck.keys))}
	cs.sim = make([][]float64, len(cs.files))
	for i, f := range cs.files {
		cs.sim[i] = make([]float64, len(cs.files))
		for j := range i {
			cs.sim[i][j] = similarity(ck.keys[f], ck.keys[cs.files[j]])
			cs.sim[j][i] = cs.sim[i][j]
		}
	}
	return cs
}

// nearest is the capture among those that is nearest capture i, but i
// (the first by file name of those equally near), or -1 when there is none:
// a capture that shares no key with any other (what crosses the gateway of
// a device that talks only on the LAN: no key at all) is near none.
func (cs captureSimilarity) nearest(i int, among []int) int {
	best, nearest := 0.0, -1
	for _, j := range among {
		if j != i && cs.sim[i][j] > best {
			best, nearest = cs.sim[i][j], j
		}
	}
	return nearest
}

// families groups the types whose traffic the key sets do not tell apart,
// from every capture but those in skip: each capture is matched to the
// nearest other one (leave one out), and evaluate.Families groups the
// confusion of those matches by type, at evaluate.FamilyShare of a type's
// captures, as cv groups a model's held-out confusions.
func (ck captureKeys) families(cs captureSimilarity, skip []string) [][]string {
	var labels []string
	var kept []int
	for i, f := range cs.files {
		if slices.Contains(skip, f) {
			continue
		}
		kept = append(kept, i)
		if !slices.Contains(labels, ck.typ[f]) {
			labels = append(labels, ck.typ[f])
		}
	}
	slices.Sort(labels)
	c := evaluate.NewConfusion(labels)
	for _, i := range kept {
		if nearest := cs.nearest(i, kept); nearest >= 0 {
			// Both types are among labels, so Add cannot fail.
			_ = c.Add(slices.Index(labels, ck.typ[cs.files[i]]), slices.Index(labels, ck.typ[cs.files[nearest]]))
		}
	}
	return evaluate.Families(c, evaluate.FamilyShare)
}

// countHosts counts the LAN hosts of a model that send anything between
// fromNs and toNs. On a LAN tap every unit has a MAC of its own, so
// identical units are as many hosts; what has to hold is that each is known
// for what it is (typeModel.isModel), from what it sent before knownNs: the
// end of the capture for a count made afterwards (a unit's signature packets
// may well fall in other windows than the one counted), toNs for a live
// counter that reports when the window ends (it misses a unit in the window
// it appears in when its first packets are DHCP and ARP), or later for one
// that reports each window a while after it ends. The gateway is the home's
// infrastructure, never a unit.
func countHosts(pkts []hostPacket, m typeModel, gateway schemas.MAC, fromNs, toNs, knownNs int64) int {
	known := map[schemas.MAC]bool{}
	for host, keys := range hostKeys(pkts, gateway, knownNs) {
		known[host] = m.isModel(keys)
	}
	hosts := map[schemas.MAC]bool{}
	for _, p := range pkts {
		if p.TsNs >= fromNs && p.TsNs < toNs && known[p.Host] {
			hosts[p.Host] = true
		}
	}
	return len(hosts)
}

// readHome writes the home's LAN capture to path, reads every packet back
// as a tap would, and removes it.
func readHome(ctx context.Context, h *realhome.Home, path string) ([]schemas.Packet, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	err = h.WritePcap(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(path)
	all, err := capture.ReadAll(ctx, path, h.HomeConfig())
	if err != nil {
		return nil, fmt.Errorf("hosts of %s: %w", path, err)
	}
	return all, nil
}

// hostPackets are the packets of pkts a host sent (those with a source
// MAC), the hosts behind a MAC-NAT repeater told apart by address. Read
// whole, a capture is read twice when it holds a repeater: once to find
// the repeaters' MACs, and once more to give everything each sent, from
// its first packet, to the device at its address (readHosts; a live
// counter keeps shadow hosts instead, LiveHome.shadowing). What none
// names, a repeater's own, is left out.
func hostPackets(pkts []schemas.Packet) []hostPacket {
	hosts, rs := readHosts(pkts)
	var out []hostPacket
	var kr hostKeyer
	for i := range pkts {
		out = kr.packetsOf(out, &pkts[i], hosts[i])
	}
	return slices.DeleteFunc(out, func(p hostPacket) bool { return rs.isRelay(p.Host) })
}

// hostKeys is the keys with a transport each host but the gateway sent
// before knownNs.
func hostKeys(pkts []hostPacket, gateway schemas.MAC, knownNs int64) map[schemas.MAC]map[heartbeat.Key]bool {
	sent := map[schemas.MAC]map[heartbeat.Key]bool{}
	for _, p := range pkts {
		if p.TsNs >= knownNs || p.Host == gateway || p.Key.Transport == 0 {
			continue
		}
		if sent[p.Host] == nil {
			sent[p.Host] = map[heartbeat.Key]bool{}
		}
		sent[p.Host][p.Key] = true
	}
	return sent
}

// PairConfig says how an identical pair is measured: homes on the LAN with
// one unit of each folder and Others other devices, in windows of Window
// every Step. Late is how long after a window ends the late live count of
// it is made.
type PairConfig struct {
	A, B     string
	Homes    int
	Others   int
	Duration time.Duration
	Window   time.Duration
	Step     time.Duration
	Late     time.Duration
	Seed     uint64
	Dir      string
}

// PairResult counts the windows where both units were active (each sent a
// packet) and those counted 2: by the whole capture (Right), live when the
// window ends (RightLive) and live Late after it ends (RightLate; the
// capture may end sooner; see countHosts). Said is how many such windows
// got each count (by the whole capture).
//
// Detector and DetectorRight are the detector's own counter (LiveHome,
// DefaultLiveConfig: 20 s late, a new host given a minute) with the host
// model of every capture the home did not draw on: the windows it judged
// where both units were active, and those where its count of the pair's
// unit was the units of it active (2, or more where a look-alike of its
// family is among the home's other devices).
type PairResult struct {
	Windows, Right, RightLive, RightLate int
	Said                                 map[int]int
	Detector, DetectorRight              int
}

// RunPair measures counting an identical pair: per home, the model
// (typeModel) is learned from the captures that the home did not draw on
// (held out: nothing of its units' sessions is used, the pair's or the
// others'), and in every window where both units are active the count is
// the hosts it takes for units of the pair. The captures' keys are those
// the counter read once, whatever the pair.
func (hc *HostCounter) RunPair(ctx context.Context, cfg PairConfig) (PairResult, error) {
	res := PairResult{Said: map[int]int{}}
	ck := hc.ck
	for _, name := range []string{cfg.A, cfg.B} {
		if !slices.ContainsFunc(hc.devs, func(d realhome.Device) bool { return d.Name == name }) {
			return res, fmt.Errorf("pair %s/%s: no device folder %s", cfg.A, cfg.B, name)
		}
	}
	if cfg.Window <= 0 || cfg.Step <= 0 || cfg.Late < 0 {
		return res, fmt.Errorf("pair %s/%s: window %s every %s, late %s: want positive lengths and a delay from 0", cfg.A, cfg.B, cfg.Window, cfg.Step, cfg.Late)
	}
	for k := range cfg.Homes {
		seed := cfg.Seed + uint64(k)
		h, err := realhome.Assemble(ctx, hc.devs, realhome.Config{Devices: 2 + cfg.Others, Units: map[string]int{cfg.A: 1, cfg.B: 1},
			Duration: cfg.Duration, Sessions: realhome.AllSessions, Seed: seed})
		if err != nil {
			return res, fmt.Errorf("pair %s/%s: %w", cfg.A, cfg.B, err)
		}
		var used []string
		var need []int
		pairUnits := map[schemas.MAC]bool{}
		for i, u := range h.Units {
			used = append(used, u.Session)
			if u.Device == cfg.A || u.Device == cfg.B {
				pairUnits[u.MAC] = true
				need = append(need, i)
			}
		}
		model := []string{cfg.A, cfg.B}
		m := typeModel{sig: ck.signature(model, used), ck: ck, model: model, skip: used}
		all, err := readHome(ctx, h, filepath.Join(cfg.Dir, fmt.Sprintf("pair-%s-%d.pcap", cfg.A, k)))
		if err != nil {
			return res, fmt.Errorf("pair %s/%s: %w", cfg.A, cfg.B, err)
		}
		pkts := hostPackets(all)
		hm := hc.Model(used)
		windows, right, err := liveRight(hm, hm.UnitOf(cfg.A), h, all, need, DefaultLiveConfig())
		if err != nil {
			return res, fmt.Errorf("pair %s/%s: live: %w", cfg.A, cfg.B, err)
		}
		res.Detector += windows
		res.DetectorRight += right
		// Active: the unit sent any frame in the window (the truth, from
		// the home's own frames, not from what the counter reads).
		sent := map[schemas.MAC][]int64{}
		for _, p := range h.Packets {
			if len(p.Data) < 12 {
				continue
			}
			src := schemas.MAC(p.Data[6:12])
			if pairUnits[src] {
				sent[src] = append(sent[src], p.TsNs)
			}
		}
		start, end := h.Start.UnixNano(), h.Start.Add(h.Duration).UnixNano()
		for from := start; from+int64(cfg.Window) <= end; from += int64(cfg.Step) {
			to := from + int64(cfg.Window)
			active := 0
			for _, ts := range sent {
				if slices.ContainsFunc(ts, func(t int64) bool { return t >= from && t < to }) {
					active++
				}
			}
			if active < 2 {
				continue
			}
			n := countHosts(pkts, m, h.GatewayMAC, from, to, math.MaxInt64)
			res.Windows++
			res.Said[n]++
			if n == 2 {
				res.Right++
			}
			if countHosts(pkts, m, h.GatewayMAC, from, to, to) == 2 {
				res.RightLive++
			}
			if countHosts(pkts, m, h.GatewayMAC, from, to, to+int64(cfg.Late)) == 2 {
				res.RightLate++
			}
		}
	}
	return res, nil
}
