package defense

import (
	"fmt"
	"slices"
)

// Tally costs a defence that ran somewhere else than Apply, a real gateway
// for one, with Apply's definitions, so that the two can be set side by
// side. undefended holds the real WAN packets as they would have left
// without the defence; defended holds what left with it, real packets and
// dummies (LAN < 0). A real packet is named by its LAN index in both; a
// LAN index that appears k times (fragments) pairs its occurrences in
// order. Only TS, Wire and LAN are read.
//
// It refuses a defended view that lost or invented a real packet: a
// defence's cost means nothing when it also changed what the home sent.
func Tally(undefended, defended []Packet) (Cost, error) {
	var c Cost
	sent := map[int64][]int64{}
	first, last := int64(0), int64(0)
	for i, p := range undefended {
		if p.Dummy() {
			return c, fmt.Errorf("undefended packet %d is a dummy (LAN %d): the undefended view holds real packets only", i, p.LAN)
		}
		c.RealPackets++
		c.RealBytes += int64(p.Wire)
		sent[p.LAN] = append(sent[p.LAN], p.TS)
		if i == 0 || p.TS < first {
			first = p.TS
		}
		if i == 0 || p.TS > last {
			last = p.TS
		}
	}
	c.Seconds = float64(last-first) / 1e9
	lat := make([]int64, 0, len(undefended))
	for i, p := range defended {
		if !c.add(p) {
			continue
		}
		q := sent[p.LAN]
		if len(q) == 0 {
			return c, fmt.Errorf("defended packet %d carries LAN packet %d, which the undefended view does not hold (or holds fewer times)", i, p.LAN)
		}
		lat = append(lat, max(0, p.TS-q[0]))
		sent[p.LAN] = q[1:]
	}
	var lost []int64
	for lan, q := range sent {
		if len(q) > 0 {
			lost = append(lost, lan)
		}
	}
	if len(lost) > 0 {
		slices.Sort(lost)
		return c, fmt.Errorf("%d real packets of the undefended view are missing from the defended one (LAN %v...)", len(lost), lost[:min(len(lost), 5)])
	}
	c.LatencyMean, c.LatencyP99 = meanP99(lat)
	return c, nil
}
