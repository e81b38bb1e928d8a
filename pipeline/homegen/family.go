package homegen

import (
	"fmt"
	"net/netip"
)

// Address plans: which IP version and which addresses the generated home's
// packets carry. The devices' behaviour is the same in every plan and so is
// every packet's size, timing and order for one seed: only the addresses
// (and with IPv6 the header, 20 bytes longer) differ, so one plan's
// capture is ground truth for another's.
const (
	// PlanIPv4 is the default: a 192.168.1.0/24 LAN, public servers.
	PlanIPv4 = "ipv4"
	// PlanIPv6 is an IPv6-only home: devices on LANPrefix6, a global
	// /64 from the ISP, servers each in a /64 of their own, the gateway
	// at ::1 of the LAN prefix; multicast maps to its IPv6 group.
	PlanIPv6 = "ipv6"
	// PlanDual keeps the LAN on IPv4 and reaches every server whose IPv4
	// address is odd over IPv6 (from the device's address in LANPrefix6).
	PlanDual = "dual"
	// PlanPrivateRemotes is a home behind an access point that translates
	// remote servers to private addresses: every server appears inside
	// 172.16.0.0/12, so no public address is ever seen on the LAN.
	PlanPrivateRemotes = "private-remotes"
)

// LANPrefix6 is the global IPv6 prefix of the IPv6 plans' home.
var LANPrefix6 = netip.MustParsePrefix("2001:db8:1:1::/64")

// addrPlan maps the layout's IPv4 hosts onto the plan's addresses.
type addrPlan string

func parsePlan(s string) (addrPlan, error) {
	switch s {
	case "", PlanIPv4:
		return PlanIPv4, nil
	case PlanIPv6, PlanDual, PlanPrivateRemotes:
		return addrPlan(s), nil
	}
	return "", fmt.Errorf("address plan %q: want %s, %s, %s or %s", s, PlanIPv4, PlanIPv6, PlanDual, PlanPrivateRemotes)
}

var lan4 = netip.MustParsePrefix("192.168.0.0/16")

// v6 says whether a packet between from and to is IPv6 in this plan, and
// with which addresses.
func (p addrPlan) v6(from, to *host) (netip.Addr, netip.Addr, bool) {
	switch p {
	case PlanIPv6:
		return Map6(from.ip), Map6(to.ip), true
	case PlanDual:
		remote := to.ip
		if lan4.Contains(remote) || remote.IsMulticast() {
			remote = from.ip
		}
		if lan4.Contains(remote) || remote.IsMulticast() || remote.As4()[3]&1 == 0 {
			return netip.Addr{}, netip.Addr{}, false
		}
		return Map6(from.ip), Map6(to.ip), true
	}
	return netip.Addr{}, netip.Addr{}, false
}

// v4 is a host's IPv4 address in this plan.
func (p addrPlan) v4(h *host) netip.Addr {
	a := h.ip
	if p != PlanPrivateRemotes || lan4.Contains(a) || a.IsMulticast() || a == netip.IPv4Unspecified() || a.As4() == [4]byte{255, 255, 255, 255} {
		return a
	}
	b := a.As4()
	return netip.AddrFrom4([4]byte{172, 16 | b[1]&15, b[2], b[3]})
}

// Map6 is an IPv4 host's address in the IPv6-only plan: the LAN's hosts
// (192.168.0.0/16) keep their last byte in LANPrefix6, every server gets a
// /64 of its own made of its IPv4 address, group addresses their IPv6
// group (all-nodes for broadcast). Assembled real homes (realhome) use it
// too.
func Map6(a netip.Addr) netip.Addr {
	b := a.As4()
	switch {
	case a == netip.IPv4Unspecified():
		return netip.IPv6Unspecified()
	case a.IsMulticast() || b == [4]byte{255, 255, 255, 255}:
		group := map[[4]byte]byte{{239, 255, 255, 250}: 0x0c, {224, 0, 0, 251}: 0xfb}[b]
		if group == 0 {
			group = 1
		}
		return netip.AddrFrom16([16]byte{0: 0xff, 1: 0x02, 15: group})
	case lan4.Contains(a):
		l := LANPrefix6.Addr().As16()
		l[15] = b[3]
		return netip.AddrFrom16(l)
	}
	return netip.AddrFrom16([16]byte{0x2a, 0x00, 0x14, 0x50, b[0], b[1], b[2], b[3], 15: 1})
}
