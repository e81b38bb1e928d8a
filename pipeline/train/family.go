package train

import "github.com/homemole/homemole/pipeline/evaluate"

// FamilyScore is family-level session accuracy over the folds: fold i is
// scored with the families learned from the other folds' held-out
// confusions, so that no fold's own misses make its families. Fold i's
// sessions are not wholly apart from them: the model that judged fold j
// trained on fold i, which shapes what it confuses (a second-order tie; an
// inner cross-validation would cut it at k times the training).
type FamilyScore struct {
	// Families are those of the whole run (every fold's confusions), to show.
	Families [][]string `json:"families"`
	// PerFold is each fold's family-level session accuracy.
	PerFold  []float64 `json:"per_fold"`
	Accuracy Spread    `json:"accuracy"`
}

// familyScore needs two folds or more: one fold has no other to learn from.
func familyScore(labels []string, records []FoldRecord) *FamilyScore {
	if len(records) < 2 {
		return nil
	}
	fs := &FamilyScore{}
	all := evaluate.NewConfusion(labels)
	for _, r := range records {
		all.Merge(r.Confusion)
	}
	fs.Families = evaluate.Families(all, evaluate.FamilyShare)
	for i, r := range records {
		others := evaluate.NewConfusion(labels)
		for j, o := range records {
			if j != i {
				others.Merge(o.Confusion)
			}
		}
		fams := evaluate.FamilyOf(evaluate.Families(others, evaluate.FamilyShare))
		fs.PerFold = append(fs.PerFold, evaluate.FamilyAccuracy(r.Sessions, fams))
	}
	fs.Accuracy = SpreadOf(fs.PerFold)
	return fs
}
