package campaign

import (
	"cmp"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
)

// captureSequence is IoT Sentinel's capture name, Setup-<setup>-<sequence>-STA
// (a file, or a session named after one): the sequence number counts a
// device's captures in the order they were taken.
var captureSequence = regexp.MustCompile(`-(\d+)-[A-Za-z]+(\.pcap(ng)?)?(\.gz)?$`)

// CaptureSequence is the sequence number in a capture's name, -1 when it
// has none.
func CaptureSequence(name string) int {
	m := captureSequence.FindStringSubmatch(filepath.Base(name))
	if m == nil {
		return -1
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return -1
	}
	return n
}

// SplitByTime orders one device's captures earlier to later by sequence
// number (names without one last, by name) and splits them: late holds the
// later half, rounded down, so a device with one capture has it in early.
func SplitByTime(names []string) (early, late []string) { return SplitLater(names, 2) }

// SplitLater is SplitByTime with late holding the later 1/k of the
// captures, rounded down: k = 5 trains on as many as a 5-fold
// cross-validation does.
func SplitLater(names []string, k int) (early, late []string) {
	s := slices.Clone(names)
	slices.SortStableFunc(s, func(a, b string) int {
		sa, sb := CaptureSequence(a), CaptureSequence(b)
		if (sa < 0) != (sb < 0) {
			return cmp.Compare(sb, sa) // -1 after any number
		}
		if c := cmp.Compare(sa, sb); c != 0 {
			return c
		}
		return cmp.Compare(filepath.Base(a), filepath.Base(b))
	})
	cut := len(s) - len(s)/max(k, 1)
	return s[:cut], s[cut:]
}
