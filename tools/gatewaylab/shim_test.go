package main

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/gateway/defense"
)

func testShim(t testing.TB, pad int) *padShim {
	t.Helper()
	sh := &padShim{pad: pad}
	if _, err := rand.Read(sh.key[:]); err != nil {
		t.Fatal(err)
	}
	return sh
}

// TestShimPadsAndUnpads: every tunnel datagram size comes back whole from
// its padded datagram, which has its bucket's IP length: the MTU for
// pad:mtu, the emulator's bucket for pad:N (one bucket more only within 2
// bytes of the edge, the trailer's cost).
func TestShimPadsAndUnpads(t *testing.T) {
	for _, pad := range []int{defense.MTU, 128, 1} {
		sh := testShim(t, pad)
		out := make([]byte, 65536+defense.MTU)
		for n := 0; n <= 1600; n++ {
			datagram := make([]byte, n)
			rand.Read(datagram)
			padded, err := sh.wrap(out, datagram)
			if err != nil {
				t.Fatalf("pad %d, %d bytes: %v", pad, n, err)
			}
			ip := gateway.OuterUDPOverhead + len(padded)
			if ip != paddedLen(n, pad) {
				t.Fatalf("pad %d, %d bytes: IP length %d, want %d", pad, n, ip, paddedLen(n, pad))
			}
			undefended := gateway.OuterUDPOverhead + n
			switch {
			case undefended+shimTrailer >= defense.MTU:
				if ip != undefended+shimTrailer {
					t.Fatalf("pad %d, %d bytes: IP length %d at or past the MTU, want only the trailer added (%d)", pad, n, ip, undefended+shimTrailer)
				}
			case pad == defense.MTU:
				if ip != defense.MTU {
					t.Fatalf("pad:mtu, %d bytes: IP length %d, want %d", n, ip, defense.MTU)
				}
			default:
				if ip%pad != 0 && ip != defense.MTU || ip < undefended+shimTrailer || ip-undefended-shimTrailer >= pad {
					t.Fatalf("pad %d, %d bytes: IP length %d is not the bucket of %d", pad, n, ip, undefended+shimTrailer)
				}
			}
			back, err := sh.unwrap(nil, bytes.Clone(padded))
			if err != nil {
				t.Fatalf("pad %d, %d bytes: unwrap: %v", pad, n, err)
			}
			if !bytes.Equal(back, datagram) {
				t.Fatalf("pad %d, %d bytes: unwrapped %d bytes that differ", pad, n, len(back))
			}
		}
	}
}

// TestShimRefuses: what no shim of this key padded is refused when its
// trailer claims more than it carries.
func TestShimRefuses(t *testing.T) {
	sh := testShim(t, defense.MTU)
	if _, err := sh.innerLen([]byte{1}); err == nil {
		t.Fatal("a 1-byte datagram was accepted")
	}
	out := make([]byte, 4096)
	padded, err := sh.wrap(out, []byte("a tunnel datagram"))
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for i := 0; i < 64; i++ {
		other := testShim(t, defense.MTU)
		if _, err := other.innerLen(padded); err != nil {
			refused++
		}
	}
	// A wrong key reads a random length: above the body's 1470 - 2 bytes
	// in 1 - 1468/65536 of the cases.
	if refused < 55 {
		t.Fatalf("a wrong key was refused %d times in 64, want nearly all", refused)
	}
}

// FuzzShimUnwrap: any datagram on the shim's port unwraps to a prefix of
// itself or is refused, never panics; a wrapped datagram comes back whole.
func FuzzShimUnwrap(f *testing.F) {
	sh := &padShim{pad: 128}
	copy(sh.key[:], "homemole lab fuzz key")
	out := make([]byte, 65536+defense.MTU)
	w, _ := sh.wrap(out, []byte("seed"))
	f.Add(bytes.Clone(w))
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		if n, err := sh.innerLen(b); err == nil && (n < 0 || n > len(b)-shimTrailer) {
			t.Fatalf("innerLen %d of a %d-byte datagram", n, len(b))
		}
		if len(b) > 0xffff-shimTrailer {
			return
		}
		padded, err := sh.wrap(out, b)
		if err != nil {
			t.Fatal(err)
		}
		back, err := sh.unwrap(nil, bytes.Clone(padded))
		if err != nil || !bytes.Equal(back, b) {
			t.Fatalf("round trip of %d bytes: %v", len(b), err)
		}
	})
}
