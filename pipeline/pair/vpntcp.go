package pair

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/homemole/homemole/pipeline/gateway"
)

// tcpPayload is the payload of the TCP segment whose IP packet starts ip,
// as far as it was captured; a copy, since capture buffers are reused.
func tcpPayload(ip []byte, h gateway.Header) []byte {
	if len(ip) < h.L4+13 {
		return nil
	}
	start := h.L4 + int(ip[h.L4+12]>>4)*4
	end := min(h.Len, len(ip))
	if start >= end {
		return nil
	}
	return bytes.Clone(ip[start:end])
}

// tcpWindow is the default window of a tunnel over TCP: beyond Linux's
// 200 ms minimum retransmission timeout, a record is not held back.
const tcpWindow = 250 * time.Millisecond

// tcpDelayTolerance is how far a record's delay may exceed the one before
// before an earlier fitting packet is passed over as lost: Nagle's wait for
// an ACK is a round trip.
const tcpDelayTolerance = 50 * time.Millisecond

// errNoTCPPayload: the WAN packets came without their payload bytes.
var errNoTCPPayload = errors.New("the tunnel runs over TCP and its records can only be found in the segments' payload, which these WAN packet records neither carry nor describe (their capture agent predates batch version 3, or began capturing in the middle of the tunnel's stream): upgrade the agent, or pair the captures themselves (homemole pair)")

// tcpRecordInfo is one OpenVPN record found in a direction's stream.
type tcpRecordInfo struct {
	size     int   // the OpenVPN packet's length: what PayloadSize predicts
	data     bool  // a data-channel packet (P_DATA_V1 or V2), not control
	firstTs  int64 // when the segment with its first byte was captured
	lastTs   int64 // and the one with its last byte
	complete bool
}

// tcpDirection is one direction of a tunnel over TCP: its segments in
// stream order and, per segment, the record its first payload byte is in.
type tcpDirection struct {
	records []tcpRecordInfo
	// segRecord[i] is the record of segs[i]'s first byte, -1 for none.
	segs      []wanPkt
	segRecord []int
}

// splitRecords reassembles one direction's stream from its segments
// (ordered by sequence number, retransmissions dropped) and cuts it into
// records by their 2-byte lengths (RecordCutter). A hole in the stream (a
// segment the capture missed) loses the framing: the records from there on
// are not found, and their segments stay unpaired.
func splitRecords(segs []wanPkt) tcpDirection {
	if len(segs) == 0 {
		return tcpDirection{}
	}
	// Each segment's place in the stream, unwrapped in capture order from
	// the one before it: a capture may hold more than the 4 GiB a sequence
	// number counts (or the 2 GiB a signed distance from the first
	// segment reaches), and segments arrive in about stream order.
	at := make([]int64, len(segs))
	for i := 1; i < len(segs); i++ {
		at[i] = at[i-1] + int64(int32(segs[i].h.Seq-segs[i-1].h.Seq))
	}
	order := make([]int, len(segs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(at[a], at[b]) })
	sorted := make([]wanPkt, len(segs))
	for i, k := range order {
		sorted[i] = segs[k]
	}
	segs = sorted
	var c RecordCutter
	var a recordAssembler
	for _, s := range segs {
		a.add(s, c.Cut(s.h.Seq, s.tcp))
	}
	return a.td
}

// RecordLenPrefix is the length field in front of every OpenVPN record
// over TCP.
const RecordLenPrefix = gateway.RecordLenSize

// pairVPNTCP pairs an OpenVPN tunnel over TCP: each direction's records
// one to one with that direction's LAN packets by the cipher's size
// function, in stream order (the order OpenVPN wrote them); a segment is
// paired with the packet of the record its first byte belongs to.
func pairVPNTCP(lans []lanPkt, wans []wanPkt, cfg Config, res *Result) error {
	var segs [2][]wanPkt
	// noBytes counts the segments that came as records without payload;
	// told says an agent cut some of them into records.
	noBytes, told := 0, false
	for _, w := range wans {
		h := w.h
		if h.Proto != gateway.ProtoTCP || h.Later || !h.HasPorts || (h.SrcPort == cfg.VPNPort) == (h.DstPort == cfg.VPNPort) {
			res.WANOther++
			continue
		}
		if w.noBytes {
			// A record from an agent: what the agent's RecordCutter
			// told of the segment stands in for its payload.
			if w.plen == 0 {
				continue // a pure ACK
			}
			told = told || w.tunnel.Known
			noBytes++
		} else if len(w.tcp) == 0 {
			continue // a pure ACK
		}
		d := 0
		if h.DstPort == cfg.VPNPort {
			d = 1
		}
		segs[d] = append(segs[d], w)
	}
	if noBytes > 0 && !told && cfg.Method != MethodWindow {
		return errNoTCPPayload
	}
	byDir := lansByDirection(lans)
	if cfg.Method == MethodWindow {
		// The paper's rule knows no records: each segment takes the
		// nearest smaller LAN packet of its direction.
		for d := range 2 {
			tun := make([]tunnelPkt, 0, len(segs[d]))
			for _, w := range segs[d] {
				tun = append(tun, tunnelPkt{idx: w.idx, ts: w.ts, outer: w.h.Len})
			}
			slices.SortStableFunc(tun, func(a, b tunnelPkt) int { return cmp.Compare(a.ts, b.ts) })
			pairWindow(byDir[d], tun, d == 1, int64(cfg.Window), res.Pairs)
		}
		res.Cipher = cfg.Cipher
		return nil
	}
	var dirs [2]tcpDirection
	var tun [2][]tunnelPkt
	for d := range 2 {
		if noBytes > 0 {
			// In the order the agent cut them: capture order.
			var a recordAssembler
			for _, w := range segs[d] {
				a.add(w, w.tunnel)
			}
			dirs[d] = a.td
		} else {
			dirs[d] = splitRecords(segs[d])
		}
		for i, r := range dirs[d].records {
			if !r.complete || !r.data {
				continue
			}
			ts := r.lastTs
			if d == 1 {
				ts = r.firstTs
			}
			tun[d] = append(tun[d], tunnelPkt{idx: int64(i), ts: ts, payload: r.size})
		}
	}
	ciphers := []gateway.Cipher{gateway.AES256GCM, gateway.AES256CBC}
	if cfg.Cipher != "" {
		if cfg.Cipher == gateway.WireGuard {
			return fmt.Errorf("the tunnel runs over TCP, which WireGuard does not")
		}
		ciphers = []gateway.Cipher{cfg.Cipher}
	}
	// TCP holds data back (Nagle until the last segment is acked, a
	// congestion window, a delayed ACK), so a record may leave far later
	// than a datagram would: a default window of 20 ms misses some, and
	// a delay that jumps by tens of milliseconds from one record to the
	// next is no sign of a packet the gateway lost.
	window, tol := int64(cfg.Window), int64(cfg.DelayTolerance)
	if cfg.windowDefault {
		window = int64(tcpWindow)
	}
	tol = max(tol, int64(tcpDelayTolerance))
	var best [2][]int64
	bestN := -1
	for _, c := range ciphers {
		var recPairs [2][]int64
		n := 0
		for d := range 2 {
			recPairs[d] = make([]int64, len(dirs[d].records))
			for i := range recPairs[d] {
				recPairs[d][i] = -1
			}
			n += pairExact(byDir[d], tun[d], d == 1, window, tol, c, recPairs[d])
		}
		if n > bestN {
			best, bestN, res.Cipher = recPairs, n, c
		}
	}
	for d := range 2 {
		for i, s := range dirs[d].segs {
			if r := dirs[d].segRecord[i]; r >= 0 && r < len(best[d]) {
				res.Pairs[s.idx] = best[d][r]
			}
		}
	}
	return nil
}

// TCPSegment is one segment of a direction of a TCP stream, for
// TCPStreamRecords.
type TCPSegment struct {
	Index   int64 // the caller's name for the segment (its WAN index)
	Seq     uint32
	Payload []byte
}

// TCPStreamRecords cuts one direction of an OpenVPN-over-TCP stream into
// records as the pairing does: data[i] says whether record i is a complete
// data-channel packet, sizes[i] its length, and segRecord maps a segment's
// Index to the record its first payload byte is in (-1: none, behind a
// hole in the stream). Segments may come in any order and repeat.
func TCPStreamRecords(segs []TCPSegment) (sizes []int, data []bool, segRecord map[int64]int) {
	ws := make([]wanPkt, 0, len(segs))
	for _, s := range segs {
		if len(s.Payload) > 0 {
			ws = append(ws, wanPkt{idx: s.Index, tcp: s.Payload, h: gateway.Header{Proto: gateway.ProtoTCP, Seq: s.Seq}})
		}
	}
	td := splitRecords(ws)
	segRecord = make(map[int64]int, len(td.segs))
	for i, s := range td.segs {
		segRecord[s.idx] = td.segRecord[i]
	}
	for _, r := range td.records {
		sizes, data = append(sizes, r.size), append(data, r.complete && r.data)
	}
	return sizes, data, segRecord
}
