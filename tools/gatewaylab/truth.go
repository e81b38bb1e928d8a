package main

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"slices"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/pair"
)

type capPkt struct {
	idx int64
	ts  int64 // capture time stamp, ns since the epoch
	ok  bool  // an IP packet
	h   gateway.Header
	key string
	// udpPayload is the first bytes of a UDP payload (OpenVPN's opcode).
	udpPayload []byte
	// tcpPayload is a TCP segment's whole payload, where OpenVPN over
	// TCP has its records.
	tcpPayload []byte
}

// eachFrame calls fn with every frame of a capture, in order.
func eachFrame(path string, fn func(capture.Frame)) error {
	src, err := capture.OpenFile(path)
	if err != nil {
		return err
	}
	defer src.Close()
	for {
		fr, err := src.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		fn(fr)
	}
}

// readCap reads a capture whole; isOut says which packets leave the home.
func readCap(path string, isOut func(gateway.Header) bool) ([]capPkt, error) {
	var out []capPkt
	err := eachFrame(path, func(fr capture.Frame) {
		p := capPkt{idx: int64(fr.Offset), ts: fr.CI.Timestamp.UnixNano()}
		h, err := gateway.ParseHeader(fr.LinkType, fr.Data)
		if err == nil {
			p.ok, p.h = true, h
			p.key = packetKey(fr.Data, h, isOut(h))
			if h.Proto == gateway.ProtoUDP && !h.Later {
				at := h.IPStart + h.L4 + 8
				if at < len(fr.Data) {
					p.udpPayload = append([]byte(nil), fr.Data[at:min(len(fr.Data), at+16)]...)
				}
			}
			if h.Proto == gateway.ProtoTCP && !h.Later {
				if n := payloadLen(fr.Data, h); n > 0 && n <= len(fr.Data) {
					p.tcpPayload = append([]byte(nil), fr.Data[len(fr.Data)-n:]...)
				}
			}
		}
		out = append(out, p)
	})
	return out, err
}

// packetKey names a packet the same way on both sides of a translation.
// A payload is the replay's, unique in the run, so it names its packet
// alone (a retransmission repeats it, and repeats are matched in order).
// Without a payload, a packet is named by what NAPT and MASQUERADE leave
// alone: the far end's port, the IP ID, TCP sequence, acknowledgement and
// flags, and the length.
func packetKey(data []byte, h gateway.Header, out bool) string {
	if !h.Later && (h.Proto == gateway.ProtoTCP || h.Proto == gateway.ProtoUDP) {
		n := payloadLen(data, h)
		if n > 0 && n <= len(data) {
			sum := sha256.Sum256(data[len(data)-n:])
			return fmt.Sprintf("%d|%v|%x", h.Proto, out, sum[:12])
		}
	}
	far := h.DstPort
	if !out {
		far = h.SrcPort
	}
	return fmt.Sprintf("%d|%v|%d|%d|%d|%d|%d|%d", h.Proto, out, far, h.ID, h.Seq, h.Ack, h.Flags, h.Len)
}

// matchByKey gives each packet of to the first not yet taken packet of from
// with the same key (-1 when there is none).
func matchByKey(from, to []capPkt) []int64 {
	queue := map[string][]int64{}
	for _, p := range from {
		if p.ok {
			queue[p.key] = append(queue[p.key], p.idx)
		}
	}
	res := make([]int64, len(to))
	for i, p := range to {
		res[i] = -1
		if !p.ok {
			continue
		}
		if q := queue[p.key]; len(q) > 0 {
			res[i], queue[p.key] = q[0], q[1:]
		}
	}
	return res
}

// inPrefix says a packet leaves the home when one of the prefixes holds
// its source.
func inPrefix(prefixes ...string) func(gateway.Header) bool {
	var ps []netip.Prefix
	for _, p := range prefixes {
		ps = append(ps, netip.MustParsePrefix(p))
	}
	return func(h gateway.Header) bool {
		for _, p := range ps {
			if p.Contains(h.Src) {
				return true
			}
		}
		return false
	}
}

// Which packets leave the home on the LAN and on the tun device: the
// home's IPv6 prefix is routed through the tunnel, not translated.
var (
	lanOut = inPrefix(lanNet, lanNet6)
	tunOut = inPrefix(tunNet+"/24", tunNet6, lanNet6)
)

type truthInfo struct {
	lan, wan, tun int
	// tunnel counts the WAN data-channel packets per direction, tunOut and
	// tunIn the tun packets, which must agree for the order to hold.
	wanOut, wanIn, tunOut, tunIn int
	// sizeMismatch counts tunnel packets whose size does not fit the tun
	// packet the order gives them: a check on the order, not on pairing.
	sizeMismatch int
	// delta counts outer payload size minus the size function's, per value.
	delta map[int]int
	// tunTruth is, per WAN packet, its packet in the tun capture (-1:
	// none): the truth of pairing the tun side with the WAN.
	tunTruth []int64
}

// truthNAPT: the gateway only rewrites addresses and ports, so each WAN
// packet is named like its LAN packet.
func truthNAPT(lanPath, wanPath string) ([]int64, truthInfo, error) {
	var ti truthInfo
	lan, err := readCap(lanPath, lanOut)
	if err != nil {
		return nil, ti, err
	}
	wan, err := readCap(wanPath, func(h gateway.Header) bool { return h.Src == netip.MustParseAddr(gwWANAddr) })
	if err != nil {
		return nil, ti, err
	}
	ti.lan, ti.wan = len(lan), len(wan)
	return matchByKey(lan, wan), ti, nil
}

// vpnCaps is a VPN run's three captures read for truth: the tun packets
// with their LAN packets (tunLAN, named as under NAPT since the gateway
// masquerades onto the tunnel), the WAN packets, and the tun packets'
// indices per direction in capture order (the order the tunnel keeps).
type vpnCaps struct {
	tun, wan []capPkt
	tunLAN   []int64
	tunDir   [2][]int // [0] inbound, [1] outbound
	gw       netip.Addr
}

// readVPNCaps reads a VPN run's three captures and counts them in ti.
func readVPNCaps(lanPath, tunPath, wanPath string, ti *truthInfo) (vpnCaps, error) {
	c := vpnCaps{gw: netip.MustParseAddr(gwWANAddr)}
	lan, err := readCap(lanPath, lanOut)
	if err != nil {
		return c, err
	}
	if c.tun, err = readCap(tunPath, tunOut); err != nil {
		return c, err
	}
	if c.wan, err = readCap(wanPath, func(h gateway.Header) bool { return h.Src == c.gw }); err != nil {
		return c, err
	}
	ti.lan, ti.wan, ti.tun = len(lan), len(c.wan), len(c.tun)
	c.tunLAN = matchByKey(lan, c.tun)
	for i, p := range c.tun {
		if !p.ok {
			continue
		}
		d := 0
		if tunOut(p.h) {
			d = 1
		}
		c.tunDir[d] = append(c.tunDir[d], i)
	}
	ti.tunIn, ti.tunOut = len(c.tunDir[0]), len(c.tunDir[1])
	return c, nil
}

// truthVPN: LAN to tun by name, as under NAPT (the gateway masquerades onto
// the tunnel); tun to WAN by order, since OpenVPN encrypts the packets of
// its tun device one by one, in order, into one data-channel packet each.
func truthVPN(lanPath, tunPath, wanPath string, cipher gateway.Cipher) ([]int64, truthInfo, error) {
	var ti truthInfo
	c, err := readVPNCaps(lanPath, tunPath, wanPath, &ti)
	if err != nil {
		return nil, ti, err
	}
	tun, wan, tunLAN, gw := c.tun, c.wan, c.tunLAN, c.gw
	tunIns, tunOuts := c.tunDir[0], c.tunDir[1]
	truth := make([]int64, len(wan))
	ti.tunTruth = make([]int64, len(wan))
	for i := range truth {
		truth[i], ti.tunTruth[i] = -1, -1
	}
	port := uint16(1194)
	if cipher == gateway.WireGuard {
		port = gateway.WireGuardPort
	}
	for _, i := range sendOrder(wan, cipher, gw) {
		p := wan[i]
		if !p.ok || p.h.Proto != gateway.ProtoUDP || len(p.udpPayload) == 0 {
			continue
		}
		out := p.h.Src == gw && p.h.DstPort == port
		in := p.h.Dst == gw && p.h.SrcPort == port
		if !out && !in || !dataMessage(p.udpPayload, cipher) {
			continue // not the data channel
		}
		var k, t int
		if out {
			k, ti.wanOut = ti.wanOut, ti.wanOut+1
			if k >= len(tunOuts) {
				continue
			}
			t = tunOuts[k]
		} else {
			k, ti.wanIn = ti.wanIn, ti.wanIn+1
			if k >= len(tunIns) {
				continue
			}
			t = tunIns[k]
		}
		if d := p.h.Len - gateway.OuterUDPOverhead - gateway.PayloadSize(cipher, tun[t].h.Len); d != 0 {
			ti.sizeMismatch++
			if ti.delta == nil {
				ti.delta = map[int]int{}
			}
			ti.delta[d]++
		}
		truth[i] = tunLAN[t]
		ti.tunTruth[i] = tun[t].idx
	}
	return truth, ti, nil
}

// truthVPNTCP is truthVPN for OpenVPN over TCP: each direction's stream is
// cut into records as the pairing cuts it, the data records follow the tun
// packets in order, and a WAN segment's truth is the LAN packet of the
// record its first byte is in (pure ACKs and control records have none).
func truthVPNTCP(lanPath, tunPath, wanPath string, cipher gateway.Cipher) ([]int64, truthInfo, error) {
	var ti truthInfo
	c, err := readVPNCaps(lanPath, tunPath, wanPath, &ti)
	if err != nil {
		return nil, ti, err
	}
	tun, wan, tunLAN, gw, tunDir := c.tun, c.wan, c.tunLAN, c.gw, c.tunDir
	var segs [2][]pair.TCPSegment
	for i, p := range wan {
		if !p.ok || p.h.Proto != gateway.ProtoTCP {
			continue
		}
		switch {
		case p.h.Src == gw && p.h.DstPort == 1194:
			segs[1] = append(segs[1], pair.TCPSegment{Index: int64(i), Seq: p.h.Seq, Payload: p.tcpPayload})
		case p.h.Dst == gw && p.h.SrcPort == 1194:
			segs[0] = append(segs[0], pair.TCPSegment{Index: int64(i), Seq: p.h.Seq, Payload: p.tcpPayload})
		}
	}
	truth := make([]int64, len(wan))
	ti.tunTruth = make([]int64, len(wan))
	for i := range truth {
		truth[i], ti.tunTruth[i] = -1, -1
	}
	for d := range 2 {
		sizes, data, segRecord := pair.TCPStreamRecords(segs[d])
		// The k-th data record carries the k-th tun packet of its direction.
		recTun := make([]int, len(sizes))
		k := 0
		for r := range sizes {
			recTun[r] = -1
			if !data[r] {
				continue
			}
			if k < len(tunDir[d]) {
				t := tunDir[d][k]
				recTun[r] = t
				if delta := sizes[r] - gateway.PayloadSize(cipher, tun[t].h.Len); delta != 0 {
					ti.sizeMismatch++
					if ti.delta == nil {
						ti.delta = map[int]int{}
					}
					ti.delta[delta]++
				}
			}
			k++
		}
		if d == 1 {
			ti.wanOut = k
		} else {
			ti.wanIn = k
		}
		for idx, r := range segRecord {
			if r >= 0 && recTun[r] >= 0 {
				truth[idx] = tunLAN[recTun[r]]
				ti.tunTruth[idx] = tun[recTun[r]].idx
			}
		}
	}
	return truth, ti, nil
}

// dataMessage: an OpenVPN data-channel packet (P_DATA_V1 or V2), or a
// WireGuard transport data message.
func dataMessage(b []byte, c gateway.Cipher) bool {
	if c == gateway.WireGuard {
		return len(b) >= 4 && b[0] == gateway.WireGuardData && b[1]|b[2]|b[3] == 0
	}
	op := b[0] >> 3
	return op == 6 || op == 9
}

// sendOrder is the order in which the tunnel took the WAN packets from
// its tun device: capture order, except that wireguard-go encrypts on
// several threads, so its outbound messages are taken in the order of
// their counters (assigned as packets are read from the tun device).
func sendOrder(wan []capPkt, c gateway.Cipher, gw netip.Addr) []int {
	order := make([]int, len(wan))
	for i := range order {
		order[i] = i
	}
	if c != gateway.WireGuard {
		return order
	}
	ctr := func(i int) uint64 {
		p := wan[i]
		if !p.ok || p.h.Src != gw || len(p.udpPayload) < 16 {
			return 0
		}
		return binary.LittleEndian.Uint64(p.udpPayload[8:16])
	}
	var outIdx []int
	for i, p := range wan {
		if p.ok && p.h.Src == gw && p.h.Proto == gateway.ProtoUDP && dataMessage(p.udpPayload, c) {
			outIdx = append(outIdx, i)
		}
	}
	sorted := slices.Clone(outIdx)
	slices.SortStableFunc(sorted, func(a, b int) int { return cmp.Compare(ctr(a), ctr(b)) })
	// The outbound slots keep their places among the inbound ones; only
	// which outbound packet fills each changes.
	for k, i := range outIdx {
		order[i] = sorted[k]
	}
	return order
}
