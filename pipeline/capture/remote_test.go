package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/homemole/homemole/internal/tzsptest"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// withFullSizeFrames is the first IoT Sentinel capture holding a frame a
// sniffer on a 1,500-byte MTU streams in two fragments.
func withFullSizeFrames(t *testing.T) []frame {
	for _, path := range sentinelFiles(t) {
		frames := openAll(t, path)
		for _, f := range frames {
			if len(tzsptest.Sniffed(f.data, 0)) > 1 {
				return frames
			}
		}
	}
	t.Fatal("no IoT Sentinel capture holds a full-size frame")
	return nil
}

// TestStreamedCapture: a capture a collector took of a remote sniffer's
// TZSP stream (MikroTik's packet sniffer) reads as the capture on the
// home's own wire: the same records, and the same home side inferred.
// The second fragments of full-size frames are counted as the link's own.
func TestStreamedCapture(t *testing.T) {
	frames := withFullSizeFrames(t)
	var lan, streamed bytes.Buffer
	wl, ws := pcapgo.NewWriter(&lan), pcapgo.NewWriter(&streamed)
	wl.WriteFileHeader(65535, layers.LinkTypeEthernet)
	ws.WriteFileHeader(65535, layers.LinkTypeEthernet)
	rest := 0
	for i, f := range frames {
		wl.WritePacket(f.ci, f.data)
		for k, piece := range tzsptest.Sniffed(f.data, uint16(i)) {
			ci := f.ci
			ci.CaptureLength, ci.Length = len(piece), len(piece)
			ws.WritePacket(ci, piece)
			rest += k
		}
	}
	want, _ := readRecords(t, lan.Bytes(), "lan.pcap")
	got, st := readRecords(t, streamed.Bytes(), "streamed.pcap")
	if st.NotPackets != uint64(rest) || st.DecodeErrors != 0 {
		t.Errorf("streamed capture: %+v; want the %d second fragments as the link's own", st, rest)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%d records of the streamed capture differ from the %d of the capture itself", len(got), len(want))
	}
	wantHome, gotHome := inferOf(t, lan.Bytes()), inferOf(t, streamed.Bytes())
	if !reflect.DeepEqual(gotHome.Home, wantHome.Home) || gotHome.Gateway != wantHome.Gateway {
		t.Errorf("streamed capture's home side: %s\nthe capture's: %s", gotHome, wantHome)
	}

	// The collector captured on every interface (tcpdump -i any): the
	// stream's frames cooked, SLL2 without their destination MAC. The
	// collector is one host, no gateway: its capture is read whole, each
	// frame the stream's, and carries the same records.
	var cooked []cookedFrame
	src, err := NewReader(bytes.NewReader(streamed.Bytes()), "streamed.pcap")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range readAll(t, src) {
		cooked = append(cooked, cookedFrame{ifindex: 2, hatype: arphrdEther, pkttype: pktHost, src: schemas.MAC(f.data[6:12]),
			proto: binary.BigEndian.Uint16(f.data[12:14]), payload: f.data[14:], ts: f.ci.Timestamp})
	}
	got, st = readRecords(t, cookedPcap(cooked, true), "collector-any.pcap")
	if st.NotPackets != uint64(rest) || st.DecodeErrors != 0 || !reflect.DeepEqual(got, want) {
		t.Errorf("the collector's -i any capture: %+v, %d records; want the %d of the capture itself", st, len(got), len(want))
	}
}

// TestPFLOGCapture: a BSD gateway's pf log of a capture's IP packets
// (tcpdump -i pflog0) reads as a raw IP capture of them, home side and
// lengths included.
func TestPFLOGCapture(t *testing.T) {
	var raw, logged bytes.Buffer
	wr, wp := pcapgo.NewWriter(&raw), pcapgo.NewWriter(&logged)
	wr.WriteFileHeader(65535, layers.LinkTypeRaw)
	wp.WriteFileHeader(65535, layers.LinkType(features.LinkTypePFLOG))
	hdr := make([]byte, 64)
	hdr[0], hdr[1] = 61, 2 // FreeBSD's length, AF_INET
	copy(hdr[4:], "igb1")
	n := 0
	for _, f := range openAll(t, smallSentinel(t)) {
		l, err := features.ParseLink(f.link, f.data)
		if err != nil || l.EtherType != features.EtherTypeIPv4 {
			continue // pf logs IP only
		}
		ip := f.data[l.Offset:]
		ci := f.ci
		ci.CaptureLength, ci.Length = len(ip), len(ip)
		wr.WritePacket(ci, ip)
		rec := append(append([]byte(nil), hdr...), ip...)
		ci.CaptureLength, ci.Length = len(rec), len(rec)
		wp.WritePacket(ci, rec)
		n++
	}
	want, _ := readRecords(t, raw.Bytes(), "tun.pcap")
	got, st := readRecords(t, logged.Bytes(), "pflog.pcap")
	if n == 0 || st.Decoded() != uint64(n) || !reflect.DeepEqual(got, want) {
		t.Errorf("pflog capture: %+v, %d records; want the %d of the raw IP capture", st, len(got), n)
	}
	wantHome, gotHome := inferOf(t, raw.Bytes()), inferOf(t, logged.Bytes())
	if !gotHome.Raw || !reflect.DeepEqual(gotHome.Home, wantHome.Home) {
		t.Errorf("pflog capture's home side: %s\nthe raw capture's: %s", gotHome, wantHome)
	}
}

func inferOf(t *testing.T, raw []byte) features.InferredHome {
	t.Helper()
	src, err := NewReader(bytes.NewReader(raw), "capture")
	if err != nil {
		t.Fatal(err)
	}
	h, err := InferSource(context.Background(), src, "capture")
	if err != nil {
		t.Fatal(err)
	}
	return h
}
