package pair

import (
	"encoding/binary"
	"slices"
	"testing"

	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/schemas"
)

// rec is an OpenVPN record over TCP of an n-byte packet with opcode byte op.
func rec(n int, op byte) []byte {
	b := make([]byte, 2+n)
	binary.BigEndian.PutUint16(b, uint16(n))
	if n > 0 {
		b[2] = op
	}
	return b
}

// FuzzSplitRecords cuts arbitrary TCP segments into OpenVPN records: the
// stream is whatever a WAN capture holds, so any bytes, sequence numbers
// and overlaps must come out as records and segment assignments that stay
// within bounds.
func FuzzSplitRecords(f *testing.F) {
	two := append(rec(30, 9<<3), rec(70, 9<<3)...)
	f.Add(two, uint32(1000), uint16(40), uint16(20))
	f.Add(append(rec(5, 4<<3), rec(1500, 9<<3)...), uint32(0xfffffff0), uint16(700), uint16(0))
	f.Add([]byte{0, 0, 0, 1, 0x48}, uint32(7), uint16(1), uint16(3))
	f.Fuzz(func(t *testing.T, stream []byte, seq uint32, cut, overlap uint16) {
		// Three segments: [0, c), [c-o, 2c), [2c, end), with an overlap
		// that a retransmission would make.
		c := int(cut)%max(len(stream), 1) + 1
		var segs []wanPkt
		add := func(from, to int) {
			from, to = max(from, 0), min(to, len(stream))
			if from >= to {
				return
			}
			segs = append(segs, wanPkt{idx: int64(len(segs)), ts: int64(from), tcp: stream[from:to],
				h: gateway.Header{Proto: gateway.ProtoTCP, Seq: seq + uint32(from)}})
		}
		add(0, c)
		add(c-int(overlap)%c, 2*c)
		add(2*c, len(stream))
		td := splitRecords(segs)
		if len(td.segs) != len(td.segRecord) {
			t.Fatalf("%d segments, %d record assignments", len(td.segs), len(td.segRecord))
		}
		total := 0
		for _, r := range td.records {
			if r.size < 0 || r.size > 0xffff {
				t.Fatalf("record of %d bytes", r.size)
			}
			if r.complete {
				total += RecordLenPrefix + r.size
			}
		}
		if total > len(stream) {
			t.Fatalf("complete records hold %d bytes of a %d-byte stream", total, len(stream))
		}
		for _, r := range td.segRecord {
			if r < -1 || r >= len(td.records) {
				t.Fatalf("segment assigned to record %d of %d", r, len(td.records))
			}
		}
	})
}

// FuzzTunnelRecords checks the agent's path against the captures' path: a
// stream cut into segments, told segment by segment by a RecordCutter,
// carried through a packet batch (schemas version 3) and reassembled by the
// labeler, must give the records and segment assignments that splitRecords
// finds in the segments themselves.
func FuzzTunnelRecords(f *testing.F) {
	f.Add(append(rec(30, 9<<3), rec(70, 9<<3)...), uint32(1000), []byte{40, 1, 20})
	f.Add(append(rec(5, 4<<3), rec(1500, 9<<3)...), uint32(0xfffffff0), []byte{200, 3, 255, 1})
	f.Add(append(rec(0, 0), rec(3, 6<<3)...), uint32(7), []byte{1, 1, 1})
	f.Fuzz(func(t *testing.T, stream []byte, seq uint32, cuts []byte) {
		var segs []wanPkt
		for from, i := 0, 0; from < len(stream); i++ {
			n := len(stream) - from
			if i < len(cuts) {
				n = min(n, int(cuts[i])+1)
			}
			segs = append(segs, wanPkt{idx: int64(len(segs)), ts: int64(from), tcp: stream[from : from+n],
				h: gateway.Header{Proto: gateway.ProtoTCP, Seq: seq + uint32(from)}})
			from += n
		}
		want := splitRecords(slices.Clone(segs))
		var c RecordCutter
		b := &schemas.Batch{Kind: schemas.KindPackets}
		for _, s := range segs {
			b.Packets = append(b.Packets, schemas.Packet{Offset: uint64(s.idx), TsNs: s.ts, Tunnel: c.Cut(s.h.Seq, s.tcp)})
		}
		data, err := b.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := schemas.DecodeBatch(data)
		if err != nil {
			t.Fatal(err)
		}
		var a recordAssembler
		for i, s := range segs {
			a.add(s, got.Packets[i].Tunnel)
		}
		if !slices.Equal(a.td.records, want.records) {
			t.Fatalf("records told by the agent:\n%+v\nfound in the segments:\n%+v", a.td.records, want.records)
		}
		if !slices.Equal(a.td.segRecord, want.segRecord) {
			t.Fatalf("segment records told by the agent %v, found in the segments %v", a.td.segRecord, want.segRecord)
		}
	})
}
