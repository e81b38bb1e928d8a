package main

import (
	"strings"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
)

// TestHomeCountCommand measures heartbeat counting of Lightify units (its
// heartbeat learned from its early captures) in homes of its later ones,
// its steady-connection count, which the combined count then is, and its
// IP ID sequences beyond the NAPT; on the LAN, the host counter's count is
// the combined one. Without --sp-model it needs no libtorch.
func TestHomeCountCommand(t *testing.T) {
	data := sentineldata.Need(t)
	s := homeOutput(t, "count", "--from-dir", data, "--device", "Lightify", "--units", "1-2", "--homes", "2")
	if !strings.Contains(s, "Lightify heartbeat: udp/80") || !strings.Contains(s, "Lightify steady connection: udp/80") || strings.Count(s, "\n") != 6 ||
		!strings.Contains(s, "mean count error over 4 homes: heartbeat") || !strings.Contains(s, "steady 0.0 % (4 exact) ip-id 0.0 % (4 exact) combined 0.0 % (4 exact)") {
		t.Fatalf("home count printed:\n%s", s)
	}
	t.Log(s)
	s = homeOutput(t, "count", "--from-dir", data, "--device", "Aria", "--units", "1,3", "--homes", "2", "--view", "lan")
	if !strings.Contains(s, "Aria: no heartbeat") || !strings.Contains(s, "hosts 0.0 % (4 exact) combined 0.0 % (4 exact)") {
		t.Fatalf("home count --view lan printed:\n%s", s)
	}
	t.Log(s)
	wantUsageErrors(t, []usageCase{
		{[]string{"count", "--from-dir", data}, "--device"},
		{[]string{"count", "--from-dir", data, "--device", "Lightify", "--units", "3-1"}, "--units"},
		{[]string{"count", "--from-dir", data, "--device", "NoSuch"}, "no such device folder"},
	})
}
