package homecount

import (
	"container/list"
	"context"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/heartbeat"
	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/schemas"
)

// ChainConfig says how the IPv4 packets beyond a NAPT are linked, per
// source address, into their hosts' IP ID sequences (Bellovin, "A technique for counting
// NATted hosts", IMW 2002). A NAPT rewrites a packet's address and port but
// keeps its IP ID, and many embedded stacks number every packet they send
// from one counter: each such host is then one rising sequence of IDs,
// whatever its connections, so the hosts behind one address can be told
// apart the way a LAN tells them apart by MAC. A stack that numbers each
// connection apart (Linux, for TCP) is one sequence per connection; a type
// is counted this way only where its own captures show one sequence each
// (HostCounter.ChainEligible).
type ChainConfig struct {
	// MaxStep: a packet continues the sequence whose last ID is the least
	// below its own, by at most MaxStep (modulo 2^16): a host's LAN
	// packets, which the observer does not see, take IDs in between.
	MaxStep uint16 `json:"max_step"`
	// MaxIdle: a sequence whose last packet is older than that is over.
	MaxIdle time.Duration `json:"max_idle"`
	// MinPackets: a sequence of fewer packets is no host.
	MinPackets int `json:"min_packets"`
}

// DefaultChains is the rule as fixed before any home was counted: steps
// of up to 64 IDs (one in a thousand of the ID space, so a new host's
// first packet rarely lands just above another's sequence), a minute's
// silence ends a sequence, and three packets make a host.
func DefaultChains() ChainConfig {
	return ChainConfig{MaxStep: 64, MaxIdle: time.Minute, MinPackets: 3}
}

// Chain is one IP ID sequence: its packets, and the keys they are
// (hostKey), which say what the host is as a LAN host's keys do.
type Chain struct {
	Packets     int
	First, Last int64
	Keys        map[heartbeat.Key]bool
	served      servedPorts
}

// LinkChains links packets, in time order (a packet out of order joins as
// if it came last), into IP ID sequences, each of one source address: the
// home's own behind a NAPT, and each server's, whose sequences share no key
// with any device's and are never a unit. IPv6 packets (no IP ID) and IDs
// of zero (stacks that send every packet with ID 0 and DF set) tell nothing
// and are left out. Sequences of fewer than cfg.MinPackets are dropped.
func LinkChains(pkts []schemas.Packet, cfg ChainConfig) []*Chain {
	l := newChainLinker(cfg, math.MaxInt)
	byID := map[uint32]*Chain{}
	var order []uint32
	for i := range pkts {
		p := &pkts[i]
		id, ok := l.link(p)
		if !ok {
			continue
		}
		c := byID[id]
		if c == nil {
			c = &Chain{First: p.TsNs, Last: p.TsNs, Keys: map[heartbeat.Key]bool{}}
			byID[id] = c
			order = append(order, id)
		}
		c.Packets++
		// A batch's times are the sender's word and need not rise.
		c.First, c.Last = min(c.First, p.TsNs), max(c.Last, p.TsNs)
		keys, n := packetKeys(p, &c.served)
		for _, k := range keys[:n] {
			c.Keys[k] = true
		}
	}
	var out []*Chain
	for _, id := range order {
		if c := byID[id]; c.Packets >= cfg.MinPackets {
			out = append(out, c)
		}
	}
	return out
}

// chainLinker links packets into IP ID sequences one at a time, per source
// address, keeping at most max sequences open (the least recently
// continued is closed first): LinkChains over a capture, and a live WAN
// tap's counter (LiveHome), whose table it is part of. A packet is
// compared only with the sequences whose last ID is at most MaxStep below
// its own: they are filed by source and last ID over MaxStep, so a hostile
// home that opens a sequence with every packet costs two small buckets a
// packet, not every open sequence.
type chainLinker struct {
	cfg     ChainConfig
	max     int
	buckets map[chainBucket][]*liveChain
	lru     *list.List // of *liveChain, the least recently continued first
	next    uint32     // the next sequence's id
}

// chainBucket files a sequence by its source and last ID.
type chainBucket struct {
	src netip.Addr
	at  uint16 // last ID / MaxStep
}

// liveChain is a sequence still open: its id, source, last ID and when.
type liveChain struct {
	id     uint32
	src    netip.Addr
	lastID uint16
	last   int64
	elem   *list.Element
}

func newChainLinker(cfg ChainConfig, max int) *chainLinker {
	return &chainLinker{cfg: cfg, max: max, buckets: map[chainBucket][]*liveChain{}, lru: list.New()}
}

func (l *chainLinker) bucket(src netip.Addr, id uint16) chainBucket {
	return chainBucket{src: src, at: id / l.cfg.MaxStep}
}

// open is how many sequences are open.
func (l *chainLinker) open() int { return l.lru.Len() }

// link says which sequence p continues, or starts; false for a packet that
// tells nothing (no IPv4 ID, or no transport).
func (l *chainLinker) link(p *schemas.Packet) (uint32, bool) {
	if !p.SrcIP.Is4() || p.IPID == 0 || p.Transport == 0 {
		return 0, false
	}
	src, idle := p.SrcIP, int64(l.cfg.MaxIdle)
	var best *liveChain
	var bestStep uint16
	var over []*liveChain
	first, last := l.bucket(src, p.IPID-l.cfg.MaxStep), l.bucket(src, p.IPID-1)
	for i, b := range [2]chainBucket{first, last} {
		if i == 1 && b == first {
			break
		}
		for _, c := range l.buckets[b] {
			if p.TsNs-c.last > idle {
				over = append(over, c)
				continue
			}
			// Of two equally near, the older sequence.
			if step := p.IPID - c.lastID; step >= 1 && step <= l.cfg.MaxStep && (best == nil || step < bestStep || step == bestStep && c.id < best.id) {
				best, bestStep = c, step
			}
		}
	}
	for _, c := range over {
		l.close(c)
	}
	if best == nil {
		for l.open() >= l.max {
			l.close(l.lru.Front().Value.(*liveChain))
		}
		best = &liveChain{id: l.next, src: src, lastID: p.IPID, last: p.TsNs}
		l.next++
		l.file(best)
		best.elem = l.lru.PushBack(best)
		return best.id, true
	}
	l.unfile(best)
	best.lastID, best.last = p.IPID, max(best.last, p.TsNs)
	l.file(best)
	l.lru.MoveToBack(best.elem)
	return best.id, true
}

func (l *chainLinker) file(c *liveChain) {
	b := l.bucket(c.src, c.lastID)
	l.buckets[b] = append(l.buckets[b], c)
}

func (l *chainLinker) unfile(c *liveChain) {
	b := l.bucket(c.src, c.lastID)
	if cs := slices.DeleteFunc(l.buckets[b], func(o *liveChain) bool { return o == c }); len(cs) > 0 {
		l.buckets[b] = cs
	} else {
		delete(l.buckets, b)
	}
}

// close ends a sequence.
func (l *chainLinker) close(c *liveChain) {
	l.unfile(c)
	l.lru.Remove(c.elem)
}

// restore opens a saved sequence; they come least recently continued
// first.
func (l *chainLinker) restore(c *liveChain) {
	l.file(c)
	c.elem = l.lru.PushBack(c)
}

// crosses says a device's packet goes beyond the home: to a public
// address, which a NAPT would translate.
func crosses(p *schemas.Packet) bool {
	a := p.DstIP
	return a.IsValid() && a.IsGlobalUnicast() && !a.IsPrivate() && !a.IsLinkLocalUnicast()
}

// NewWANHostCounter is a HostCounter of what crosses the gateway: every
// capture's keys of the device's packets to public addresses, what an
// observer beyond a NAPT sees of it, and how many IP ID sequences each
// capture's packets form (LinkChains).
func NewWANHostCounter(ctx context.Context, devs []realhome.Device, cfg ChainConfig) (*HostCounter, error) {
	chains := map[string]int{}
	ck, err := readCaptureKeys(ctx, devs, crosses, func(f string, pkts []schemas.Packet) { chains[f] = len(LinkChains(pkts, cfg)) })
	if err != nil {
		return nil, fmt.Errorf("WAN keys: %w", err)
	}
	return newHostCounter(devs, ck, chains, cfg), nil
}

// ChainEligible says whether a type is counted by its IP ID sequences in a
// home that drew on the captures in skip: when at least 90 % of its other
// captures, each read alone, form exactly one sequence. It returns those
// and the captures it judged.
func (hc *HostCounter) ChainEligible(typ string, skip []string) (ok bool, one, captures int) {
	folders, _ := hc.Folders(typ)
	for _, d := range hc.devs {
		if !slices.Contains(folders, d.Name) {
			continue
		}
		for _, f := range d.Files {
			if slices.Contains(skip, f) {
				continue
			}
			captures++
			if hc.chains[f] == 1 {
				one++
			}
		}
	}
	return captures >= MinSignatureCaptures && 10*one >= 9*captures, one, captures
}

// ChainsPoint is the count of one n beyond the NAPT: per home, the IP ID
// sequences counted as the type's unit and the units the home holds of it;
// Unnamed is the homes whose other captures did not make the type
// eligible (not counted).
//
// Windows and LiveRight are the live count (LiveHome with the WAN model,
// the detector's): the windows judged, and those whose count was the
// type's units that sent a packet beyond the gateway in them.
type ChainsPoint struct {
	N                  int
	Count, Units       []int
	Unnamed            int
	Windows, LiveRight int
}

// RunChains counts the units of cfg.Type beyond the emulated NAPT by their
// IP ID sequences: per n, cfg.Homes homes with n units from distinct
// captures and cfg.Others other devices, each seen by the WAN observer;
// every sequence is classified by the host model learned from the captures
// the home did not draw on (HostModel.Classify on its keys), and the count
// is the sequences of the type's unit. hc must be NewWANHostCounter's.
func (hc *HostCounter) RunChains(ctx context.Context, cfg HostsConfig) ([]ChainsPoint, error) {
	if hc.chains == nil {
		return nil, fmt.Errorf("count %s by IP ID sequences: the counter holds no WAN keys (NewWANHostCounter makes one)", cfg.Type)
	}
	var out []ChainsPoint
	err := hc.eachHome(ctx, cfg, "count by IP ID sequences", func(n int) { out = append(out, ChainsPoint{N: n}) }, func(h *heldOutHome) error {
		pt := &out[len(out)-1]
		if ok, _, _ := hc.ChainEligible(cfg.Type, h.used); !ok {
			pt.Unnamed++
			return nil
		}
		hm := hc.Model(h.used)
		unit := hm.UnitOf(h.hardware[0])
		pkts, lan, err := readView(ctx, h.Home, gateway.Config{Mode: gateway.NAPT, Seed: h.seed}, filepath.Join(cfg.Dir, h.name+".pcap"))
		if err != nil {
			return err
		}
		// Live: the units of the type that sent a packet beyond the
		// gateway in the window, by the gateway's truth.
		members := hm.Units[unit].Members
		var sent []unitFrame
		for i, li := range lan {
			if li >= 0 && int(li) < len(h.Packets) && i < len(pkts) {
				if u := h.Packets[li].Unit; u >= 0 && u < len(h.Units) && slices.Contains(members, h.Units[u].Device) {
					sent = append(sent, unitFrame{pkts[i].TsNs, u})
				}
			}
		}
		windows, right, err := judgeLive(hm, unit, pkts, sent, nil, cfg.Live)
		if err != nil {
			return fmt.Errorf("live: %w", err)
		}
		pt.Windows += windows
		pt.LiveRight += right
		counted := 0
		for _, c := range LinkChains(pkts, hc.chainCfg) {
			if hm.Classify(c.Keys) == unit {
				counted++
			}
		}
		pt.Count = append(pt.Count, counted)
		pt.Units = append(pt.Units, unitsOf(h.Home, hm.Units[unit].Members))
		return nil
	})
	return out, err
}

// readView writes what the WAN observer of the home's emulated gateway
// captures to path, reads every packet back, and removes it; lan is, per
// packet, the home's packet it came from (-1: the gateway's own).
func readView(ctx context.Context, h *realhome.Home, gw gateway.Config, path string) (pkts []schemas.Packet, lan []int64, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, err
	}
	lan, _, err = h.View(ctx, gw, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	defer os.Remove(path)
	if err != nil {
		return nil, nil, fmt.Errorf("write %s: %w", path, err)
	}
	if pkts, err = capture.ReadAll(ctx, path, WANHome()); err != nil {
		return nil, nil, fmt.Errorf("read the WAN view %s: %w", path, err)
	}
	if len(lan) != len(pkts) {
		return nil, nil, fmt.Errorf("the WAN view %s holds %d packets, its truth %d", path, len(pkts), len(lan))
	}
	return pkts, lan, nil
}
