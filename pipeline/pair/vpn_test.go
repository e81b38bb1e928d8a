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
