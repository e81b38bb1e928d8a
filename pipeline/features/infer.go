package features

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strings"

	"github.com/homemole/homemole/schemas"
)

// HomeInference finds a capture's home side from its traffic alone: the
// gateway's LAN MAC and the home's prefixes, for captures taken by someone
// who knows neither. Feed it frames with Observe, then ask Result.
//
// The gateway is the Ethernet peer of the traffic between the home's
// private IPv4 addresses and public ones; failing that (an IPv6-only home,
// where both ends are global), the MAC behind which the most distinct
// global IPv6 /64 prefixes appear (a NAT64 address counted as the IPv4
// server it stands for), since behind the gateway lies the internet and
// behind a host only its own addresses; then, for a LAN on public or CGNAT
// IPv4 addresses, the MAC behind the most public IPv4 addresses. With no
// public traffic to tell (an access point that translates remote servers
// to private addresses), it is the MAC that sends DHCP answers or router
// advertisements; the MAC that forwards packets from afar (their TTL below
// a host's initial values); the MAC the most other MACs talk to; the MAC
// behind the most servers of networks other than their clients'; and last
// the MAC behind the most addresses. Each winner needs more than twice the
// runner-up's count.
//
// The home's prefixes are the private ranges, ULA and link-local, plus
// every global IPv6 /64 and the /24 of every public IPv4 address that a
// host sources: a MAC that routes (the gateway, a second router that
// forwards the home's IPv6) sources remote servers' prefixes too (see
// hostPrefixes); a NAT64 prefix never is.
//
// A capture without Ethernet (raw IP on a tun device, PPP, loopback) has
// no MACs: every unicast packet on it crosses the gateway, so the home side
// is made of the clients: each address (IPv4) or /64 prefix (IPv6) that
// more often opens a conversation (a TCP SYN, a UDP datagram to a service
// port, the first datagram of a UDP flow) than answers one. Packets whose
// two ends are both not home are then covered greedily, by the end in the
// most of them.
//
// Memory is bounded: past maxInferKeys distinct MACs, addresses or pairs,
// new ones are not tracked (the ones seen first keep being counted), which
// a home's traffic does not reach.
type HomeInference struct {
	frames, ipFrames, withMAC int

	macs map[schemas.MAC]*macStats
	// srcPrefixes counts, per source MAC, the frames of each global prefix
	// it sources (IPv6 /64, NAT64 address, public IPv4 /24), by how far
	// their TTL says they come from.
	srcPrefixes map[macPrefix]srcTally

	// Raw-IP captures: packets per address pair, and per address how
	// often it was the client and the server of a conversation.
	pairs          map[[2]netip.Prefix]int
	client, server map[netip.Prefix]int
	flows          map[rawFlow]struct{}

	// mirror leaves out the later fragments of a mirror's packets (TZSP,
	// VXLAN, GRE), as the decoder does: they are not the home's.
	mirror mirrorRest
}

type macStats struct {
	// public4 counts frames where this MAC is the Ethernet peer of a
	// public IPv4 address talking with a private one.
	public4 int
	// global6 are the distinct global IPv6 /64s on this MAC's side.
	global6 map[netip.Prefix]struct{}
	// peers are the unicast MACs this one exchanges IP frames with.
	peers map[schemas.MAC]struct{}
	// addrs are the IP addresses on this MAC's side of its frames.
	addrs map[netip.Addr]struct{}
	// serves counts the frames it sent as a home's router does: DHCP
	// answers, IPv6 router advertisements.
	serves int
	// farTTL are the TTLs (hop limits) below a host's initial values of
	// the frames it sent, and farSrc their source addresses: packets it
	// forwarded from beyond the home.
	farTTL [4]uint64
	farSrc map[netip.Addr]struct{}
	// servers are the addresses on its side that serve a conversation
	// (see serverEnd) whose client is in another network (offLink).
	servers map[netip.Addr]struct{}
	// frames carrying this MAC as source or destination.
	frames int
}

type macPrefix struct {
	mac schemas.MAC
	p   netip.Prefix
}

// srcTally counts the frames a MAC sent from one prefix: near, with the
// TTL (hop limit) a host's own packets leave with or at most one router
// below it; far, lower still: forwarded from beyond the home.
type srcTally struct{ near, far int }

// nearTTL: a TTL or hop limit that a packet has at its sender's first hop
// (the initial values of nearly every stack, 64, 128 and 255) or one
// router further (a host on another segment of the home). A packet from
// the internet has crossed its own network, the ISP's and the home's
// router, and arrives lower.
func nearTTL(ttl byte) bool {
	switch ttl {
	case 255, 254, 128, 127, 64, 63:
		return true
	}
	return false
}

// maxInferKeys bounds every map of a HomeInference.
const maxInferKeys = 1 << 16

// NewHomeInference returns an empty inference.
func NewHomeInference() *HomeInference {
	return &HomeInference{
		macs:        map[schemas.MAC]*macStats{},
		srcPrefixes: map[macPrefix]srcTally{},
		pairs:       map[[2]netip.Prefix]int{},
		client:      map[netip.Prefix]int{},
		server:      map[netip.Prefix]int{},
		flows:       map[rawFlow]struct{}{},
	}
}

// Observe takes one frame. Frames without an IP packet, or that cannot be
// read, only count.
func (h *HomeInference) Observe(lt LinkType, data []byte) {
	h.frames++
	l, frag, err := parseLinkMirrored(lt, data)
	if err != nil || !l.IsIP() || h.mirror.take(&l, frag, data) != nil {
		return
	}
	ip := data[l.Offset:]
	var src, dst netip.Addr
	var proto, ttl byte
	var l4 []byte
	later := false // a later fragment, which holds no transport header
	switch {
	case l.EtherType == EtherTypeIPv4 && len(ip) >= 20 && ip[0]>>4 == 4 && len(ip) >= int(ip[0]&0xf)*4:
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		proto, ttl, l4 = ip[9], ip[8], ip[int(ip[0]&0xf)*4:]
		later = binary.BigEndian.Uint16(ip[6:8])&0x1fff != 0
	case l.EtherType == EtherTypeIPv6 && len(ip) >= 40 && ip[0]>>4 == 6:
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		proto, ttl, l4 = ip[6], ip[7], ip[40:]
	default:
		return
	}
	if routerFrame(proto, l4) && l.SrcMAC[0]&1 == 0 && !l.SrcMAC.IsZero() {
		// Router advertisements go to all-nodes and DHCP offers often to
		// broadcast: counted before group frames are left out.
		if s := h.mac(l.SrcMAC); s != nil {
			s.serves++
		}
	}
	if dst.IsMulticast() || dst == limitedBroadcast || !src.IsValid() || src.IsUnspecified() {
		return
	}
	h.ipFrames++
	if l.SrcMAC.IsZero() && l.DstMAC.IsZero() {
		h.observeRaw(src, dst, proto, l4)
		return
	}
	if l.DstMAC[0]&1 != 0 || l.SrcMAC[0]&1 != 0 {
		return
	}
	h.withMAC++
	s, d := h.mac(l.SrcMAC), h.mac(l.DstMAC)
	if s == nil || d == nil {
		return
	}
	s.frames++
	d.frames++
	addKey(s.peers, l.DstMAC)
	addKey(d.peers, l.SrcMAC)
	addKey(s.addrs, src)
	addKey(d.addrs, dst)
	if !nearTTL(ttl) {
		s.farTTL[ttl>>6] |= 1 << (ttl & 63)
		addKey(s.farSrc, src)
	}
	if srcServes, ok := serverEnd(proto, l4); ok && !later {
		switch {
		case srcServes && offLink(dst, src):
			addKey(s.servers, src)
		case !srcServes && offLink(src, dst):
			addKey(d.servers, dst)
		}
	}
	if src.Is4() {
		switch sp, dp := isHomeRange(src), isHomeRange(dst); {
		case sp && !dp:
			d.public4++
		case dp && !sp:
			s.public4++
		}
		if isPublic4(src) {
			// A LAN on public or shared (CGNAT) addresses: the /24 is
			// the common size of the one an ISP routes to a home.
			p, _ := src.Prefix(24)
			h.sourced(l.SrcMAC, p, ttl)
		}
		return
	}
	if isGlobal6(src) {
		p := key6(src)
		addKey(s.global6, p)
		h.sourced(l.SrcMAC, p, ttl)
	}
	if isGlobal6(dst) {
		addKey(d.global6, key6(dst))
	}
}

// sourced counts a frame that m sent from prefix p with ttl.
func (h *HomeInference) sourced(m schemas.MAC, p netip.Prefix, ttl byte) {
	k := macPrefix{m, p}
	c, ok := h.srcPrefixes[k]
	if !ok && len(h.srcPrefixes) >= maxInferKeys {
		return
	}
	if nearTTL(ttl) {
		c.near++
	} else {
		c.far++
	}
	h.srcPrefixes[k] = c
}

func (h *HomeInference) mac(m schemas.MAC) *macStats {
	s := h.macs[m]
	if s == nil && len(h.macs) < maxInferKeys {
		s = &macStats{global6: map[netip.Prefix]struct{}{}, peers: map[schemas.MAC]struct{}{}, addrs: map[netip.Addr]struct{}{},
			farSrc: map[netip.Addr]struct{}{}, servers: map[netip.Addr]struct{}{}}
		h.macs[m] = s
	}
	return s
}

// addKey adds k to a set that stops growing at a few thousand: the ranking
// only needs to tell many from few.
func addKey[K comparable](set map[K]struct{}, k K) {
	if len(set) < 4096 {
		set[k] = struct{}{}
	}
}

type rawFlow struct {
	a, b         netip.Addr
	sport, dport uint16
}

func (h *HomeInference) observeRaw(src, dst netip.Addr, proto byte, l4 []byte) {
	a, b := rawKey(src), rawKey(dst)
	if a == b {
		return
	}
	k := [2]netip.Prefix{a, b}
	if _, ok := h.pairs[k]; ok || len(h.pairs) < maxInferKeys {
		h.pairs[k]++
	}
	if len(l4) < 14 && !(proto == 17 && len(l4) >= 4) {
		return
	}
	sp, dp := binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	clientIsSrc, known := false, false
	switch proto {
	case 6:
		switch l4[13] & 0x12 {
		case 0x02: // SYN
			clientIsSrc, known = true, true
		case 0x12: // SYN-ACK
			clientIsSrc, known = false, true
		}
	case 17:
		switch ss, ds := servicePort(sp), servicePort(dp); {
		case ds && !ss:
			clientIsSrc, known = true, true
		case ss && !ds:
			clientIsSrc, known = false, true
		default:
			// Both or neither a service port (NTP 123 to 123, P2P): the
			// side that sent first opened the flow.
			f := rawFlow{src, dst, sp, dp}
			if f.b.Less(f.a) {
				f = rawFlow{dst, src, dp, sp}
			}
			if _, seen := h.flows[f]; !seen && len(h.flows) < maxInferKeys {
				h.flows[f] = struct{}{}
				clientIsSrc, known = true, true
			}
		}
	}
	if !known {
		return
	}
	c, s := a, b
	if !clientIsSrc {
		c, s = b, a
	}
	countKey(h.client, c)
	countKey(h.server, s)
}

func countKey(m map[netip.Prefix]int, k netip.Prefix) {
	if _, ok := m[k]; ok || len(m) < maxInferKeys {
		m[k]++
	}
}

// servicePort: a port a server listens on: the well-known range and the
// registered ports home devices talk to.
func servicePort(p uint16) bool {
	switch p {
	case 1194, 1883, 1900, 3478, 5060, 5353, 5683, 8080, 8443, 8883, 51820:
		return true
	}
	return p < 1024
}

// rawKey is the unit a raw-IP home is made of: an IPv4 address, an IPv6 /64
// (a NAT64 address alone: see key6).
func rawKey(a netip.Addr) netip.Prefix {
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	return key6(a)
}

func prefix64(a netip.Addr) netip.Prefix {
	p, _ := a.Prefix(64)
	return p
}

// key6 is the unit a global IPv6 address is counted in: its /64, a
// network; but a NAT64 address is an IPv4 server (RFC 6052 embeds it in the
// last 32 bits of a /96) and is itself the unit. Every IPv4-only cloud an
// IPv6-only home reaches lies in the one /64 64:ff9b::/64: counted as a
// /64, a NAT64 gateway would stand for one network however many servers it
// fronts.
func key6(a netip.Addr) netip.Prefix {
	if IsNAT64(a) {
		return netip.PrefixFrom(a, 128)
	}
	return prefix64(a)
}

var (
	nat64WellKnown = netip.MustParsePrefix("64:ff9b::/96")   // RFC 6052
	nat64Local     = netip.MustParsePrefix("64:ff9b:1::/48") // RFC 8215
)

// IsNAT64 says a is in a NAT64 prefix: it stands for an IPv4 host beyond
// a translator and is never the home's, and no LAN host holds one (a CLAT
// sends to them, from its own address).
func IsNAT64(a netip.Addr) bool {
	return nat64WellKnown.Contains(a) || nat64Local.Contains(a)
}

// carrierNAT is RFC 6598's shared address space, 100.64.0.0/10.
var carrierNAT = netip.MustParsePrefix("100.64.0.0/10")

// IsCarrierNAT says a is in the ISPs' shared address space: a carrier
// NAT's inside, which a home's gateway (or a LAN numbered in it) may hold;
// never a server of the Internet.
func IsCarrierNAT(a netip.Addr) bool { return carrierNAT.Contains(a.Unmap()) }

// serverEnd says which end of a TCP or UDP packet is the server of its
// conversation: the one on a service port when the other is not; failing
// that, for TCP, the receiver of a SYN or the sender of a SYN-ACK.
func serverEnd(proto byte, l4 []byte) (srcServes, ok bool) {
	if proto != 6 && proto != 17 || len(l4) < 4 {
		return false, false
	}
	switch ss, ds := servicePort(binary.BigEndian.Uint16(l4[0:2])), servicePort(binary.BigEndian.Uint16(l4[2:4])); {
	case ss && !ds:
		return true, true
	case ds && !ss:
		return false, true
	}
	if proto == 6 && len(l4) >= 14 {
		switch l4[13] & 0x12 {
		case 0x02: // SYN
			return false, true
		case 0x12: // SYN-ACK
			return true, true
		}
	}
	return false, false
}

// offLink: the server of a conversation is in another network than its
// client (another IPv4 /24, IPv6 /64, or a NAT64 address): reached through
// a router. A host's own server (a bridge's API, a camera's stream) is in
// its clients' network, and link-local addresses are on the link.
func offLink(client, server netip.Addr) bool {
	if client.Is4() != server.Is4() || client.IsLinkLocalUnicast() || server.IsLinkLocalUnicast() {
		return false
	}
	if server.Is4() {
		c, _ := client.Prefix(24)
		s, _ := server.Prefix(24)
		return c != s
	}
	return key6(client) != key6(server)
}

// forwarded scores how surely a MAC forwards packets from beyond the home:
// the distinct TTLs below a host's initial values among the frames it
// sent, at most as many as their distinct source addresses. A router
// forwards from many servers at many distances; a host sends with its
// stack's one initial value, which an odd stack (32, 60) has below the
// usual ones, and a host's traceroute walks the TTLs from its one address.
func forwarded(s *macStats) int {
	n := 0
	for _, w := range s.farTTL {
		n += bits.OnesCount64(w)
	}
	return min(n, len(s.farSrc))
}

// routerFrame: a DHCP (v4 or v6) answer or an IPv6 router advertisement,
// which a home's router sends (DNS answers are not counted: a home's
// resolver is often another box).
func routerFrame(proto byte, b []byte) bool {
	switch {
	case proto == 17 && len(b) >= 4:
		sp := binary.BigEndian.Uint16(b[0:2])
		return sp == 67 || sp == 547
	case proto == 58 && len(b) >= 1:
		return b[0] == 134
	}
	return false
}

// isHomeRange: the ranges that are the home's whatever the capture says.
func isHomeRange(a netip.Addr) bool {
	return a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLoopback()
}

// isPublic4: an IPv4 address that is no home's whatever the capture says:
// public, or the ISPs' shared space (100.64.0.0/10), which a LAN may be
// numbered in as well.
func isPublic4(a netip.Addr) bool {
	return a.Is4() && a.IsGlobalUnicast() && !isHomeRange(a)
}

// public4Addrs counts the public IPv4 addresses on a MAC's side.
func public4Addrs(s *macStats) int {
	n := 0
	for a := range s.addrs {
		if isPublic4(a) {
			n++
		}
	}
	return n
}

func isGlobal6(a netip.Addr) bool {
	return a.Is6() && !a.Is4In6() && a.IsGlobalUnicast() && !a.IsPrivate()
}

// InferredHome is what HomeInference decided, and why.
type InferredHome struct {
	Home HomeConfig
	// Gateway says how the gateway MAC was found, or why none was.
	Gateway string
	// Raw: the capture has no Ethernet; every unicast packet crosses and
	// Home.LANNets are the home's own addresses and /64s.
	Raw bool
	// Frames read, IPFrames of them unicast IP.
	Frames, IPFrames int
}

// String is the one-line account printed to the user.
func (r InferredHome) String() string {
	gw, nets := r.parts()
	if r.Raw {
		return fmt.Sprintf("no Ethernet: every packet crosses; the home side is %s (%d of %d frames unicast IP)", nets, r.IPFrames, r.Frames)
	}
	return fmt.Sprintf("gateway MAC %s (%s); home prefixes %s", gw, r.Gateway, nets)
}

// Brief is String without the evidence (frame counts, how the gateway was
// found): what stays the same across captures of one home, for a summary
// over many.
func (r InferredHome) Brief() string {
	gw, nets := r.parts()
	if r.Raw {
		return "no Ethernet: every packet crosses; the home side is " + nets
	}
	return fmt.Sprintf("gateway MAC %s; home prefixes %s", gw, nets)
}

// parts are the gateway MAC ("none" without one) and the home prefixes as
// String and Brief print them.
func (r InferredHome) parts() (gw, nets string) {
	ps := make([]string, len(r.Home.LANNets))
	for i, p := range r.Home.LANNets {
		ps[i] = p.String()
	}
	gw = "none"
	if !r.Home.GatewayMAC.IsZero() {
		gw = r.Home.GatewayMAC.String()
	}
	return gw, strings.Join(ps, " ")
}

// Result decides the home side from the frames observed so far.
func (h *HomeInference) Result() InferredHome {
	r := InferredHome{Frames: h.frames, IPFrames: h.ipFrames}
	if h.withMAC == 0 && len(h.pairs) > 0 {
		r.Raw = true
		r.Home.LANNets = h.rawHome()
		return r
	}
	r.Home.LANNets = defaultHomeNets()
	r.Home.GatewayMAC, r.Gateway = h.gateway()
	if r.Home.GatewayMAC.IsZero() {
		return r
	}
	r.Home.LANNets = append(r.Home.LANNets, h.hostPrefixes(r.Home.GatewayMAC)...)
	return r
}

// hostPrefixes are the global prefixes the home's hosts source (IPv6 /64s,
// and the /24s of a LAN on public IPv4 addresses): each prefix a MAC
// sends from with a near TTL, unless that MAC routes. Without them, what
// leans on the prefixes takes the home's own addresses for remote ones:
// the gateway emulator would forward the hosts' DNS to the gateway's LAN
// address. A MAC that forwards packets from the internet sources the
// remote servers' prefixes, which must not become the home's, or the
// home's traffic with them would decode as local. A MAC routes when it is
// the gateway; when it is the MAC behind which the most global /64s or
// public IPv4 addresses appear (an IPv6 router beside an IPv4 gateway, the
// rules that find the gateway of an IPv6-only home or a public LAN); or
// when it alone sources minRouted prefixes of a family or more, since a
// host holds addresses in its home's one prefix (two while the ISP
// renumbers), and the home's prefixes are sourced by every host in them.
// Without a routing MAC to blame, a prefix whose packets come from afar
// (their TTL well below any initial value) is a remote one still.
func (h *HomeInference) hostPrefixes(gw schemas.MAC) []netip.Prefix {
	routes := map[schemas.MAC]bool{gw: true}
	if m, n, ok := clearWinner(h.macs, func(s *macStats) int { return len(s.global6) }); ok && n >= 2 {
		routes[m] = true
	}
	if m, n, ok := clearWinner(h.macs, public4Addrs); ok && n >= 2 {
		routes[m] = true
	}
	sources := map[netip.Prefix][]schemas.MAC{}
	for k := range h.srcPrefixes {
		if k.mac != gw {
			sources[k.p] = append(sources[k.p], k.mac)
		}
	}
	alone := map[schemas.MAC]*[2]int{} // IPv4 prefixes, IPv6
	for p, ms := range sources {
		if len(ms) == 1 {
			if alone[ms[0]] == nil {
				alone[ms[0]] = &[2]int{}
			}
			fam := 1
			if p.Addr().Is4() {
				fam = 0
			}
			alone[ms[0]][fam]++
		}
	}
	for m, n := range alone {
		if max(n[0], n[1]) >= minRouted {
			routes[m] = true
		}
	}
	var out []netip.Prefix
	for k, c := range h.srcPrefixes {
		if !routes[k.mac] && c.near >= c.far && !IsNAT64(k.p.Addr()) && !slices.Contains(out, k.p) {
			out = append(out, k.p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// minRouted is how many prefixes a MAC sources alone for it to be taken
// for a router.
const minRouted = 3

// defaultHomeNets are the ranges that are always the home's: the private
// IPv4 ranges, IPv4 and IPv6 link-local, ULA (campaign.DefaultLANNets).
func defaultHomeNets() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("fc00::/7"),
	}
}

// clearWinner is the MAC whose score is more than twice every other's.
func clearWinner(macs map[schemas.MAC]*macStats, score func(*macStats) int) (schemas.MAC, int, bool) {
	var best, second int
	var bestMAC schemas.MAC
	for m, s := range macs {
		v := score(s)
		switch {
		case v > best || (v == best && v > 0 && m.String() < bestMAC.String()):
			best, second, bestMAC = v, max(best, second), m
		case v > second:
			second = v
		}
	}
	return bestMAC, best, best > 0 && best > 2*second
}

func (h *HomeInference) gateway() (schemas.MAC, string) {
	var total4 int
	for _, s := range h.macs {
		total4 += s.public4
	}
	if m, n, ok := clearWinner(h.macs, func(s *macStats) int { return s.public4 }); ok {
		return m, fmt.Sprintf("the Ethernet peer of %d of %d frames between private and public IPv4 addresses", n, total4)
	}
	if m, n, ok := clearWinner(h.macs, func(s *macStats) int { return len(s.global6) }); ok && n >= 2 {
		return m, fmt.Sprintf("behind it %d global IPv6 /64 prefixes or NAT64 servers, more than twice any other MAC's", n)
	}
	// A LAN on public or shared IPv4 addresses has no private-public
	// traffic: as with IPv6, the internet lies behind the gateway.
	if m, n, ok := clearWinner(h.macs, public4Addrs); ok && n >= 2 {
		return m, fmt.Sprintf("behind it %d public IPv4 addresses, more than twice any other MAC's", n)
	}
	// No public traffic: the MAC that hands out addresses (DHCP answers,
	// IPv6 router advertisements) is the home's router; a tie here and
	// below is no answer.
	if m, n, ok := clearWinner(h.macs, func(s *macStats) int { return s.serves }); ok && len(h.macs[m].peers) > 0 {
		return m, fmt.Sprintf("no public traffic tells; the MAC that sent %d DHCP answers or router advertisements", n)
	}
	// A packet's TTL (hop limit) drops at each router: the gateway sends
	// the packets of remote servers, translated or not, lower than any
	// host's own, which leave with their stack's initial value.
	if m, n, ok := clearWinner(h.macs, forwarded); ok {
		return m, fmt.Sprintf("no public traffic tells; the MAC that forwards from afar (its frames' TTLs below a host's initial values, %d of them distinct)", n)
	}
	// More than twice the runner-up's peers, as every rule here: a hub
	// that polls the home's devices is talked to by about as many hosts
	// as the router.
	if m, n, ok := clearWinner(h.macs, func(s *macStats) int { return len(s.peers) }); ok && n >= 2 {
		return m, fmt.Sprintf("no public traffic tells; the MAC most hosts talk to (%d of %d MACs)", n, len(h.macs))
	}
	// As many hosts talk to one as to another (a single device and its
	// gateway): behind the gateway are the servers of other networks that
	// the hosts use, behind a host only its own addresses, which serve
	// clients of its own network if any. The addresses themselves do not
	// tell: a host with link-local, stable and temporary addresses has
	// more than a gateway whose remote is one server.
	if m, n, ok := clearWinner(h.macs, func(s *macStats) int { return len(s.servers) }); ok {
		return m, fmt.Sprintf("a guess: no public traffic, no MAC most hosts talk to; the MAC behind the most servers of other networks (%d)", n)
	}
	if m, n, ok := clearWinner(h.macs, func(s *macStats) int { return len(s.addrs) }); ok && n >= 2 {
		return m, fmt.Sprintf("a guess: no public traffic, no MAC most hosts talk to; the MAC behind the most addresses (%d)", n)
	}
	if len(h.macs) == 0 {
		return schemas.MAC{}, "no unicast IP frame between two MACs"
	}
	return schemas.MAC{}, "no MAC stands out as the gateway; pass --gateway-mac"
}

// rawHome is the clients, then a greedy cover of the packets between two
// ends neither of which is a client: the end in the most of them joins the
// home until none is left.
func (h *HomeInference) rawHome() []netip.Prefix {
	var home []netip.Prefix
	for k, n := range h.client {
		if n > h.server[k] && !IsNAT64(k.Addr()) {
			home = append(home, k)
		}
	}
	uncovered := maps2slice(h.pairs)
	uncovered = slices.DeleteFunc(uncovered, func(e pairCount) bool {
		return slices.Contains(home, e.k[0]) || slices.Contains(home, e.k[1])
	})
	for len(uncovered) > 0 {
		// A NAT64 address is an IPv4 server beyond the translator: the
		// other end of its packets is the home's.
		weight := map[netip.Prefix]int{}
		for _, e := range uncovered {
			for _, k := range e.k {
				if !IsNAT64(k.Addr()) {
					weight[k] += e.n
				}
			}
		}
		if len(weight) == 0 {
			break
		}
		var best netip.Prefix
		for k, w := range weight {
			// Ties go to the lower address, so that the answer is stable.
			if !best.IsValid() || cmp.Or(cmp.Compare(w, weight[best]), -k.Addr().Compare(best.Addr())) > 0 {
				best = k
			}
		}
		home = append(home, best)
		uncovered = slices.DeleteFunc(uncovered, func(e pairCount) bool { return e.k[0] == best || e.k[1] == best })
	}
	slices.SortFunc(home, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return home
}

type pairCount struct {
	k [2]netip.Prefix
	n int
}

func maps2slice(m map[[2]netip.Prefix]int) []pairCount {
	out := make([]pairCount, 0, len(m))
	for k, n := range m {
		out = append(out, pairCount{k, n})
	}
	return out
}
