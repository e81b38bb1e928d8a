//go:build torch

package main

import (
	"bytes"
	"context"
	"testing"
)

// TestSPInteractions runs homemole sp interactions on a generated home of
// 6 x 40 min: the smart plug's held-out switchings (about 4 minutes apart)
// must be found with precision and recall of at least 0.95 in the home's
// whole LAN stream.
func TestSPInteractions(t *testing.T) {
	var rep interactionReport
	commandJSON(t, "sp", &rep, "interactions")
	if rep.Score.Actions < 20 || rep.Precision < 0.95 || rep.Recall < 0.95 {
		t.Errorf("%d held-out switchings, precision %.3f, recall %.3f: want 20 or more, both >= 0.95", rep.Score.Actions, rep.Precision, rep.Recall)
	}
	for _, args := range [][]string{{"--train-share", "1"}, {"--generated-home", "1", "--session-minutes", "1"}} {
		if err := commands()["sp"].run(context.Background(), quiet(), &bytes.Buffer{}, append([]string{"interactions"}, args...)); err == nil {
			t.Errorf("sp interactions %v: no error", args)
		}
	}
}
