package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// nflogRecord is an NFLOG record of group 5 as the kernel logs a packet of
// EtherType et that came in on interface 3, with the rule's prefix,
// attributes in byte order o and padded to 4 bytes.
func nflogRecord(o binary.AppendByteOrder, et uint16, pkt []byte) []byte {
	fam := byte(7) // a bridge's hook: ARP and the like
	switch et {
	case 0x0800:
		fam = 2
	case 0x86dd:
		fam = 10
	}
	b := []byte{fam, 0, 0, 5}
	tlv := func(typ uint16, v []byte) {
		b = o.AppendUint16(b, uint16(4+len(v)))
		b = o.AppendUint16(b, typ)
		b = append(b, v...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	tlv(1, append(binary.BigEndian.AppendUint16(nil, et), 2, 0))
	tlv(10, []byte("hm-lan\x00"))
	tlv(4, []byte{0, 0, 0, 3})
	if pkt != nil {
		tlv(9, pkt)
	}
	return b
}

// TestNFLOGCapture writes a real capture's packets as a gateway's NFLOG
// log (pcap little-endian, and pcapng big-endian cut at a snap length) and
// requires each read back as the IP packet it logged, its length the
// packet's, and the records decoded as the packets are.
func TestNFLOGCapture(t *testing.T) {
	frames := openAll(t, smallSentinel(t))
	var pkts [][]byte // each frame's packet, nil for a record of no packet
	var ets []uint16
	for _, f := range frames {
		et := binary.BigEndian.Uint16(f.data[12:14])
		pkt := f.data[14:]
		switch et {
		case 0x0800:
			pkt = pkt[:binary.BigEndian.Uint16(pkt[2:4])] // without the Ethernet padding
		case 0x86dd:
			pkt = pkt[:40+binary.BigEndian.Uint16(pkt[4:6])]
		}
		pkts, ets = append(pkts, pkt), append(ets, et)
	}
	// A rule that logs its prefix only.
	pkts, ets = append(pkts, nil), append(ets, 0x0800)

	// Enough for every header of these packets, not for every payload.
	const snap = 140
	var pcap bytes.Buffer
	w := pcapgo.NewWriter(&pcap)
	if err := w.WriteFileHeader(65535, layers.LinkType(features.LinkTypeNFLOG)); err != nil {
		t.Fatal(err)
	}
	ng := &ngBuilder{order: binary.BigEndian}
	ng.section()
	ng.iface(uint16(features.LinkTypeNFLOG), snap)
	for i, pkt := range pkts {
		rec := nflogRecord(binary.LittleEndian, ets[i], pkt)
		ts := frames[min(i, len(frames)-1)].ci.Timestamp
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: ts, CaptureLength: len(rec), Length: len(rec)}, rec); err != nil {
			t.Fatal(err)
		}
		rec = nflogRecord(binary.BigEndian, ets[i], pkt)
		ng.epb(0, uint64(ts.UnixMicro()), rec[:min(len(rec), snap)], uint32(len(rec)))
	}

	for _, c := range []struct {
		name string
		data []byte
		snap int
	}{{"pcap", pcap.Bytes(), 0}, {"pcapng, big-endian, cut", ng.buf.Bytes(), snap}} {
		t.Run(c.name, func(t *testing.T) {
			src, err := NewReader(bytes.NewReader(c.data), c.name)
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(t, src)
			if len(got) != len(pkts) {
				t.Fatalf("%d frames, want %d", len(got), len(pkts))
			}
			ip := 0
			for i, f := range got {
				pkt := pkts[i]
				switch {
				case pkt == nil || (ets[i] != 0x0800 && ets[i] != 0x86dd):
					if f.link != features.LinkTypeNFLOG {
						t.Fatalf("frame %d, no IP packet: link type %v, want the record kept", i, f.link)
					}
					continue
				case c.snap > 0:
					pkt = pkt[:min(len(pkt), c.snap-36)] // the record holds 36 bytes before the packet
				}
				ip++
				want := map[uint16]features.LinkType{0x0800: features.LinkTypeIPv4, 0x86dd: features.LinkTypeIPv6}[ets[i]]
				if f.link != want || !bytes.Equal(f.data, pkt) || f.ci.CaptureLength != len(pkt) || f.ci.Length != len(pkts[i]) {
					t.Fatalf("frame %d: %v, %d of %d bytes; want %v, the packet's %d of %d", i, f.link, f.ci.CaptureLength, f.ci.Length, want, len(pkt), len(pkts[i]))
				}
			}
			if ip < 20 {
				t.Fatalf("%d IP packets: the capture is not the one meant", ip)
			}

			// Decoded, each packet's record is the Ethernet frame's but
			// for the MACs and the link header's bytes.
			var recs []schemas.Packet
			src, _ = NewReader(bytes.NewReader(c.data), c.name)
			st, err := Read(context.Background(), src, sentinelHome, func(p *schemas.Packet) error { recs = append(recs, *p); return nil })
			if err != nil || st.NotPackets != 1 || st.DecodeErrors != 0 || int(st.Decoded()) != len(frames) {
				t.Fatalf("Read: %+v, %v: want %d decoded, the prefix alone counted apart", st, err, len(frames))
			}
			var wantRecs []schemas.Packet
			src, _ = OpenFile(smallSentinel(t))
			if _, err := Read(context.Background(), src, sentinelHome, func(p *schemas.Packet) error { wantRecs = append(wantRecs, *p); return nil }); err != nil {
				t.Fatal(err)
			}
			for i, p := range recs {
				w := wantRecs[i]
				if !w.SrcIP.IsValid() {
					continue // ARP: no packet of IP
				}
				// The gateway's own packets to a device are told by its
				// MAC; without one they are the LAN's, as the addresses say.
				lan := sentinelHome.LANNets[0]
				if lan.Contains(w.SrcIP) && lan.Contains(w.DstIP) {
					w.Direction = schemas.DirLocal
				}
				if p.IPLen != w.IPLen || p.FrameLen != uint32(len(pkts[i])) || p.DPort != w.DPort || p.ProtoBits != w.ProtoBits || p.Direction != w.Direction ||
					p.SrcIP != w.SrcIP || p.DstIP != w.DstIP || p.TTL != w.TTL || p.TsNs/1000 != w.TsNs/1000 || p.IntervalNs/1000 != w.IntervalNs/1000 {
					t.Fatalf("packet %d decoded to\n%+v\nwant\n%+v", i, p, w)
				}
			}
		})
	}
}

// BenchmarkReadNFLOG reads and decodes a real capture's IP packets as an
// NFLOG log against the same packets as Ethernet frames: what unwrapping
// the records costs.
func BenchmarkReadNFLOG(b *testing.B) {
	var eth, nflog bytes.Buffer
	we, wn := pcapgo.NewWriter(&eth), pcapgo.NewWriter(&nflog)
	we.WriteFileHeader(65535, layers.LinkTypeEthernet)
	wn.WriteFileHeader(65535, layers.LinkType(features.LinkTypeNFLOG))
	n := 0
	for _, f := range openAll(b, smallSentinel(b)) {
		et := binary.BigEndian.Uint16(f.data[12:14])
		if et != 0x0800 && et != 0x86dd {
			continue
		}
		rec := nflogRecord(binary.LittleEndian, et, f.data[14:])
		we.WritePacket(gopacket.CaptureInfo{Timestamp: f.ci.Timestamp, CaptureLength: len(f.data), Length: len(f.data)}, f.data)
		wn.WritePacket(gopacket.CaptureInfo{Timestamp: f.ci.Timestamp, CaptureLength: len(rec), Length: len(rec)}, rec)
		n++
	}
	for _, c := range []struct {
		name string
		data []byte
	}{{"ethernet", eth.Bytes()}, {"nflog", nflog.Bytes()}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				src, err := NewReader(bytes.NewReader(c.data), c.name)
				if err != nil {
					b.Fatal(err)
				}
				st, err := Read(context.Background(), src, sentinelHome, func(*schemas.Packet) error { return nil })
				if err != nil || st.Decoded() != uint64(n) {
					b.Fatalf("%+v, %v: want %d packets", st, err, n)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/frame")
		})
	}
}
