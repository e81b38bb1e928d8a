package pair

import (
	"bytes"
	"cmp"
	"encoding/binary"
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
var errNoTCPPayload = errors.New("the tunnel runs over TCP and its records can only be found in the segments' payload, which these WAN packet records do not carry: pair the captures themselves (homemole pair)")

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
// records by their 2-byte lengths. A hole in the stream (a segment the
// capture missed) loses the framing: the records from there on are not
// found, and their segments stay unpaired.
func splitRecords(segs []wanPkt) tcpDirection {
	var td tcpDirection
	if len(segs) == 0 {
		return td
	}
	base := segs[0].h.Seq
	rel := func(w wanPkt) int64 { return int64(int32(w.h.Seq - base)) }
	slices.SortStableFunc(segs, func(a, b wanPkt) int { return cmp.Compare(rel(a), rel(b)) })
	next := rel(segs[0])
	var lenBuf [RecordLenPrefix]byte
	lenHave, remaining, cur := 0, 0, -1
	lost := false
	for _, s := range segs {
		r := rel(s)
		b := s.tcp
		switch {
		case r+int64(len(b)) <= next:
			continue // a retransmission of bytes already read
		case r > next:
			lost = true
		case r < next:
			b = b[next-r:]
		}
		td.segs = append(td.segs, s)
		if lost {
			td.segRecord = append(td.segRecord, -1)
			continue
		}
		next += int64(len(b))
		// The segment's first byte belongs to the record in progress, or
		// to the one whose length starts here.
		if lenHave == 0 && remaining == 0 {
			td.segRecord = append(td.segRecord, len(td.records))
		} else {
			td.segRecord = append(td.segRecord, cur)
		}
		for len(b) > 0 {
			if remaining == 0 {
				if lenHave == 0 {
					td.records = append(td.records, tcpRecordInfo{firstTs: s.ts})
					cur = len(td.records) - 1
				}
				lenBuf[lenHave] = b[0]
				lenHave++
				b = b[1:]
				if lenHave == RecordLenPrefix {
					remaining, lenHave = int(binary.BigEndian.Uint16(lenBuf[:])), 0
					td.records[cur].size = remaining
					if remaining == 0 {
						td.records[cur].complete, td.records[cur].lastTs = true, s.ts
					}
				}
				continue
			}
			if td.records[cur].size == remaining {
				// P_DATA_V1 (6) or P_DATA_V2 (9) in the opcode's top 5 bits.
				op := b[0] >> 3
				td.records[cur].data = op == 6 || op == 9
			}
			k := min(remaining, len(b))
			remaining -= k
			b = b[k:]
			if remaining == 0 {
				td.records[cur].complete, td.records[cur].lastTs = true, s.ts
			}
		}
	}
	return td
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
	for _, w := range wans {
		h := w.h
		if h.Proto != gateway.ProtoTCP || h.Later || !h.HasPorts || (h.SrcPort == cfg.VPNPort) == (h.DstPort == cfg.VPNPort) {
			res.WANOther++
			continue
		}
		if w.noBytes {
			return errNoTCPPayload
		}
		if len(w.tcp) == 0 {
			continue // a pure ACK
		}
		d := 0
		if h.DstPort == cfg.VPNPort {
			d = 1
		}
		segs[d] = append(segs[d], w)
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
		dirs[d] = splitRecords(segs[d])
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
