package homecount

import (
	"net/netip"
	"slices"
	"time"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/heartbeat"
	"github.com/homemole/homemole/schemas"
)

// A Wi-Fi repeater that translates MAC addresses (MAC-NAT, what most
// consumer range extenders do for the clients they relay) shows every
// device behind it under its own MAC on the gateway's LAN tap: counted by
// MAC, they are one host whose keys are all of theirs. Each keeps its IPv4
// address, so behind a MAC that is a repeater's, a host is an address.
//
// A MAC is a repeater's when it sends from an address again, less than
// RelayWindow after it last did, with a packet from another address of
// the same /24 in between: the devices behind a repeater send in turn,
// each with a lease of the home's LAN, while a device whose address
// changes (a new lease) does not go back, or only after far longer (a
// lease lost and won back). A device that keeps two addresses at once
// keeps them in two networks: an Edimax plug of IoT Sentinel's sends from
// its lease (10.10.10.186) and from 192.168.20.3 in turn. Taken for a
// repeater wrongly, a device is still one host, at its one address.
//
// Addresses that name no device behind a repeater are left to the MAC:
// 0.0.0.0 (DHCP before a lease; but see requestedAddr), link-local (a
// device may keep one beside its lease), and public ones (what a gateway
// forwards, or a host's own on a LAN of public addresses: LiveHome.forwards
// tells them apart).

// maxRelayAddrs bounds the addresses a MAC is remembered to have sent from.
const maxRelayAddrs = 64

// RelayWindow is how soon a MAC must send from an address again, another
// in between, to be a repeater's.
const RelayWindow = time.Minute

// relaySeen is what a MAC's IPv4 sources have shown: the addresses and
// when each was last sent from, the latest last, and whether it is a
// repeater's.
type relaySeen struct {
	addrs []netip.Addr
	times []int64
	relay bool
	// v4 says the MAC has sent from an IPv4 address of a LAN: its devices,
	// were it a repeater's, are told by those (behind).
	v4 bool
	// told says a packet of the MAC, a repeater's, was given to a device
	// behind it. A repeater none of whose devices can be told apart (an
	// IPv6-only home's whose addresses name no MAC) is counted as one
	// host, as it was before it was found: at least one device is there.
	told bool
	// candidate says the live counter keeps shadow hosts for the MAC (see
	// LiveHome.shadowing).
	candidate bool
	// names are the DHCP host names the MAC gave before it was a
	// candidate, each with the address its request named (the latest
	// maxRelayNames): a device behind a repeater gives its name from
	// 0.0.0.0 before it sends from its address, so what the MAC sent
	// before cannot be given to an address by its keys alone.
	names []relayName
}

// relayName is a DHCP host name's key and the address its request named.
type relayName struct {
	addr netip.Addr
	key  heartbeat.Key
}

// maxRelayNames bounds the names a MAC is remembered to have given.
const maxRelayNames = 4

// relayAddr is the address a packet names its sender by behind a
// repeater: its source.
func relayAddr(p *schemas.Packet) (netip.Addr, bool) {
	return lanAddr(p.SrcIP)
}

// arpAddr is the address an ARP message names its sender by behind a
// repeater (a MAC-NAT repeater rewrites ARP's hardware addresses, not
// its IPv4 ones), when the MAC has sent IP from it: a device that only
// ARPs in a window is still there. An ARP never makes a host or a
// repeater, because a device ARPs from addresses it does not hold: on
// joining, many ask for their last network's gateway from their last
// address there (RFC 4436's detection of network attachment), which an
// assembled home maps into the home's /24 and a real one may hold.
func (r *relaySeen) arpAddr(p *schemas.Packet) (netip.Addr, bool) {
	if p.SrcIP.IsValid() {
		return netip.Addr{}, false
	}
	a, ok := lanAddr(p.ARPSenderAddr())
	return a, ok && slices.Contains(r.addrs, a)
}

// requestedAddr is the address a DHCP request from 0.0.0.0 asks for:
// behind a repeater, the device it names (its name comes in those). It
// is a wish (a device asks for its last lease again), so it says which
// host sent the request, once the MAC is a repeater's, and never makes
// one.
func requestedAddr(p *schemas.Packet) (netip.Addr, bool) {
	if !p.SrcIP.IsUnspecified() {
		return netip.Addr{}, false
	}
	return lanAddr(p.DHCP.RequestedAddr())
}

// lanAddr says a is an address a device behind a repeater may hold.
func lanAddr(a netip.Addr) (netip.Addr, bool) {
	if !a.Is4() || a.IsUnspecified() || a.IsLinkLocalUnicast() || a.IsMulticast() || !(a.IsPrivate() || features.IsCarrierNAT(a)) {
		return netip.Addr{}, false
	}
	return a, true
}

// see takes an address the MAC sent from at ts and says whether the MAC
// is a repeater's.
func (r *relaySeen) see(a netip.Addr, ts int64) bool {
	n := len(r.addrs)
	if n > 0 && r.addrs[n-1] == a {
		r.times[n-1] = max(r.times[n-1], ts)
		return r.relay
	}
	if i := slices.Index(r.addrs, a); i >= 0 {
		r.relay = r.relay || ts-r.times[i] < int64(RelayWindow) && same24(r.addrs[n-1], a)
		r.addrs, r.times = slices.Delete(r.addrs, i, i+1), slices.Delete(r.times, i, i+1)
	} else if n == maxRelayAddrs {
		r.addrs, r.times = slices.Delete(r.addrs, 0, 1), slices.Delete(r.times, 0, 1)
	}
	r.addrs, r.times = append(r.addrs, a), append(r.times, ts)
	return r.relay
}

// behind is the host of the device behind the MAC that sent p, when the
// MAC is a repeater's (taking what p shows of it): the address it sent
// from (relayHost), or for a DHCP request from 0.0.0.0 the address it asks
// for; in an IPv6-only home, the MAC its address names (slaacMAC). A MAC
// that sends from the address it last sent from, of no repeater, is the
// common case: its time is all that moves.
func (r *relaySeen) behind(p *schemas.Packet) (schemas.MAC, bool) {
	if n := len(r.addrs); n > 0 && !r.relay && r.addrs[n-1] == p.SrcIP {
		r.times[n-1] = max(r.times[n-1], p.TsNs)
		return schemas.MAC{}, false
	}
	if m, ok := slaacMAC(p); ok {
		// A device's own address under another MAC, in a packet no router
		// forwarded: the MAC is a repeater's. Its devices are told by their
		// IPv4 addresses where they have any; a MAC that never sent from
		// one is an IPv6-only home's, and the device is the MAC its global
		// address names, whatever hop limit it sends with (SSDP's is 4): a
		// repeater forwards only its devices' packets. (Not its link-local
		// address, which a dual-stack device sends from before its IPv4
		// lease and would be counted twice. Live, the first device behind
		// a repeater that sends from its global address before its IPv4
		// one is a host of its own until that comes; read whole, v4 is
		// known from the first read.)
		r.relay = r.relay || unforwarded(p)
		if r.relay && !r.v4 && !p.SrcIP.IsLinkLocalUnicast() {
			r.told = true
			return m, true
		}
		if r.relay {
			return schemas.MAC{}, false
		}
	}
	if a, ok := relayAddr(p); ok {
		r.v4 = true
		relay := r.see(a, p.TsNs)
		r.told = r.told || relay
		return relayHost(a), relay
	}
	if r.relay {
		if a, ok := r.otherAddr(p); ok {
			r.told = true
			return relayHost(a), true
		}
	}
	return schemas.MAC{}, false
}

// slaacMAC is the MAC an IPv6 source address names, when it is another
// host's than the frame's: an identifier that stateless autoconfiguration
// formed from a universal MAC (modified EUI-64, RFC 4291 appendix A; many
// embedded stacks form theirs so), other than the frame's source. Behind a
// MAC-NAT repeater a device's frames carry the repeater's MAC and its
// addresses its own. A device's second interface (a bridge) has a locally
// administered MAC, which names no other host (IoT Sentinel's D-Link hub
// sends from such a link-local address beside its own).
func slaacMAC(p *schemas.Packet) (schemas.MAC, bool) {
	m, ok := addrMAC(p.SrcIP)
	if !ok || m == p.SrcMAC {
		return schemas.MAC{}, false
	}
	return m, true
}

// addrMAC is the universal MAC a global or link-local IPv6 address names
// (slaacMAC).
func addrMAC(a netip.Addr) (schemas.MAC, bool) {
	if !a.Is6() || a.Is4In6() || !a.IsGlobalUnicast() && !a.IsLinkLocalUnicast() {
		return schemas.MAC{}, false
	}
	b := a.As16()
	m, ok := schemas.MACOfEUI64(b[8:])
	if !ok || m[0]&0x03 != 0 {
		return schemas.MAC{}, false // a group or locally administered MAC
	}
	return m, true
}

// unforwarded says no router forwarded the IPv6 packet p: it comes from a
// link-local address, or with the hop limit a host starts at (64, 128 or
// 255). A server beyond the gateway whose address names its MAC comes a
// hop or more away, and makes no repeater of the gateway.
func unforwarded(p *schemas.Packet) bool {
	return p.SrcIP.IsLinkLocalUnicast() || p.TTL == 64 || p.TTL == 128 || p.TTL == 255
}

// deviceAddr is the address p names its sender by, were its MAC a
// repeater's: its source, an ARP's sender address it has sent from, or
// the address a DHCP request from 0.0.0.0 asks for.
func (r *relaySeen) deviceAddr(p *schemas.Packet) (netip.Addr, bool) {
	if a, ok := relayAddr(p); ok {
		return a, true
	}
	return r.otherAddr(p)
}

// otherAddr is the address a packet without a LAN source names its
// sender by behind a repeater: an ARP's (arpAddr) or a DHCP request's
// (requestedAddr).
func (r *relaySeen) otherAddr(p *schemas.Packet) (netip.Addr, bool) {
	if a, ok := r.arpAddr(p); ok {
		return a, true
	}
	return requestedAddr(p)
}

// mayBeRelay says the MAC, no repeater's yet, sent less than RelayWindow
// before now from an address of the /24 it sends from now, other than
// that one: were it a repeater's, it would be found one at that address's
// next turn.
func (r *relaySeen) mayBeRelay(now int64) bool {
	n := len(r.addrs)
	if r.relay || n < 2 {
		return false
	}
	for i := range n - 1 {
		if now-r.times[i] < int64(RelayWindow) && same24(r.addrs[i], r.addrs[n-1]) {
			return true
		}
	}
	return false
}

// same24 says two IPv4 addresses are of one /24: the devices behind a
// repeater hold leases of the home's LAN.
func same24(a, b netip.Addr) bool {
	x, y := a.As4(), b.As4()
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2]
}

// remember keeps the DHCP host name p gives, with the address it names.
func (r *relaySeen) remember(p *schemas.Packet) {
	a, ok := r.deviceAddr(p)
	if !ok {
		return
	}
	n := relayName{a, dhcpNameKey(p.DHCP.Name)}
	if slices.Contains(r.names, n) {
		return
	}
	if len(r.names) == maxRelayNames {
		r.names = slices.Delete(r.names, 0, 1)
	}
	r.names = append(r.names, n)
}

// relayHost is the host behind a repeater that sends from a: a locally
// administered MAC that names the address, as no device's does.
func relayHost(a netip.Addr) schemas.MAC {
	b := a.As4()
	return schemas.MAC{0x0a, 0, b[0], b[1], b[2], b[3]}
}

// relays tracks the MACs of a capture read whole.
type relays map[schemas.MAC]*relaySeen

// host is the host a packet is of: its source MAC, or the address it sent
// from behind a repeater.
func (rs relays) host(p *schemas.Packet) schemas.MAC {
	r := rs[p.SrcMAC]
	if r == nil {
		r = &relaySeen{}
		rs[p.SrcMAC] = r
	}
	if m, ok := r.behind(p); ok {
		return m
	}
	return p.SrcMAC
}

// isRelay says the MAC was found to be a repeater's whose devices were
// told apart: its own host is none of them.
func (rs relays) isRelay(mac schemas.MAC) bool {
	r := rs[mac]
	return r != nil && r.relay && r.told
}

// readHosts is the host each packet of pkts (a capture read whole, in
// order) is of (relays.host; the zero MAC for a frame without a source
// MAC), and the repeaters as the last read left them. A capture that holds
// a repeater is read twice: once to find the repeaters' MACs, and once
// more with them known, so that what each sent from its first packet goes
// to the device at its address.
func readHosts(pkts []schemas.Packet) ([]schemas.MAC, relays) {
	read := func(rs relays) []schemas.MAC {
		out := make([]schemas.MAC, len(pkts))
		for i := range pkts {
			if p := &pkts[i]; !p.SrcMAC.IsZero() {
				out[i] = rs.host(p)
			}
		}
		return out
	}
	rs := relays{}
	hosts := read(rs)
	found := relays{}
	for mac, r := range rs {
		if r.relay {
			found[mac] = &relaySeen{relay: true, v4: r.v4}
		}
	}
	if len(found) == 0 {
		return hosts, rs
	}
	return read(found), found
}

// Relayed is what a capture read whole shows of the MAC-NAT repeaters in
// it, found as the host counter finds them (hostPackets): predict
// (pipeline/identify) gives a repeater's packets to the devices behind it
// by it.
type Relayed struct {
	// Hosts is the host that sent each packet of the capture, in order:
	// its source MAC; when that is a repeater's (IsRelay), the device
	// behind it at the IPv4 address the packet names it by (its source,
	// an ARP's sender address it has sent from, or the address a DHCP
	// request from 0.0.0.0 asks for; RelayAddr), or in an IPv6-only home
	// the MAC its address names; the repeater's own MAC where the packet
	// names none. The zero MAC for a frame without a source MAC.
	Hosts []schemas.MAC
	rs    relays
	// behind holds the hosts seen sending behind each repeater.
	behind map[schemas.MAC]map[schemas.MAC]bool
}

// ReadRelayed finds the repeaters of pkts, a capture read whole, in order.
func ReadRelayed(pkts []schemas.Packet) *Relayed {
	hosts, rs := readHosts(pkts)
	r := &Relayed{Hosts: hosts, rs: rs, behind: map[schemas.MAC]map[schemas.MAC]bool{}}
	for i, h := range hosts {
		if mac := pkts[i].SrcMAC; h != mac && rs.isRelay(mac) {
			if r.behind[mac] == nil {
				r.behind[mac] = map[schemas.MAC]bool{}
			}
			r.behind[mac][h] = true
		}
	}
	return r
}

// IsRelay says mac is a repeater's whose devices were told apart: its own
// host is none of them, and what it sent that names no device is the
// repeater's own (or its devices' where nothing tells which: a
// dual-stack device's IPv6, link-local frames).
func (r *Relayed) IsRelay(mac schemas.MAC) bool {
	return r.rs.isRelay(mac)
}

// Receiver is the device behind the repeater p is addressed to (its
// destination MAC) that p's destination names: a LAN IPv4 address, or an
// IPv6 address that names a MAC (modified EUI-64), of a device seen
// sending behind that repeater (Hosts). A packet to an address no device
// behind it sent from is the repeater's own.
func (r *Relayed) Receiver(p *schemas.Packet) (schemas.MAC, bool) {
	var h schemas.MAC
	if a, ok := lanAddr(p.DstIP); ok {
		h = relayHost(a)
	} else if m, ok := addrMAC(p.DstIP); ok {
		h = m
	} else {
		return schemas.MAC{}, false
	}
	return h, r.behind[p.DstMAC][h]
}

// RelayAddr is the IPv4 address of a host behind a repeater (one of
// Relayed.Hosts other than its packet's source MAC), false for a host
// that is a MAC an IPv6 address names.
func RelayAddr(host schemas.MAC) (netip.Addr, bool) {
	if host[0] != 0x0a || host[1] != 0 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(host[2:])), true
}

// What a repeater's MAC sent before it was found to be one is its
// devices'. Found at a device's second turn, the repeater's first device
// has given its name, its DHCP and its first keys by then, under the MAC,
// and a unit counted on a setup's first minute would go without them. So
// while a MAC may be a repeater's (mayBeRelay), the live counter keeps,
// beside its host, a shadow host for each address it sends from: not
// counted, and dropped if the MAC turns out a device's whose lease
// changed; once the MAC is found to be a repeater's, each shadow is the
// host of the device at its address. A capture read whole needs none of
// this: it reads the capture twice (hostPackets).

// shadowing says what the host of a MAC sends is kept under its addresses
// too (mayBeRelay), starting or dropping the shadows as that changes;
// fresh says p's address is one the MAC had not sent from. Before, only
// the names it gives are kept, with their addresses.
func (h *LiveHome) shadowing(host *liveHost, p *schemas.Packet, fresh bool) bool {
	may := host.mayBeRelay(p.TsNs)
	switch {
	case may && !host.candidate:
		h.startShadows(host, p.SrcMAC, p.TsNs, fresh)
	case !may && host.candidate:
		h.dropShadows(host)
	case !may && p.DHCP.Name != 0:
		host.remember(p)
	}
	host.candidate = may
	return may
}

// startShadows gives what a MAC sent before it may be a repeater's to the
// one address it sent from before the present one (the device whose turn
// it was), but its names, which go to the addresses their requests named.
// A MAC that sent from more addresses before (turns more than RelayWindow
// apart, or the present address too) sent what no address can be told
// for: only its names are given.
func (h *LiveHome) startShadows(host *liveHost, mac schemas.MAC, now int64, fresh bool) {
	for _, n := range host.names {
		a := relayHost(n.addr)
		h.addKey(a, h.shadowHost(a, now, mac), n.key)
	}
	if !fresh || len(host.addrs) != 2 {
		return
	}
	prev := relayHost(host.addrs[0])
	s := h.shadowHost(prev, host.first, mac)
	s.last = max(s.last, host.last)
	for k := range host.keys {
		if k.Port < DHCPOption {
			h.addKey(prev, s, k)
		}
	}
	for _, st := range host.active {
		if i, found := slices.BinarySearch(s.active, st); !found {
			s.active = slices.Insert(s.active, i, st)
		}
	}
}

// dropShadows forgets the shadow hosts of a MAC that is no repeater's.
func (h *LiveHome) dropShadows(host *liveHost) {
	host.eachShadow(h, func(a schemas.MAC, _ *liveHost) { h.forget(a) })
}

// promote makes the shadow hosts of a MAC just found to be a repeater's
// the hosts of its devices.
func (h *LiveHome) promote(host *liveHost) {
	host.eachShadow(h, func(_ schemas.MAC, s *liveHost) { s.shadow, s.dirty = false, true })
	host.candidate, host.names = false, nil
}

// eachShadow calls f with every shadow host of the MAC's addresses and of
// those its names' requests named.
func (r *relaySeen) eachShadow(h *LiveHome, f func(schemas.MAC, *liveHost)) {
	visit := func(a netip.Addr) {
		if s := h.hosts[relayHost(a)]; s != nil && s.shadow {
			f(relayHost(a), s)
		}
	}
	for _, a := range r.addrs {
		visit(a)
	}
	for _, n := range r.names {
		visit(n.addr)
	}
}

// shadowHost is the host of a, a shadow when new, seen at ts; no host of
// keep makes room for it.
func (h *LiveHome) shadowHost(a schemas.MAC, ts int64, keep schemas.MAC) *liveHost {
	_, known := h.hosts[a]
	s := h.host(a, ts, keep)
	s.shadow = s.shadow || !known
	return s
}
