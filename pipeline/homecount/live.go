package homecount

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/heartbeat"
	"github.com/homemole/homemole/schemas"
)

// MethodHosts is the Seen window's method when the LAN host counter
// judged it, and MethodIPID when the same counter judged a WAN tap's IP ID
// sequences (a model with Chains).
const (
	MethodHosts = "hosts"
	MethodIPID  = "ip-id"
)

// LiveConfig says how a home's LAN hosts are counted while packets come:
// windows of Window ending on every multiple of Step (Unix time), each
// judged Late after it ends with what every host sent until then, so a
// unit whose first packets in the window are DHCP and ARP is known by the
// keys it sends just after.
type LiveConfig struct {
	Window, Step, Late time.Duration
	// Gateway is the home's gateway when a campaign names it. Named or
	// not, a host that forwards for others (LiveHome.forwards: it sends
	// from a NAT64 address, from three remote addresses or /64s within
	// ten minutes, or from one outside the LAN's own prefixes) is the
	// home's infrastructure, never a unit, until an hour after the last
	// packet that showed it. Answering DHCP is not taken for it: many
	// devices serve DHCP on an access point of their own while they are
	// set up (D-LinkSwitch does in IoT Sentinel's captures).
	Gateway schemas.MAC
	// MaxHosts bounds the hosts a home's table keeps (the least recently
	// seen goes first) and MaxKeys the keys of all of them: a home that
	// sends from ever new MACs or sizes costs a bounded table and
	// checkpoint. MaxHostKeys bounds one host's keys: a host that sent
	// more distinct keys than that is a general-purpose computer (the
	// largest IoT Sentinel capture shows 99), never a unit.
	MaxHosts, MaxKeys, MaxHostKeys int
	// Settle is how long a new host of a LAN tap is given to show what it
	// is. A window in which a host is active that was first seen less
	// than Settle before and is counted as no unit yet waits, past Late,
	// until that host is known or Settle has passed since its first
	// packet: a unit that joins sends DHCP, ARP and DNS before anything
	// its type alone sends, and judged Late after its first window it is
	// unknown there. Every other window is judged Late after it ends, so
	// a home of known hosts pays nothing, and a window waits at most
	// Settle after it ends. Zero, or at most Late: no window waits.
	Settle time.Duration
}

// DefaultLiveConfig counts 20 s windows every 10 s, 20 s late (the
// windows `home pairs` measures), and gives a new host a minute.
func DefaultLiveConfig() LiveConfig {
	return LiveConfig{Window: 20 * time.Second, Step: 10 * time.Second, Late: 20 * time.Second,
		MaxHosts: 512, MaxKeys: 1 << 15, MaxHostKeys: 2048, Settle: time.Minute}
}

// hold is the longest a window waits after it ends.
func (c LiveConfig) hold() time.Duration { return max(c.Late, c.Settle) }

// MaxWindowSteps bounds the steps a window spans (Window / Step): every
// packet is in that many windows, each judged and published, so a window
// of a million hours every 10 s would judge 360 million windows per
// packet. A day every 10 s is 8640 steps.
const MaxWindowSteps = 10000

// MaxLiveSpan bounds Window, Late and Settle: a window's end, a packet's
// time plus it, stays far inside int64 nanoseconds (MaxTimeNs), and no
// home waits longer than this for a window.
const MaxLiveSpan = 30 * 24 * time.Hour

// Validate says what is wrong with the config.
func (c LiveConfig) Validate() error {
	if c.Step <= 0 || c.Window < c.Step || c.Window%c.Step != 0 || c.Late < 0 || c.Settle < 0 {
		return fmt.Errorf("host counter: window %s every %s, %s late, %s for a new host: want a window a whole number of positive steps, and delays from 0", c.Window, c.Step, c.Late, c.Settle)
	}
	if c.Window > MaxLiveSpan || c.Late > MaxLiveSpan || c.Settle > MaxLiveSpan {
		return fmt.Errorf("host counter: window %s, %s late, %s for a new host: want each at most %s", c.Window, c.Late, c.Settle, MaxLiveSpan)
	}
	if n := c.Window / c.Step; n > MaxWindowSteps {
		return fmt.Errorf("host counter: a window of %s every %s spans %d steps: want at most %d (a shorter window, or windows that end less often)", c.Window, c.Step, n, MaxWindowSteps)
	}
	if c.MaxHosts < 1 || c.MaxKeys < 1 || c.MaxHostKeys < 1 {
		return fmt.Errorf("host counter: at most %d hosts, %d keys, %d keys a host: want each from 1", c.MaxHosts, c.MaxKeys, c.MaxHostKeys)
	}
	return nil
}

// LiveHome counts one home's units on its LAN tap as its packets come, in
// time order: every host's keys since it was first seen, and the steps
// each was active in. Not safe for concurrent use.
//
// With a model of Chains (learned from what crosses the gateway) it counts
// a WAN tap beyond a NAPT: each packet is linked into its source address's
// IP ID sequence (chainLinker), and each sequence is a host, named by a
// MAC of its own (sequenceMAC); a sequence of fewer than MinPackets
// packets, or of a unit that is not OneSequence, is not counted.
type LiveHome struct {
	model  *HostModel
	cfg    LiveConfig
	linker *chainLinker // with a model of Chains
	hosts  map[schemas.MAC]*liveHost
	// lan is the LAN's own prefixes as its hosts showed them (learnLAN),
	// the most recently seen last, at most maxLANPrefixes.
	lan  []netip.Prefix
	keys int   // of all hosts
	next int64 // end of the next window to judge, ns; 0: no packet yet
	last int64 // latest packet time
	// packets per step still in a window to judge.
	packets map[int64]uint64
	// recheck is the packet time before which a window that waits for a
	// new host (Settle) is not looked at again.
	recheck int64
	// NoMAC counts the packets without a source MAC (not a LAN tap), and
	// BadTime those whose time is before 1970 or after MaxTimeNs; Unlinked,
	// with a model of Chains, those no IP ID sequence takes (IPv6, an ID
	// of 0, no transport).
	NoMAC, BadTime, Unlinked uint64
}

type liveHost struct {
	keys      map[heartbeat.Key]bool
	saturated bool
	// remote is the latest sources, each an IPv4 address or an IPv6 /64,
	// it sent from that are neither private nor the LAN's, at most
	// forwardSources, each with its latest packet (forwards); forwardedUntil
	// is the time until which it is the home's infrastructure for what it
	// sent (0: never).
	remote         []remoteSource
	forwardedUntil int64
	served         servedPorts // TCP ports it answered a connection on (hostKey)
	packets        int         // a sequence's packets, up to MinPackets (with Chains)
	active         []int64     // steps it sent in, ascending, still in a window to judge
	first          int64       // its first packet (0: from a table that did not keep it)
	last           int64
	// relaySeen is what the IPv4 sources of the host's MAC have shown:
	// whether it is a MAC-NAT repeater's, which is never a unit.
	relaySeen
	// shadow says the host is what an address sent under a MAC that may
	// be a repeater's (LiveHome.shadowing): never counted, a host of its
	// own once the MAC is found to be one.
	shadow bool
	// unit is Classify's answer for keys; dirty says keys changed since.
	unit  int
	dirty bool
}

// NewLiveHome is a home with nothing seen yet.
func NewLiveHome(m *HostModel, cfg LiveConfig) (*LiveHome, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &LiveHome{model: m, cfg: cfg, hosts: map[schemas.MAC]*liveHost{}, packets: map[int64]uint64{}}
	if m.Chains != nil {
		h.linker = newChainLinker(*m.Chains, maxSequences(cfg))
	}
	return h, nil
}

// maxSequences bounds the IP ID sequences a WAN tap's table keeps open:
// the home's and every server's it talks to.
func maxSequences(cfg LiveConfig) int { return 8 * cfg.MaxHosts }

// sequenceMAC is the MAC a WAN tap's IP ID sequence id is counted under: a
// locally administered one, which no capture holds.
func sequenceMAC(id uint32) schemas.MAC {
	return schemas.MAC{0x06, 0, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
}

// Method is the method of the windows the home judges.
func (h *LiveHome) Method() string {
	if h.linker != nil {
		return MethodIPID
	}
	return MethodHosts
}

// Add takes one packet and returns the windows it completes: those that
// end Late or more before it.
func (h *LiveHome) Add(p *schemas.Packet) []schemas.SeenWindow {
	if p.TsNs < 0 || p.TsNs > MaxTimeNs {
		// No window holds it; and a window's end past it would overflow.
		h.BadTime++
		return nil
	}
	step := int64(h.cfg.Step)
	var out []schemas.SeenWindow
	// A clock that went back by more than an hour (a capture restarted, a
	// bad timestamp before it corrected) would wait that long for its next
	// window: start the windows again where it is now. What the hosts
	// sent stays known.
	if h.next != 0 && p.TsNs < h.next-int64(h.cfg.Window)-int64(MaxClockBack) {
		h.next, h.recheck = 0, 0
		h.packets = map[int64]uint64{}
		h.last = p.TsNs
		for _, host := range h.hosts {
			host.active = nil
			// What showed a host forwards showed it now, not hours ahead.
			host.forwardedUntil = min(host.forwardedUntil, p.TsNs+int64(forwardHold))
			for i := range host.remote {
				host.remote[i].last = min(host.remote[i].last, p.TsNs)
			}
		}
	}
	if h.next == 0 {
		h.next = (p.TsNs/step + 1) * step
	}
	for h.next+int64(h.cfg.Late) <= p.TsNs && !h.waits(h.next, p.TsNs) {
		if w, ok := h.judge(h.next); ok {
			out = append(out, w)
		}
		h.next += step
		// Nothing was sent in the windows ahead: go on at the first that
		// holds this packet rather than judge each of a long silence.
		if h.idleUntil(h.next) {
			h.next = max(h.next, (p.TsNs/step+1)*step)
		}
	}
	h.add(p)
	return out
}

// settleRecheck is how often, in packet time, a window that waits for a
// new host looks at the hosts again: a window is judged at most this much
// after its host became known, and a waiting home costs one look at its
// hosts a second, not one a packet.
const settleRecheck = int64(time.Second)

// waits says the window that ends at end, due at now, waits for a new
// host (LiveConfig.Settle).
func (h *LiveHome) waits(end, now int64) bool {
	if h.linker != nil || h.cfg.Settle <= h.cfg.Late {
		// Beyond a NAPT every server's sequence is new and none is a unit:
		// a WAN tap's windows would all wait.
		return false
	}
	if now < h.recheck {
		return true
	}
	step := int64(h.cfg.Step)
	for mac, host := range h.hosts {
		if host.first > now-int64(h.cfg.Settle) && host.activeIn((end-int64(h.cfg.Window))/step, end/step) &&
			h.counted(mac, host) && !host.saturated && h.unitOf(host) < 0 {
			h.recheck = now + settleRecheck
			return true
		}
	}
	return false
}

// MaxClockBack is how far a home's clock may go back before its windows
// start again where it is.
const MaxClockBack = time.Hour

// MaxTimeNs is the latest packet time counted (2^62 ns: the year 2116);
// packets before 1970 or after it are counted in BadTime only. A batch's
// times are the sender's word: one near the end of int64 would overflow
// the windows' ends.
const MaxTimeNs = 1 << 62

// Flush judges every window up to the last packet (the capture session
// ended). A window that holds no packet is never published, so it walks
// from one step that holds packets to the next: its work is the windows
// those steps are in, not every step of the time that Late and Window
// span.
func (h *LiveHome) Flush() []schemas.SeenWindow {
	var out []schemas.SeenWindow
	step, window := int64(h.cfg.Step), int64(h.cfg.Window)
	for h.next != 0 && h.next-window <= h.last {
		s, ok := h.firstStep()
		if !ok {
			// No window left holds a packet: end where the walk would.
			h.next += ((h.last-(h.next-window))/step + 1) * step
			h.trim(h.next)
			break
		}
		// The first window that holds step s ends just after it.
		h.next = max(h.next, (s+1)*step)
		if h.next-window > h.last {
			break
		}
		if w, ok := h.judge(h.next); ok {
			out = append(out, w)
		}
		h.next += step
	}
	return out
}

// firstStep is the earliest step that holds packets still in a window to
// judge, if any.
func (h *LiveHome) firstStep() (int64, bool) {
	first, ok := int64(0), false
	for s, n := range h.packets {
		if n > 0 && (!ok || s < first) {
			first, ok = s, true
		}
	}
	return first, ok
}

// idleUntil says no packet was seen in the window that ends at end or
// later.
func (h *LiveHome) idleUntil(end int64) bool {
	return h.last < end-int64(h.cfg.Window)
}

func (h *LiveHome) add(p *schemas.Packet) {
	h.last = max(h.last, p.TsNs)
	if h.linker != nil {
		id, ok := h.linker.link(p)
		if !ok {
			h.Unlinked++
			return
		}
		q := *p
		q.SrcMAC = sequenceMAC(id)
		p = &q
	}
	if p.SrcMAC.IsZero() || p.SrcMAC[0]&1 == 1 {
		h.NoMAC++
		return
	}
	step := p.TsNs / int64(h.cfg.Step)
	h.packets[step]++
	mac := p.SrcMAC
	host := h.host(mac, p.TsNs)
	if h.linker == nil {
		wasRelay, addrs := host.relay, len(host.addrs)
		m, ok := host.behind(p)
		if host.relay && !wasRelay {
			h.promote(host)
		}
		if ok {
			// A MAC-NAT repeater's MAC: the packet is of the device behind
			// it, at its address or under the MAC its address names. The
			// repeater's own host stays, to tell it is one, and is never
			// counted.
			mac = m
			host = h.host(mac, p.TsNs, p.SrcMAC)
			// A shadow of an address no packet had come from when the
			// repeater was found (its device's name came first).
			host.shadow = false
		} else if (len(host.addrs) > 1 || p.DHCP.Name != 0) && h.shadowing(host, p, len(host.addrs) > addrs) {
			// (The guard: a MAC of one address so far is no candidate,
			// and all shadowing keeps of it is its names, so the common
			// case costs no call.)
			if a, ok := host.deviceAddr(p); ok {
				smac := relayHost(a)
				h.record(smac, h.shadowHost(smac, p.TsNs, mac), p, step)
			}
		}
	}
	h.record(mac, host, p, step)
}

// record takes what p shows of the host that sent it, at step.
func (h *LiveHome) record(mac schemas.MAC, host *liveHost, p *schemas.Packet, step int64) {
	if n := len(host.active); n == 0 || host.active[n-1] < step {
		host.active = append(host.active, step)
	} else if !slices.Contains(host.active, step) {
		// A packet out of order: keep the steps sorted.
		i, _ := slices.BinarySearch(host.active, step)
		host.active = slices.Insert(host.active, i, step)
	}
	if h.model.Chains != nil {
		host.packets = min(host.packets+1, h.model.Chains.MinPackets)
	} else {
		// (Not beyond the gateway: there every sequence sends from a public
		// address, and none is the LAN's.)
		h.learnLAN(p)
		h.forwards(host, p)
	}
	if p.Transport == 0 || host.saturated {
		return
	}
	// A host sends the same few keys again and again: a key it holds
	// costs one look.
	if k := hostKey(p, &host.served); !host.keys[k] && !h.addKey(mac, host, k) {
		return
	}
	if name := p.DHCP.Name; name != 0 {
		h.addKey(mac, host, dhcpNameKey(name))
	}
}

// host is the table's host of a MAC, added when new (no host of keep
// making room for it), and seen at ts.
func (h *LiveHome) host(mac schemas.MAC, ts int64, keep ...schemas.MAC) *liveHost {
	host := h.hosts[mac]
	if host == nil {
		h.evict(1, append(keep, mac)...)
		host = &liveHost{unit: -1, first: ts}
		h.hosts[mac] = host
	}
	host.first = min(host.first, ts)
	host.last = max(host.last, ts)
	return host
}

// addKey adds a key a host sent, and says whether the host may take more.
func (h *LiveHome) addKey(mac schemas.MAC, host *liveHost, k heartbeat.Key) bool {
	if host.saturated {
		return false
	}
	if host.keys[k] {
		return true
	}
	if len(host.keys) >= h.cfg.MaxHostKeys {
		h.keys -= len(host.keys)
		host.keys, host.saturated, host.dirty = nil, true, true
		return false
	}
	if h.keys >= h.cfg.MaxKeys {
		h.evict(0, mac)
		if h.keys >= h.cfg.MaxKeys {
			return false
		}
	}
	if host.keys == nil {
		host.keys = map[heartbeat.Key]bool{}
	}
	host.keys[k], host.dirty = true, true
	h.keys++
	return true
}

// evict drops the least recently seen hosts but keep until a host more
// fits (room 1) or a key more does (room 0). On a WAN tap the sequences
// that count nothing go first (a server's, a connection of a stack that
// numbers each apart): a home that talks to hundreds of servers fills the
// table with them within minutes, and a unit that sends once a minute
// would otherwise lose what it sent before.
func (h *LiveHome) evict(room int, keep ...schemas.MAC) {
	for len(h.hosts)+room > h.cfg.MaxHosts || (room == 0 && h.keys >= h.cfg.MaxKeys) {
		var oldest, idle schemas.MAC
		var old, idleHost *liveHost
		older := func(mac schemas.MAC, host *liveHost, than schemas.MAC, thanHost *liveHost) bool {
			return thanHost == nil || host.last < thanHost.last || (host.last == thanHost.last && bytes.Compare(mac[:], than[:]) < 0)
		}
		for mac, host := range h.hosts {
			if slices.Contains(keep, mac) {
				continue
			}
			if older(mac, host, oldest, old) {
				oldest, old = mac, host
			}
			if h.linker != nil && !h.countable(host) && older(mac, host, idle, idleHost) {
				idle, idleHost = mac, host
			}
		}
		if idleHost != nil {
			oldest, old = idle, idleHost
		}
		if old == nil {
			return
		}
		h.forget(oldest)
	}
}

// forget drops a host from the table, and its keys from the table's count.
func (h *LiveHome) forget(mac schemas.MAC) {
	if host := h.hosts[mac]; host != nil {
		h.keys -= len(host.keys)
		delete(h.hosts, mac)
	}
}

// unitOf is the unit a host is counted as, or -1; classified again when
// its keys changed.
func (h *LiveHome) unitOf(host *liveHost) int {
	if host.dirty {
		host.unit, host.dirty = -1, false
		if !host.saturated {
			host.unit = h.model.Classify(host.keys)
		}
	}
	return host.unit
}

// countable says a host of a WAN tap's table is a sequence of a unit
// counted by its sequences (once it holds MinPackets packets).
func (h *LiveHome) countable(host *liveHost) bool {
	u := h.unitOf(host)
	return u >= 0 && h.model.Units[u].OneSequence
}

// A host forwards for others when what it sends from is the Internet's,
// not its own. That is told by what holds on every address plan, and not
// by a public source alone: on a LAN of public addresses (an ISP that
// routes a block to the home, and every IPv6 LAN) each host sends from
// one, and an ISP that renumbers the home's IPv6 prefix gives a device a
// new /64 each day. So a host forwards when it sends
//   - from a NAT64 address (nat64),
//   - from forwardSources remote sources (IPv4 addresses or IPv6 /64s
//     outside the LAN's prefixes) within forwardSpan: a host sends from
//     its one address, or two /64s while a renumbered prefix lives on
//     beside the new one, and a gateway forwards from every server its
//     LAN talks to, or
//   - from one source outside the LAN's own prefixes once those are known
//     for its family (learnLAN): a private LAN's gateway forwarding one
//     server, judged again as the LAN shows more of its prefixes.
//
// A packet sent with a hop limit a stack starts at (64, 128, 255:
// unforwarded) left its host's own stack, whatever its address, and shows
// nothing of forwarding; a packet forwarded from the Internet comes with
// less. A host stays infrastructure until forwardHold after the last
// packet that showed it, so a gateway is not a host of the home while the
// LAN is quiet, and nothing a host once did marks it for good.
const (
	forwardSources = 3
	forwardSpan    = 10 * time.Minute
	forwardHold    = time.Hour
	// maxLANPrefixes bounds the LAN's prefixes a home keeps: a LAN of a
	// few /24s and /64s, and those its ISP renumbered it from lately.
	maxLANPrefixes = 8
)

// remoteSource is a remote source a host sent from (an IPv4 address as a
// /32, an IPv6 /64) and its latest packet from it.
type remoteSource struct {
	src  netip.Prefix
	last int64
}

// learnLAN takes what p shows of the LAN's own prefixes (a /24 of IPv4, a
// /64 of IPv6): an address its sender claims in ARP or asks DHCP for, a
// private or the carrier NAT's IPv4 source (no router forwards one from
// the Internet to a home), and the source of a packet that left its
// host's stack (unforwarded: on a LAN of public addresses, a host's own).
func (h *LiveHome) learnLAN(p *schemas.Packet) {
	if a := p.SrcIP.Unmap(); a.Is4() && (a.IsPrivate() || features.IsCarrierNAT(a)) || unforwarded(p) && !features.IsNAT64(a) {
		h.onLAN(a)
	} else if a.IsUnspecified() {
		h.onLAN(p.DHCP.RequestedAddr())
	}
	if p.ARPSender != [4]byte{} {
		h.onLAN(netip.AddrFrom4(p.ARPSender))
	}
}

// onLAN takes a as an address of the LAN: its prefix becomes the most
// recently seen.
func (h *LiveHome) onLAN(a netip.Addr) {
	if n := len(h.lan); n > 0 && h.lan[n-1].Contains(a) {
		// The common case: a host of the LAN's latest prefix.
		return
	}
	if !a.IsGlobalUnicast() || !a.Is4() && a.IsPrivate() {
		// Link-local, multicast, unspecified; and ULA, which tells nothing
		// of the global /64s.
		return
	}
	pfx := lanPrefix(a)
	if i := slices.Index(h.lan, pfx); i >= 0 {
		h.lan = slices.Delete(h.lan, i, i+1)
	} else if len(h.lan) >= maxLANPrefixes {
		h.lan = slices.Delete(h.lan, 0, 1)
	}
	h.lan = append(h.lan, pfx)
}

// lanPrefix is the prefix of the LAN a holds: its /24 or /64.
func lanPrefix(a netip.Addr) netip.Prefix {
	if a.Is4() {
		return netip.PrefixFrom(a, 24).Masked()
	}
	return netip.PrefixFrom(a, 64).Masked()
}

// inLAN says a is in one of the LAN's prefixes.
func (h *LiveHome) inLAN(a netip.Addr) bool {
	return slices.ContainsFunc(h.lan, func(pfx netip.Prefix) bool { return pfx.Contains(a) })
}

// offLAN says a is outside the LAN's prefixes of its family, which are
// known; false where none is.
func (h *LiveHome) offLAN(a netip.Addr) bool {
	return !h.inLAN(a) && slices.ContainsFunc(h.lan, func(pfx netip.Prefix) bool { return pfx.Addr().Is4() == a.Is4() })
}

// natted says a packet from a public source left its sender one hop
// below a starting hop limit (63, 127, 254): a stack never starts there,
// so the sender forwarded it, rewritten to its own address, as a NAPT
// gateway's WAN side sends its LAN's packets. That address is also the one
// the gateway's own packets (DNS, NTP) leave from, at a starting hop
// limit, which makes it look like a host of a public LAN; the hop limit
// tells the two apart.
func natted(p *schemas.Packet) bool {
	return p.TTL == 63 || p.TTL == 127 || p.TTL == 254
}

// forwards takes what p shows of whether its host forwards for others
// (see forwardSources).
func (h *LiveHome) forwards(host *liveHost, p *schemas.Packet) {
	a := p.SrcIP.Unmap()
	if a.IsPrivate() || !a.IsGlobalUnicast() || a.Is4() && features.IsCarrierNAT(a) {
		return
	}
	ts := p.TsNs
	if features.IsNAT64(a) || natted(p) {
		host.forwardedUntil = max(host.forwardedUntil, ts+int64(forwardHold))
		return
	}
	if unforwarded(p) || h.inLAN(a) {
		return
	}
	src := netip.PrefixFrom(a, 64).Masked()
	if a.Is4() {
		src = netip.PrefixFrom(a, 32)
	}
	if i := slices.IndexFunc(host.remote, func(r remoteSource) bool { return r.src == src }); i >= 0 {
		host.remote[i].last = max(host.remote[i].last, ts)
	} else {
		host.remote = slices.DeleteFunc(host.remote, func(r remoteSource) bool { return r.last <= ts-int64(forwardHold) })
		if len(host.remote) >= forwardSources {
			oldest := 0
			for i, r := range host.remote {
				if r.last < host.remote[oldest].last {
					oldest = i
				}
			}
			host.remote = slices.Delete(host.remote, oldest, oldest+1)
		}
		host.remote = append(host.remote, remoteSource{src, ts})
	}
	recent := 0
	for _, r := range host.remote {
		if r.last > ts-int64(forwardSpan) {
			recent++
		}
	}
	if recent >= forwardSources {
		host.forwardedUntil = max(host.forwardedUntil, ts+int64(forwardHold))
	}
}

// forwarding says the host is the home's infrastructure as of the latest
// packet: it showed it forwards less than forwardHold before, or sent
// from outside the LAN's prefixes as the home knows them now (the LAN
// shows its prefixes in its hosts' ARP and own packets, which may come
// after a host's first).
func (h *LiveHome) forwarding(host *liveHost) bool {
	if h.last < host.forwardedUntil {
		return true
	}
	for _, r := range host.remote {
		if r.last > h.last-int64(forwardHold) && h.offLAN(r.src.Addr()) {
			return true
		}
	}
	return false
}

// judge counts the window that ends at end: every host active in it, the
// gateway and the infrastructure but, by the unit its keys are nearest.
// False when no host was active.
func (h *LiveHome) judge(end int64) (schemas.SeenWindow, bool) {
	step := int64(h.cfg.Step)
	from := end - int64(h.cfg.Window)
	w := schemas.SeenWindow{StartNs: from, EndNs: end, Method: h.Method(), Detections: []schemas.SeenDetection{}}
	// The steps that hold packets, or those of the window where fewer.
	if lo, hi := from/step, end/step; hi-lo <= int64(len(h.packets)) {
		for s := lo; s < hi; s++ {
			w.Packets += h.packets[s]
		}
	} else {
		for s, n := range h.packets {
			if s >= lo && s < hi {
				w.Packets += n
			}
		}
	}
	counts := make([]int, len(h.model.Units))
	for mac, host := range h.hosts {
		if !host.activeIn(from/step, end/step) || !h.counted(mac, host) {
			continue
		}
		h.unitOf(host)
		if c := h.model.Chains; c != nil && (host.packets < c.MinPackets || !h.countable(host)) {
			// Beyond the gateway a host is a sequence of a unit counted
			// by its sequences; the rest (a server's, a connection of a
			// stack that numbers each apart, too short) say nothing.
			continue
		}
		w.Hosts++
		if host.unit >= 0 {
			counts[host.unit]++
		} else {
			// A host of no type the model knows (or not yet known).
			w.Unknown = true
		}
	}
	for u, n := range counts {
		if n > 0 {
			w.Detections = append(w.Detections, schemas.SeenDetection{Device: h.model.Units[u].Name, Count: n, Score: 1})
		}
	}
	h.trim(end + step)
	return w, w.Packets > 0
}

// counted says a window counts the host, as a unit or an unknown device:
// it is not the gateway, the home's infrastructure, a repeater's own MAC
// (one whose devices were told apart) or a shadow of one (judge counts
// those it takes, waits waits for them).
func (h *LiveHome) counted(mac schemas.MAC, host *liveHost) bool {
	return mac != h.cfg.Gateway && !h.forwarding(host) && !(host.relay && host.told) && !host.shadow
}

// activeIn says the host sent in a step from a up to b.
func (host *liveHost) activeIn(a, b int64) bool {
	i, _ := slices.BinarySearch(host.active, a)
	return i < len(host.active) && host.active[i] < b
}

// trim forgets the steps before the window that ends at next.
func (h *LiveHome) trim(next int64) {
	first := (next - int64(h.cfg.Window)) / int64(h.cfg.Step)
	for s := range h.packets {
		if s < first {
			delete(h.packets, s)
		}
	}
	for _, host := range h.hosts {
		i, _ := slices.BinarySearch(host.active, first)
		host.active = host.active[i:]
	}
}

// Hosts is how many hosts the table holds.
func (h *LiveHome) Hosts() int { return len(h.hosts) }

// liveStateVersion is the version of a saved LiveHome; others are refused.
// Version 2 keys a server's answers by the port it serves and keeps those
// ports (hostKey).
const liveStateVersion = 2

// ErrStaleTable is a saved table of an earlier version than this build
// writes: its keys are not this build's, and a counter starts the home
// afresh (its hosts are known again from what they send next).
var ErrStaleTable = errors.New("host table of an earlier version")

// liveState is a LiveHome as a checkpoint keeps it. Keys are packed, seven
// bytes each (transport, port, length), so a full table stays a few
// hundred KB.
type liveState struct {
	Version int    `json:"version"`
	Seq     uint64 `json:"seq"`
	// The windows the table's steps and next window are on.
	Window time.Duration `json:"window"`
	Step   time.Duration `json:"step"`
	Late   time.Duration `json:"late"`
	Next   int64         `json:"next_ns"`
	Last   int64         `json:"last_ns"`
	// Recheck is LiveHome.recheck, so a restored home waits as one never
	// stopped.
	Recheck int64            `json:"recheck_ns,omitempty"`
	Packets map[int64]uint64 `json:"packets,omitempty"`
	// LAN is the LAN's own prefixes (LiveHome.lan), in its order.
	LAN   []string        `json:"lan,omitempty"`
	Hosts []liveHostState `json:"hosts"`
	NoMAC uint64          `json:"no_mac,omitempty"`
	// The IP ID sequences still open, and the next one's id (a model of
	// Chains).
	Sequences    []liveSequenceState `json:"sequences,omitempty"`
	NextSequence uint32              `json:"next_sequence,omitempty"`
	Unlinked     uint64              `json:"unlinked,omitempty"`
}

type liveSequenceState struct {
	Src    string `json:"src"`
	ID     uint32 `json:"id"`
	LastID uint16 `json:"last_id"`
	Last   int64  `json:"last_ns"`
}

type liveHostState struct {
	MAC       string `json:"mac"`
	Keys      []byte `json:"keys,omitempty"`
	Saturated bool   `json:"saturated,omitempty"`
	// Remote and ForwardedUntil are what showed the host forwards
	// (liveHost.remote, forwardedUntil). Infra and Prefixes are what a
	// counter before them kept (forwarding for good, the /64s of the
	// host's life), read only: Infra holds as a host that showed it at its
	// last packet, and the /64s are dropped.
	Remote         []liveRemoteState `json:"remote,omitempty"`
	ForwardedUntil int64             `json:"forwarded_until_ns,omitempty"`
	Infra          bool              `json:"infra,omitempty"`
	Prefixes       []string          `json:"prefixes,omitempty"`
	Served         []uint16          `json:"served,omitempty"`
	Packets        int               `json:"packets,omitempty"`
	Active         []int64           `json:"active,omitempty"`
	Addrs          []string          `json:"addrs,omitempty"`
	AddrTimes      []int64           `json:"addr_times,omitempty"`
	Relay          bool              `json:"relay,omitempty"`
	// Told is relaySeen's; a table of a counter before it restores it
	// from Addrs (a repeater found by IPv4 tells its devices at once).
	Told bool `json:"told,omitempty"`
	// Candidate, Names and Shadow are what the counter keeps of a MAC
	// that may be a repeater's (LiveHome.shadowing).
	Candidate bool            `json:"candidate,omitempty"`
	Names     []liveNameState `json:"names,omitempty"`
	Shadow    bool            `json:"shadow,omitempty"`
	First     int64           `json:"first_ns,omitempty"`
	Last      int64           `json:"last_ns"`
}

// liveRemoteState is a remoteSource.
type liveRemoteState struct {
	Src  string `json:"src"`
	Last int64  `json:"last_ns"`
}

// liveNameState is a relayName: the address and the name's hash as its key
// holds it.
type liveNameState struct {
	Addr string `json:"addr"`
	Name uint16 `json:"name"`
}

const packedKey = 7

// State encodes the home for a checkpoint, with the stream position seq
// of the last batch it took.
func (h *LiveHome) State(seq uint64) ([]byte, error) {
	st := liveState{Version: liveStateVersion, Seq: seq, Window: h.cfg.Window, Step: h.cfg.Step, Late: h.cfg.Late,
		Next: h.next, Last: h.last, Recheck: h.recheck, Packets: h.packets, NoMAC: h.NoMAC}
	for _, pfx := range h.lan {
		st.LAN = append(st.LAN, pfx.String())
	}
	for mac, host := range h.hosts {
		hs := liveHostState{MAC: mac.String(), Saturated: host.saturated, ForwardedUntil: host.forwardedUntil, Served: host.served, Packets: host.packets, Active: host.active,
			Relay: host.relay, Told: host.told, Candidate: host.candidate, Shadow: host.shadow, First: host.first, Last: host.last}
		for _, a := range host.addrs {
			hs.Addrs = append(hs.Addrs, a.String())
		}
		for _, n := range host.names {
			hs.Names = append(hs.Names, liveNameState{Addr: n.addr.String(), Name: n.key.IPLen})
		}
		hs.AddrTimes = host.times
		for _, k := range keyTexts(host.keys) {
			hs.Keys = binary.BigEndian.AppendUint16(append(hs.Keys, k.Transport), uint16(k.Port>>16))
			hs.Keys = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(hs.Keys, uint16(k.Port)), k.IPLen)
		}
		for _, r := range host.remote {
			hs.Remote = append(hs.Remote, liveRemoteState{Src: r.src.String(), Last: r.last})
		}
		st.Hosts = append(st.Hosts, hs)
	}
	slices.SortFunc(st.Hosts, func(a, b liveHostState) int { return strings.Compare(a.MAC, b.MAC) })
	if l := h.linker; l != nil {
		st.NextSequence, st.Unlinked = l.next, h.Unlinked
		// Least recently continued first, as the linker closes them.
		for e := l.lru.Front(); e != nil; e = e.Next() {
			c := e.Value.(*liveChain)
			st.Sequences = append(st.Sequences, liveSequenceState{Src: c.src.String(), ID: c.id, LastID: c.lastID, Last: c.last})
		}
	}
	data, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode host table: %w", err)
	}
	return data, nil
}

// RestoreLiveHome rebuilds a home from State's bytes, and says the stream
// position they cover.
func RestoreLiveHome(m *HostModel, cfg LiveConfig, data []byte) (*LiveHome, uint64, error) {
	h, err := NewLiveHome(m, cfg)
	if err != nil {
		return nil, 0, err
	}
	var st liveState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, 0, fmt.Errorf("decode host table: %w", err)
	}
	if st.Version >= 1 && st.Version < liveStateVersion {
		return nil, 0, fmt.Errorf("host table version %d, this build writes %d: %w", st.Version, liveStateVersion, ErrStaleTable)
	}
	if st.Version != liveStateVersion {
		return nil, 0, fmt.Errorf("host table version %d, this build reads %d", st.Version, liveStateVersion)
	}
	if len(st.Hosts) > cfg.MaxHosts {
		return nil, 0, fmt.Errorf("host table holds %d hosts, this counter keeps at most %d", len(st.Hosts), cfg.MaxHosts)
	}
	// A counter restarted with other windows keeps what the hosts sent
	// and starts its windows again at the next packet: the steps were
	// counted on the old grid.
	regrid := st.Window != cfg.Window || st.Step != cfg.Step || st.Late != cfg.Late
	// Where Add and Flush leave the next window: past the last packet
	// less the delay, and at most a window and a step after it.
	if st.Last < 0 || st.Last > MaxTimeNs || st.Next < 0 || st.Next > MaxTimeNs+int64(cfg.Window+cfg.hold())+int64(cfg.Step) {
		return nil, 0, fmt.Errorf("host table: last packet at %d ns, next window ending at %d ns: outside the times a counter takes (0 to %d)", st.Last, st.Next, int64(MaxTimeNs))
	}
	step := int64(st.Step)
	if !regrid && st.Next != 0 && (st.Next%step != 0 || st.Next+int64(cfg.hold()) <= st.Last || st.Next > st.Last+int64(cfg.Window)+step) {
		return nil, 0, fmt.Errorf("host table: next window ends at %d ns, its last packet came at %d: not where a counter of %s windows every %s leaves it", st.Next, st.Last, cfg.Window, cfg.Step)
	}
	h.next, h.last, h.NoMAC = st.Next, st.Last, st.NoMAC
	if st.Recheck >= 0 && st.Recheck <= st.Last+settleRecheck {
		h.recheck = st.Recheck
	}
	if regrid {
		h.next, st.Packets = 0, nil
	}
	for s, n := range st.Packets {
		h.packets[s] = n
	}
	if len(st.LAN) > maxLANPrefixes {
		return nil, 0, fmt.Errorf("host table holds %d LAN prefixes, a counter keeps at most %d", len(st.LAN), maxLANPrefixes)
	}
	for _, l := range st.LAN {
		pfx, err := netip.ParsePrefix(l)
		if err != nil || !pfx.Addr().IsGlobalUnicast() || pfx != lanPrefix(pfx.Addr()) || slices.Contains(h.lan, pfx) {
			return nil, 0, fmt.Errorf("host table: LAN prefix %q: want distinct /24s and /64s", l)
		}
		h.lan = append(h.lan, pfx)
	}
	for _, hs := range st.Hosts {
		mac, err := schemas.ParseMAC(hs.MAC)
		if err != nil {
			return nil, 0, fmt.Errorf("host table: %w", err)
		}
		if len(hs.Keys)%packedKey != 0 || !slices.IsSorted(hs.Active) || len(hs.Served) > maxServed || !isStrictlySorted(hs.Served) {
			return nil, 0, fmt.Errorf("host table: host %s: %d key bytes, steps sorted %v, %d served ports sorted %v: not what State writes",
				hs.MAC, len(hs.Keys), slices.IsSorted(hs.Active), len(hs.Served), isStrictlySorted(hs.Served))
		}
		host := &liveHost{saturated: hs.Saturated, served: hs.Served, packets: hs.Packets, active: hs.Active, first: hs.First, last: hs.Last, unit: -1, dirty: true}
		if regrid {
			host.active = nil
		}
		if err := host.restoreForwarding(hs); err != nil {
			return nil, 0, err
		}
		if len(hs.Addrs) > maxRelayAddrs || len(hs.AddrTimes) != len(hs.Addrs) {
			return nil, 0, fmt.Errorf("host table: host %s: %d addresses and %d times, a counter keeps at most %d, a time each", hs.MAC, len(hs.Addrs), len(hs.AddrTimes), maxRelayAddrs)
		}
		host.relay, host.times, host.candidate, host.shadow = hs.Relay, hs.AddrTimes, hs.Candidate, hs.Shadow
		// Live, a MAC keeps at least one of the IPv4 addresses it sent from.
		host.v4 = len(hs.Addrs) > 0
		host.told = hs.Told || hs.Relay && len(hs.Addrs) > 0
		if len(hs.Names) > maxRelayNames {
			return nil, 0, fmt.Errorf("host table: host %s: %d DHCP names kept, a counter keeps at most %d", hs.MAC, len(hs.Names), maxRelayNames)
		}
		for _, n := range hs.Names {
			addr, err := netip.ParseAddr(n.Addr)
			if err != nil || !addr.Is4() {
				return nil, 0, fmt.Errorf("host table: host %s: DHCP name of address %q: want an IPv4 address", hs.MAC, n.Addr)
			}
			host.names = append(host.names, relayName{addr, nameKey(n.Name)})
		}
		for _, a := range hs.Addrs {
			addr, err := netip.ParseAddr(a)
			if err != nil || !addr.Is4() || slices.Contains(host.addrs, addr) {
				return nil, 0, fmt.Errorf("host table: host %s: address %q: want distinct IPv4 addresses", hs.MAC, a)
			}
			host.addrs = append(host.addrs, addr)
		}
		if n := len(hs.Keys) / packedKey; n > 0 {
			host.keys = make(map[heartbeat.Key]bool, n)
			for b := hs.Keys; len(b) > 0; b = b[packedKey:] {
				port := int32(uint32(binary.BigEndian.Uint16(b[1:]))<<16 | uint32(binary.BigEndian.Uint16(b[3:])))
				host.keys[heartbeat.Key{Transport: b[0], Port: port, IPLen: binary.BigEndian.Uint16(b[5:])}] = true
			}
		}
		h.keys += len(host.keys)
		h.hosts[mac] = host
	}
	if h.keys > cfg.MaxKeys {
		return nil, 0, fmt.Errorf("host table holds %d keys, this counter keeps at most %d", h.keys, cfg.MaxKeys)
	}
	if err := h.restoreSequences(st); err != nil {
		return nil, 0, err
	}
	return h, st.Seq, nil
}

// restoreForwarding rebuilds what showed a saved host forwards; a table
// of a counter before it marked a host infrastructure for good, which
// holds as it would have had that host shown it at its last packet.
func (host *liveHost) restoreForwarding(hs liveHostState) error {
	if len(hs.Remote) > forwardSources || hs.ForwardedUntil < 0 || hs.ForwardedUntil > MaxTimeNs+int64(forwardHold) {
		return fmt.Errorf("host table: host %s: %d remote sources, forwarding until %d ns: a counter keeps at most %d, until at most %d ns",
			hs.MAC, len(hs.Remote), hs.ForwardedUntil, forwardSources, MaxTimeNs+int64(forwardHold))
	}
	host.forwardedUntil = hs.ForwardedUntil
	if hs.Infra && hs.Last >= 0 && hs.Last <= MaxTimeNs {
		host.forwardedUntil = max(host.forwardedUntil, hs.Last+int64(forwardHold))
	}
	for _, r := range hs.Remote {
		src, err := netip.ParsePrefix(r.Src)
		want := 64
		if src.Addr().Is4() {
			want = 32
		}
		if err != nil || src.Bits() != want || src != src.Masked() || r.Last < 0 || r.Last > MaxTimeNs ||
			slices.ContainsFunc(host.remote, func(o remoteSource) bool { return o.src == src }) {
			return fmt.Errorf("host table: host %s: remote source %q at %d ns: want distinct IPv4 addresses and IPv6 /64s, at times a counter takes", hs.MAC, r.Src, r.Last)
		}
		host.remote = append(host.remote, remoteSource{src, r.Last})
	}
	return nil
}

// restoreSequences rebuilds the open IP ID sequences of a table saved with
// a model of Chains, each under the id its host's MAC names. A table with
// sequences for a model without, or over the bound, is refused.
func (h *LiveHome) restoreSequences(st liveState) error {
	if h.linker == nil {
		if len(st.Sequences) > 0 {
			return fmt.Errorf("host table holds %d IP ID sequences, and the host model counts a LAN (learn a WAN model with `hosts learn --wan`)", len(st.Sequences))
		}
		return nil
	}
	l := h.linker
	if len(st.Sequences) > l.max {
		return fmt.Errorf("host table holds %d IP ID sequences, this counter keeps at most %d", len(st.Sequences), l.max)
	}
	l.next, h.Unlinked = st.NextSequence, st.Unlinked
	seen := map[uint32]bool{}
	for _, ss := range st.Sequences {
		src, err := netip.ParseAddr(ss.Src)
		if err != nil || !src.Is4() || seen[ss.ID] || ss.ID >= l.next || ss.Last < 0 || ss.Last > MaxTimeNs {
			return fmt.Errorf("host table: IP ID sequence %d from %q at %d ns: not what State writes", ss.ID, ss.Src, ss.Last)
		}
		seen[ss.ID] = true
		l.restore(&liveChain{id: ss.ID, src: src, lastID: ss.LastID, last: ss.Last})
	}
	return nil
}

// isStrictlySorted says every port is above the one before it.
func isStrictlySorted(ports []uint16) bool {
	for i := 1; i < len(ports); i++ {
		if ports[i] <= ports[i-1] {
			return false
		}
	}
	return true
}
