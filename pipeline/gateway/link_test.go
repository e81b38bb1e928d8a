package gateway

import (
	"bytes"
	"testing"

	"github.com/homemole/homemole/pipeline/features"
)

// TestParseHeaderLinkTypes: the emulator and the pairing read the same IP
// and transport header whatever link layer the capture wraps it in.
func TestParseHeaderLinkTypes(t *testing.T) {
	// IPv4 UDP 10.0.0.1:12345 -> 52.0.0.2:53, 8 bytes of payload.
	ip := []byte{0x45, 0, 0, 36, 0x12, 0x34, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 52, 0, 0, 2, 0x30, 0x39, 0, 53, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}
	eth := []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2}
	want, err := ParseHeader(features.LinkTypeRaw, ip)
	if err != nil {
		t.Fatal(err)
	}
	if want.SrcPort != 12345 || want.DstPort != 53 || want.ID != 0x1234 || want.Len != 36 {
		t.Fatalf("raw header %+v", want)
	}
	for _, tc := range []struct {
		name string
		link features.LinkType
		hdr  []byte
	}{
		{"raw IP as 12", features.LinkTypeRawDLT, nil},
		{"BSD loopback", features.LinkTypeNull, []byte{2, 0, 0, 0}},
		{"PPP", features.LinkTypePPP, []byte{0xff, 0x03, 0x00, 0x21}},
		{"Cisco HDLC", features.LinkTypeCiscoHDLC, []byte{0x0f, 0, 0x08, 0}},
		{"PPPoE on VLAN 7", features.LinkTypeEthernet, append(bytes.Clone(eth), 0x81, 0, 0, 7, 0x88, 0x64, 0x11, 0, 0, 1, 0, 38, 0, 0x21)},
		{"QinQ", features.LinkTypeEthernet, append(bytes.Clone(eth), 0x88, 0xa8, 0, 100, 0x81, 0, 0, 10, 0x08, 0)},
		{"PPI around Ethernet", features.LinkTypePPI, append([]byte{0, 0, 8, 0, 1, 0, 0, 0}, append(bytes.Clone(eth), 0x08, 0)...)},
	} {
		h, err := ParseHeader(tc.link, append(bytes.Clone(tc.hdr), ip...))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		w := want
		w.IPStart = len(tc.hdr)
		if h != w {
			t.Errorf("%s: header\n got %+v\nwant %+v", tc.name, h, w)
		}
	}
	if _, err := ParseHeader(features.LinkTypePPP, []byte{0xff, 0x03, 0xc0, 0x21, 1, 2, 3, 4}); err == nil {
		t.Error("an LCP frame parsed as an IP header")
	}
}
