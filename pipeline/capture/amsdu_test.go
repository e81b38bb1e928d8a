package capture

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"slices"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// TestWiFiAMSDUCapture puts a real capture on the air as 802.11n does a
// burst: runs of up to four packets of one station to its access point, or
// back, aggregated into one A-MSDU (radiotap with the FCS kept). Every
// packet must read back as its wired record, each once: a retransmitted
// aggregate (Retry, same sequence number) adds nothing, and an aggregate
// whose first sending was not captured is read whole.
func TestWiFiAMSDUCapture(t *testing.T) {
	gw := sentinelHome.GatewayMAC
	bssid := schemas.MAC{0x02, 0, 0, 0, 0x0a, 1}
	radiotap := []byte{0, 0, 10, 0, 0x02, 0, 0, 0, 0x10, 0} // Flags present: the frame ends with its FCS
	fcs := []byte{0xde, 0xad, 0xbe, 0xef}
	var eth, air bytes.Buffer
	we, wa := pcapgo.NewWriter(&eth), pcapgo.NewWriter(&air)
	we.WriteFileHeader(65535, layers.LinkTypeEthernet)
	wa.WriteFileHeader(65535, layers.LinkType(features.LinkTypeRadiotap))

	var run []frame // packets of one direction of one station, not yet sent
	seq, aggregates, retried, single := 0, 0, 0, 0
	send := func() {
		if len(run) == 0 {
			return
		}
		src, dst := schemas.MAC(run[0].data[6:12]), schemas.MAC(run[0].data[0:6])
		// To the access point: RA the BSSID, TA the station; from it:
		// RA the station, TA the BSSID. The third address is the BSSID
		// in an A-MSDU; the subframes carry the real ones.
		flags, a1, a2 := byte(0x01), bssid, src
		if src == gw {
			flags, a1, a2 = 0x02, dst, bssid
		}
		qos, a3 := byte(0x80), bssid // A-MSDU present
		if len(run) == 1 {
			// A packet alone goes as a plain QoS data frame, the third
			// address the destination (to the access point) or the
			// source (from it).
			qos, a3 = 0, dst
			if src == gw {
				a3 = src
			}
		}
		hdr := func(retry bool) []byte {
			f := flags
			if retry {
				f |= 0x08
			}
			return slices.Concat([]byte{0x88, f, 0, 0}, a1[:], a2[:], a3[:], binary.LittleEndian.AppendUint16(nil, uint16(seq<<4)), []byte{qos, 0})
		}
		var body []byte
		for i, f := range run {
			msdu := slices.Concat([]byte{0xaa, 0xaa, 0x03, 0, 0, 0}, f.data[12:])
			if len(run) == 1 {
				body = msdu
				break
			}
			sub := slices.Concat(f.data[0:12], binary.BigEndian.AppendUint16(nil, uint16(len(msdu))), msdu)
			for i < len(run)-1 && len(sub)%4 != 0 {
				sub = append(sub, 0)
			}
			body = append(body, sub...)
		}
		ci := run[0].ci
		write := func(retry bool) {
			frame := slices.Concat(radiotap, hdr(retry), body, fcs)
			ci.CaptureLength, ci.Length = len(frame), len(frame)
			wa.WritePacket(ci, frame)
		}
		switch {
		case len(run) == 1:
			single++
			write(false)
		case seq%7 == 3:
			// Sent, then sent again: the copy adds nothing.
			write(false)
			write(true)
			retried += len(run)
			aggregates++
		case seq%7 == 5:
			// Only the retransmission was captured: read whole.
			write(true)
			aggregates++
		default:
			write(false)
			aggregates++
		}
		// An aggregate's packets go on the air, and are stamped, at once.
		for _, f := range run {
			f.ci.Timestamp = ci.Timestamp
			we.WritePacket(f.ci, f.data)
		}
		run, seq = run[:0], seq+1
	}
	for _, f := range openAll(t, smallSentinel(t)) {
		if len(f.data) < 14 || binary.BigEndian.Uint16(f.data[12:14]) < 0x600 {
			continue
		}
		if len(run) > 0 && (!bytes.Equal(run[0].data[0:12], f.data[0:12]) || len(run) == 4) {
			send()
		}
		run = append(run, f)
	}
	send()
	if aggregates < 5 || retried == 0 || single == 0 {
		t.Fatalf("%d aggregates (%d subframes sent again), %d single frames: the capture is not the one meant", aggregates, retried, single)
	}

	want, _ := readRecords(t, eth.Bytes(), "wired.pcap")
	got, st := readRecords(t, air.Bytes(), "monitor.pcap")
	t.Logf("%d packets in %d aggregates and %d single frames; %d subframes sent again", len(want), aggregates, single, retried)
	if st.NotPackets != uint64(retried) || st.DecodeErrors != 0 || st.Decoded() != uint64(len(want)) {
		t.Errorf("monitor capture: %+v; want %d packets, %d retransmitted subframes apart", st, len(want), retried)
	}
	if len(got) != len(want) {
		t.Fatalf("%d records from the monitor capture, %d from the wired one", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("record %d:\nair   %+v\nwired %+v", i, got[i], want[i])
		}
	}
	// The fuzzer's seed: three packets, then their three again.
	if _, st := readRecords(t, amsduPcap(), "seed.pcap"); st.Decoded() != 3 || st.NotPackets != 3 || st.Packets != 6 {
		t.Errorf("the seed's aggregate and its retransmission: %+v, want 3 packets and 3 retransmitted", st)
	}
}

// amsduPcap is a radiotap capture of one A-MSDU of three IPv4 packets
// from a station to its access point, then its retransmission: FuzzOpenFile's
// seed.
func amsduPcap() []byte {
	sta, ap := schemas.MAC{2, 0, 0, 0, 0, 1}, schemas.MAC{2, 0, 0, 0, 0, 2}
	ip := []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 52, 0, 0, 2, 0x30, 0x39, 0, 53, 0, 8, 0, 0}
	var body []byte
	for i := range 3 {
		msdu := slices.Concat([]byte{0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00}, ip)
		sub := slices.Concat(ap[:], sta[:], binary.BigEndian.AppendUint16(nil, uint16(len(msdu))), msdu)
		for i < 2 && len(sub)%4 != 0 {
			sub = append(sub, 0)
		}
		body = append(body, sub...)
	}
	var buf bytes.Buffer
	w := pcapgo.NewWriter(&buf)
	w.WriteFileHeader(65535, layers.LinkType(features.LinkTypeRadiotap))
	for _, flags := range []byte{0x01, 0x09} {
		frame := slices.Concat([]byte{0, 0, 8, 0, 0, 0, 0, 0, 0x88, flags, 0, 0}, ap[:], sta[:], ap[:], []byte{0x70, 0, 0x80, 0}, body)
		w.WritePacket(gopacket.CaptureInfo{CaptureLength: len(frame), Length: len(frame)}, frame)
	}
	return buf.Bytes()
}
