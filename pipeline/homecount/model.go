package homecount

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/homemole/homemole/internal/atomicfile"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/heartbeat"
)

// HostModelVersion is the version of a host model file; others are refused.
// Version 3 adds the keys of DHCP clients' fingerprints (DHCPOption): a
// version 2 model knows none, so a host's would only dilute its
// similarity to every capture. Version 2 keyed a server's answers by the
// port it serves (ServedPort); version 1 by the client's port.
const HostModelVersion = 3

// maxHostModelBytes bounds what LoadHostModel reads: the IoT Sentinel
// model is under 1 MB.
const maxHostModelBytes = 64 << 20

// HostModel is what the LAN host counter knows, saved so that a detector
// counts with it: the counting units (a hardware type, or a family of
// look-alikes its captures cannot tell apart) with their signatures, and
// the key set of every capture it learned from, to say which unit a host's
// traffic is nearest. It is the per-home model of HostCounter.Run, learned
// from every capture instead of those a home did not draw on.
//
// A model learned from what crosses the gateway (NewWANHostCounter, `hosts
// learn --wan`) names Chains, the rule that links a WAN tap's packets into
// IP ID sequences: its hosts are those sequences, and only its units whose
// captures form one sequence each (OneSequence) are counted.
type HostModel struct {
	Version  int           `json:"version"`
	Units    []HostUnit    `json:"units"`
	Captures []HostCapture `json:"captures"`
	Chains   *ChainConfig  `json:"chains,omitempty"`

	// Prepared by index: signatures as sets, every key's captures (the
	// captures that show it), and each capture's size.
	sigs     []Signature
	postings map[heartbeat.Key][]int32
	sizes    []int
}

// HostUnit is one counting unit: a hardware type, or a family.
type HostUnit struct {
	// Name is the type, or the family's (evaluate.FamilyName).
	Name string `json:"name"`
	// Members are the device folders counted as the unit.
	Members []string `json:"members"`
	// Signature is the keys only the unit's captures show (at least two of
	// them); a unit without one is never counted.
	Signature []KeyText `json:"signature"`
	// OneSequence, in a model with Chains, says 90 % of the unit's captures
	// form one IP ID sequence each (HostCounter.ChainEligible): a unit whose
	// stack numbers each connection apart would be counted once a
	// connection, and is not counted.
	OneSequence bool `json:"one_sequence,omitempty"`
}

// HostCapture is one training capture's key set, and its unit.
type HostCapture struct {
	Unit int       `json:"unit"`
	Keys []KeyText `json:"keys"`
}

// KeyText is a key as a model file writes it: "transport/port/length"
// ("17/69/55": UDP to port 69, an IP payload of 55 bytes; port -1: none;
// "6/@80/260": TCP answered from port 80, which the host serves; see
// hostKey; "17/dhcp12/40213": a DHCP client's host name of that folded
// hash; see DHCPOption).
type KeyText heartbeat.Key

// MarshalText writes transport/port/length.
func (k KeyText) MarshalText() ([]byte, error) {
	if k.Port >= DHCPOption {
		return fmt.Appendf(nil, "%d/dhcp%d/%d", k.Transport, k.Port-DHCPOption, k.IPLen), nil
	}
	if k.Port >= ServedPort {
		return fmt.Appendf(nil, "%d/@%d/%d", k.Transport, k.Port-ServedPort, k.IPLen), nil
	}
	return fmt.Appendf(nil, "%d/%d/%d", k.Transport, k.Port, k.IPLen), nil
}

// UnmarshalText reads transport/port/length.
func (k *KeyText) UnmarshalText(b []byte) error {
	parts := strings.Split(string(b), "/")
	if len(parts) != 3 {
		return fmt.Errorf("key %q: want transport/port/length", b)
	}
	port, served := strings.CutPrefix(parts[1], "@")
	port, dhcp := strings.CutPrefix(port, "dhcp")
	t, err1 := strconv.ParseUint(parts[0], 10, 8)
	p, err2 := strconv.ParseInt(port, 10, 32)
	l, err3 := strconv.ParseUint(parts[2], 10, 16)
	if err := errors.Join(err1, err2, err3); err != nil || t == 0 || p < -1 || p > 65535 || ((served || dhcp) && p < 0) || (dhcp && (served || p > 255)) {
		return fmt.Errorf("key %q: want a transport 1-255, a port -1-65535 (or @0-@65535, served; or dhcp0-dhcp255, a DHCP option) and a length 0-65535", b)
	}
	switch {
	case served:
		p += ServedPort
	case dhcp:
		p += DHCPOption
	}
	*k = KeyText{Transport: uint8(t), Port: int32(p), IPLen: uint16(l)}
	return nil
}

func keyTexts(set map[heartbeat.Key]bool) []KeyText {
	out := make([]KeyText, 0, len(set))
	for k := range set {
		out = append(out, KeyText(k))
	}
	slices.SortFunc(out, func(a, b KeyText) int {
		if a.Transport != b.Transport {
			return int(a.Transport) - int(b.Transport)
		}
		if a.Port != b.Port {
			return int(a.Port - b.Port)
		}
		return int(a.IPLen) - int(b.IPLen)
	})
	return out
}

// Model is the host model learned from every capture but those in skip
// (a home's own sessions, when the model is measured on it). Its units are
// the folders joined by hardware type (an identical pair's two folders)
// and by family of look-alikes (captureKeys.families, of the key sets
// without the DHCP names: newHostCounter), each joined set
// one unit, in the order of its first folder: every folder is in exactly
// one unit, even where a family holds one folder of a pair and not the
// other.
func (hc *HostCounter) Model(skip []string) *HostModel {
	var folders []string
	for _, d := range hc.devs {
		folders = append(folders, d.Name)
	}
	// Union-find over the folders.
	parent := make([]int, len(folders))
	for i := range parent {
		parent[i] = i
	}
	var root func(int) int
	root = func(i int) int {
		if parent[i] != i {
			parent[i] = root(parent[i])
		}
		return parent[i]
	}
	join := func(names []string) {
		first := -1
		for _, n := range names {
			if i := slices.Index(folders, n); i >= 0 {
				if first < 0 {
					first = i
				} else if a, b := root(first), root(i); a != b {
					parent[max(a, b)] = min(a, b)
				}
			}
		}
	}
	for _, typ := range hc.Types() {
		members, _ := hc.Folders(typ)
		join(members)
	}
	for _, fam := range hc.ck.families(hc.traffic, skip) {
		join(fam)
	}
	m := &HostModel{Version: HostModelVersion}
	counts := hc.ck.counts(skip)
	unitOf := map[string]int{}
	for i, f := range folders {
		if _, done := unitOf[f]; done {
			continue
		}
		var members []string
		for j, g := range folders {
			if root(j) == root(i) {
				members = append(members, g)
				unitOf[g] = len(m.Units)
			}
		}
		name := evaluate.TypeOf(f)
		if slices.ContainsFunc(members, func(g string) bool { return evaluate.TypeOf(g) != name }) {
			name = evaluate.FamilyName(members)
		}
		unit := HostUnit{Name: name, Members: members, Signature: keyTexts(counts.signature(members))}
		if hc.chains != nil {
			unit.OneSequence = true
			for _, g := range members {
				ok, _, _ := hc.ChainEligible(evaluate.TypeOf(g), skip)
				unit.OneSequence = unit.OneSequence && ok
			}
		}
		m.Units = append(m.Units, unit)
	}
	if hc.chains != nil {
		cfg := hc.chainCfg
		m.Chains = &cfg
	}
	for _, f := range hc.sim.files {
		if !slices.Contains(skip, f) {
			m.Captures = append(m.Captures, HostCapture{Unit: unitOf[hc.ck.typ[f]], Keys: keyTexts(hc.ck.keys[f])})
		}
	}
	m.index()
	return m
}

// UnitOf is the unit that counts a device folder, or -1.
func (m *HostModel) UnitOf(folder string) int {
	return slices.IndexFunc(m.Units, func(u HostUnit) bool { return slices.Contains(u.Members, folder) })
}

// index prepares the sets Classify reads.
func (m *HostModel) index() {
	m.sigs = make([]Signature, len(m.Units))
	for i, u := range m.Units {
		m.sigs[i] = Signature{}
		for _, k := range u.Signature {
			m.sigs[i][heartbeat.Key(k)] = true
		}
	}
	m.postings = map[heartbeat.Key][]int32{}
	m.sizes = make([]int, len(m.Captures))
	for i, c := range m.Captures {
		set := map[heartbeat.Key]bool{}
		for _, k := range c.Keys {
			set[heartbeat.Key(k)] = true
		}
		for k := range set {
			m.postings[k] = append(m.postings[k], int32(i))
		}
		m.sizes[i] = len(set)
	}
}

// Classify is the unit a host that sent keys is counted as, or -1: the
// unit whose signature holds a DHCP name the host gave, when that unit's
// nearest capture is at least half as near as the nearest of all, or else
// the unit of the capture nearest its keys (Jaccard), when it sent a key
// of that unit's signature. It is typeModel.isModel asked of every unit at
// once: a host that gave two units' names (renamed, or hostile) is judged
// by the first of them, and where two units' captures are equally near,
// the first of them whose signature the host sent.
func (m *HostModel) Classify(keys map[heartbeat.Key]bool) int {
	if len(keys) == 0 {
		return -1
	}
	// Jaccard similarity with every capture from the keys they share,
	// counted through the captures each of the host's keys is in: a host's
	// cost is its keys and the captures it shares them with, not its keys
	// times every capture, so a host of thousands of keys no capture shows
	// (a hostile home's) costs as little as it tells.
	inter := make([]int, len(m.Captures))
	// Only a key some capture shows can be a signature's.
	var shown []heartbeat.Key
	for k := range keys {
		if cs := m.postings[k]; len(cs) > 0 {
			shown = append(shown, k)
			for _, c := range cs {
				inter[c]++
			}
		}
	}
	if len(shown) == 0 {
		return -1
	}
	// The first unit whose signature holds a name the host gave: a host
	// gives one name, or none, of the keys it shows.
	named := -1
	for _, k := range shown {
		if k.Port < DHCPOption {
			continue
		}
		for u, sig := range m.sigs {
			if sig[k] && (named < 0 || u < named) {
				named = u
			}
		}
	}
	best := make([]float64, len(m.Units))
	for i, c := range m.Captures {
		n := inter[i]
		best[c.Unit] = max(best[c.Unit], float64(n)/float64(max(len(keys)+m.sizes[i]-n, 1)))
	}
	top := slices.Max(best)
	if named >= 0 && 2*best[named] >= top {
		return named
	}
	for u, b := range best {
		if b != top {
			continue
		}
		for _, k := range shown {
			if m.sigs[u][k] {
				return u
			}
		}
	}
	return -1
}

// Validate says what is wrong with a model read from a file.
func (m *HostModel) Validate() error {
	if m.Version != HostModelVersion {
		return fmt.Errorf("host model version %d, this build reads version %d: learn it again with `homemole hosts learn`", m.Version, HostModelVersion)
	}
	if len(m.Units) == 0 || len(m.Captures) == 0 {
		return fmt.Errorf("host model has %d units and %d captures: want both", len(m.Units), len(m.Captures))
	}
	for i, u := range m.Units {
		if u.Name == "" || len(u.Members) == 0 {
			return fmt.Errorf("host model unit %d: want a name and its device folders", i)
		}
	}
	for i, c := range m.Captures {
		if c.Unit < 0 || c.Unit >= len(m.Units) {
			return fmt.Errorf("host model capture %d: unit %d of %d", i, c.Unit, len(m.Units))
		}
	}
	if c := m.Chains; c != nil && (c.MaxStep < 1 || c.MaxIdle <= 0 || c.MinPackets < 1) {
		return fmt.Errorf("host model chains: step up to %d, idle %s, %d packets a host: want each above 0", c.MaxStep, c.MaxIdle, c.MinPackets)
	}
	return nil
}

// Write saves the model as JSON.
func (m *HostModel) Write(w io.Writer) error {
	enc := json.NewEncoder(w)
	if err := enc.Encode(m); err != nil {
		return fmt.Errorf("write host model: %w", err)
	}
	return nil
}

// SaveFile writes the model to path through a temporary file, so a crash
// never leaves half a model under the name.
func (m *HostModel) SaveFile(path string) error {
	return atomicfile.Write(path, m.Write)
}

// ReadHostModel reads and checks a model that Write wrote.
func ReadHostModel(r io.Reader) (*HostModel, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxHostModelBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read host model: %w", err)
	}
	if len(data) > maxHostModelBytes {
		return nil, fmt.Errorf("host model over %d MiB: not one `homemole hosts learn` writes", maxHostModelBytes>>20)
	}
	m := &HostModel{}
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("decode host model: %w (`homemole hosts learn` writes one)", err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	m.index()
	return m, nil
}

// LoadHostModel reads a model file.
func LoadHostModel(path string) (*HostModel, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w (learn one with `homemole hosts learn --from-dir DIR --out FILE`)", err)
	}
	defer f.Close()
	m, err := ReadHostModel(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}
