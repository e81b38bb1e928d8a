package pair

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"time"

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
	// The segment's place is measured from the byte expected next, not
	// from the stream's first: a tunnel of weeks passes 2 GiB, where a
	// distance from the first byte no longer fits the 32 bits of a
	// sequence number.
	r := c.next + int64(int32(seq-(c.base+uint32(c.next))))
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
// each of their segments' tunnel records. A live tap keeps one for as long
// as it reads, across its sessions: a tunnel's stream outlives them, and
// its framing cannot be found again mid-stream.
//
// Memory is bounded, and a WAN tap sees whatever the internet sends, so
// the table is kept for tunnels: a stream is forgotten at its FIN or RST,
// and a new stream that finds the table full takes the place of the oldest
// one that is not a tunnel at work: one whose framing was lost, one quiet
// for tunnelIdle, or one that never went past the single segment that
// looked like a record (what a scan or a flood of such packets leaves). A
// tunnel keeps its place however many others come and go; only when
// maxTunnelStreams tunnels are at work is a new stream not followed.
type TunnelTracker struct {
	streams map[streamKey]*followed
	// order holds the streams in the order they were first followed, the
	// oldest first: where room is looked for. An entry whose stream was
	// forgotten, or followed anew since, is stale (its n differs).
	order []queued
	added uint64
	// fullAt: capture time a full table last had no room; it is not
	// searched again for sweepEvery.
	fullAt int64
	full   bool
}

// followed is one stream direction being cut into records.
type followed struct {
	c    RecordCutter
	n    uint64 // which stream followed under its key
	last int64  // capture time of its last segment
	// segs counts the segments it was told: a second one that carried on
	// the first's records makes it a stream.
	segs int
}

type queued struct {
	k streamKey
	n uint64
}

type streamKey struct {
	src, dst         netip.Addr
	srcPort, dstPort uint16
}

const (
	// maxTunnelStreams bounds a TunnelTracker; a home has a tunnel or two.
	maxTunnelStreams = 4096
	// tunnelIdle: a stream quiet this long may make room. OpenVPN's
	// keepalive pings a tunnel every 10 s or so.
	tunnelIdle = int64(5 * time.Minute)
	// sweepEvery spaces the searches of a table full of tunnels at work.
	sweepEvery = int64(time.Second)
)

// NewTunnelTracker returns a tracker for a tap's streams.
func NewTunnelTracker() *TunnelTracker {
	return &TunnelTracker{streams: map[streamKey]*followed{}}
}

// TCP flags that end a stream.
const (
	tcpFIN = 0x01
	tcpRST = 0x04
)

// Observe sets p.Tunnel for the frame p was decoded from: the segment's
// records where it belongs to a followed stream, zero otherwise. A stream
// is followed from its first segment with payload when that segment begins
// with what an OpenVPN record begins with (a plausible length and opcode);
// one that began before the capture usually does not, and stays unknown.
func (t *TunnelTracker) Observe(lt features.LinkType, data []byte, p *schemas.Packet) {
	p.Tunnel = schemas.TunnelRecords{}
	if p.Transport != gateway.ProtoTCP || p.PayloadLen == 0 && p.TCPFlags&(tcpFIN|tcpRST) == 0 {
		return
	}
	h, err := gateway.ParseHeader(lt, data)
	if err != nil || h.Proto != gateway.ProtoTCP || h.Later || !h.HasPorts {
		return
	}
	k := streamKey{h.Src, h.Dst, h.SrcPort, h.DstPort}
	if h.Flags&tcpRST != 0 {
		delete(t.streams, k)
		delete(t.streams, streamKey{h.Dst, h.Src, h.DstPort, h.SrcPort})
		return
	}
	var payload []byte
	if p.PayloadLen > 0 {
		payload = tcpPayload(data[h.IPStart:], h)
	}
	f := t.streams[k]
	if f == nil && len(payload) > 0 && recordHead(payload) && t.room(p.TsNs) {
		t.added++
		f = &followed{n: t.added}
		t.streams[k] = f
		t.order = append(t.order, queued{k, f.n})
	}
	if f == nil {
		return
	}
	if len(payload) > 0 {
		p.Tunnel = f.c.Cut(h.Seq, payload)
		f.last = p.TsNs
		if p.Tunnel.Known {
			f.segs++
		}
	}
	if h.Flags&tcpFIN != 0 {
		delete(t.streams, k)
	}
}

// room says whether a new stream may be followed at capture time now,
// making room in a full table (see TunnelTracker).
func (t *TunnelTracker) room(now int64) bool {
	if len(t.order) > 2*len(t.streams)+64 {
		// Forgotten streams leave stale entries behind.
		t.order = slices.DeleteFunc(t.order, t.stale)
	}
	if len(t.streams) < maxTunnelStreams {
		return true
	}
	if t.full && now-t.fullAt < sweepEvery && now >= t.fullAt {
		return false
	}
	// Each entry is looked at once: a tunnel at work goes to the back.
	for range len(t.order) {
		q := t.order[0]
		t.order = t.order[1:]
		if t.stale(q) {
			continue
		}
		f := t.streams[q.k]
		// A stream heard "later" than now was heard before the clock
		// was set back: not quiet.
		if f.c.lost || f.segs < 2 || now-f.last > tunnelIdle {
			delete(t.streams, q.k)
			t.full = false
			return true
		}
		t.order = append(t.order, q)
	}
	t.full, t.fullAt = true, now
	return false
}

func (t *TunnelTracker) stale(q queued) bool {
	f := t.streams[q.k]
	return f == nil || f.n != q.n
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
