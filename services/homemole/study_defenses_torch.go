//go:build torch

package main

import (
	"context"
	"flag"
	"log/slog"

	"github.com/homemole/homemole/pipeline/defensestudy"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/modelflag"
)

// torchBuild says this build links libtorch.
const torchBuild = true

// studyAttacks registers the model flags every trainer shares (--trees
// among them) and builds the attacks --attacks names: the LSTMs go through
// train.Evaluate, the one fit-and-judge path of every command.
func studyAttacks(fs *flag.FlagSet) studyAttackFlags {
	spec := modelflag.Register(fs)
	return studyAttackFlags{trees: &spec.Trees, build: func(log *slog.Logger, name string) (defensestudy.Attack, error) {
		switch name {
		case "lstm", "blstm":
			if err := modelflag.UseDevice(log, spec.Learn.Device); err != nil {
				return nil, err
			}
			s := *spec
			s.Name = name
			return evaluationAttack{spec: s, log: log}, nil
		}
		return nil, cli.Usagef("study defenses: --attacks %q: want rf, lstm or blstm (sp is not in the study yet)", name)
	}}
}

// evaluationAttack fits a model of the registry through train.Evaluate.
type evaluationAttack struct {
	spec train.Spec
	log  *slog.Logger
}

func (a evaluationAttack) Name() string { return a.spec.Name }

func (a evaluationAttack) Label(ctx context.Context, tr, test []*schemas.Window, labels []string, seed uint64) ([][]int32, error) {
	s := a.spec
	s.Learn.Seed = int64(seed)
	out, err := train.Evaluate(ctx, &train.Evaluation{Spec: s, Train: tr, Test: test, Labels: labels, Log: a.log})
	if err != nil {
		return nil, err
	}
	return out.Preds, nil
}
