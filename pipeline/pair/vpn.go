package pair

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/homemole/homemole/pipeline/gateway"
)

type tunnelPkt struct {
	idx     int64
	ts      int64
	outer   int // IP length of the tunnel packet
	payload int // its UDP payload: what PayloadSize predicts
	v4      bool
	ipID    uint16
	pid     uint32
	hasPID  bool
	wg      wgHead
}

// pairVPN pairs each direction of the tunnel with the LAN packets of that
// direction. Without a configured cipher every known one is tried and the
// one that pairs the most packets wins: a wrong size function finds few
// exact fits (under AES-CBC outer sizes are 40 plus a multiple of 16, under
// GCM each is inner plus 24).
func pairVPN(lans []lanPkt, wans []wanPkt, cfg Config, res *Result) error {
	port, proto, ok := detectVPNPort(wans, cfg.VPNPort)
	if !ok && len(wans) == 0 {
		return nil // nothing crossed: nothing to pair
	}
	if !ok && cfg.VPNPort == 0 {
		return fmt.Errorf("no UDP or TCP flow in the WAN capture to take for the VPN tunnel")
	}
	if ok {
		cfg.VPNPort = port
	}
	res.VPNPort, res.VPNTCP = cfg.VPNPort, proto == gateway.ProtoTCP
	if proto == gateway.ProtoTCP {
		return pairVPNTCP(lans, wans, cfg, res)
	}
	var tun [2][]tunnelPkt // [0] inbound, [1] outbound
	for _, w := range wans {
		h := w.h
		if h.Proto != gateway.ProtoUDP || h.Later || !h.HasPorts || (h.SrcPort == cfg.VPNPort) == (h.DstPort == cfg.VPNPort) {
			// Not the tunnel; a gateway that also uses the server's port
			// as its own cannot be told apart by ports either.
			res.WANOther++
			continue
		}
		d := 0
		if h.DstPort == cfg.VPNPort {
			d = 1
		}
		tun[d] = append(tun[d], tunnelPkt{idx: w.idx, ts: w.ts, outer: h.Len, payload: h.Len - h.HdrLen - 8,
			v4: !h.V6, ipID: h.ID, pid: w.pid, hasPID: w.hasPID, wg: w.wg})
	}
	if len(tun[0])+len(tun[1]) == 0 && len(wans) > 0 {
		return fmt.Errorf("no packet of the WAN capture is to or from UDP port %d, the VPN server's: if the server listens on another port, say which (homemole pair --vpn-port)", cfg.VPNPort)
	}
	byDir := lansByDirection(lans)

	window := int64(cfg.Window)
	if cfg.Method == MethodWindow {
		for d := range 2 {
			pairWindow(byDir[d], tun[d], d == 1, window, res.Pairs)
		}
		res.Cipher = cfg.Cipher
		return nil
	}
	ciphers := gateway.Ciphers
	if cfg.Cipher != "" {
		if _, err := gateway.ParseCipher(string(cfg.Cipher)); err != nil {
			return err
		}
		ciphers = []gateway.Cipher{cfg.Cipher}
	}
	best, bestN := []int64(nil), -1
	for _, c := range ciphers {
		pairs := make([]int64, len(res.Pairs))
		for i := range pairs {
			pairs[i] = -1
		}
		n := 0
		for d := range 2 {
			order := tun[d]
			if !cfg.TimeOrder {
				order = sendOrder(order, c)
			}
			n += pairExact(byDir[d], order, d == 1, window, int64(cfg.DelayTolerance), c, pairs)
		}
		if n > bestN {
			best, bestN, res.Cipher = pairs, n, c
		}
	}
	if best == nil {
		return fmt.Errorf("no VPN cipher to pair with")
	}
	copy(res.Pairs, best)
	return nil
}

// lansByDirection splits the crossing LAN packets: [0] inbound, [1]
// outbound, as the tunnel's directions are indexed.
func lansByDirection(lans []lanPkt) [2][]lanPkt {
	var byDir [2][]lanPkt
	for _, l := range lans {
		d := 0
		if l.out {
			d = 1
		}
		byDir[d] = append(byDir[d], l)
	}
	return byDir
}

// span is the LAN time range in which a tunnel packet's LAN packet lies:
// before it outbound (the gateway encrypted it after the LAN tap saw it),
// after it inbound.
func span(t tunnelPkt, out bool, window int64) (lo, hi int64) {
	if out {
		return t.ts - window, t.ts
	}
	return t.ts, t.ts + window
}

func inSpan(ts, lo, hi int64, out bool) bool {
	if out {
		return ts >= lo && ts < hi
	}
	return ts > lo && ts <= hi
}

// pairExact assigns one direction one-to-one: tunnel packets in the order
// given (the send order where the tunnel shows it) each take the earliest
// unused LAN packet in their span whose size the cipher turns into exactly
// their payload size. A tunnel encrypts first come, first served, so the
// earliest fitting packet is the one that went in first.
func pairExact(lans []lanPkt, tun []tunnelPkt, out bool, window, tol int64, c gateway.Cipher, pairs []int64) int {
	used := make([]bool, len(lans))
	n := 0
	var last int64 // delay of the last pair
	have := false
	// The last pair, to repair its order (see below).
	var prevT tunnelPkt
	prevPick := -1
	for _, t := range tun {
		if c == gateway.WireGuard && t.wg.known && !t.wg.data {
			// A handshake or cookie message: no LAN packet inside.
			continue
		}
		lo, hi := span(t, out, window)
		first, _ := slices.BinarySearchFunc(lans, lo, func(l lanPkt, ts int64) int { return cmp.Compare(l.ts, ts) })
		pick := -1
		for i := first; i < len(lans) && lans[i].ts <= hi; i++ {
			l := lans[i]
			if used[i] || !inSpan(l.ts, lo, hi, out) || gateway.PayloadSize(c, l.h.Len) != t.payload {
				continue
			}
			if pick < 0 {
				pick = i
				// The earliest fit is the one, unless its delay is far
				// longer than the tunnel's recent delay: then it is
				// likely a packet the gateway lost, left unpaired, and a
				// later fit with the usual delay is the one.
				if !have || delay(t, l) <= last+tol {
					break
				}
				continue
			}
			if d := delay(t, l); d <= last+tol && d >= last-tol {
				pick = i
				break
			}
		}
		if pick < 0 {
			continue
		}
		used[pick] = true
		pairs[t.idx] = lans[pick].idx
		last, have = delay(t, lans[pick]), true
		n++
		// A packet the delay rule passed over as lost was not lost if
		// this tunnel packet takes it; as the tunnel is first come, first
		// served, it went in before the one the last tunnel packet took:
		// the two swap where each fits the other's tunnel packet (a
		// gateway starved of CPU for longer than the tolerance, as the
		// real lab's on a busy machine, holds a run of packets at once).
		if prevPick > pick && fits(lans[pick], prevT, out, window, c) && fits(lans[prevPick], t, out, window, c) {
			pairs[prevT.idx], pairs[t.idx] = lans[pick].idx, lans[prevPick].idx
			last, pick = delay(t, lans[prevPick]), prevPick
		}
		prevT, prevPick = t, pick
	}
	return n
}

// fits says a LAN packet could be the one inside a tunnel packet: in its
// span, and of the size the cipher turns into its payload size.
func fits(l lanPkt, t tunnelPkt, out bool, window int64, c gateway.Cipher) bool {
	lo, hi := span(t, out, window)
	return inSpan(l.ts, lo, hi, out) && gateway.PayloadSize(c, l.h.Len) == t.payload
}

// delay is how long the gateway held a packet: from LAN to WAN outbound,
// from WAN to LAN inbound.
func delay(t tunnelPkt, l lanPkt) int64 {
	if d := t.ts - l.ts; d >= 0 {
		return d
	}
	return l.ts - t.ts
}

// pairWindow is the HomeMole paper's rule: the nearest LAN packet of the
// direction in the span that is smaller than the tunnel packet. LAN packets
// may be used more than once.
func pairWindow(lans []lanPkt, tun []tunnelPkt, out bool, window int64, pairs []int64) {
	first := 0
	for _, t := range tun {
		lo, hi := span(t, out, window)
		for first < len(lans) && lans[first].ts < lo {
			first++
		}
		pick, pickDT := -1, int64(0)
		for i := first; i < len(lans) && lans[i].ts <= hi; i++ {
			l := lans[i]
			if !inSpan(l.ts, lo, hi, out) || l.h.Len >= t.outer {
				continue
			}
			dt := t.ts - l.ts
			if dt < 0 {
				dt = -dt
			}
			if pick < 0 || dt < pickDT {
				pick, pickDT = i, dt
			}
		}
		if pick >= 0 {
			pairs[t.idx] = lans[pick].idx
		}
	}
}

// sendOrder puts one direction's tunnel packets in the order they were
// sent, when the tunnel shows it: WireGuard's counter, OpenVPN's packet id
// under an AEAD cipher (both in the clear), else the outer IPv4 ID when it counts up as a connected
// Linux UDP socket's does. A path that reordered packets leaves these
// numbers in sending order, and in that order the tunnel packets meet
// their LAN packets first come, first served. Without either the capture
// order is kept.
func sendOrder(tun []tunnelPkt, c gateway.Cipher) []tunnelPkt {
	if len(tun) < 2 {
		return tun
	}
	usePID, useID, useWG := c == gateway.AES256GCM, true, c == gateway.WireGuard
	for _, t := range tun {
		usePID = usePID && t.hasPID
		useID = useID && t.v4
		useWG = useWG && t.wg.data
	}
	counts := func(next func(i int) int64) bool {
		up := 0
		for i := 1; i < len(tun); i++ {
			// Reordering makes some steps negative; a counter still
			// moves by small steps, a random ID does not.
			if d := next(i); d != 0 && d >= -64 && d <= 64 {
				up++
			}
		}
		return up*10 >= (len(tun)-1)*9
	}
	var seq func(i int) int64
	switch {
	case useWG && counts(func(i int) int64 { return int64(tun[i].wg.ctr - tun[i-1].wg.ctr) }):
		// WireGuard's counter is the sender's, in the clear.
		seq = func(i int) int64 { return int64(tun[i].wg.ctr - tun[i-1].wg.ctr) }
	case usePID && counts(func(i int) int64 { return int64(int32(tun[i].pid - tun[i-1].pid)) }):
		seq = func(i int) int64 { return int64(int32(tun[i].pid - tun[i-1].pid)) }
	case useID && counts(func(i int) int64 { return int64(int16(tun[i].ipID - tun[i-1].ipID)) }):
		seq = func(i int) int64 { return int64(int16(tun[i].ipID - tun[i-1].ipID)) }
	default:
		return tun
	}
	type ranked struct {
		t tunnelPkt
		n int64
	}
	r := make([]ranked, len(tun))
	r[0].t = tun[0]
	for i := 1; i < len(tun); i++ {
		// Differences to the previous packet unwrap the counter.
		r[i] = ranked{tun[i], r[i-1].n + seq(i)}
	}
	slices.SortStableFunc(r, func(a, b ranked) int { return cmp.Compare(a.n, b.n) })
	out := make([]tunnelPkt, len(r))
	for i := range r {
		out[i] = r[i].t
	}
	return out
}

// knownVPNPorts are the server ports VPNs listen on by default: OpenVPN,
// WireGuard, and 443 where a server hides among HTTPS.
var knownVPNPorts = map[uint16]bool{1194: true, gateway.WireGuardPort: true, 443: true}

// detectVPNPort finds the tunnel in a WAN capture: under VPN every packet
// the home sends goes through one flow to the server, so the UDP or TCP
// flow with the most packets is the tunnel (of those on port, when port is
// not zero). Its server end is the one on a VPN's usual port, else the
// lower port (the client's is ephemeral).
func detectVPNPort(wans []wanPkt, port uint16) (uint16, uint8, bool) {
	type end struct {
		addr netip.Addr
		port uint16
	}
	type flow struct {
		proto uint8
		a, b  end
	}
	counts := map[flow]int{}
	var best flow
	for _, w := range wans {
		h := w.h
		if (h.Proto != gateway.ProtoUDP && h.Proto != gateway.ProtoTCP) || h.Later || !h.HasPorts {
			continue
		}
		if port != 0 && h.SrcPort != port && h.DstPort != port {
			continue
		}
		f := flow{h.Proto, end{h.Src, h.SrcPort}, end{h.Dst, h.DstPort}}
		if f.b.addr.Less(f.a.addr) || (f.a.addr == f.b.addr && f.b.port < f.a.port) {
			f.a, f.b = f.b, f.a
		}
		counts[f]++
		if counts[f] > counts[best] {
			best = f
		}
	}
	if counts[best] == 0 {
		return 0, 0, false
	}
	a, b := best.a.port, best.b.port
	switch {
	case port != 0:
		return port, best.proto, true
	case knownVPNPorts[a] && !knownVPNPorts[b]:
		return a, best.proto, true
	case knownVPNPorts[b] && !knownVPNPorts[a]:
		return b, best.proto, true
	}
	return min(a, b), best.proto, true
}
