package evaluate

import (
	"strings"
	"unicode"
)

// FamilyShare is the share of a device's held-out packets (or sessions)
// taken for another that puts the two in one family.
const FamilyShare = 0.05

// Families groups devices a model cannot tell apart, learned from a
// confusion matrix of predictions on sessions the model did not train on
// (the other folds' held-out sessions): two devices fall in one family when
// either has at least minShare of its packets taken for the other, and
// devices of one hardware type (TypeOf) always do. Families of one device
// are left out; each family is sorted, and so is the list.
func Families(c *Confusion, minShare float64) [][]string {
	n := len(c.Labels)
	sets := newSets(n)
	for i := range n {
		row := 0
		for _, v := range c.Counts[i] {
			row += v
		}
		for j := range n {
			if i == j {
				continue
			}
			if TypeOf(c.Labels[i]) == TypeOf(c.Labels[j]) || row > 0 && float64(c.Counts[i][j]) >= minShare*float64(row) {
				sets.union(i, j)
			}
		}
	}
	return groups(c.Labels, sets.find)
}

// FamilyName names a family by its members' common prefix cut at a word
// (the vendor: "D-Link" for D-LinkSensor and D-LinkSiren), or by its members
// joined with "/" when they share none.
func FamilyName(members []string) string {
	if len(members) == 0 {
		return ""
	}
	p := members[0]
	for _, m := range members[1:] {
		for !strings.HasPrefix(m, p) {
			p = p[:len(p)-1]
		}
	}
	// Cut back to where a word ends: before a capital, digit or '-' that
	// starts the next part of a name, so "EdimaxCam" of EdimaxCam1/2 stays
	// and "WeMoInsightSwitch" of WeMoInsightSwitch/2 too.
	for len(p) > 0 && len(p) < len(members[0]) {
		next := rune(members[0][len(p)])
		if unicode.IsUpper(next) || unicode.IsDigit(next) || next == '-' {
			break
		}
		p = p[:len(p)-1]
	}
	p = strings.TrimRight(p, "0123456789-_") // a model number cut in half names no family
	if len(p) < 3 {
		return strings.Join(members, "/")
	}
	return p
}

// FamilyList reads families out for a person: each one's name and
// members, "none" when there are none.
func FamilyList(families [][]string) string {
	var parts []string
	for _, f := range families {
		parts = append(parts, FamilyName(f)+" ("+strings.Join(f, ", ")+")")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}

// FamilyOf maps every member of the families to its family's name; a
// device in none is its own family. Families are told apart by these
// names, so two that FamilyName names alike (D-LinkCam/D-LinkDayCam and
// D-LinkSiren/D-LinkWaterSensor are both "D-Link") are named by their
// members instead: a camera taken for the siren is not "in its family".
func FamilyOf(families [][]string) map[string]string {
	named := map[string]int{}
	for _, f := range families {
		named[FamilyName(f)]++
	}
	out := map[string]string{}
	for _, f := range families {
		name := FamilyName(f)
		if named[name] > 1 {
			name = strings.Join(f, "/")
		}
		for _, d := range f {
			out[d] = name
		}
	}
	return out
}

// FamilyAccuracy is the share of sessions whose prediction is in the
// family of the truth (the truth itself included).
func FamilyAccuracy(votes []SessionVote, family map[string]string) float64 {
	if len(votes) == 0 {
		return 0
	}
	ok := 0
	for _, v := range votes {
		if familyIn(family, v.Truth) == familyIn(family, v.Predicted) {
			ok++
		}
	}
	return float64(ok) / float64(len(votes))
}

// familyIn is d's family, d itself outside any.
func familyIn(family map[string]string, d string) string {
	if f, ok := family[d]; ok {
		return f
	}
	return d
}
