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

// CaptureTime tells when a capture (a file, or a dataset's session) began:
// its first packet's timestamp, ns since the epoch; ok is false where it
// is not known.
type CaptureTime func(name string) (ns int64, ok bool)

// SplitByTime orders one device's captures earlier to later and splits
// them: late holds the later half, rounded down, so a device with one
// capture has it in early. See SplitLater for the order.
func SplitByTime(names []string, at CaptureTime) (early, late []string) {
	return SplitLater(names, 2, at)
}

// SplitLater is SplitByTime with late holding the later 1/k of the
// captures, rounded down: k = 5 trains on as many as a 5-fold
// cross-validation does.
//
// Captures are ordered by when they began, where at knows it for every
// one; otherwise (at nil, or a capture it cannot date) by sequence number,
// names without one last, by name. The two orders differ: IoT Sentinel's
// numbers count each setup's captures (Setup-A-N and Setup-C-N interleave,
// taken weeks apart, and even one setup's are not always in order: 26 of
// its 31 devices' captures run out of time order by N), so only the first
// packets' timestamps put the later captures on the later side.
func SplitLater(names []string, k int, at CaptureTime) (early, late []string) {
	s := slices.Clone(names)
	byName := func(a, b string) int {
		sa, sb := CaptureSequence(a), CaptureSequence(b)
		if (sa < 0) != (sb < 0) {
			return cmp.Compare(sb, sa) // -1 after any number
		}
		if c := cmp.Compare(sa, sb); c != 0 {
			return c
		}
		return cmp.Compare(filepath.Base(a), filepath.Base(b))
	}
	var times map[string]int64
	if at != nil {
		times = map[string]int64{}
		for _, n := range s {
			t, ok := at(n)
			if !ok {
				times = nil
				break
			}
			times[n] = t
		}
	}
	slices.SortStableFunc(s, func(a, b string) int {
		if times != nil {
			if c := cmp.Compare(times[a], times[b]); c != 0 {
				return c
			}
		}
		return byName(a, b)
	})
	cut := len(s) - len(s)/max(k, 1)
	return s[:cut], s[cut:]
}
