package realhome

import (
	"encoding/binary"
	"net/netip"

	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/schemas"
)

// An IPv6-only home is assembled from the same IPv4 captures: every TCP
// and UDP segment and every ping is carried over IPv6 instead, with the
// generated homes' address plan (homegen.Map6: the LAN's hosts in
// homegen.LANPrefix6, each server in a /64 of its own, multicast in its
// IPv6 group), and the same payload, hop limit and timing. What has no
// IPv6 twin is left out: ARP, DHCP, IGMP, other ICMP messages and IPv4
// fragments. Frames that are no IPv4 (EAPOL, IPv6 the device sent) stay.

// to6 is the frame b carried over IPv6, or false when it is left out of an
// IPv6-only home. addr6 gives the IPv6 address of an IPv4 one whose
// frames carry the MAC (Home.addr6).
func to6(b []byte, addr6 func(netip.Addr, schemas.MAC) netip.Addr) ([]byte, bool) {
	off, et := etherType(b)
	switch et {
	case 0x0800:
	case 0x0806:
		return nil, false
	default:
		return b, off > 0
	}
	ip := b[off:]
	if len(ip) < 20 || ip[0]>>4 != 4 {
		return nil, false
	}
	ihl, total := int(ip[0]&0x0f)*4, int(binary.BigEndian.Uint16(ip[2:4]))
	if ihl < 20 || total < ihl || len(ip) < ihl || binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
		return nil, false // fragments (MF or an offset) have no twin here
	}
	// The payload the header states; a snap length may have cut what was
	// captured of it.
	l4 := ip[ihl:min(total, len(ip))]
	proto, csum := ip[9], -1
	switch proto {
	case 6:
		csum = 16
	case 17:
		if len(l4) >= 4 {
			if port := binary.BigEndian.Uint16(l4[2:4]); port == 67 || port == 68 {
				return nil, false // DHCP: IPv6 hosts get addresses otherwise
			}
		}
		csum = 6
	case 1:
		// Echo request and reply are ICMPv6's 128 and 129.
		if len(l4) < 4 || (l4[0] != 8 && l4[0] != 0) {
			return nil, false
		}
		proto, csum = 58, 2
	default:
		return nil, false
	}
	if len(l4) < csum+2 {
		return nil, false
	}
	src, dst := addr6(netip.AddrFrom4([4]byte(ip[12:16])), schemas.MAC(b[6:12])), addr6(netip.AddrFrom4([4]byte(ip[16:20])), schemas.MAC(b[0:6]))
	out := make([]byte, off+40+len(l4))
	copy(out, b[:off])
	if dst.IsMulticast() {
		// 33:33 and the group's last four bytes (RFC 2464).
		g := dst.As16()
		copy(out[0:6], []byte{0x33, 0x33, g[12], g[13], g[14], g[15]})
	}
	binary.BigEndian.PutUint16(out[off-2:off], 0x86dd)
	h := out[off : off+40]
	binary.BigEndian.PutUint32(h[0:4], 6<<28|uint32(ip[1])<<20)
	binary.BigEndian.PutUint16(h[4:6], uint16(total-ihl))
	h[6], h[7] = proto, ip[8]
	s, d := src.As16(), dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	seg := out[off+40:]
	copy(seg, l4)
	if proto == 58 {
		seg[0] = map[byte]byte{8: 128, 0: 129}[seg[0]]
	}
	// A new checksum over the IPv6 pseudo-header (RFC 8200 8.1); UDP's is
	// no longer optional.
	binary.BigEndian.PutUint16(seg[csum:], 0)
	var pseudo uint32
	for i := 8; i < 40; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	pseudo += uint32(proto) + uint32(total-ihl)
	c := gateway.Checksum(seg, pseudo)
	if c == 0 && proto == 17 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(seg[csum:], c)
	return out, true
}

// addr6 is the IPv6 address of a, an IPv4 address of the home or beyond it
// whose frames carry mac: with SLAAC a LAN host's is formed from its MAC,
// the gateway's and the rest are map6's.
func (h *Home) addr6(a netip.Addr, mac schemas.MAC) netip.Addr {
	if h.SLAAC && h.LAN.Contains(a) && a != lastAddr(h.LAN) && mac != h.GatewayMAC && mac[0]&1 == 0 {
		return slaac(homegen.LANPrefix6, mac)
	}
	return map6(a, h.LAN)
}

// slaac is the address a host of MAC mac forms in the /64 prefix: the
// prefix, then the MAC's modified EUI-64.
func slaac(prefix netip.Prefix, mac schemas.MAC) netip.Addr {
	a, id := prefix.Masked().Addr().As16(), mac.EUI64()
	copy(a[8:], id[:])
	return netip.AddrFrom16(a)
}

// map6 is an address of the home in the IPv6 plan: the home's own LAN keeps
// its hosts' last byte in homegen.LANPrefix6, whatever prefix it had, and
// its broadcast is all-nodes.
func map6(a netip.Addr, lan netip.Prefix) netip.Addr {
	if a == lastAddr(lan) {
		return homegen.Map6(netip.AddrFrom4([4]byte{255, 255, 255, 255}))
	}
	if lan.Contains(a) {
		l := homegen.LANPrefix6.Addr().As16()
		l[15] = a.As4()[3]
		return netip.AddrFrom16(l)
	}
	return homegen.Map6(a)
}

// lastAddr is a prefix's broadcast address.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := binary.BigEndian.Uint32(b[:]) | host
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}
