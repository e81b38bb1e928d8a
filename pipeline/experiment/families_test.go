package experiment

import (
	"testing"

	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/schemas"
)

// TestScoreFamilies: a capture taken for its sibling is wrong as a device,
// right as a family, and its confidence counts every packet that named a
// member of the family.
func TestScoreFamilies(t *testing.T) {
	labels := []string{"TP-LinkPlugHS100", "TP-LinkPlugHS110", "Aria"}
	win := func(group string, truth int16, n int) *schemas.Window {
		w := &schemas.Window{ID: group, Group: group, Len: n, Label: make([]int16, n)}
		for i := range w.Label {
			w.Label[i] = truth
		}
		return w
	}
	ws := []*schemas.Window{win("hs100", 0, 10), win("aria", 2, 10)}
	preds := [][]int32{{1, 1, 1, 1, 1, 1, 0, 0, 0, 2}, {2, 2, 2, 2, 2, 2, 2, 2, 0, 0}}
	files := map[string]string{"hs100": "HS100/a.pcap", "aria": "Aria/b.pcap"}
	fams := [][]string{{"TP-LinkPlugHS100", "TP-LinkPlugHS110"}}
	// The votes as train.Evaluate takes them for experiment: one per
	// capture (group).
	voter := evaluate.NewVoter(labels)
	for i, w := range ws {
		for k := range w.Len {
			voter.Add(w.Group, int(w.Label[k]), int(preds[i][k]))
		}
	}
	votes := voter.Votes()
	files["never-scored"] = "Aria/c.pcap"
	r := Result{Report: &evaluate.Report{Confusion: evaluate.NewConfusion(labels), Sessions: votes}}
	r.summarize(files, fams, fams)
	if len(r.Unscored) != 1 || r.Unscored[0] != "Aria/c.pcap" {
		t.Fatalf("unscored %v, want the capture without votes", r.Unscored)
	}
	// Three captures, one unscored (wrong by definition).
	if r.SessionAccuracy != 1.0/3 || r.SessionAccuracyFamilies != 2.0/3 {
		t.Fatalf("session accuracy %.3f, families %.3f; want 1/3 and 2/3", r.SessionAccuracy, r.SessionAccuracyFamilies)
	}
	for _, s := range r.Sessions {
		switch s.File {
		case "HS100/a.pcap":
			if s.Predicted != "TP-LinkPlugHS110" || s.Family != "TP-LinkPlugHS" || s.Confidence != 0.9 || s.Share != 0.6 {
				t.Fatalf("HS100 capture: %+v, want HS110, family TP-LinkPlugHS, confidence 0.9, share 0.6", s)
			}
		case "Aria/b.pcap":
			if s.Family != "Aria" || s.Confidence != 0.8 {
				t.Fatalf("Aria capture: %+v, want its own family at 0.8", s)
			}
		}
	}
	plain := Result{Report: &evaluate.Report{Confusion: evaluate.NewConfusion(labels), Sessions: votes}}
	plain.summarize(files, nil, nil)
	if plain.SessionAccuracyFamilies != 0 || plain.SessionAccuracyConfusionFamilies != 0 || plain.Sessions[0].Family != "" {
		t.Fatalf("without families: %+v", plain)
	}

	// With the plugs a family by their servers alone, the confusions'
	// families (none) are scored beside: the HS100 capture is right only
	// with the servers'.
	servers := Result{Report: &evaluate.Report{Confusion: evaluate.NewConfusion(labels), Sessions: votes}, ServerFamilies: fams}
	servers.summarize(files, fams, [][]string{})
	if servers.SessionAccuracyFamilies != 2.0/3 || servers.SessionAccuracyConfusionFamilies != 1.0/3 {
		t.Fatalf("families %.3f, of the confusions alone %.3f; want 2/3 and 1/3", servers.SessionAccuracyFamilies, servers.SessionAccuracyConfusionFamilies)
	}
}
