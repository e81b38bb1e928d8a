package realhome

import (
	"encoding/binary"
	"slices"

	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/schemas"
)

// A capture's IPv6 frames name their hosts' MACs twice more than the
// Ethernet header does: in an IPv6 link-local address whose interface
// identifier is the MAC's modified EUI-64 (RFC 4291, appendix A), and in
// neighbour discovery's link-layer address options (RFC 4861). The
// assembler draws each unit a MAC of its own, so both move with it, as
// the Ethernet header's did: two units made from captures of one
// physical device would otherwise share one link-local address, which no
// two devices of a home do, and a unit's address would name a MAC that
// is not its own. A link-local address of another identifier (random, or
// RFC 7217's) names no MAC and stays; so do global addresses, which an
// IPv6-only home gives anew (to6).

// rewrite6 maps the MACs an IPv6 packet names (ip, from its header on)
// into the home, and adjusts its ICMPv6, UDP or TCP checksum to match.
func (rw *rewriter) rewrite6(ip []byte) {
	if len(ip) < 40 || ip[0]>>4 != 6 {
		return
	}
	old := slices.Clone(ip[8:40])
	rw.linkLocal(ip[8:24])
	rw.linkLocal(ip[24:40])
	next, l4, at := upperLayer(ip)
	if at < 0 {
		return
	}
	sum := gateway.AdjustChecksum(binary.BigEndian.Uint16(l4[at:]), old, ip[8:40])
	if next == 58 {
		sum = neighbourDiscovery(l4, sum, rw.linkLocal, rw.mac)
	}
	if next == 17 && sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(l4[at:], sum)
}

// upperLayer is an IPv6 packet's upper layer (ip from its header on):
// its protocol, its bytes, and where its checksum lies in them; -1 where
// it is none of ICMPv6, UDP and TCP or too short to hold the checksum.
// Hop-by-hop, routing and destination options (MLD's reports carry a
// hop-by-hop router alert) lie before it.
func upperLayer(ip []byte) (next byte, l4 []byte, at int) {
	next, l4 = ip[6], ip[40:]
	for n := 0; n < 8 && (next == 0 || next == 43 || next == 60); n++ {
		if len(l4) < 8 || len(l4) < 8+int(l4[1])*8 {
			return next, nil, -1
		}
		next, l4 = l4[0], l4[8+int(l4[1])*8:]
	}
	switch next {
	case 6:
		at = 16
	case 17:
		at = 6
	case 58:
		at = 2
	default:
		return next, nil, -1
	}
	if len(l4) < at+2 {
		return next, nil, -1
	}
	return next, l4, at
}

// neighbourDiscovery maps what a neighbour discovery message (m, from its
// ICMPv6 header on) names: its target addresses (a neighbour
// solicitation's or advertisement's, a redirect's two) by target, and
// the MACs of its source and target link-layer address options by mac.
// sum is its checksum, returned adjusted. Any other ICMPv6 message stays.
func neighbourDiscovery(m []byte, sum uint16, target func([]byte), mac func(schemas.MAC) schemas.MAC) uint16 {
	opts := -1
	switch m[0] {
	case 133: // router solicitation
		opts = 8
	case 134: // router advertisement
		opts = 16
	case 135, 136: // neighbour solicitation, advertisement
		opts = 24
	case 137: // redirect
		opts = 40
	default:
		return sum
	}
	if len(m) < opts {
		return sum
	}
	for at := 8; target != nil && at+16 <= opts; at += 16 {
		was := slices.Clone(m[at : at+16])
		target(m[at : at+16])
		sum = gateway.AdjustChecksum(sum, was, m[at:at+16])
	}
	for o := m[opts:]; len(o) >= 8 && o[1] != 0 && len(o) >= int(o[1])*8; o = o[int(o[1])*8:] {
		if (o[0] == 1 || o[0] == 2) && o[1] == 1 {
			was := slices.Clone(o[2:8])
			n := mac(schemas.MAC(o[2:8]))
			copy(o[2:8], n[:])
			sum = gateway.AdjustChecksum(sum, was, o[2:8])
		}
	}
	return sum
}

// linkLocal maps a link-local IPv6 address (a, 16 bytes, in place) whose
// interface identifier is a MAC's modified EUI-64 to the identifier of
// the MAC the home gives that one.
func (rw *rewriter) linkLocal(a []byte) {
	if a[0] != 0xfe || a[1]&0xc0 != 0x80 {
		return
	}
	m, ok := schemas.MACOfEUI64(a[8:16])
	if !ok || m[0]&1 != 0 {
		return // no MAC's identifier, or a group bit: no host's MAC
	}
	id := rw.mac(m).EUI64()
	copy(a[8:16], id[:])
}
