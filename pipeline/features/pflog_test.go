package features

import (
	"errors"
	"reflect"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/schemas"
)

// pflogHeader is a pf log header of the given length byte (61 on FreeBSD
// and pfSense, 100 on OpenBSD), family and direction, logged on ifname,
// padded to 4 bytes as pf writes it.
func pflogHeader(length int, family byte, ifname string, dir byte) []byte {
	h := make([]byte, (length+3)&^3)
	h[0], h[1], h[2] = byte(length), family, 0 // action: pass
	copy(h[pflogIfName:pflogIfName+16], ifname)
	copy(h[20:36], "homemole")
	if length > pflogDir {
		h[pflogDir] = dir
	}
	return h
}

func TestParsePFLOG(t *testing.T) {
	v4 := build(t, ip4(devIP, cloudIP, layers.IPProtocolUDP), udp(123, 123), ntp())
	for _, tc := range []struct {
		name   string
		header []byte
		want   PFLOG
	}{
		{"FreeBSD, pfSense", pflogHeader(61, 2, "igb1", 2), PFLOG{Len: 64, Family: 2, IfName: []byte("igb1"), Out: true}},
		{"OpenBSD, coming in", pflogHeader(100, 24, "em0", 1), PFLOG{Len: 100, Family: 24, IfName: []byte("em0")}},
		{"the oldest pf, without a direction", pflogHeader(45, 2, "fxp0", 0), PFLOG{Len: 48, Family: 2, IfName: []byte("fxp0")}},
		{"an interface name of 16 bytes", pflogHeader(61, 28, "vtnet0_vlan10xyz", 0), PFLOG{Len: 64, Family: 28, IfName: []byte("vtnet0_vlan10xyz")}},
	} {
		got, err := ParsePFLOG(cat(tc.header, v4))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	for name, data := range map[string][]byte{
		"cut short":                 pflogHeader(61, 2, "em0", 1)[:44],
		"a length under the oldest": cat(pflogHeader(44, 2, "em0", 0), make([]byte, 4)),
		"a length past the frame":   cat([]byte{200}, pflogHeader(61, 2, "em0", 1)[1:]),
	} {
		if _, err := ParsePFLOG(data); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// TestDecodePFLOG: a packet pf logged decodes as the raw IP packet it
// is, its length the packet's (the header was on no wire), on every BSD's
// number for IPv6.
func TestDecodePFLOG(t *testing.T) {
	v4 := build(t, ip4(devIP, cloudIP, layers.IPProtocolTCP), tcp(50000, 443, "PA"), tlsRecord(23, 40))
	v6 := build(t, ip6(cloud6, dev6, layers.IPProtocolUDP), udp(53, 40000), dnsQuery(t))
	for _, tc := range []struct {
		name   string
		header []byte
		pkt    []byte
	}{
		{"IPv4 on FreeBSD", pflogHeader(61, 2, "igb1", 2), v4},
		{"IPv6 on FreeBSD (28)", pflogHeader(61, 28, "igb1", 1), v6},
		{"IPv6 on OpenBSD (24)", pflogHeader(100, 24, "em0", 1), v6},
		{"IPv6 on macOS (30)", pflogHeader(61, 30, "en0", 2), v6},
	} {
		rec := cat(tc.header, tc.pkt)
		var got, want schemas.Packet
		if err := NewDecoder(withGW).Decode(LinkTypePFLOG, rec, at(3, rec), 1, &got); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if err := NewDecoder(withGW).Decode(LinkTypeRaw, tc.pkt, at(3, tc.pkt), 1, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) || got.FrameLen != uint32(len(tc.pkt)) {
			t.Errorf("%s: pflog record decoded to\n%+v\nwant the raw packet's\n%+v", tc.name, got, want)
		}
	}
	// A family that is no IP is a packet of no protocol the models read.
	rec := cat(pflogHeader(61, 17, "em0", 1), v4)
	var p schemas.Packet
	if err := NewDecoder(withGW).Decode(LinkTypePFLOG, rec, at(3, rec), 1, &p); err != nil || p.ProtoBits != schemas.ProtoOther {
		t.Errorf("pflog of family 17: %v, bits %07b; want it read as other", err, p.ProtoBits)
	}
}
