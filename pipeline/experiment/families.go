package experiment

// familyOf is d's family, d itself outside any.
func familyOf(families map[string]string, d string) string {
	if f, ok := families[d]; ok {
		return f
	}
	return d
}

// familyVote is the family of the predicted device and the share of the
// session's n packets whose prediction (votes by label index) is in it.
func familyVote(labels []string, votes map[int]int, n int, pred string, families map[string]string) (string, float64) {
	fam := familyOf(families, pred)
	in := 0
	for l, c := range votes {
		if familyOf(families, labels[l]) == fam {
			in += c
		}
	}
	return fam, float64(in) / float64(max(n, 1))
}
