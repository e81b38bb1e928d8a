package dataset_test

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/homegen/homegentest"
	"github.com/homemole/homemole/schemas"
)

// generatedWindows decodes a small generated home into windows of size n, as
// the windower would cut them (addresses stripped, padding at the end).
func generatedWindows(t *testing.T, n int) ([]*schemas.Window, []string) {
	t.Helper()
	h, home := homegentest.Generate(t, homegen.Config{Seed: 5, Sessions: 1, SessionDuration: 2 * time.Minute}, t.TempDir())
	labels := map[schemas.MAC]int32{}
	var names []string
	for i, d := range h.Inventory {
		m, err := schemas.ParseMAC(d.MAC)
		if err != nil {
			t.Fatal(err)
		}
		labels[m] = int32(i)
		names = append(names, d.Name)
	}
	var ws []*schemas.Window
	var w *schemas.Window
	for _, p := range capturetest.Packets(t, h.Files[0], home) {
		label, ok := labels[p.SrcMAC]
		if !ok {
			if label, ok = labels[p.DstMAC]; !ok {
				label = schemas.Unlabeled
			}
		}
		p.StripAddresses()
		if w == nil || w.Len == n {
			w = schemas.NewWindow(n)
			w.ID = "lan/h/s/noise/" + string(rune('a'+len(ws)))
			ws = append(ws, w)
		}
		w.Set(w.Len, &p, float32(p.IntervalNs)/1e9, label)
		w.Len++
	}
	if len(ws) < 3 {
		t.Fatalf("the generated home gave %d windows; the test needs a few", len(ws))
	}
	return ws, names
}

// oddWindow holds packets the generated home does not send: a frame without
// IP, ICMP, a later fragment, a frame shorter than the reconstruction's
// headers, a DNS reply, a TCP segment with options and unusual flags.
func oddWindow() *schemas.Window {
	w := schemas.NewWindow(8)
	w.ID = "lan/h/s/noise/odd"
	ps := []schemas.Packet{
		{TsNs: 1_700_000_000_000_000_001, DPort: schemas.NoPort, ProtoBits: schemas.ProtoOther, Direction: schemas.DirLocal, FrameLen: 60},
		{TsNs: 1_700_000_000_000_000_500, DPort: schemas.NoPort, ProtoBits: schemas.ProtoIP | schemas.ProtoOther, Direction: schemas.DirOutbound, FrameLen: 98, TTL: 64, IPLen: 84, Transport: 1, PayloadLen: 64},
		{TsNs: 1_700_000_000_000_999_999, DPort: schemas.NoPort, ProtoBits: schemas.ProtoIP | schemas.ProtoUDP, Direction: schemas.DirInbound, FrameLen: 534, TTL: 50, IPLen: 520, Transport: 17, PayloadLen: 500},
		// Recorded on a raw-IP link: 48 bytes of IP, 14 fewer than the reconstruction needs.
		{TsNs: 1_700_000_001_000_000_000, DPort: 123, ProtoBits: schemas.ProtoIP | schemas.ProtoUDP | schemas.ProtoOther, Direction: schemas.DirOutbound, FrameLen: 50, TTL: 64, IPLen: 48, Transport: 17, PayloadLen: 20},
		{TsNs: 1_700_000_001_000_000_001, DPort: 40000, ProtoBits: schemas.ProtoIP | schemas.ProtoUDP | schemas.ProtoDNS, Direction: schemas.DirInbound, FrameLen: 120, TTL: 60, IPLen: 106, Transport: 17, PayloadLen: 78},
		{TsNs: 1_700_000_002_000_000_000, DPort: 8883, ProtoBits: schemas.ProtoIP | schemas.ProtoTCP, Direction: schemas.DirOutbound, FrameLen: 74, TTL: 64, IPLen: 60, Transport: 6, TCPFlags: 0x1c2, TCPWindow: 64240, TCPOptionsLen: 20},
		{TsNs: 1_700_000_002_000_000_100, DPort: 443, ProtoBits: schemas.ProtoIP | schemas.ProtoTCP | schemas.ProtoTLS, Direction: schemas.DirOutbound, FrameLen: 1514, TTL: 64, IPLen: 1500, Transport: 6, TCPFlags: 0x18, TCPWindow: 501, TCPOptionsLen: 12, PayloadLen: 1448},
	}
	for i := range ps {
		w.Set(i, &ps[i], 0, int32(i%3)-1)
	}
	w.Len = len(ps)
	return w
}

func TestToPcapRoundTrip(t *testing.T) {
	ws, _ := generatedWindows(t, 50)
	ws = append(ws, oddWindow())
	var buf bytes.Buffer
	if err := dataset.ToPcap(ws, &buf); err != nil {
		t.Fatal(err)
	}
	src, err := capture.NewReader(bytes.NewReader(buf.Bytes()), "reconstructed.pcap")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	// Both ways of describing a home must give the directions back.
	byLAN := features.NewDecoder(features.HomeConfig{LANNets: []netip.Prefix{dataset.PcapLANNet}})
	byGW := features.NewDecoder(features.HomeConfig{GatewayMAC: dataset.PcapGatewayMAC})
	packets := 0
	for _, w := range ws {
		for i := 0; i < w.Len; i++ {
			f, err := src.Next()
			if err != nil {
				t.Fatalf("window %s packet %d: %v", w.ID, i, err)
			}
			var p, q schemas.Packet
			if err := byLAN.Decode(f.LinkType, f.Data, f.CI, f.Offset, &p); err != nil {
				t.Fatalf("window %s packet %d: %v", w.ID, i, err)
			}
			if err := byGW.Decode(f.LinkType, f.Data, f.CI, f.Offset, &q); err != nil {
				t.Fatalf("window %s packet %d: %v", w.ID, i, err)
			}
			packets++
			short := w.ID == "lan/h/s/noise/odd" && i == 3
			got := []int64{p.TsNs, int64(p.DPort), int64(p.Direction), int64(q.Direction), int64(p.FrameLen), int64(p.ProtoBits),
				int64(p.TTL), int64(p.Transport), int64(p.TCPFlags), int64(p.TCPWindow), int64(p.TCPOptionsLen), int64(p.PayloadLen), int64(p.IPLen)}
			want := []int64{w.TsNs[i], int64(w.DPort[i]), int64(w.Direction[i]), int64(w.Direction[i]), int64(w.FrameLen[i]), int64(w.ProtoBits[i]),
				int64(w.TTL[i]), int64(w.Transport[i]), int64(w.TCPFlags[i]), int64(w.TCPWindow[i]), int64(w.TCPOptLen[i]), int64(w.PayloadLen[i]), int64(w.IPLen[i])}
			if w.ProtoBits[i]&schemas.ProtoIP == 0 || short {
				// No IP header to compare, or a raw-IP frame whose IP length the
				// Ethernet reconstruction cannot keep.
				got, want = got[:len(got)-1], want[:len(want)-1]
			}
			for k := range got {
				if got[k] != want[k] {
					t.Fatalf("window %s packet %d field %d: got %v, want %v (ts dport dir dir-by-gw framelen bits ttl transport flags window optlen payload iplen)",
						w.ID, i, k, got, want)
				}
			}
		}
	}
	t.Logf("%d packets compared", packets)
	if _, err := src.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("after %d packets: want the end of the capture, got %v", packets, err)
	}
}

func TestToPcapRefusesDamagedWindow(t *testing.T) {
	w := schemas.NewWindow(4)
	w.ID, w.Len = "lan/h/s/ind/0", 4
	w.FrameLen = w.FrameLen[:2]
	err := dataset.ToPcap([]*schemas.Window{w}, io.Discard)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("dataset verify")) {
		t.Fatalf("got %v, want an error that points at dataset verify", err)
	}
}
