package features

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/schemas"
)

// nflogTLV appends an NFLOG attribute of type typ holding v, in byte order
// o, padded to 4 bytes as the kernel pads it.
func nflogTLV(o binary.AppendByteOrder, b []byte, typ uint16, v []byte) []byte {
	b = o.AppendUint16(b, uint16(nflogTLVLen+len(v)))
	b = o.AppendUint16(b, typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// nflogRecord is an NFLOG record of address family fam, group 5, as the
// kernel writes one for a forwarded packet: the packet header (hardware
// protocol et, the forward hook), the rule's prefix, the incoming
// interface, then the packet, attributes in byte order o. The record is
// 32 bytes before the packet.
func nflogRecord(o binary.AppendByteOrder, fam byte, et uint16, pkt []byte) []byte {
	b := []byte{fam, 0, 0, 5}
	b = nflogTLV(o, b, 1, append(binary.BigEndian.AppendUint16(nil, et), 2, 0))
	b = nflogTLV(o, b, 10, []byte("hm\x00"))
	b = nflogTLV(o, b, 4, []byte{0, 0, 0, 3}) // ifindex, big-endian in either order
	return nflogTLV(o, b, 9, pkt)
}

const nflogAt = 32

func TestParseNFLOG(t *testing.T) {
	v4 := build(t, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(1, 2), ntp())
	v6 := build(t, ip6(dev6, cloud6, layers.IPProtocolTCP), tcp(1, 2, "S"))
	arp := make([]byte, 28)
	tests := []struct {
		name  string
		data  []byte
		et    uint16
		at, n int
		group uint16
	}{
		{"IPv4, little-endian", nflogRecord(binary.LittleEndian, afInet, 0x0800, v4), EtherTypeIPv4, nflogAt, len(v4), 5},
		{"IPv6, little-endian", nflogRecord(binary.LittleEndian, afInet6, 0x86dd, v6), EtherTypeIPv6, nflogAt, len(v6), 5},
		// A big-endian router (MIPS) logs its attributes big-endian.
		{"IPv4, big-endian", nflogRecord(binary.BigEndian, afInet, 0x0800, v4), EtherTypeIPv4, nflogAt, len(v4), 5},
		{"IPv6, big-endian", nflogRecord(binary.BigEndian, afInet6, 0x86dd, v6), EtherTypeIPv6, nflogAt, len(v6), 5},
		// A bridge's hook names the packet by its frame's EtherType.
		{"bridge, ARP", nflogRecord(binary.LittleEndian, 7, 0x0806, arp), EtherTypeARP, nflogAt, len(arp), 5},
		{"bridge, IPv6", nflogRecord(binary.LittleEndian, 7, 0x86dd, v6), EtherTypeIPv6, nflogAt, len(v6), 5},
		// tcpdump -s 60 ends the record inside the packet.
		{"cut by the snap length", nflogRecord(binary.LittleEndian, afInet, 0x0800, v4)[:60], EtherTypeIPv4, nflogAt, 60 - nflogAt, 5},
		// The last attribute's padding not captured.
		{"without the last padding", func() []byte {
			r := nflogRecord(binary.LittleEndian, afInet6, 0x86dd, v6[:len(v6)-1])
			return r[:nflogAt+len(v6)-1]
		}(), EtherTypeIPv6, nflogAt, len(v6) - 1, 5},
	}
	for _, tc := range tests {
		h, err := ParseNFLOG(tc.data)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if h.At != tc.at || h.Len != tc.n || h.EtherType != tc.et || h.Group != tc.group {
			t.Errorf("%s: packet at %d, %d bytes, EtherType %#04x, group %d; want %d, %d, %#04x, %d", tc.name, h.At, h.Len, h.EtherType, h.Group, tc.at, tc.n, tc.et, tc.group)
		}
		l, err := ParseLink(LinkTypeNFLOG, tc.data)
		if err != nil || l.Offset != tc.at || l.EtherType != tc.et || l.SrcMAC != (l.DstMAC) {
			t.Errorf("%s: ParseLink gave %+v, %v", tc.name, l, err)
		}
	}

	bad := []struct {
		name string
		data []byte
		want error
	}{
		{"cut inside its header", []byte{2, 0, 0}, ErrMalformed},
		{"version 1", func() []byte { r := nflogRecord(binary.LittleEndian, afInet, 0x0800, v4); r[1] = 1; return r }(), ErrMalformed},
		{"a prefix alone", nflogTLV(binary.LittleEndian, []byte{2, 0, 0, 5}, 10, []byte("drop\x00")), ErrNotPacket},
		{"an attribute of type 0", nflogTLV(binary.LittleEndian, []byte{2, 0, 0, 5}, 0, v4), ErrMalformed},
		{"an attribute shorter than its header", cat([]byte{2, 0, 0, 5}, []byte{2, 0, 9, 0}, v4), ErrMalformed},
		{"an attribute past the record", cat([]byte{2, 0, 0, 5}, []byte{200, 0, 10, 0}, []byte("hm\x00\x00")), ErrMalformed},
		{"an attribute header cut short", cat(nflogRecord(binary.LittleEndian, afInet, 0x0800, v4[:20]), []byte{8, 0}), ErrMalformed},
		{"IPv4 family, IPv6 packet", nflogRecord(binary.LittleEndian, afInet, 0x86dd, v6), ErrMalformed},
		{"IPv6 family, empty packet", nflogRecord(binary.LittleEndian, afInet6, 0x86dd, nil), ErrMalformed},
	}
	for _, tc := range bad {
		if _, err := ParseNFLOG(tc.data); !errors.Is(err, tc.want) {
			t.Errorf("%s: ParseNFLOG error = %v, want %v", tc.name, err, tc.want)
		}
		if _, err := ParseLink(LinkTypeNFLOG, tc.data); !errors.Is(err, tc.want) {
			t.Errorf("%s: ParseLink error = %v, want %v", tc.name, err, tc.want)
		}
	}
	// PPI and PKTAP carry no NFLOG.
	if _, err := ParseLink(LinkTypePPI, cat(ppiHeader(uint32(LinkTypeNFLOG)), nflogRecord(binary.LittleEndian, afInet, 0x0800, v4))); !errors.Is(err, ErrUnsupportedLinkType) {
		t.Errorf("PPI carrying NFLOG: %v, want %v", err, ErrUnsupportedLinkType)
	}
}

// TestDecodeNFLOG: a logged packet's record is the raw IP packet's but
// for the frame length, which the capture readers take from the packet
// (capture.nflogView).
func TestDecodeNFLOG(t *testing.T) {
	for _, pkt := range [][]byte{
		build(t, ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50000, 443, "PA"), tlsRecord(23, 40)),
		build(t, ip6(cloud6, dev6, layers.IPProtocolUDP), udp(53, 40000), dnsQuery(t)),
	} {
		rec := nflogRecord(binary.LittleEndian, map[bool]byte{false: afInet, true: afInet6}[pkt[0]>>4 == 6], 0, pkt)
		var got, want schemas.Packet
		ci := func(b []byte) gopacket.CaptureInfo {
			return gopacket.CaptureInfo{Timestamp: time.Unix(5, 0), CaptureLength: len(b), Length: len(b)}
		}
		if err := NewDecoder(withGW).Decode(LinkTypeNFLOG, rec, ci(rec), 1, &got); err != nil {
			t.Fatal(err)
		}
		if err := NewDecoder(withGW).Decode(LinkTypeRaw, pkt, ci(pkt), 1, &want); err != nil {
			t.Fatal(err)
		}
		if got.FrameLen != uint32(len(rec)) {
			t.Errorf("frame length %d, want the record's %d", got.FrameLen, len(rec))
		}
		got.FrameLen = want.FrameLen
		if !reflect.DeepEqual(got, want) {
			t.Errorf("NFLOG record decoded to\n%+v\nwant the raw packet's\n%+v", got, want)
		}
	}
}

// TestNFLOGStampAndNumber: the kernel's time stamp and record number, as
// a live listener that asked for numbers gets them (big-endian in either
// attribute order).
func TestNFLOGStampAndNumber(t *testing.T) {
	v4 := build(t, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(1, 2), ntp())
	for _, o := range []binary.AppendByteOrder{binary.LittleEndian, binary.BigEndian} {
		b := []byte{afInet, 0, 0, 5}
		b = nflogTLV(o, b, 3, binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, 1_700_000_000), 250_001))
		b = nflogTLV(o, b, 12, binary.BigEndian.AppendUint32(nil, 41))
		b = nflogTLV(o, b, 9, v4)
		h, err := ParseNFLOG(b)
		if err != nil {
			t.Fatalf("%v: %v", o, err)
		}
		if want := time.Unix(1_700_000_000, 250_001_000); !h.Stamp.Equal(want) || h.Seq != 41 || !h.HasSeq || h.Len != len(v4) {
			t.Errorf("%v: stamp %v, record %d (%v), %d bytes; want %v, 41, %d", o, h.Stamp, h.Seq, h.HasSeq, h.Len, want, len(v4))
		}
	}
	h, err := ParseNFLOG(nflogRecord(binary.LittleEndian, afInet, 0x0800, v4))
	if err != nil || !h.Stamp.IsZero() || h.HasSeq {
		t.Errorf("a record without stamp or number: %+v, %v", h, err)
	}
	// A forwarded packet logged going out: both interfaces, and the link
	// header it came in with.
	hw := cat(ethHeader(0x0800))
	b := []byte{afInet, 0, 0, 5}
	b = nflogTLV(binary.LittleEndian, b, 4, []byte{0, 0, 0, 7})
	b = nflogTLV(binary.LittleEndian, b, 5, []byte{0, 0, 1, 2})
	b = nflogTLV(binary.LittleEndian, b, 15, []byte{0, 1})
	b = nflogTLV(binary.LittleEndian, b, 16, hw)
	b = nflogTLV(binary.LittleEndian, b, 9, v4)
	h, err = ParseNFLOG(b)
	if err != nil || h.InDev != 7 || h.OutDev != 258 || h.HwType != 1 || h.HwLen != len(hw) || string(b[h.HwAt:h.HwAt+h.HwLen]) != string(hw) {
		t.Errorf("a forwarded packet's record: %+v, %v; want interfaces 7 and 258, the Ethernet header", h, err)
	}
}

func TestParseNFLOGDoesNotAllocate(t *testing.T) {
	rec := nflogRecord(binary.LittleEndian, afInet, 0x0800, build(t, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(1, 2), ntp()))
	if n := testing.AllocsPerRun(100, func() { ParseLink(LinkTypeNFLOG, rec) }); n != 0 {
		t.Errorf("ParseLink of an NFLOG record allocates %v times", n)
	}
}
