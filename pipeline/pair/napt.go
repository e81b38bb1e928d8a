package pair

import (
	"net/netip"
	"slices"

	"github.com/homemole/homemole/pipeline/gateway"
)

// sig is what a packet keeps across NAPT. The LAN port does not survive,
// nor does the ICMP identifier; the remote end, lengths, IP ID and TCP
// sequence space do. IPv6 is routed, not translated, so its local end is
// part of the signature too.
type sig struct {
	out      bool
	proto    uint8
	remote   netip.AddrPort
	local    netip.AddrPort // IPv6 only
	length   int
	id       uint16
	seq, ack uint32
	flags    uint8
	icmp     uint16 // ICMP type<<8 | code
	icmpSeq  uint16
}

func signature(h gateway.Header, out bool) sig {
	s := sig{out: out, proto: h.Proto, length: h.Len, id: h.ID, seq: h.Seq, ack: h.Ack, flags: h.Flags,
		icmp: uint16(h.ICMPType)<<8 | uint16(h.ICMPCode), icmpSeq: h.ICMPSeq}
	rAddr, rPort, lAddr, lPort := h.Dst, h.DstPort, h.Src, h.SrcPort
	if !out {
		rAddr, rPort, lAddr, lPort = h.Src, h.SrcPort, h.Dst, h.DstPort
	}
	if h.Proto == gateway.ProtoICMP || h.Proto == gateway.ProtoICMPv6 || !h.HasPorts {
		rPort, lPort = 0, 0
	}
	s.remote = netip.AddrPortFrom(rAddr, rPort)
	if h.V6 {
		s.local = netip.AddrPortFrom(lAddr, lPort)
	}
	return s
}

type extKey struct {
	proto  uint8
	port   uint16
	remote netip.AddrPort
}

// pairNAPT pairs in WAN time order and returns the WAN address it found.
func pairNAPT(lans []lanPkt, wans []wanPkt, cfg Config, res *Result) netip.Addr {
	// The gateway's address is in every translated IPv4 packet, on one
	// side or the other. A capture that talks to one server only has that
	// server's address in every packet too, so remote ends the LAN side
	// names are not candidates.
	remotes := make(map[netip.Addr]bool, 64)
	for _, l := range lans {
		if l.out {
			remotes[l.h.Dst] = true
		} else {
			remotes[l.h.Src] = true
		}
	}
	count := map[netip.Addr]int{}
	for _, w := range wans {
		if !w.h.V6 {
			for _, a := range [2]netip.Addr{w.h.Src, w.h.Dst} {
				if !remotes[a] {
					count[a]++
				}
			}
		}
	}
	var wanAddr netip.Addr
	best := 0
	for a, n := range count {
		if n > best || (n == best && a.Less(wanAddr)) {
			wanAddr, best = a, n
		}
	}

	// Each LAN packet waits in its signature's pool. Where one signature's
	// packets come from more than one LAN endpoint, each also waits in its
	// signature-and-LAN-endpoint's pool, so that the packet a learned port
	// mapping prefers is found without scanning the others. Most
	// signatures name one packet (IP ID and TCP sequence numbers tell them
	// apart), so the second pool is built only for the few that need it:
	// a second map insertion and pool for every packet cost the labeler a
	// third of its throughput (BenchmarkLabel/paired).
	bySig := map[sig]*pool{}
	at := make([]poolRef, len(lans))
	for i, l := range lans {
		p := join(bySig, signature(l.h, l.out), i, l.ts, &at[i].sigPos)
		at[i].sig = p
		switch lp := local(l); {
		case len(p.lan) == 1:
			p.first = lp
		case lp != p.first:
			p.mixed = true
		}
	}
	byLocal := map[localKey]*pool{}
	for i, l := range lans {
		if at[i].sig.mixed {
			at[i].local = join(byLocal, localKey{signature(l.h, l.out), local(l)}, i, l.ts, &at[i].localPos)
		}
	}
	learned := map[extKey]netip.AddrPort{}
	window := int64(cfg.Window)
	for _, w := range wans {
		var out bool
		switch {
		case w.h.V6 && inNets(cfg.Home.LANNets, w.h.Src):
			out = true
		case w.h.V6 && inNets(cfg.Home.LANNets, w.h.Dst):
		case w.h.Src == wanAddr:
			out = true
		case w.h.Dst == wanAddr:
		default:
			res.WANOther++
			continue
		}
		s := signature(w.h, out)
		cands := bySig[s]
		if cands == nil {
			continue
		}
		ek := extKey{proto: w.h.Proto}
		if w.h.HasPorts && !w.h.V6 {
			ek.port = w.h.DstPort
			ek.remote = netip.AddrPortFrom(w.h.Src, w.h.SrcPort)
			if out {
				ek.port = w.h.SrcPort
				ek.remote = netip.AddrPortFrom(w.h.Dst, w.h.DstPort)
			}
			if w.h.Proto == gateway.ProtoICMP {
				ek.remote = netip.AddrPortFrom(ek.remote.Addr(), 0)
			}
		}
		// The earliest unused candidate in the window, unless a learned
		// mapping names the LAN end: then the earliest unused one with that
		// end, if there is one. Candidates come in time order and a
		// gateway forwards in order, so among equals the first keeps the
		// order.
		lo, hi := w.ts-window, w.ts+window
		pick, ok := cands.earliest(lo, hi)
		if !ok {
			continue
		}
		// In a pool of one LAN endpoint the mapping's end is every
		// candidate's or none's: the earliest stands either way.
		if known, haveMap := learned[ek]; haveMap && cands.mixed {
			if same := byLocal[localKey{s, known}]; same != nil {
				if i, ok := same.earliest(lo, hi); ok {
					pick = i
				}
			}
		}
		at[pick].sig.take(at[pick].sigPos)
		if at[pick].local != nil {
			at[pick].local.take(at[pick].localPos)
		}
		res.Pairs[w.idx] = lans[pick].idx
		if w.h.HasPorts && !w.h.V6 {
			learned[ek] = local(lans[pick])
		}
	}
	return wanAddr
}

type localKey struct {
	s     sig
	local netip.AddrPort
}

// pool is the LAN packets of one key in time order, each used at most
// once. skip is a union-find over positions: following it from a position
// reaches the first unused one at or after it, so that a run of used
// packets (thousands of identical ones at one instant) is crossed in
// amortized near-constant time rather than one by one.
type pool struct {
	ts   []int64
	lan  []int
	skip []int32
	// first is the LAN endpoint of the pool's first packet, and mixed
	// says another packet's differs (kept by signature pools only).
	first netip.AddrPort
	mixed bool
}

// poolRef is where one LAN packet waits: its signature's pool, and its
// signature-and-endpoint's pool when the first is mixed (else local is nil).
type poolRef struct {
	sig, local       *pool
	sigPos, localPos int32
}

// join adds LAN packet i at time ts to key's pool, creating it.
func join[K comparable](pools map[K]*pool, key K, i int, ts int64, pos *int32) *pool {
	p := pools[key]
	if p == nil {
		p = &pool{}
		pools[key] = p
	}
	*pos = int32(len(p.lan))
	p.ts, p.lan, p.skip = append(p.ts, ts), append(p.lan, i), append(p.skip, int32(len(p.lan)))
	return p
}

// earliest is the first unused packet with a time in [lo, hi].
func (p *pool) earliest(lo, hi int64) (int, bool) {
	from, _ := slices.BinarySearch(p.ts, lo)
	k := p.unused(from)
	if k == len(p.lan) || p.ts[k] > hi {
		return 0, false
	}
	return p.lan[k], true
}

// unused is the first unused position at or after k (len when none).
func (p *pool) unused(k int) int {
	root := k
	for root < len(p.skip) && int(p.skip[root]) != root {
		root = int(p.skip[root])
	}
	for k < len(p.skip) && int(p.skip[k]) != k {
		k, p.skip[k] = int(p.skip[k]), int32(root)
	}
	return root
}

// take marks position k used.
func (p *pool) take(k int32) { p.skip[k] = k + 1 }

// local is a LAN packet's LAN endpoint, as a NAPT mapping names it.
func local(l lanPkt) netip.AddrPort {
	if l.out {
		return netip.AddrPortFrom(l.h.Src, l.h.SrcPort)
	}
	return netip.AddrPortFrom(l.h.Dst, l.h.DstPort)
}
