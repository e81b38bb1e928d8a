package pair

import (
	"encoding/binary"
	"net/netip"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/schemas"
)

// RecordCutter follows one direction of an OpenVPN-over-TCP stream segment
// by segment and tells of each the records that begin and end in it
// (schemas.TunnelRecords). Pairing captures feeds it the segments in
// sequence order (splitRecords); a capture agent, which sees payloads the
// labeler never does, feeds it in capture order and ships what it tells
// with each WAN packet, so that both cut the stream by the same code.
type RecordCutter struct {
	started bool
	base    uint32 // the first segment's sequence number
	next    int64  // the next stream byte expected, relative to base
	// The record being read: its length field (lenHave bytes of lenBuf),
	// then remaining bytes of its packet, of size in all.
	lenBuf    [RecordLenPrefix]byte
	lenHave   int
	remaining int
	size      int
	data      bool
	// lost: a hole in the stream (a segment the capture missed, or one
	// out of order where segments are taken as they come) loses the
	// framing for good.
	lost bool
}

// Cut takes the next segment of the direction: its TCP sequence number and
// payload. A retransmission of bytes already read, and every segment from a
// hole on, is not known.
func (c *RecordCutter) Cut(seq uint32, payload []byte) schemas.TunnelRecords {
	var t schemas.TunnelRecords
	if len(payload) == 0 || c.lost {
		return t
	}
	if !c.started {
		c.started, c.base = true, seq
	}
	r := int64(int32(seq - c.base))
	b := payload
	switch {
	case r+int64(len(b)) <= c.next:
		return t // a retransmission
	case r > c.next:
		c.lost = true
		return t
	case r < c.next:
		b = b[c.next-r:]
	}
	c.next += int64(len(b))
	t.Known = true
	t.Continues = c.lenHave > 0 || c.remaining > 0
	for len(b) > 0 {
		if c.remaining == 0 {
			if c.lenHave == 0 {
				t.Starts++
			}
			c.lenBuf[c.lenHave] = b[0]
			c.lenHave++
			b = b[1:]
			if c.lenHave == RecordLenPrefix {
				c.size, c.lenHave = int(binary.BigEndian.Uint16(c.lenBuf[:])), 0
				c.remaining, c.data = c.size, false
				if c.size == 0 {
					t.Ends = append(t.Ends, schemas.RecordEnd{})
				}
			}
			continue
		}
		if c.remaining == c.size {
			// P_DATA_V1 (6) or P_DATA_V2 (9) in the opcode's top 5 bits.
			op := b[0] >> 3
			c.data = op == 6 || op == 9
		}
		k := min(c.remaining, len(b))
		c.remaining -= k
		b = b[k:]
		if c.remaining == 0 {
			t.Ends = append(t.Ends, schemas.RecordEnd{Size: uint16(c.size), Data: c.data})
		}
	}
	if len(t.Ends) > schemas.MaxRecordEnds {
		c.lost = true
		return schemas.TunnelRecords{}
	}
	return t
}

// recordAssembler rebuilds a direction's records from what RecordCutter told
// of its segments, in the order it told it.
type recordAssembler struct {
	td tcpDirection
	// done counts the records whose end has been told: records end in
	// the order they begin.
	done int
}

func (a *recordAssembler) add(w wanPkt, t schemas.TunnelRecords) {
	a.td.segs = append(a.td.segs, w)
	if !t.Known {
		a.td.segRecord = append(a.td.segRecord, -1)
		return
	}
	open := a.done < len(a.td.records) // a record begun and not ended
	// A segment that continues a record whose beginning was not told (a
	// session that begins in the middle of a stream, as a rotated live
	// capture's does) has it end first, unseen: its end is skipped, and
	// the records that begin after it are found.
	unseen := t.Continues && !open
	rec := -1
	switch {
	case t.Continues && open:
		rec = a.done
	case !t.Continues && t.Starts > 0:
		rec = len(a.td.records)
	}
	a.td.segRecord = append(a.td.segRecord, rec)
	for range t.Starts {
		a.td.records = append(a.td.records, tcpRecordInfo{firstTs: w.ts})
	}
	for i, e := range t.Ends {
		if i == 0 && unseen {
			continue
		}
		if a.done >= len(a.td.records) {
			break // told more ends than records began: not trusted further
		}
		r := &a.td.records[a.done]
		r.size, r.data, r.complete, r.lastTs = int(e.Size), e.Data, true, w.ts
		a.done++
	}
}

// TunnelTracker is the capture agent's side of RecordCutter: it finds the
// TCP streams of a WAN tap that look like OpenVPN over TCP and fills in
// each of their segments' tunnel records. Memory is bounded: past
// maxTunnelStreams directions, new streams are not followed.
type TunnelTracker struct {
	streams map[streamKey]*RecordCutter
}

type streamKey struct {
	src, dst         netip.Addr
	srcPort, dstPort uint16
}

// maxTunnelStreams bounds a TunnelTracker; a home has a tunnel or two.
const maxTunnelStreams = 4096

// NewTunnelTracker returns a tracker for one capture session.
func NewTunnelTracker() *TunnelTracker {
	return &TunnelTracker{streams: map[streamKey]*RecordCutter{}}
}

// Observe sets p.Tunnel for the frame p was decoded from: the segment's
// records where it belongs to a followed stream, zero otherwise. A stream
// is followed from its first segment with payload when that segment begins
// with what an OpenVPN record begins with (a plausible length and opcode);
// one that began before the capture usually does not, and stays unknown.
func (t *TunnelTracker) Observe(lt features.LinkType, data []byte, p *schemas.Packet) {
	p.Tunnel = schemas.TunnelRecords{}
	if p.Transport != gateway.ProtoTCP || p.PayloadLen == 0 {
		return
	}
	h, err := gateway.ParseHeader(lt, data)
	if err != nil || h.Proto != gateway.ProtoTCP || h.Later || !h.HasPorts {
		return
	}
	payload := tcpPayload(data[h.IPStart:], h)
	if len(payload) == 0 {
		return
	}
	k := streamKey{h.Src, h.Dst, h.SrcPort, h.DstPort}
	c := t.streams[k]
	if c == nil {
		if len(t.streams) >= maxTunnelStreams || !recordHead(payload) {
			return
		}
		c = &RecordCutter{}
		t.streams[k] = c
	}
	p.Tunnel = c.Cut(h.Seq, payload)
}

// recordHead: b begins like an OpenVPN record over TCP: a length a tun
// packet's encryption can have and an opcode that exists (1 to 11).
func recordHead(b []byte) bool {
	if len(b) < RecordLenPrefix+1 {
		return false
	}
	n := binary.BigEndian.Uint16(b)
	op := b[RecordLenPrefix] >> 3
	return n >= 4 && n <= maxRecordSize && op >= 1 && op <= 11
}

// maxRecordSize is the largest OpenVPN packet a record is taken to hold:
// a 1500-byte tun MTU plus the largest cipher overhead, with room.
const maxRecordSize = 1800
