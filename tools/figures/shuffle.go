package main

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
)

// shuffleSeeds are the splits the bounded-shuffle comparison trains on:
// one seed moves a session accuracy by several points, so the comparison
// is per seed and averaged.
var shuffleSeeds = []int{1, 2, 3, 4, 5}

// shuffleCommand is what shuffleRunners runs, for the README: per seed,
// train reading every window (a full shuffle), then the same split under
// the tightest --max-memory that still fits a shuffle buffer of one batch.
const shuffleCommand = "go run ./services/homemole dataset build --from-dir " + sentinelDir + " --dataset sentinel-lan --window 40" +
	" && for each seed 1-5: go run ./services/homemole train --dataset sentinel-lan --threads 1 --seed S [--max-memory M]" +
	" (M: the least budget that trains, to 100 KiB)"

var shuffleBufferRe = regexp.MustCompile(`shuffle_buffer=(\d+)`)

// shuffleRun is one training's held-out result.
type shuffleRun struct {
	packet, sessions float64
	buffer, train    int
}

// shuffleRunners compare a streaming trainer's bounded shuffle with the
// full shuffle of a trainer that reads every window, on the IoT Sentinel
// captures (README "Streaming training"): what issue 18 asked to report.
func shuffleRunners(r *reruns) []runner {
	measure := func(ctx context.Context) (any, error) {
		if err := needSentinel(); err != nil {
			return nil, err
		}
		// The LAN cross-validations' dataset.
		if err := r.buildSentinel(ctx, "lan"); err != nil {
			return nil, err
		}
		dataset, _ := sentinelDataset("lan")
		var full, bounded []shuffleRun
		for _, seed := range shuffleSeeds {
			args := []string{"train", "--dataset", dataset, "--threads", "1", "--seed", strconv.Itoa(seed)}
			run := fmt.Sprintf("shuffle-full-%d", seed)
			if _, err := r.homemole(ctx, append(args, "--run", run)...); err != nil {
				return nil, err
			}
			f, err := r.trainReport(run)
			if err != nil {
				return nil, err
			}
			full = append(full, f)
			run = fmt.Sprintf("shuffle-bounded-%d", seed)
			// The least budget that trains, to 100 KiB, probed with one
			// epoch: one too small for a batch is refused before training.
			lo, hi := 64<<10, 512<<10 // KiB: refused, trains
			for hi-lo > 100 {
				mid := (lo + hi) / 2
				_, err := r.homemole(ctx, append(args, "--run", "shuffle-probe", "--epochs", "1", "--max-memory", fmt.Sprintf("%dKiB", mid))...)
				switch {
				case ctx.Err() != nil:
					return nil, ctx.Err()
				case err != nil:
					lo = mid
				default:
					hi = mid
				}
			}
			out, err := r.homemole(ctx, append(args, "--run", run, "--max-memory", fmt.Sprintf("%dKiB", hi))...)
			if err != nil {
				return nil, err
			}
			b, err := r.trainReport(run)
			if err != nil {
				return nil, err
			}
			m := shuffleBufferRe.FindStringSubmatch(out)
			if m == nil {
				return nil, fmt.Errorf("seed %d: the streaming trainer logged no shuffle_buffer:\n%s", seed, tail(out))
			}
			b.buffer, _ = strconv.Atoi(m[1])
			bounded = append(bounded, b)
		}
		return [2][]shuffleRun{full, bounded}, nil
	}
	mean := func(rs []shuffleRun, f func(shuffleRun) float64) float64 {
		s := 0.0
		for _, r := range rs {
			s += f(r)
		}
		return s / float64(len(rs))
	}
	figure := func(key string, f func(full, bounded []shuffleRun) string) runner {
		return runner{key: key, command: shuffleCommand, measure: func(ctx context.Context) (string, error) {
			v, err := r.once("shuffle", func() (any, error) { return measure(ctx) })
			if err != nil {
				return "", err
			}
			runs := v.([2][]shuffleRun)
			return f(runs[0], runs[1]), nil
		}}
	}
	pct := func(side int, col func(shuffleRun) float64) func(full, bounded []shuffleRun) string {
		return func(full, bounded []shuffleRun) string {
			return fmt.Sprintf("%.1f %%", 100*mean([][]shuffleRun{full, bounded}[side], col))
		}
	}
	packet := func(r shuffleRun) float64 { return r.packet }
	sessions := func(r shuffleRun) float64 { return r.sessions }
	// spanOf is the least and the most of f over the seeds.
	spanOf := func(seeds int, f func(i int) float64, format string) string {
		lo, hi := f(0), f(0)
		for i := range seeds {
			lo, hi = min(lo, f(i)), max(hi, f(i))
		}
		return fmt.Sprintf(format, lo, hi)
	}
	return []runner{
		figure("shuffle.full.packet", pct(0, packet)),
		figure("shuffle.bounded.packet", pct(1, packet)),
		figure("shuffle.full.sessions", pct(0, sessions)),
		figure("shuffle.bounded.sessions", pct(1, sessions)),
		figure("shuffle.delta.packet", func(full, bounded []shuffleRun) string {
			return spanOf(len(full), func(i int) float64 { return 100 * (bounded[i].packet - full[i].packet) }, "%+.1f to %+.1f points")
		}),
		figure("shuffle.bounded.buffer", func(full, bounded []shuffleRun) string {
			return spanOf(len(full), func(i int) float64 { return float64(bounded[i].buffer) }, "%.0f to %.0f windows")
		}),
		figure("shuffle.train_windows", func(full, bounded []shuffleRun) string {
			return spanOf(len(full), func(i int) float64 { return float64(full[i].train) }, "%.0f to %.0f")
		}),
	}
}

// trainReport reads what homemole train wrote for run: held-out
// per-packet accuracy, and the share of held-out sessions named right
// (the report's session verdicts).
func (r *reruns) trainReport(run string) (shuffleRun, error) {
	var rep struct {
		Accuracy     *float64 `json:"accuracy"`
		TrainWindows int      `json:"train_windows"`
		Votes        []struct {
			Truth     string `json:"truth"`
			Predicted string `json:"predicted"`
		} `json:"session_votes"`
	}
	file := filepath.Join(r.work, "home", "reports", run, "report.json")
	if err := readJSON(file, &rep); err != nil {
		return shuffleRun{}, err
	}
	if rep.Accuracy == nil || len(rep.Votes) == 0 {
		return shuffleRun{}, fmt.Errorf("%s has no accuracy or no session verdicts: not a train report this tool reads", file)
	}
	right := 0
	for _, v := range rep.Votes {
		if v.Truth == v.Predicted {
			right++
		}
	}
	return shuffleRun{packet: *rep.Accuracy, sessions: float64(right) / float64(len(rep.Votes)), train: rep.TrainWindows}, nil
}
