package schemas

import (
	"net/netip"
	"testing"
)

// TestEUI64: a MAC's modified EUI-64 is the identifier its SLAAC address
// ends in, and reads back to the MAC; an identifier without ff:fe in its
// middle names none.
func TestEUI64(t *testing.T) {
	m := MAC{0x00, 0x24, 0xe4, 0x19, 0x7e, 0x99}
	id := m.EUI64()
	if want := netip.MustParseAddr("2001:db8:1:1:224:e4ff:fe19:7e99").As16(); [8]byte(want[8:]) != id {
		t.Errorf("EUI64 of %s = % x, want % x", m, id, want[8:])
	}
	if back, ok := MACOfEUI64(id[:]); !ok || back != m {
		t.Errorf("MACOfEUI64(% x) = %s, %v; want %s", id, back, ok, m)
	}
	for _, bad := range [][]byte{
		{0x02, 0x24, 0xe4, 0xff, 0xfd, 0x19, 0x7e, 0x99}, // no ff:fe
		{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0}, // a random identifier
		id[:7], // not 8 bytes
	} {
		if got, ok := MACOfEUI64(bad); ok {
			t.Errorf("MACOfEUI64(% x) = %s, want none", bad, got)
		}
	}
}
