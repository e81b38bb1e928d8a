package features

import (
	"cmp"
	"fmt"
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
// global IPv6 /64 prefixes appear, since behind the gateway lies the
// internet and behind a host only its own addresses; failing that (an
// access point that translates remote servers to private addresses), the
// MAC the most other MACs talk to. The home's prefixes are the private
// ranges, ULA and link-local, plus every global IPv6 /64 that a MAC other
// than the gateway sources.
//
// A capture without Ethernet (raw IP on a tun device, PPP, loopback) has
// no MACs: every unicast packet on it crosses the gateway, so the home is
// the smallest set of addresses (IPv4) and /64 prefixes (IPv6) that takes
// part in every packet, chosen greedily, the home side preferred where a
// packet's two ends tie by who opens connections (the home's hosts are the
// clients).
//
// Memory is bounded: past maxInferKeys distinct MACs, addresses or pairs,
// new ones are not tracked (the ones seen first keep being counted), which
// a home's traffic does not reach.
type HomeInference struct {
	frames, ipFrames, withMAC int

	macs map[schemas.MAC]*macStats
	// srcPrefixes counts, per source MAC, the global IPv6 /64s it sources.
	srcPrefixes map[macPrefix]int

	// Raw-IP captures: packets per address pair and connections opened.
	pairs  map[[2]netip.Prefix]int
	opened map[netip.Prefix]int
	keys   int
}

type macStats struct {
	// public4 counts frames where this MAC is the Ethernet peer of a
	// public IPv4 address talking with a private one.
	public4 int
	// global6 are the distinct global IPv6 /64s on this MAC's side.
	global6 map[netip.Prefix]struct{}
	// peers are the unicast MACs this one exchanges IP frames with.
	peers map[schemas.MAC]struct{}
	// frames carrying this MAC as source or destination.
	frames int
}

type macPrefix struct {
	mac schemas.MAC
	p   netip.Prefix
}

// maxInferKeys bounds every map of a HomeInference.
const maxInferKeys = 1 << 16

// NewHomeInference returns an empty inference.
func NewHomeInference() *HomeInference {
	return &HomeInference{
		macs:        map[schemas.MAC]*macStats{},
		srcPrefixes: map[macPrefix]int{},
		pairs:       map[[2]netip.Prefix]int{},
		opened:      map[netip.Prefix]int{},
	}
}

// Observe takes one frame. Frames without an IP packet, or that cannot be
// read, only count.
func (h *HomeInference) Observe(lt LinkType, data []byte) {
	h.frames++
	l, err := ParseLink(lt, data)
	if err != nil || !l.IsIP() {
		return
	}
	ip := data[l.Offset:]
	var src, dst netip.Addr
	var opens bool
	switch {
	case l.EtherType == EtherTypeIPv4 && len(ip) >= 20 && ip[0]>>4 == 4:
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		opens = opensConnection(ip[9], ip[int(ip[0]&0xf)*4:])
	case l.EtherType == EtherTypeIPv6 && len(ip) >= 40 && ip[0]>>4 == 6:
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		opens = opensConnection(ip[6], ip[40:])
	default:
		return
	}
	if dst.IsMulticast() || dst == limitedBroadcast || !src.IsValid() || src.IsUnspecified() {
		return
	}
	h.ipFrames++
	if l.SrcMAC.IsZero() && l.DstMAC.IsZero() {
		h.observeRaw(src, dst, opens)
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
	if src.Is4() {
		switch sp, dp := isHomeRange(src), isHomeRange(dst); {
		case sp && !dp:
			d.public4++
		case dp && !sp:
			s.public4++
		}
		return
	}
	if isGlobal6(src) {
		p := prefix64(src)
		addKey(s.global6, p)
		if len(h.srcPrefixes) < maxInferKeys || h.srcPrefixes[macPrefix{l.SrcMAC, p}] > 0 {
			h.srcPrefixes[macPrefix{l.SrcMAC, p}]++
		}
	}
	if isGlobal6(dst) {
		addKey(d.global6, prefix64(dst))
	}
}

func (h *HomeInference) mac(m schemas.MAC) *macStats {
	s := h.macs[m]
	if s == nil && len(h.macs) < maxInferKeys {
		s = &macStats{global6: map[netip.Prefix]struct{}{}, peers: map[schemas.MAC]struct{}{}}
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

func (h *HomeInference) observeRaw(src, dst netip.Addr, opens bool) {
	a, b := rawKey(src), rawKey(dst)
	if a == b {
		return
	}
	k := [2]netip.Prefix{a, b}
	if _, ok := h.pairs[k]; ok || len(h.pairs) < maxInferKeys {
		h.pairs[k]++
	}
	if opens {
		if _, ok := h.opened[a]; ok || len(h.opened) < maxInferKeys {
			h.opened[a]++
		}
	}
}

// rawKey is the unit a raw-IP home is made of: an IPv4 address, an IPv6 /64.
func rawKey(a netip.Addr) netip.Prefix {
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	return prefix64(a)
}

func prefix64(a netip.Addr) netip.Prefix {
	p, _ := a.Prefix(64)
	return p
}

// opensConnection: a TCP SYN without ACK. The transport header must start
// at b; a frame cut short opens nothing.
func opensConnection(proto byte, b []byte) bool {
	return proto == 6 && len(b) >= 14 && b[13]&0x12 == 0x02
}

// isHomeRange: the ranges that are the home's whatever the capture says.
func isHomeRange(a netip.Addr) bool {
	return a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLoopback()
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
	nets := make([]string, len(r.Home.LANNets))
	for i, p := range r.Home.LANNets {
		nets[i] = p.String()
	}
	if r.Raw {
		return fmt.Sprintf("no Ethernet: every packet crosses; the home side is %s (%d of %d frames unicast IP)",
			strings.Join(nets, " "), r.IPFrames, r.Frames)
	}
	gw := "none"
	if !r.Home.GatewayMAC.IsZero() {
		gw = r.Home.GatewayMAC.String()
	}
	return fmt.Sprintf("gateway MAC %s (%s); home prefixes %s", gw, r.Gateway, strings.Join(nets, " "))
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
	var global []netip.Prefix
	for k := range h.srcPrefixes {
		if k.mac != r.Home.GatewayMAC && !slices.Contains(global, k.p) {
			global = append(global, k.p)
		}
	}
	slices.SortFunc(global, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	r.Home.LANNets = append(r.Home.LANNets, global...)
	return r
}

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
		return m, fmt.Sprintf("behind it %d global IPv6 /64 prefixes, more than twice any other MAC's", n)
	}
	// The MAC most hosts talk to; a tie is no answer.
	var best, second int
	var bestMAC schemas.MAC
	for m, s := range h.macs {
		switch v := len(s.peers); {
		case v > best:
			best, second, bestMAC = v, best, m
		case v > second:
			second = v
		}
	}
	if best >= 2 && best > second {
		return bestMAC, fmt.Sprintf("no public traffic tells; the MAC most hosts talk to (%d of %d MACs)", best, len(h.macs))
	}
	if len(h.macs) == 0 {
		return schemas.MAC{}, "no unicast IP frame between two MACs"
	}
	return schemas.MAC{}, "no MAC stands out as the gateway; pass --gateway-mac"
}

// rawHome covers every address pair greedily: the key in the most
// uncovered packets joins the home until none is left. A key joins before
// its peer when it opened more connections (a home host), then by packets.
func (h *HomeInference) rawHome() []netip.Prefix {
	uncovered := maps2slice(h.pairs)
	var home []netip.Prefix
	for len(uncovered) > 0 {
		weight := map[netip.Prefix]int{}
		for _, e := range uncovered {
			weight[e.k[0]] += e.n
			weight[e.k[1]] += e.n
		}
		var best netip.Prefix
		for k, w := range weight {
			if !best.IsValid() {
				best = k
				continue
			}
			bw := weight[best]
			if c := cmp.Or(cmp.Compare(w, bw), cmp.Compare(h.opened[k], h.opened[best]), -k.Addr().Compare(best.Addr())); c > 0 {
				best = k
			}
		}
		home = append(home, best)
		uncovered = slices.DeleteFunc(uncovered, func(e pairCount) bool { return e.k[0] == best || e.k[1] == best })
	}
	// Where two keys tie on packets (one host, one server), the one that
	// opened connections wins through the comparison above; with no
	// opening seen either way the lower address is taken, which is stable
	// but a guess: the printed account lets a user correct it.
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
