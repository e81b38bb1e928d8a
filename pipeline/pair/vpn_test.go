package pair

import (
	"slices"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/schemas"
)

// TestPairExactStalledTunnel is what the real lab's OpenVPN did on a busy
// machine: it held an outbound FIN 11.3 ms, longer than the delay
// tolerance, and sent it just before the ACK that followed it 11 ms later
// on the LAN, both of one size. The delay rule first passes the FIN over
// as lost and gives its tunnel packet the ACK; when the next tunnel packet
// takes the FIN after all, the FIFO order puts them back.
func TestPairExactStalledTunnel(t *testing.T) {
	const ms = int64(time.Millisecond)
	c := gateway.AES256GCM
	lan := func(idx, ts int64, size int) lanPkt {
		return lanPkt{idx: idx, ts: ts, out: true, h: gateway.Header{Len: size}}
	}
	tun := func(idx, ts int64, size int) tunnelPkt {
		return tunnelPkt{idx: idx, ts: ts, payload: gateway.PayloadSize(c, size), v4: true}
	}
	lans := []lanPkt{
		lan(0, 0, 300),     // an earlier packet: the tunnel's delay is 0.2 ms
		lan(1, 100*ms, 52), // FIN
		lan(2, 111*ms, 52), // ACK, 11 ms later
		lan(3, 111*ms+ms, 80),
	}
	tuns := []tunnelPkt{
		tun(0, ms/5, 300),
		tun(1, 111*ms+3*ms/10, 52), // the FIN, 11.3 ms late
		tun(2, 111*ms+4*ms/10, 52), // the ACK
		tun(3, 112*ms+ms/5, 80),
	}
	pairs := []int64{-1, -1, -1, -1}
	n := pairExact(lans, tuns, true, 20*ms, 10*ms, c, pairs)
	if want := []int64{0, 1, 2, 3}; n != 4 || !slices.Equal(pairs, want) {
		t.Fatalf("paired %d: %v, want 4: %v", n, pairs, want)
	}
	// A packet that is really lost stays passed over: with no second
	// tunnel packet of its size, the late fit is not taken back.
	pairs = []int64{-1, -1, -1}
	lost := []lanPkt{lans[0], lans[1], lans[2]}
	n = pairExact(lost, tuns[:2], true, 20*ms, 10*ms, c, pairs[:2])
	if n != 2 || pairs[1] != 2 {
		t.Fatalf("with the FIN lost before the tunnel: pairs %v, want the tunnel's FIN-sized packet on the ACK (2)", pairs[:2])
	}
}

// TestRecordAssemblerMidStream: a session that begins in the middle of a
// tunnel's stream (a rotated live capture) finds the records that begin
// after its first segment, as the whole stream has them.
func TestRecordAssemblerMidStream(t *testing.T) {
	var stream []byte
	for _, n := range []int{90, 1300, 40, 700, 55, 1200, 64} {
		stream = append(stream, rec(n, 9<<3)...)
	}
	var segs []wanPkt
	for from := 0; from < len(stream); from += 500 {
		to := min(from+500, len(stream))
		segs = append(segs, wanPkt{idx: int64(len(segs)), ts: int64(from), tcp: stream[from:to],
			h: gateway.Header{Proto: gateway.ProtoTCP, Seq: 1000 + uint32(from)}})
	}
	var c RecordCutter
	told := make([]schemas.TunnelRecords, len(segs))
	for i, s := range segs {
		told[i] = c.Cut(s.h.Seq, s.tcp)
	}
	whole := splitRecords(slices.Clone(segs))
	for skip := 1; skip < len(segs); skip++ {
		var a recordAssembler
		for i := skip; i < len(segs); i++ {
			a.add(segs[i], told[i])
		}
		// The whole stream's records that begin in or after segment skip.
		var want []tcpRecordInfo
		for _, r := range whole.records {
			if r.firstTs >= segs[skip].ts {
				want = append(want, r)
			}
		}
		if !slices.Equal(a.td.records, want) {
			t.Fatalf("from segment %d: records\n%+v\nwant\n%+v", skip, a.td.records, want)
		}
		for k, i := range a.td.segRecord {
			if w := whole.segRecord[skip+k]; (i < 0) != (w < 0 || whole.records[w].firstTs < segs[skip].ts) {
				t.Errorf("from segment %d: segment %d has record %d, the whole stream %d", skip, skip+k, i, w)
			}
		}
	}
}

// TestRecordsPastFourGiB: a tunnel over TCP that stays up for weeks
// carries more than the 2 GiB a signed 32-bit distance from its first byte
// reaches, and more than the 4 GiB its sequence numbers count. Its records
// are cut as they are at its start, by the agent segment by segment and by
// the pairing from a capture's segments, and a retransmission or a hole
// past the wrap is still told apart.
func TestRecordsPastFourGiB(t *testing.T) {
	const segLen = 64 << 10
	var seg []byte
	for len(seg) < segLen {
		seg = append(seg, rec(segLen/4-RecordLenPrefix, 9<<3)...)
	}
	const n = 5 << 30 / segLen  // 5 GiB of one direction
	base := uint32(0xfff0_0000) // the sequence numbers wrap early on
	seq := func(i int) uint32 { return base + uint32(i)*segLen }
	var c RecordCutter
	for i := range n {
		got := c.Cut(seq(i), seg)
		if !got.Known || got.Starts != 4 || len(got.Ends) != 4 || got.Continues {
			t.Fatalf("segment %d (stream byte %d): told %+v, want 4 records begun and ended", i, int64(i)*segLen, got)
		}
	}
	if got := c.Cut(seq(n-1), seg); got.Known || c.lost {
		t.Fatalf("a retransmission of the last segment: told %+v, lost %v; want not known, and the stream still followed", got, c.lost)
	}
	if got := c.Cut(seq(n), seg); !got.Known {
		t.Fatalf("the segment after the retransmission: told %+v, want known", got)
	}
	if got := c.Cut(seq(n+2), seg); got.Known || !c.lost {
		t.Fatalf("a segment behind a hole: told %+v, lost %v; want the framing lost", got, c.lost)
	}

	// The pairing's reassembly, from a capture that holds segments a
	// little out of order (each pair swapped).
	segs := make([]wanPkt, n)
	for i := range segs {
		k := i ^ 1
		segs[i] = wanPkt{idx: int64(k), tcp: seg, h: gateway.Header{Proto: gateway.ProtoTCP, Seq: seq(k)}}
	}
	td := splitRecords(segs)
	if len(td.records) != 4*n {
		t.Fatalf("splitRecords found %d records in %d segments, want %d", len(td.records), n, 4*n)
	}
	for i, r := range td.records {
		if !r.complete || !r.data || r.size != segLen/4-RecordLenPrefix {
			t.Fatalf("record %d: %+v, want a complete data record of %d bytes", i, r, segLen/4-RecordLenPrefix)
		}
	}
	for i, s := range td.segs {
		if s.idx != int64(i) || td.segRecord[i] != 4*i {
			t.Fatalf("stream position %d holds segment %d with record %d, want segment %d with record %d", i, s.idx, td.segRecord[i], i, 4*i)
		}
	}
}
