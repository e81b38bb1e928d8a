//go:build torch

package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"slices"

	"github.com/homemole/homemole/pipeline/defensestudy"
	"github.com/homemole/homemole/pipeline/detect"
	"github.com/homemole/homemole/pipeline/detect/scene"
	"github.com/homemole/homemole/pipeline/seqprofile"
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
	spWindow := fs.Duration("sp-window", detect.DefaultConfig().Window(), "sp: the CNNs' time window (a multiple of 10s bins; the paper: 360s)")
	spEpochs := fs.Int("sp-epochs", detect.DefaultCNN().Epochs, "sp: training epochs of each CNN")
	return studyAttackFlags{trees: &spec.Trees, build: func(log *slog.Logger, name string) (defensestudy.Attack, error) {
		switch name {
		case "sp":
			cfg := detect.DefaultConfig()
			cfg.Threads, cfg.Device, cfg.CNN.Epochs = spec.Learn.Threads, spec.Learn.Device, *spEpochs
			// The counter is not judged here (one device per session): a
			// small one keeps the CNN time for the detectors.
			cfg.MaxCount, cfg.CounterSamples = 4, 100
			if err := finishConfig(log, &cfg, *spWindow); err != nil {
				return nil, err
			}
			return spAttack{cfg: cfg, log: log}, nil
		case "lstm", "blstm":
			if err := modelflag.UseDevice(log, spec.Learn.Device); err != nil {
				return nil, err
			}
			s := *spec
			s.Name = name
			return evaluationAttack{spec: s, log: log}, nil
		}
		return nil, cli.Usagef("study defenses: --attacks %q: want rf, lstm, blstm or sp", name)
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

// spAttack is Ma et al.'s sequence profiles with their detector CNNs
// (pipeline/detect, as homemole sp train): the SPs and CNNs are learnt
// from the defended training sessions, each device's defended packets its
// type's traffic, and a held-out session is judged by the types the
// detectors find in it, the most confident first.
type spAttack struct {
	cfg detect.Config
	log *slog.Logger
}

func (spAttack) Name() string { return "sp" }

func (a spAttack) Detect(ctx context.Context, tr, test []defensestudy.Session, labels []string, seed uint64) ([][]int, error) {
	corpus := &scene.Corpus{}
	for d, name := range labels {
		dt := seqprofile.DeviceTraffic{Device: name}
		for _, s := range tr {
			if s.Device == d && len(s.Packets) > 0 {
				dt.Sessions = append(dt.Sessions, seqprofile.Session{File: s.File, Device: s.Packets})
			}
		}
		if len(dt.Sessions) > 0 {
			corpus.Devices = append(corpus.Devices, dt)
		}
	}
	cfg := a.cfg
	cfg.Seed = seed
	m, err := detect.Train(ctx, corpus, cfg, a.log)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	out := make([][]int, len(test))
	for i, s := range test {
		ws, err := m.Detect(ctx, s.Packets, 0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.File, err)
		}
		best := map[int]float64{}
		for _, w := range ws {
			for _, d := range w.Detections {
				k := slices.Index(labels, d.Device)
				if k >= 0 && d.Score > best[k] {
					best[k] = d.Score
				}
			}
		}
		for k := range best {
			out[i] = append(out[i], k)
		}
		slices.SortFunc(out[i], func(x, y int) int { return cmp.Or(cmp.Compare(best[y], best[x]), cmp.Compare(x, y)) })
	}
	return out, nil
}
