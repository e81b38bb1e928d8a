package budget

import (
	"errors"
	"net/netip"
	"runtime"
	"sync"
	"testing"

	"github.com/homemole/homemole/schemas"
)

func TestBytes(t *testing.T) {
	b, err := New(100, 60)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// One item larger than every budget passes when nothing is held: it
	// must not stall forever.
	must(b.Take("a", 500))
	if err := b.Take("b", 1); !errors.Is(err, ErrOver) {
		t.Fatalf("a second item beside an oversized one: %v", err)
	}
	b.Release("a", 500)
	must(b.Take("a", 50))
	if err := b.Take("a", 20); !errors.Is(err, ErrOver) {
		t.Errorf("home a past its 60 bytes: %v", err)
	}
	must(b.Take("b", 50))
	if err := b.Take("c", 10); !errors.Is(err, ErrOver) {
		t.Errorf("past the 100 bytes in all: %v", err)
	}
	b.Release("b", 50)
	must(b.Take("c", 10))
	// Completing work may pass the home's share, not the whole budget.
	must(b.TakeToComplete("a", 15))
	if own, _ := b.Held("a"); own != 65 {
		t.Errorf("a holds %d after completing past its share, want 65", own)
	}
	if err := b.TakeToComplete("c", 30); !errors.Is(err, ErrOver) {
		t.Errorf("completing past the 100 bytes in all: %v", err)
	}
	b.Release("a", 15)
	c, _ := New(1000, 60)
	must(c.TakeToComplete("x", 100))
	if err := c.TakeToComplete("x", 30); !errors.Is(err, ErrOver) {
		t.Errorf("completing past twice the share: %v", err)
	}
	// Giving back more than was taken cannot make room that is not there.
	b.Release("c", 1000)
	if own, all := b.Held("a"); own != 50 || all != 50 {
		t.Errorf("held %d of a, %d in all; want 50 and 50", own, all)
	}
	for _, bad := range [][2]int64{{0, 1}, {10, 0}, {10, 20}, {-1, -1}} {
		if _, err := New(bad[0], bad[1]); err == nil {
			t.Errorf("New(%d, %d) was accepted", bad[0], bad[1])
		}
	}
}

func TestBytesConcurrent(t *testing.T) {
	b, _ := New(1<<20, 1<<20)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			key := string(rune('a' + g))
			for range 1000 {
				if b.Take(key, 100) == nil {
					b.Release(key, 100)
				}
			}
		})
	}
	wg.Wait()
	if _, all := b.Held(""); all != 0 {
		t.Errorf("%d bytes held after every take was released", all)
	}
}

// TestBatchSizeIsTheHeap checks the estimate against what decoding a
// batch really allocates, all of which the decoded batch keeps.
func TestBatchSizeIsTheHeap(t *testing.T) {
	in := &schemas.Batch{Kind: schemas.KindPackets, Campaign: "c", Home: "h", Tap: "lan", Source: "s", Session: "lan-1"}
	for i := range 20000 {
		in.Packets = append(in.Packets, schemas.Packet{TsNs: 1.8e18 + int64(i)*1e6, Offset: uint64(i), DPort: 443, SrcPort: 50000,
			Transport: 6, IPLen: 52, SrcIP: netip.MustParseAddr("192.168.1.10"), DstIP: netip.MustParseAddr("198.51.100.4")})
	}
	data, err := in.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	out, err := schemas.DecodeBatch(data)
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	heap := int64(after.TotalAlloc - before.TotalAlloc)
	est := BatchSize(out)
	if est < heap*3/4 || est > heap*3/2 {
		t.Errorf("BatchSize says %d bytes, decoding allocates %d", est, heap)
	}
	t.Logf("wire %d bytes, decoded %d (%.1fx), estimated %d", len(data), heap, float64(heap)/float64(len(data)), est)
	runtime.KeepAlive(out)
	runtime.KeepAlive(in)
}
