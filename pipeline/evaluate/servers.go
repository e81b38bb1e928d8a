package evaluate

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
)

// Server is a service end a device reaches beyond the home: the remote
// address, the transport and its port (which ones tell of a vendor's
// cloud: realhome.Servers).
type Server struct {
	Addr      netip.Addr
	Transport uint8
	Port      int32
}

// ServerFamilies groups the types that reach one vendor's servers: two
// types fall in one family when a server is a habit of both. A server is a
// type's habit when at least half of its captures reach it, and at least
// two of them when it has two or more (one capture's server may be that
// session's chance: a CDN node, a firmware check). A server that is a
// habit of more than half the types (and of more than two) is
// infrastructure, not a vendor's, and joins nothing.
//
// This is what a model's confusions cannot show: devices of one firmware
// stack that differ today and not after an update. IoT Sentinel's
// D-LinkSensor sent 188 frames to the phone in its April and May captures
// and 147 in July and September, the count and sizes of its siblings
// D-LinkSiren and D-LinkWaterSensor; all three kept the same cloud
// servers throughout. captures holds, per type, each capture's servers.
// The families are sorted, and so is each.
func ServerFamilies(captures map[string][]map[Server]bool) [][]string {
	types := slices.Sorted(func(yield func(string) bool) {
		for t := range captures {
			if !yield(t) {
				return
			}
		}
	})
	habits := map[Server][]int{}
	for i, t := range types {
		caps := captures[t]
		need := max((len(caps)+1)/2, min(2, len(caps)))
		seen := map[Server]int{}
		for _, c := range caps {
			for s := range c {
				seen[s]++
			}
		}
		for s, n := range seen {
			if n >= need {
				habits[s] = append(habits[s], i)
			}
		}
	}
	sets := newSets(len(types))
	most := max(2, len(types)/2)
	for _, ts := range habits {
		if len(ts) < 2 || len(ts) > most {
			continue
		}
		for _, t := range ts[1:] {
			sets.union(t, ts[0])
		}
	}
	return groups(types, sets.find)
}

// MergeFamilies joins families that share a member: the families of a
// model's confusions and those of shared servers, each a reason of its own.
func MergeFamilies(lists ...[][]string) [][]string {
	index := map[string]int{}
	var names []string
	for _, l := range lists {
		for _, f := range l {
			for _, d := range f {
				if _, ok := index[d]; !ok {
					index[d] = len(names)
					names = append(names, d)
				}
			}
		}
	}
	sets := newSets(len(names))
	for _, l := range lists {
		for _, f := range l {
			for _, d := range f[1:] {
				sets.union(index[d], index[f[0]])
			}
		}
	}
	return groups(names, sets.find)
}

// sets is a union-find over members 0..n-1.
type sets []int

func newSets(n int) sets {
	s := make(sets, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func (s sets) find(i int) int {
	for s[i] != i {
		s[i] = s[s[i]]
		i = s[i]
	}
	return i
}

func (s sets) union(i, j int) { s[s.find(i)] = s.find(j) }

// groups lists the sets of more than one member that find makes of names,
// each sorted, the list by first member.
func groups(names []string, find func(int) int) [][]string {
	by := map[int][]string{}
	for i, n := range names {
		by[find(i)] = append(by[find(i)], n)
	}
	var out [][]string
	for _, g := range by {
		if len(g) > 1 {
			slices.Sort(g)
			out = append(out, g)
		}
	}
	slices.SortFunc(out, func(a, b []string) int { return cmp.Compare(a[0], b[0]) })
	return out
}

// OnlyOf keeps the members of families that are in labels, and the
// families left with two or more.
func OnlyOf(families [][]string, labels []string) [][]string {
	var out [][]string
	for _, f := range families {
		var kept []string
		for _, d := range f {
			if slices.Contains(labels, d) {
				kept = append(kept, d)
			}
		}
		if len(kept) > 1 {
			out = append(out, kept)
		}
	}
	slices.SortFunc(out, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
	return out
}
