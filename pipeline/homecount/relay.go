package homecount

import (
	"net/netip"
	"slices"
	"time"

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
// repeater wrongly, a device is still one host, at its one address: only
// what it sent before is lost.
//
// Addresses that name no device behind a repeater are left to the MAC:
// 0.0.0.0 (DHCP before a lease; but see requestedAddr), link-local (a
// device may keep one beside its lease), and public ones (a host that
// sends from those forwards: the home's infrastructure).

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
}

// relayAddr is the address a packet names its sender by behind a
// repeater: its source.
func relayAddr(p *schemas.Packet) (netip.Addr, bool) {
	return lanAddr(p.SrcIP)
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
	if !a.Is4() || a.IsUnspecified() || a.IsLinkLocalUnicast() || a.IsMulticast() || !(a.IsPrivate() || carrierNAT.Contains(a)) {
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
		between := r.addrs[n-1].As4()
		b := a.As4()
		r.relay = r.relay || ts-r.times[i] < int64(RelayWindow) && between[0] == b[0] && between[1] == b[1] && between[2] == b[2]
		r.addrs, r.times = slices.Delete(r.addrs, i, i+1), slices.Delete(r.times, i, i+1)
	} else if n == maxRelayAddrs {
		r.addrs, r.times = slices.Delete(r.addrs, 0, 1), slices.Delete(r.times, 0, 1)
	}
	r.addrs, r.times = append(r.addrs, a), append(r.times, ts)
	return r.relay
}

// behind is the address of the device behind the MAC that sent p, when
// the MAC is a repeater's (taking what p shows of it): its source, or
// for a DHCP request from 0.0.0.0 the address it asks for. A MAC that
// sends from the address it last sent from, of no repeater, is the common
// case: its time is all that moves.
func (r *relaySeen) behind(p *schemas.Packet) (netip.Addr, bool) {
	if n := len(r.addrs); n > 0 && !r.relay && r.addrs[n-1] == p.SrcIP {
		r.times[n-1] = max(r.times[n-1], p.TsNs)
		return netip.Addr{}, false
	}
	if a, ok := relayAddr(p); ok {
		return a, r.see(a, p.TsNs)
	}
	if r.relay {
		return requestedAddr(p)
	}
	return netip.Addr{}, false
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
	if a, ok := r.behind(p); ok {
		return relayHost(a)
	}
	return p.SrcMAC
}

// isRelay says the MAC was found to be a repeater's.
func (rs relays) isRelay(mac schemas.MAC) bool {
	r := rs[mac]
	return r != nil && r.relay
}
