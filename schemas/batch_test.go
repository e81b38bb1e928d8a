package schemas

import (
	"encoding/binary"
	"errors"
	"math"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

func sampleBatch(kind byte) *Batch {
	b := &Batch{Kind: kind, Campaign: "c1", Home: "h1", Tap: "lan", Source: "c1/h1/lan/a.pcap", Session: "lan-a", FirstOffset: 7, Final: true}
	for i := 0; i < 5; i++ {
		p := Packet{TsNs: 1_700_000_000_000_000_000 + int64(i)*1_000_003, Offset: uint64(7 + i*2), DPort: int32(443 - i), ProtoBits: ProtoIP | ProtoTCP | ProtoTLS,
			Direction: int8(i%3) - 1, FrameLen: uint32(60 + i*100), IntervalNs: int64(i) * 1_000_003, TTL: 64, IPLen: uint16(46 + i*100), Transport: 6,
			TCPFlags: 0x18, TCPWindow: 65535, TCPOptionsLen: 12, PayloadLen: uint32(i * 100)}
		if i == 4 {
			p.DPort = NoPort
		}
		if kind == KindPackets {
			p.SrcMAC = MAC{1, 2, 3, 4, 5, byte(i)}
			p.DstMAC = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
			p.SrcPort, p.IPID, p.TCPSeq, p.TCPAck = int32(50000+i), uint16(0x1234+i), uint32(1e9)+uint32(i), 77
			p.SrcIP, p.DstIP = netip.AddrFrom4([4]byte{192, 168, 1, byte(i)}), netip.MustParseAddr("2001:db8::1")
			if i == 3 {
				// An ARP request: no IP header, a sender address (version 5).
				p.SrcPort, p.SrcIP, p.DstIP = NoPort, netip.Addr{}, netip.Addr{}
				p.ARPSender = [4]byte{192, 168, 1, 3}
			}
			if i == 2 {
				p.Tunnel = TunnelRecords{Known: true, Continues: true, Starts: 2, Ends: []RecordEnd{{Size: 1300, Data: true}, {Size: 0}}}
			}
			if i == 1 {
				p.Tunnel = TunnelRecords{Known: true, Starts: 1}
				p.DHCP = DHCPClient{Params: 0x9e3779b9}
			}
			if i == 0 {
				p.DHCP = DHCPClient{Params: 1, Vendor: 0xdeadbeef, Name: 0xffffffff, Requested: [4]byte{192, 168, 1, 77}}
			}
		}
		b.Packets = append(b.Packets, p)
	}
	if kind == KindLabeled {
		b.View = "lan"
		b.Devices = []Device{{"plug", "iot"}, {"phone", "non-iot"}}
		b.Labels = []int32{0, 1, -1, 0, 1}
	}
	return b
}

func TestBatchRoundTrip(t *testing.T) {
	for _, kind := range []byte{KindPackets, KindLabeled} {
		in := sampleBatch(kind)
		data, err := in.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		out, err := DecodeBatch(data)
		if err != nil {
			t.Fatalf("kind %c: %v", kind, err)
		}
		if !reflect.DeepEqual(in, out) {
			t.Errorf("kind %c: round trip differs:\n in %+v\nout %+v", kind, in, out)
		}
		// Two of the five packets carry tunnel records (version 3), two
		// a DHCP fingerprint (version 4) and one an ARP sender (version 5).
		if per := float64(len(data)) / float64(len(in.Packets)); per > 84 {
			t.Errorf("kind %c: %.0f bytes per packet; the encoding should stay compact", kind, per)
		}
	}
}

func TestBatchMsgIDDeterministic(t *testing.T) {
	a, b := sampleBatch(KindPackets), sampleBatch(KindPackets)
	if a.MsgID() != b.MsgID() {
		t.Fatal("same batch, different ids")
	}
	b.FirstOffset++
	if a.MsgID() == b.MsgID() {
		t.Fatal("different offsets, same id")
	}
}

func TestDecodeBatchRefusesBadInput(t *testing.T) {
	good, _ := sampleBatch(KindLabeled).AppendBinary(nil)
	newer := append([]byte(nil), good...)
	newer[3] = BatchVersion + 1
	badLabel, _ := sampleBatch(KindLabeled).AppendBinary(nil)
	badLabel[len(badLabel)-1] = 0x08 // zigzag 4: label outside 2 devices
	cases := map[string]struct {
		data []byte
		want string
	}{
		"empty":          {nil, "bad magic"},
		"not ours":       {[]byte("GET / HTTP/1.1\r\n"), "bad magic"},
		"truncated":      {good[:len(good)-3], "truncated"},
		"trailing bytes": {append(append([]byte(nil), good...), 0), "trailing"},
		"newer version":  {newer, "upgrade"},
		"label range":    {badLabel, "outside a vocabulary"},
		"huge count":     {append(append([]byte(nil), good[:6]...), 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f), "exceeds"},
	}
	for name, c := range cases {
		_, err := DecodeBatch(c.data)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, c.want)
		}
	}
	if _, err := DecodeBatch(newer); !errors.Is(err, ErrUnknownVersion) {
		t.Errorf("newer version: %v is not ErrUnknownVersion", err)
	}
}

func TestProtoBitsString(t *testing.T) {
	// The seed's examples: a UDP DNS request is 1010010, NTP is 1010001.
	if got := ProtoBitsString(ProtoIP | ProtoUDP | ProtoDNS); got != "1010010" {
		t.Errorf("DNS: %s", got)
	}
	if got := ProtoBitsString(ProtoIP | ProtoUDP | ProtoOther); got != "1010001" {
		t.Errorf("NTP: %s", got)
	}
}

func TestParseMAC(t *testing.T) {
	m, err := ParseMAC("AA:bb:0c:1D:2e:ff")
	if err != nil || m != (MAC{0xaa, 0xbb, 0x0c, 0x1d, 0x2e, 0xff}) || m.String() != "aa:bb:0c:1d:2e:ff" {
		t.Fatalf("got %v %v", m, err)
	}
	for _, bad := range []string{"", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:gg", "aabbccddeeff", "aa:bb:cc:dd:ee:ff:00"} {
		if _, err := ParseMAC(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzDecodeBatch(f *testing.F) {
	for _, k := range []byte{KindPackets, KindLabeled} {
		data, _ := sampleBatch(k).AppendBinary(nil)
		f.Add(data)
	}
	f.Add([]byte("HMB\x01P\x00"))
	f.Add(version1Batch())
	f.Add(version2Batch())
	f.Add(version4Batch())
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBatch(data)
		if err != nil {
			return
		}
		// Whatever decodes must encode back to the same bytes: the format has
		// one spelling per batch, which deterministic message ids rely on.
		again, err := b.AppendBinary(nil)
		if err != nil {
			t.Fatalf("decoded batch does not encode: %v", err)
		}
		b2, err := DecodeBatch(again)
		if err != nil || !reflect.DeepEqual(b, b2) {
			t.Fatalf("re-encoded batch differs: %v", err)
		}
	})
}

// referenceRecord encodes a packet record field by field, as FORMAT.md
// lists them, to check the encoder's hand-written varints against.
func referenceRecord(dst []byte, p *Packet, prevTs int64, prevOff uint64) []byte {
	dst = binary.AppendVarint(dst, p.TsNs-prevTs)
	dst = binary.AppendVarint(dst, int64(p.Offset-prevOff))
	dst = binary.AppendVarint(dst, int64(p.DPort))
	dst = append(dst, p.ProtoBits, byte(p.Direction))
	dst = binary.AppendUvarint(dst, uint64(p.FrameLen))
	dst = binary.AppendUvarint(dst, uint64(p.IntervalNs))
	dst = append(dst, p.TTL, p.Transport, p.TCPOptionsLen)
	for _, v := range []uint64{uint64(p.IPLen), uint64(p.TCPFlags), uint64(p.TCPWindow), uint64(p.PayloadLen)} {
		dst = binary.AppendUvarint(dst, v)
	}
	dst = append(dst, p.SrcMAC[:]...)
	dst = append(dst, p.DstMAC[:]...)
	dst = binary.AppendVarint(dst, int64(p.SrcPort))
	for _, v := range []uint64{uint64(p.IPID), uint64(p.TCPSeq), uint64(p.TCPAck)} {
		dst = binary.AppendUvarint(dst, v)
	}
	for _, a := range []netip.Addr{p.SrcIP, p.DstIP} {
		dst = append(dst, byte(a.BitLen()/8))
		dst = append(dst, a.AsSlice()...)
	}
	if !p.Tunnel.Known {
		dst = append(dst, 0)
	} else {
		flags := byte(1)
		if p.Tunnel.Continues {
			flags = 3
		}
		dst = append(dst, flags)
		dst = binary.AppendUvarint(dst, uint64(p.Tunnel.Starts))
		dst = binary.AppendUvarint(dst, uint64(len(p.Tunnel.Ends)))
		for _, e := range p.Tunnel.Ends {
			v := uint64(e.Size) << 1
			if e.Data {
				v++
			}
			dst = binary.AppendUvarint(dst, v)
		}
	}
	flags, hashes := byte(0), []byte(nil)
	for bit, h := range []uint32{p.DHCP.Params, p.DHCP.Vendor, p.DHCP.Name} {
		if h != 0 {
			flags |= 1 << bit
			hashes = binary.BigEndian.AppendUint32(hashes, h)
		}
	}
	if p.DHCP.Requested != [4]byte{} {
		flags |= 8
		hashes = append(hashes, p.DHCP.Requested[:]...)
	}
	dst = append(append(dst, flags), hashes...)
	if p.ARPSender == [4]byte{} {
		return append(dst, 0)
	}
	return append(append(dst, 1), p.ARPSender[:]...)
}

// version1Batch is sampleBatch(KindPackets) as a version 1 producer wrote
// it: records end after the MACs. Zeroed, the version 2 fields take 6
// bytes at the end (four zero varints, two zero address lengths) and the
// version 3, 4 and 5 fields one each (a zero flags byte): they are cut off.
func version1Batch() []byte {
	return olderBatch(1, 9, func(_ int, p *Packet) {
		p.SrcPort, p.IPID, p.TCPSeq, p.TCPAck, p.SrcIP, p.DstIP = 0, 0, 0, 0, netip.Addr{}, netip.Addr{}
	})
}

// version2Batch is sampleBatch(KindPackets) as a version 2 producer wrote
// it: records end after the addresses.
func version2Batch() []byte { return olderBatch(2, 3, func(int, *Packet) {}) }

// version3Batch is sampleBatch(KindPackets) as a version 3 producer wrote
// it: records end after the tunnel records, with them.
func version3Batch() []byte {
	return olderBatch(3, 2, func(i int, p *Packet) { p.Tunnel = sampleBatch(KindPackets).Packets[i].Tunnel })
}

// version4Batch is sampleBatch(KindPackets) as a version 4 producer wrote
// it: records end after the DHCP fingerprint, with it and the tunnel
// records.
func version4Batch() []byte {
	return olderBatch(4, 1, func(i int, p *Packet) {
		p.Tunnel, p.DHCP = sampleBatch(KindPackets).Packets[i].Tunnel, sampleBatch(KindPackets).Packets[i].DHCP
	})
}

// olderBatch writes sampleBatch(KindPackets) under an older version: each
// record with the tunnel records, DHCP fingerprint and ARP sender zero and
// what zero does to it, then its last cut bytes (the newer fields, zero)
// cut off.
func olderBatch(version byte, cut int, zero func(i int, p *Packet)) []byte {
	in := sampleBatch(KindPackets)
	data, _ := in.AppendHeader(nil, len(in.Packets))
	data[3] = version
	prevTs, prevOff := int64(0), in.FirstOffset
	for i := range in.Packets {
		p := in.Packets[i]
		p.Tunnel, p.DHCP, p.ARPSender = TunnelRecords{}, DHCPClient{}, [4]byte{}
		zero(i, &p)
		rec := referenceRecord(nil, &p, prevTs, prevOff)
		data = append(data, rec[:len(rec)-cut]...)
		prevTs, prevOff = p.TsNs, p.Offset
	}
	return data
}

// TestDecodeVersion2 keeps batches of version 2 producers readable: their
// packets come without tunnel records, as not known.
func TestDecodeVersion2(t *testing.T) {
	decodesOld(t, 2, version2Batch(), func(p *Packet) { p.Tunnel, p.DHCP, p.ARPSender = TunnelRecords{}, DHCPClient{}, [4]byte{} })
}

// TestDecodeVersion3 keeps batches of version 3 producers readable: their
// packets keep their tunnel records and come without a DHCP fingerprint.
func TestDecodeVersion3(t *testing.T) {
	decodesOld(t, 3, version3Batch(), func(p *Packet) { p.DHCP, p.ARPSender = DHCPClient{}, [4]byte{} })
}

// TestDecodeVersion4 keeps batches of version 4 producers readable: their
// packets keep their DHCP fingerprints and come without an ARP sender.
func TestDecodeVersion4(t *testing.T) {
	decodesOld(t, 4, version4Batch(), func(p *Packet) { p.ARPSender = [4]byte{} })
}

// TestDecodeBatchRefusesBadTunnel: corrupt tunnel records name what is
// wrong instead of decoding to something else.
func TestDecodeBatchRefusesBadTunnel(t *testing.T) {
	b := &Batch{Kind: KindPackets, Packets: []Packet{{Tunnel: TunnelRecords{Known: true, Ends: []RecordEnd{{Size: 9}}}}}}
	data, err := b.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	// The record ends with flags 1, starts 0, one end (9<<1), no DHCP
	// fingerprint (flags 0) and no ARP sender (flags 0).
	if n := len(data); data[n-6] != 1 || data[n-5] != 0 || data[n-4] != 1 || data[n-3] != 18 || data[n-2] != 0 || data[n-1] != 0 {
		t.Fatalf("unexpected encoding % x", data[n-6:])
	}
	for name, mutate := range map[string]func([]byte){
		"flags":      func(d []byte) { d[len(d)-6] = 4 },
		"continues":  func(d []byte) { d[len(d)-6] = 2 },
		"count":      func(d []byte) { d[len(d)-4] = 5 },
		"dhcp flags": func(d []byte) { d[len(d)-2] = 16 },
		"dhcp addr":  func(d []byte) { d[len(d)-2] = 8 },
		"dhcp hash":  func(d []byte) { d[len(d)-2] = 1 },
		"arp flags":  func(d []byte) { d[len(d)-1] = 2 },
		"arp addr":   func(d []byte) { d[len(d)-1] = 1 },
	} {
		d := append([]byte(nil), data...)
		mutate(d)
		if _, err := DecodeBatch(d); err == nil || !strings.Contains(err.Error(), "packet 0") {
			t.Errorf("%s: err %v, want an error naming packet 0", name, err)
		}
	}
	many := &Batch{Kind: KindPackets, Packets: []Packet{{Tunnel: TunnelRecords{Known: true, Ends: make([]RecordEnd, MaxRecordEnds+1)}}}}
	data, err = many.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeBatch(data)
	if err != nil || got.Packets[0].Tunnel.Known {
		t.Fatalf("a segment with more than %d record ends must travel as not known: %+v, %v", MaxRecordEnds, got.Packets[0].Tunnel, err)
	}
}

// TestDecodeVersion1 keeps batches of version 1 producers readable: the
// fields version 2 added decode as absent.
func TestDecodeVersion1(t *testing.T) {
	decodesOld(t, 1, version1Batch(), func(p *Packet) {
		p.SrcPort, p.IPID, p.TCPSeq, p.TCPAck, p.SrcIP, p.DstIP = NoPort, 0, 0, 0, netip.Addr{}, netip.Addr{}
		p.Tunnel, p.DHCP, p.ARPSender = TunnelRecords{}, DHCPClient{}, [4]byte{}
	})
}

// decodesOld decodes data, a batch an older producer (of that version)
// wrote of the sample batch, and wants the sample batch with what absent
// clears of each packet: the fields that version did not have.
func decodesOld(t *testing.T, version int, data []byte, absent func(*Packet)) {
	t.Helper()
	out, err := DecodeBatch(data)
	if err != nil {
		t.Fatal(err)
	}
	want := sampleBatch(KindPackets)
	for i := range want.Packets {
		absent(&want.Packets[i])
	}
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("version %d batch decodes to\n%+v\nwant\n%+v", version, out, want)
	}
}

// TestRecordEncoder checks the incremental encoder the capture agent uses
// against the format, and the record bound it cuts batches by, with every
// field at its widest.
func TestRecordEncoder(t *testing.T) {
	in := sampleBatch(KindPackets)
	widest := Packet{TsNs: math.MinInt64, DPort: math.MinInt32, ProtoBits: 0xff, Direction: DirLocal,
		FrameLen: math.MaxUint32, IntervalNs: -1, TTL: 0xff, IPLen: math.MaxUint16, Transport: 0xff, TCPFlags: math.MaxUint16,
		TCPWindow: math.MaxUint16, TCPOptionsLen: 0xff, PayloadLen: math.MaxUint32, SrcMAC: MAC{1, 2, 3, 4, 5, 6},
		SrcPort: math.MinInt32, IPID: math.MaxUint16, TCPSeq: math.MaxUint32, TCPAck: math.MaxUint32,
		SrcIP: netip.MustParseAddr("2001:db8::1"), DstIP: netip.MustParseAddr("2001:db8::2"),
		Tunnel:    TunnelRecords{Known: true, Continues: true, Starts: math.MaxUint16, Ends: make([]RecordEnd, MaxRecordEnds)},
		DHCP:      DHCPClient{Params: 1, Vendor: 2, Name: math.MaxUint32, Requested: [4]byte{255, 255, 255, 255}},
		ARPSender: [4]byte{10, 0, 0, 1}}
	for i := range widest.Tunnel.Ends {
		widest.Tunnel.Ends[i] = RecordEnd{Size: math.MaxUint16, Data: true}
	}
	// The widest offset delta a batch may hold: offsets only rise.
	widest.Offset = in.Packets[len(in.Packets)-1].Offset + math.MaxInt64
	in.Packets = append(in.Packets, widest, Packet{Offset: widest.Offset + 1})
	got, err := in.AppendHeader(nil, len(in.Packets))
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), got...)
	e := NewRecordEncoder(in.FirstOffset)
	prevTs, prevOff := int64(0), in.FirstOffset
	for i := range in.Packets {
		p := &in.Packets[i]
		before := len(got)
		got = e.AppendPacket(got, p)
		want = referenceRecord(want, p, prevTs, prevOff)
		prevTs, prevOff = p.TsNs, p.Offset
		if n := len(got) - before; n > MaxPacketRecordLen || (i == len(in.Packets)-2 && n != MaxPacketRecordLen) {
			t.Errorf("packet %d encodes to %d bytes; MaxPacketRecordLen is %d and the widest packet must reach it", i, n, MaxPacketRecordLen)
		}
	}
	if string(got) != string(want) {
		t.Fatalf("encoder differs from the format:\n got % x\nwant % x", got, want)
	}
	whole, err := in.AppendBinary(nil)
	if err != nil || string(whole) != string(got) {
		t.Fatalf("AppendBinary differs from AppendHeader + AppendPacket: %v", err)
	}
	out, err := DecodeBatch(got)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out.Packets, in.Packets) {
		t.Fatalf("round trip differs:\n in %+v\nout %+v", in.Packets, out.Packets)
	}
}

func BenchmarkAppendPacket(b *testing.B) {
	in := sampleBatch(KindPackets)
	buf := make([]byte, 0, 1<<16)
	b.ReportAllocs()
	for b.Loop() {
		e := NewRecordEncoder(in.FirstOffset)
		buf = buf[:0]
		for range 200 {
			for i := range in.Packets {
				buf = e.AppendPacket(buf, &in.Packets[i])
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/packet")
}

func TestNewWindowsAreNewWindow(t *testing.T) {
	ws := NewWindows(3, 4)
	for _, w := range ws {
		if !reflect.DeepEqual(w, NewWindow(4)) {
			t.Fatalf("window %+v differs from NewWindow's", w)
		}
	}
	ws[0].Label = append(ws[0].Label, 7)
	if ws[1].Label[0] != int16(Unlabeled) {
		t.Error("growing one window's column wrote into the next window")
	}
}

// TestStripAddresses: a stripped packet keeps its vectors and nothing
// else, so a field added later that names a host or flow fails here until
// StripAddresses clears it.
func TestStripAddresses(t *testing.T) {
	for i, p := range sampleBatch(KindPackets).Packets {
		want := Packet{TsNs: p.TsNs, Offset: p.Offset, DPort: p.DPort, ProtoBits: p.ProtoBits, Direction: p.Direction,
			FrameLen: p.FrameLen, IntervalNs: p.IntervalNs, TTL: p.TTL, IPLen: p.IPLen, Transport: p.Transport,
			TCPFlags: p.TCPFlags, TCPWindow: p.TCPWindow, TCPOptionsLen: p.TCPOptionsLen, PayloadLen: p.PayloadLen}
		p.StripAddresses()
		if !reflect.DeepEqual(p, want) {
			t.Errorf("packet %d stripped keeps more than its vectors:\n got %+v\nwant %+v", i, p, want)
		}
	}
}

// TestPacketSize: every stage holds packets by the thousand (a batch, a
// window, the decoder's ring), so a field that grows the record has to
// find padding or say why it may not.
func TestPacketSize(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the size is stated for 64-bit platforms")
	}
	if n := unsafe.Sizeof(Packet{}); n > 184 {
		t.Errorf("a Packet takes %d bytes, more than 184", n)
	}
}

// TestDecodeBatchRefusesOffsetsThatDoNotRise: consumers chain a session's
// batches by their offsets, so a batch whose offsets run back, repeat,
// start before its first offset or reach 2^64 - 1 (where the next batch's
// offset wraps to 0) is refused.
func TestDecodeBatchRefusesOffsetsThatDoNotRise(t *testing.T) {
	for name, c := range map[string]struct {
		first   uint64
		offsets []uint64
		ok      bool
	}{
		"rising with gaps":      {5, []uint64{7, 8, 20}, true},
		"starting at the first": {5, []uint64{5, 6}, true},
		"running back":          {0, []uint64{3, 2}, false},
		"repeating":             {0, []uint64{3, 3}, false},
		"before the first":      {5, []uint64{4}, false},
		"wrapping":              {0, []uint64{math.MaxUint64}, false},
		"to the last offset":    {math.MaxUint64 - 1, []uint64{math.MaxUint64 - 1, math.MaxUint64}, false},
	} {
		b := sampleBatch(KindPackets)
		b.FirstOffset = c.first
		b.Packets = make([]Packet, len(c.offsets))
		for i, o := range c.offsets {
			b.Packets[i] = Packet{Offset: o, DPort: NoPort, SrcPort: NoPort}
		}
		data, err := b.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = DecodeBatch(data)
		if c.ok != (err == nil) || err != nil && !strings.Contains(err.Error(), "offsets must rise") {
			t.Errorf("%s: first offset %d, offsets %v: %v", name, c.first, c.offsets, err)
		}
	}
}
