// Package proctest reads the test process's memory from /proc/self/status,
// for the tests that bound what training and capture runs hold.
package proctest

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// Status returns field ("VmRSS": the resident set now, "VmHWM": its peak)
// of /proc/self/status in bytes, skipping the test where the file or the
// field is missing.
func Status(t testing.TB, field string) int64 {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status to read %s from: %v", field, err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == field+":" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatalf("%s line %q: %v", field, l, err)
			}
			return kb << 10
		}
	}
	t.Skipf("no %s in /proc/self/status", field)
	return 0
}
