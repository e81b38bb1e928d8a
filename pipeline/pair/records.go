package pair

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/schemas"
)

// withDefaults fills what a Config leaves zero and refuses what cannot pair.
func (cfg Config) withDefaults() (Config, error) {
	if _, err := gateway.ParseMode(string(cfg.Mode)); err != nil {
		return cfg, err
	}
	if cfg.Method == "" {
		cfg.Method = MethodExact
	}
	if cfg.Method != MethodExact && cfg.Method != MethodWindow {
		return cfg, fmt.Errorf("pairing method %q: want %s or %s", cfg.Method, MethodExact, MethodWindow)
	}
	if cfg.DelayTolerance <= 0 {
		cfg.DelayTolerance = 10 * time.Millisecond
	}
	if cfg.Window <= 0 {
		cfg.Window, cfg.windowDefault = 5*time.Millisecond, true
		if cfg.Mode == gateway.VPN {
			cfg.Window = 20 * time.Millisecond
		}
	}
	return cfg, nil
}

// Records pairs WAN packet records with LAN packet records, as the labeler
// receives them from capture agents (schemas.Packet with the pairing fields
// of batch version 2), by the same rules as Pair on captures. Pairs[j] is
// the position in lan of wan[j]'s LAN packet, -1 when it has none; indexes
// are positions in the slices, not capture offsets, since a record stream
// may skip frames its agent could not decode. cfg.Home needs only LANNets.
func Records(lan, wan []schemas.Packet, cfg Config) (Result, error) {
	var res Result
	cfg, err := cfg.withDefaults()
	if err != nil {
		return res, err
	}
	lans := make([]lanPkt, 0, len(lan))
	for i := range lan {
		p := &lan[i]
		if p.Direction == schemas.DirLocal || !p.SrcIP.IsValid() {
			continue
		}
		out := p.Direction == schemas.DirOutbound
		h := headerOf(p)
		remote := h.Dst
		if !out {
			remote = h.Src
		}
		if inNets(cfg.Home.LANNets, remote) {
			continue
		}
		lans = append(lans, lanPkt{idx: int64(i), ts: p.TsNs, out: out, h: h})
	}
	wans := make([]wanPkt, 0, len(wan))
	for j := range wan {
		p := &wan[j]
		if !p.SrcIP.IsValid() {
			// Not IP: nothing a gateway forwarded.
			res.WANOther++
			continue
		}
		wans = append(wans, wanPkt{idx: int64(j), ts: p.TsNs, h: headerOf(p), noBytes: true, plen: int(p.PayloadLen), tunnel: p.Tunnel})
	}
	// Capture order is nearly time order; the pairing walks time.
	slices.SortStableFunc(lans, func(a, b lanPkt) int { return cmp.Compare(a.ts, b.ts) })
	slices.SortStableFunc(wans, func(a, b wanPkt) int { return cmp.Compare(a.ts, b.ts) })
	res.LANCrossing = len(lans)
	res.Pairs = make([]int64, len(wan))
	for i := range res.Pairs {
		res.Pairs[i] = -1
	}
	if cfg.Mode == gateway.NAPT {
		res.WANAddr = pairNAPT(lans, wans, cfg, &res)
	} else if err := pairVPN(lans, wans, cfg, &res); err != nil {
		return res, err
	}
	used := make([]bool, len(lan))
	nUsed := 0
	for _, l := range res.Pairs {
		if l >= 0 {
			res.Paired++
			if !used[l] {
				used[l] = true
				nUsed++
			}
		}
	}
	res.LANUnpaired = len(lans) - nUsed
	return res, nil
}

// headerOf rebuilds from a record the part of the IP header the pairing
// matches on. ICMP type, code and echo sequence are not in the record; the
// remote end, length and IP ID still tell ICMP packets apart.
func headerOf(p *schemas.Packet) gateway.Header {
	h := gateway.Header{
		V6:    p.SrcIP.Is6() && !p.SrcIP.Is4In6(),
		Len:   int(p.IPLen),
		Proto: p.Transport,
		TTL:   p.TTL,
		ID:    p.IPID,
		Src:   p.SrcIP,
		Dst:   p.DstIP,
		Seq:   p.TCPSeq,
		Ack:   p.TCPAck,
		Flags: uint8(p.TCPFlags),
	}
	if p.DPort != schemas.NoPort && p.SrcPort != schemas.NoPort {
		h.HasPorts, h.SrcPort, h.DstPort = true, uint16(p.SrcPort), uint16(p.DPort)
	} else if p.Transport == gateway.ProtoTCP || p.Transport == gateway.ProtoUDP {
		// A transport protocol without ports is a later fragment.
		h.Later = true
	}
	if p.Transport == gateway.ProtoUDP && h.HasPorts {
		// What lies between the IP length and the UDP payload is the IP
		// header and the 8-byte UDP header; pairVPN needs the former.
		h.HdrLen = int(p.IPLen) - int(p.PayloadLen) - 8
	}
	return h
}
