package train

import (
	"testing"

	"github.com/homemole/homemole/pipeline/evaluate"
)

// TestFamilyScoreLeavesTheFoldOut: a fold whose only confusion is its own
// gets no family for it, so its miss stays a miss; folds whose confusion
// the others also show are scored at the family level.
func TestFamilyScoreLeavesTheFoldOut(t *testing.T) {
	labels := []string{"A1", "A2", "B"}
	rec := func(confuse bool, votes ...evaluate.SessionVote) FoldRecord {
		c := evaluate.NewConfusion(labels)
		for range 90 {
			c.Add(0, 0)
		}
		if confuse {
			for range 10 {
				c.Add(0, 1)
			}
		}
		return FoldRecord{Confusion: c, Sessions: votes}
	}
	miss := evaluate.SessionVote{Truth: "A1", Predicted: "A2"}
	hit := evaluate.SessionVote{Truth: "B", Predicted: "B"}
	// Folds 1 and 2 both confuse A1 with A2; fold 3 confuses nothing but
	// misses B for A1, which no fold's confusion excuses.
	records := []FoldRecord{rec(true, miss, hit), rec(true, miss, hit), rec(false, evaluate.SessionVote{Truth: "B", Predicted: "A1"}, hit)}
	fs := familyScore(labels, records)
	if fs == nil || len(fs.Families) != 1 || len(fs.Families[0]) != 2 {
		t.Fatalf("families %+v, want one of A1 and A2", fs)
	}
	want := []float64{1, 1, 0.5}
	for i, w := range want {
		if fs.PerFold[i] != w {
			t.Fatalf("per-fold family accuracy %v, want %v", fs.PerFold, want)
		}
	}
	if familyScore(labels, records[:1]) != nil {
		t.Fatal("one fold gave a family score; it has no other fold to learn families from")
	}
}
