//go:build !torch

package main

import (
	"flag"
	"log/slog"

	"github.com/homemole/homemole/pipeline/defensestudy"
	"github.com/homemole/homemole/pipeline/forest"
	"github.com/homemole/homemole/services/internal/cli"
)

// torchBuild says this build links libtorch.
const torchBuild = false

// studyAttacks in the CGO-free build knows the forest only; an LSTM
// attack sends the whole study to the torch build (withStudyDefenses),
// so that rf-only runs never pay for libtorch. The model flags the torch
// build adds (--epochs, --hidden, ...) are accepted there, not here.
func studyAttacks(fs *flag.FlagSet) studyAttackFlags {
	trees := fs.Int("trees", forest.DefaultConfig().Trees, "rf: trees")
	return studyAttackFlags{trees: trees, build: func(_ *slog.Logger, name string) (defensestudy.Attack, error) {
		switch name {
		case "lstm", "blstm", "sp":
			return nil, cli.Usagef("study defenses: --attacks %s needs the torch build (homemole-torch)", name)
		}
		return nil, cli.Usagef("study defenses: --attacks %q: want rf, lstm, blstm or sp", name)
	}}
}
