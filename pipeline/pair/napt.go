package pair

import (
	"cmp"
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

	bySig := make(map[sig][]int, len(lans))
	for i, l := range lans {
		s := signature(l.h, l.out)
		bySig[s] = append(bySig[s], i)
	}
	used := make([]bool, len(lans))
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
		cands := bySig[signature(w.h, out)]
		if len(cands) == 0 {
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
		known, haveMap := learned[ek]
		pick, pickTier := -1, 3
		// Candidates are in time order: start at the window's edge.
		from, _ := slices.BinarySearchFunc(cands, w.ts-window, func(i int, t int64) int { return cmp.Compare(lans[i].ts, t) })
		for _, i := range cands[from:] {
			l := lans[i]
			if l.ts > w.ts+window {
				break
			}
			if used[i] {
				continue
			}
			tier := 1
			if haveMap {
				tier = 2
				if local(l) == known {
					tier = 0
				}
			}
			// Candidates come in time order and a gateway forwards in
			// order, so among equals the first keeps the order.
			if tier < pickTier {
				pick, pickTier = i, tier
			}
		}
		if pick < 0 {
			continue
		}
		used[pick] = true
		res.Pairs[w.idx] = lans[pick].idx
		if w.h.HasPorts && !w.h.V6 {
			learned[ek] = local(lans[pick])
		}
	}
	return wanAddr
}

// local is a LAN packet's LAN endpoint, as a NAPT mapping names it.
func local(l lanPkt) netip.AddrPort {
	if l.out {
		return netip.AddrPortFrom(l.h.Src, l.h.SrcPort)
	}
	return netip.AddrPortFrom(l.h.Dst, l.h.DstPort)
}
