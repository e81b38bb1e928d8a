package gateway

import (
	"bytes"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// FuzzReadTruth: a pairs or ground-truth file is refused or read, never a
// panic, and never an allocation the rows do not justify (one row
// "4294967296," asked for 32 GiB); what is read writes back to the same
// pairs.
func FuzzReadTruth(f *testing.F) {
	f.Add([]byte("wan_index,lan_index\n0,3\n1,\n2,0\n3,7\n"))
	f.Add([]byte("wan_index,lan_index\n4294967296,1\n"))
	f.Add([]byte("0,1\r\n\n5,\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pairs, err := ReadTruth(bytes.NewReader(data), "fuzz.csv")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.csv") {
				t.Fatalf("the error does not name the file: %v", err)
			}
			return
		}
		if len(pairs) > 2*len(data)+maxTruthSkip+1 {
			t.Fatalf("%d pairs from %d bytes", len(pairs), len(data))
		}
		var buf bytes.Buffer
		if err := WriteTruth(&buf, pairs); err != nil {
			t.Fatal(err)
		}
		back, err := ReadTruth(&buf, "again.csv")
		if err != nil || !slices.Equal(back, pairs) {
			t.Fatalf("written back: %v, %v; want %v", back, err, pairs)
		}
	})
}

// TestSecurityPairsCSVHugeIndex: one row naming WAN packet 2^32 made
// pair.ReadCSV, which ReadTruth was, allocate 32 GiB.
func TestSecurityPairsCSVHugeIndex(t *testing.T) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := ReadTruth(strings.NewReader("wan_index,lan_index\n4000000000,1\n"), "huge.csv")
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "huge.csv line 2") {
		t.Errorf("a row skipping 4e9 packets: %v, want an error naming the file and line", err)
	}
	used := after.TotalAlloc - before.TotalAlloc
	if used > 64<<20 {
		t.Errorf("reading one row allocated %d MiB", used>>20)
	}
	t.Logf("attack: a pairs CSV row naming WAN packet 4,000,000,000 | expected: refused naming file and line, no allocation for the gap | observed: %v; %.1f MiB allocated", err, float64(used)/(1<<20))
}
