package seqprofile

import (
	"time"

	"github.com/homemole/homemole/schemas"
)

// DefaultBurstGap is the paper's "interval of bursts" (Table V): one
// second between the last packet of a burst and the first of the next.
const DefaultBurstGap = time.Second

// Stamped is a packet vector with its capture time.
type Stamped struct {
	TsNs int64
	V    Vector
}

// StampedOf takes the vectors of packets, in their order.
func StampedOf(pkts []schemas.Packet) []Stamped {
	out := make([]Stamped, len(pkts))
	for i := range pkts {
		out[i] = Stamped{TsNs: pkts[i].TsNs, V: VectorOf(&pkts[i])}
	}
	return out
}

// Burst is the packet vectors of one burst, in time order.
type Burst []Vector

// Bursts cuts a device's packets (in time order) wherever two consecutive
// packets are at least gap apart. A non-positive gap takes the default.
// Out-of-order timestamps (merged taps) never start a burst: a negative gap
// is not a pause.
func Bursts(pkts []Stamped, gap time.Duration) []Burst {
	if gap <= 0 {
		gap = DefaultBurstGap
	}
	var out []Burst
	var cur Burst
	for i, p := range pkts {
		if i > 0 && p.TsNs-pkts[i-1].TsNs >= int64(gap) {
			out = append(out, cur)
			cur = nil
		}
		cur = append(cur, p.V)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}
