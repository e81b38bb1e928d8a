package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"

	"github.com/homemole/homemole/internal/tzsptest"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

func FuzzOpenFile(f *testing.F) {
	if raw, err := os.ReadFile(filepath.Join(sentinelDir, "TP-LinkPlugHS100", "Setup-A-1-STA.pcap")); err == nil {
		f.Add(raw[:min(len(raw), 2000)])
		// The same, compressed with zstd and lz4, for the decompressors'
		// paths through a damaged stream.
		if zw, err := zstd.NewWriter(nil); err == nil {
			f.Add(zw.EncodeAll(raw[:min(len(raw), 2000)], nil))
		}
		var lz bytes.Buffer
		lw := lz4.NewWriter(&lz)
		lw.Write(raw[:min(len(raw), 2000)])
		lw.Close()
		f.Add(lz.Bytes())
		var buf bytes.Buffer
		w, _ := pcapgo.NewNgWriter(&buf, layers.LinkTypeEthernet)
		src, _ := NewReader(bytes.NewReader(raw), "seed")
		for i := 0; i < 5; i++ {
			fr, err := src.Next()
			if err != nil {
				break
			}
			w.WritePacket(fr.CI, fr.Data)
		}
		w.Flush()
		f.Add(buf.Bytes())
	}
	b := &ngBuilder{order: binary.BigEndian}
	b.section()
	b.iface(101, 0, b.option(9, []byte{0x80 | 20}), b.option(14, make([]byte, 8)))
	b.epb(0, 12345, []byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2}, 20)
	f.Add(b.buf.Bytes())
	// The link types beyond Ethernet and SLL: an OpenVPN tun capture as
	// pcapng with DLT_RAW's 12, a macOS utun capture (NULL, IPv6 family
	// 30), a PPPoE uplink, a PPI frame around Ethernet.
	ip := []byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 52, 0, 0, 2, 0x30, 0x39, 0, 53, 0, 8, 0, 0}
	b = &ngBuilder{order: binary.LittleEndian}
	b.section()
	b.iface(12, 0)
	b.epb(0, 1, ip, uint32(len(ip)))
	f.Add(b.buf.Bytes())
	ip6 := append([]byte{0x60, 0, 0, 0, 0, 8, 17, 64}, make([]byte, 32)...)
	ip6 = append(ip6, 0x30, 0x39, 0, 53, 0, 8, 0, 0)
	for _, seed := range []struct {
		link  layers.LinkType
		frame []byte
	}{
		{0, append([]byte{30, 0, 0, 0}, ip6...)},
		{1, append([]byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0, 0, 7, 0x88, 0x64, 0x11, 0, 0, 1, 0, 30, 0, 0x21}, ip...)},
		{192, append(append([]byte{0, 0, 8, 0, 1, 0, 0, 0}, make([]byte, 12)...), append([]byte{0x08, 0}, ip...)...)},
		// A gateway's NFLOG log (tcpdump -i nflog:5), read as the packets it logged.
		{layers.LinkType(features.LinkTypeNFLOG), nflogRecord(binary.LittleEndian, 0x0800, ip, nil)},
		{layers.LinkType(features.LinkTypeNFLOG), nflogRecord(binary.BigEndian, 0x86dd, ip6, []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd})},
		// A BSD gateway's pf log (tcpdump -i pflog0): FreeBSD's header.
		{layers.LinkType(features.LinkTypePFLOG), append(append([]byte{61, 2, 0, 0, 'e', 'm', '0'}, make([]byte, 57)...), ip...)},
		// A MikroTik's stream to a collector: TZSP in UDP.
		{1, tzsptest.Sniffed(append([]byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0}, ip...), 1)[0]},
	} {
		var buf bytes.Buffer
		w := pcapgo.NewWriter(&buf)
		w.WriteFileHeader(65535, seed.link)
		w.WritePacket(gopacket.CaptureInfo{CaptureLength: len(seed.frame), Length: len(seed.frame)}, seed.frame)
		f.Add(buf.Bytes())
	}
	// A gateway's tcpdump -i any, SLL2 and SLL: the cooked view judges
	// interfaces, holds frames back and rewrites them.
	dev, gw, isp := schemas.MAC{2, 0, 0, 0, 0, 1}, schemas.MAC{2, 0, 0, 0, 0, 2}, schemas.MAC{2, 0, 0, 0, 0, 3}
	t0 := time.Unix(1700000000, 0)
	cooked := []cookedFrame{
		{ifindex: 2, hatype: arphrdEther, pkttype: pktHost, src: dev, proto: 0x0800, payload: ipv4Packet([4]byte{192, 168, 1, 5}, [4]byte{198, 51, 100, 9}, 64), ts: t0},
		{ifindex: 3, hatype: arphrdEther, pkttype: pktOutgoing, src: gw, proto: 0x0800, payload: ipv4Packet([4]byte{203, 0, 113, 2}, [4]byte{198, 51, 100, 9}, 63), ts: t0},
		{ifindex: 3, hatype: arphrdEther, pkttype: pktHost, src: isp, proto: 0x8100, payload: append([]byte{0, 2, 8, 0}, ipv4Packet([4]byte{198, 51, 100, 9}, [4]byte{203, 0, 113, 2}, 50)...), ts: t0.Add(time.Millisecond)},
		{ifindex: 2, hatype: arphrdEther, pkttype: pktOutgoing, src: gw, proto: 0x0800, payload: ipv4Packet([4]byte{198, 51, 100, 9}, [4]byte{192, 168, 1, 5}, 49), ts: t0.Add(time.Millisecond)},
		{ifindex: 1, hatype: arphrdLoopback, pkttype: pktHost, proto: 0x0800, payload: ipv4Packet([4]byte{127, 0, 0, 1}, [4]byte{127, 0, 0, 1}, 64), ts: t0.Add(2 * time.Millisecond)},
		{ifindex: 5, hatype: 65534, pkttype: pktOutgoing, proto: 0x86dd, payload: ip6, ts: t0.Add(9 * time.Second)},
	}
	f.Add(cookedPcap(cooked, true))
	f.Add(cookedPcap(cooked, false))
	for i := range cooked {
		cooked[i].dst = dev // the Ethernet frames' destination, which PKTAP keeps
	}
	f.Add(pktapPcap(cooked))
	f.Add(amsduPcap())
	// A gateway's interfaces captured into one pcapng (dumpcap -i br-lan
	// -i eth1 -i wg0 -i lo): judged by the packets forwarded between them.
	b = &ngBuilder{order: binary.LittleEndian}
	b.section()
	for _, i := range []struct {
		link uint16
		name string
	}{{1, "br-lan"}, {1, "eth1"}, {101, "wg0"}, {1, "lo"}} {
		b.iface(i.link, 0, b.option(2, []byte(i.name)))
	}
	eth := func(dst, src schemas.MAC, p []byte) []byte { return slices.Concat(dst[:], src[:], []byte{8, 0}, p) }
	out := ipv4Packet([4]byte{192, 168, 1, 5}, [4]byte{198, 51, 100, 9}, 64)
	fwd := ipv4Packet([4]byte{203, 0, 113, 2}, [4]byte{198, 51, 100, 9}, 63)
	back := ipv4Packet([4]byte{198, 51, 100, 9}, [4]byte{203, 0, 113, 2}, 50)
	for k, fr := range []struct {
		iface uint32
		data  []byte
	}{
		{1, eth(isp, gw, fwd)}, // written before the copy that came in
		{0, eth(gw, dev, out)},
		{2, fwd},
		{1, eth(gw, isp, back)},
		{0, eth(dev, gw, ipv4Packet([4]byte{198, 51, 100, 9}, [4]byte{192, 168, 1, 5}, 49))},
		{3, eth(schemas.MAC{}, schemas.MAC{}, out)},
	} {
		b.epb(fr.iface, uint64(k)*1000, fr.data, uint32(len(fr.data)))
	}
	f.Add(b.buf.Bytes())
	// A br_netfilter log: a bridged frame coming in with its header, then
	// going out by a bridge port, left out as a repeat.
	bridged := ipv4Packet([4]byte{192, 168, 1, 5}, [4]byte{192, 168, 1, 6}, 64)
	f.Add(nflogPcap(nflogHookRecord(0, 3, 0, 0, slices.Concat(gw[:], dev[:], []byte{8, 0}), bridged), nflogHookRecord(4, 0, 3, 5, nil, bridged)))
	// A bridge-family log (ebtables): a flooded ARP request taken in and
	// sent on, each record with the frame's own header.
	arpReq := nflogAttrs{fam: 7, et: 0x0806, hook: 1, in: 3, l2: slices.Concat(bcastMAC[:], dev[:], []byte{8, 6}), pkt: make([]byte, 28)}
	arpFwd := arpReq
	arpFwd.hook, arpFwd.out, arpFwd.physOut = 2, 3, 6
	f.Add(nflogPcap(arpReq.record(), arpFwd.record()))
	f.Add([]byte{})
	f.Add([]byte{0xa1, 0xb2, 0x3c, 0x4d, 0, 2, 0, 4})

	f.Fuzz(func(t *testing.T, data []byte) {
		src, err := NewReader(bytes.NewReader(data), "fuzz")
		if err != nil {
			return
		}
		defer src.Close()
		// Through WriteCSV, as `homemole features` reads: the CSV holds one
		// row per decoded packet whether the capture ends cleanly or not.
		var csv bytes.Buffer
		st, err := WriteCSV(context.Background(), src, sentinelHome, &csv)
		lines := bytes.Split(bytes.TrimSuffix(csv.Bytes(), []byte("\n")), []byte("\n"))
		if string(lines[0]) != features.CSVHeader || uint64(len(lines)-1) != st.Decoded() {
			t.Fatalf("CSV of %d lines for %d packets of which %d undecodable and %d the link's own (err %v)", len(lines), st.Packets, st.DecodeErrors, st.NotPackets, err)
		}
		for _, l := range lines[1:] {
			if n := bytes.Count(l, []byte(",")); n != 12 {
				t.Fatalf("CSV row with %d commas: %q", n, l)
			}
		}
		// Every cooked frame read was judged: passed on or left out.
		cs, cooked := CookedStatsOf(src)
		if cooked && cs.Frames != cs.LAN+cs.WAN+cs.Whole+cs.AsIs+cs.LeftOut() {
			t.Fatalf("cooked view: %+v: frames neither passed on nor left out", cs)
		}
		// Read as its WAN side, the same: every frame judged, numbered
		// 0, 1, 2, ... as it is passed on, none of them the LAN side's.
		wan, werr := NewSideReader(bytes.NewReader(data), "fuzz", SideWAN)
		if werr != nil {
			t.Fatalf("the WAN side refuses what the LAN side read: %v", werr)
		}
		defer wan.Close()
		for n := uint64(0); ; n++ {
			f, err := wan.Next()
			if err != nil {
				break
			}
			if f.Offset != n {
				t.Fatalf("WAN side: frame %d numbered %d", n, f.Offset)
			}
		}
		if ws, ok := CookedStatsOf(wan); ok && (ws.Frames != ws.WAN+ws.Whole+ws.AsIs+ws.LeftOut() || ws.LAN != 0 || cooked && cs.LAN+ws.WAN > cs.Frames) {
			t.Fatalf("cooked view of the WAN side: %+v (the LAN side's %+v)", ws, cs)
		}
		if err == nil {
			return
		}
		// Every packet is at least a 12-byte block or a 16-byte record header,
		// so a reader that loops without consuming input would show here.
		if st.Packets > uint64(len(data)/12) {
			t.Fatalf("%d packets out of %d bytes", st.Packets, len(data))
		}
		if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error of no known kind: %v", err)
		}
	})
}

// TestEditcapPcapng reads pcapng as Wireshark writes it, when editcap is installed.
func TestEditcapPcapng(t *testing.T) {
	editcap, err := exec.LookPath("editcap")
	if err != nil {
		t.Skip("editcap not installed")
	}
	path := smallSentinel(t)
	want := openAll(t, path)
	for _, format := range []string{"pcapng", "nsecpcap"} {
		out := filepath.Join(t.TempDir(), "x."+format)
		if msg, err := exec.Command(editcap, "-F", format, path, out).CombinedOutput(); err != nil {
			t.Fatalf("editcap -F %s: %v: %s", format, err, msg)
		}
		sameFrames(t, format, openAll(t, out), want)
	}
}

// BenchmarkReadSentinel reads and decodes every IoT Sentinel capture.
func BenchmarkReadSentinel(b *testing.B) {
	files := sentinelFiles(b)
	var packets, bytesRead uint64
	for b.Loop() {
		for _, path := range files {
			st, err := ReadFile(context.Background(), path, sentinelHome, func(*schemas.Packet) error { return nil })
			if err != nil {
				b.Fatal(err)
			}
			packets += st.Packets
			bytesRead += st.Bytes
		}
	}
	b.ReportMetric(float64(packets)/b.Elapsed().Seconds(), "packets/s")
	b.ReportMetric(float64(bytesRead)/b.Elapsed().Seconds()/1e6, "MB/s")
	b.ReportMetric(float64(packets)/float64(b.N), "packets/op")
}

// BenchmarkNextSentinel only reads frames, to separate reading from decoding.
func BenchmarkNextSentinel(b *testing.B) {
	files := sentinelFiles(b)
	var packets uint64
	for b.Loop() {
		for _, path := range files {
			src, err := OpenFile(path)
			if err != nil {
				b.Fatal(err)
			}
			n, err := drain(src)
			if !errors.Is(err, io.EOF) {
				b.Fatal(err)
			}
			packets += uint64(n)
			src.Close()
		}
	}
	b.ReportMetric(float64(packets)/b.Elapsed().Seconds(), "packets/s")
}
