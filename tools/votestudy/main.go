// Command votestudy measures how the held-out predictions of a BLSTM turn
// into session verdicts (issue 16): for each fold of a grouped
// cross-validation and for the time split it trains one model, labels the
// held-out windows once per prediction-time window length, and scores the
// same predictions under several session vote rules, so that rules and
// lengths are compared on identical models. Only held-out folds are
// judged; the folds and seeds are those of `homemole cv`.
//
//	go run ./tools/votestudy --dataset sentinel-lan --mode both --threads 1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/schemas"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "votestudy:", err)
		os.Exit(1)
	}
}

// fold is one held-out side: the groups it judges and its training seed
// (cv's: the seed plus the fold's index).
type fold struct {
	split string // grouped or time
	name  string
	test  map[string]bool
	seed  int64
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("votestudy", flag.ContinueOnError)
	ep := endpoints.FromEnv()
	ep.Register(fs)
	name := fs.String("dataset", "", "dataset name (built with homemole dataset build)")
	version := fs.String("version", "v1", "dataset version")
	mode := fs.String("mode", "both", "grouped, time or both")
	folds := fs.Int("folds", 5, "grouped folds")
	seed := fs.Uint64("seed", 1, "seed of the folds and the training, as cv's")
	lengths := fs.String("windows", "0,120,-1", "prediction-time window lengths, comma-separated: 0 is the dataset's own, -1 one window per stream")
	cfg := learn.DefaultConfig()
	fs.IntVar(&cfg.Epochs, "epochs", cfg.Epochs, "training epochs")
	fs.IntVar(&cfg.Threads, "threads", 1, "libtorch threads")
	fs.IntVar(&cfg.PortSessions, "port-sessions", cfg.PortSessions, "as homemole's --port-sessions")
	fs.Float64Var(&cfg.LabelSmoothing, "label-smoothing", cfg.LabelSmoothing, "as homemole's --label-smoothing")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return errors.New("--dataset NAME is required: build one with homemole dataset build --from-dir DIR --dataset NAME --window 40")
	}
	var sizes []int
	for _, f := range strings.Split(*lengths, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < -1 {
			return fmt.Errorf("--windows %q: want lengths such as 0,120,-1", *lengths)
		}
		sizes = append(sizes, n)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	env, err := endpoints.OpenStore(ctx, ep, log)
	if err != nil {
		return err
	}
	defer env.Close()
	m, err := dataset.Load(ctx, env.Store, *name, *version)
	if err != nil {
		return err
	}
	all, err := dataset.Windows(ctx, env.Store, m, nil)
	if err != nil {
		return err
	}
	var fl []fold
	if *mode == "grouped" || *mode == "both" {
		gs, err := dataset.Folds(m.Groups, *folds, *seed)
		if err != nil {
			return err
		}
		for i, g := range gs {
			in := map[string]bool{}
			for _, x := range g {
				in[x] = true
			}
			fl = append(fl, fold{"grouped", fmt.Sprintf("fold %d", i+1), in, int64(*seed) + int64(i)})
		}
	}
	if *mode == "time" || *mode == "both" {
		late, err := train.LateGroups(m)
		if err != nil {
			return err
		}
		fl = append(fl, fold{"time", "time", late, int64(*seed)})
	}
	if len(fl) == 0 {
		return fmt.Errorf("--mode %q: want grouped, time or both", *mode)
	}
	fmt.Fprintf(out, "%s/%s, windows of %d, %d epochs, port sessions %d, label smoothing %.2f\n", *name, *version, m.WindowSize, cfg.Epochs, cfg.PortSessions, cfg.LabelSmoothing)
	scores := map[string][]float64{}
	var keys []string
	for _, f := range fl {
		var tr, te []*schemas.Window
		for _, w := range all {
			if f.test[w.Group] {
				te = append(te, w)
			} else {
				tr = append(tr, w)
			}
		}
		c := cfg
		c.Seed, c.Device = f.seed, learn.DeviceCPU
		model, err := learn.Train(ctx, c, tr, len(m.Labels), nil)
		if err != nil {
			return fmt.Errorf("%s %s: %w", f.split, f.name, err)
		}
		for _, size := range sizes {
			ws := rechunk(te, size)
			lp, err := model.LogProbs(ws)
			if err != nil {
				model.Close()
				return err
			}
			for _, r := range score(m.Labels, ws, lp) {
				k := fmt.Sprintf("%s\t%s\t%s", f.split, lengthName(size, m.WindowSize), r.name)
				if !slices.Contains(keys, k) {
					keys = append(keys, k)
				}
				scores[k] = append(scores[k], r.value)
				fmt.Fprintf(out, "%s %s, windows %s: %s %.1f %%\n", f.split, f.name, lengthName(size, m.WindowSize), r.name, 100*r.value)
			}
		}
		model.Close()
	}
	fmt.Fprintln(out, "\nsplit\twindows\tmeasure\tmean ± std over folds")
	for _, k := range keys {
		s := train.SpreadOf(scores[k])
		fmt.Fprintf(out, "%s\t%.1f ± %.1f %%\n", k, 100*s.Mean, 100*s.Std)
	}
	return nil
}

func lengthName(size, own int) string {
	switch size {
	case 0:
		return strconv.Itoa(own)
	case -1:
		return "whole stream"
	}
	return strconv.Itoa(size)
}

// rechunk joins each stream's windows in order and cuts the packets again
// into windows of size (0: the windows as they are; -1: one per stream).
// A stream's intervals are the stream's own, so joining changes none.
func rechunk(ws []*schemas.Window, size int) []*schemas.Window {
	if size == 0 {
		return ws
	}
	type part struct {
		seq int
		w   *schemas.Window
	}
	by := map[string][]part{}
	var order []string
	for _, w := range ws {
		s, seq, _ := schemas.SplitWindowID(w.ID)
		if _, ok := by[s]; !ok {
			order = append(order, s)
		}
		by[s] = append(by[s], part{seq, w})
	}
	type slot struct {
		w *schemas.Window
		i int
	}
	var out []*schemas.Window
	for _, s := range order {
		ps := by[s]
		sort.Slice(ps, func(i, j int) bool { return ps[i].seq < ps[j].seq })
		var pk []slot
		for _, p := range ps {
			for i := range p.w.Len {
				pk = append(pk, slot{p.w, i})
			}
		}
		n := size
		if n < 0 {
			n = len(pk)
		}
		for lo, seq := 0, 0; lo < len(pk); lo, seq = lo+n, seq+1 {
			hi := min(lo+n, len(pk))
			first := ps[0].w
			w := schemas.NewWindow(hi - lo)
			w.ID = fmt.Sprintf("%s/%d", s, seq)
			w.Home, w.Session, w.View, w.Kind, w.Group, w.Len = first.Home, first.Session, first.View, first.Kind, first.Group, hi-lo
			for j := lo; j < hi; j++ {
				src, i, k := pk[j].w, pk[j].i, j-lo
				w.TsNs[k], w.DPort[k], w.ProtoBits[k], w.Direction[k], w.FrameLen[k], w.Interval[k] = src.TsNs[i], src.DPort[i], src.ProtoBits[i], src.Direction[i], src.FrameLen[i], src.Interval[i]
				w.TTL[k], w.IPLen[k], w.Transport[k], w.TCPFlags[k], w.TCPWindow[k], w.TCPOptLen[k], w.PayloadLen[k] = src.TTL[i], src.IPLen[i], src.Transport[i], src.TCPFlags[i], src.TCPWindow[i], src.TCPOptLen[i], src.PayloadLen[i]
				w.Label[k] = src.Label[i]
			}
			out = append(out, w)
		}
	}
	return out
}

type result struct {
	name  string
	value float64
}

// rule names a session from its packets' log-probability rows.
type rule struct {
	name string
	pick func(rows [][]float32, windows [][][]float32) int
}

var rules = []rule{
	{"majority of packet labels", func(rows [][]float32, _ [][][]float32) int {
		votes := map[int]int{}
		for _, r := range rows {
			votes[argmax(r)]++
		}
		return best(votes)
	}},
	{"summed log-probability", func(rows [][]float32, _ [][][]float32) int { return argmaxSum(rows, false) }},
	{"mean probability", func(rows [][]float32, _ [][][]float32) int { return argmaxSum(rows, true) }},
	{"majority of windows (each by summed log-probability)", func(_ [][]float32, windows [][][]float32) int {
		votes := map[int]int{}
		for _, w := range windows {
			votes[argmaxSum(w, false)]++
		}
		return best(votes)
	}},
}

// score gives per-packet accuracy and, per rule, the share of streams
// (sessions) named as their device and as their device type.
func score(labels []string, ws []*schemas.Window, lp [][]float32) []result {
	c := len(labels)
	type stream struct {
		truth   []int
		rows    [][]float32
		windows [][][]float32
	}
	streams := map[string]*stream{}
	right, total := 0, 0
	for i, w := range ws {
		id, _, _ := schemas.SplitWindowID(w.ID)
		s := streams[id]
		if s == nil {
			s = &stream{truth: make([]int, c)}
			streams[id] = s
		}
		var win [][]float32
		for k := range w.Len {
			t := int(w.Label[k])
			if t < 0 {
				continue
			}
			row := lp[i][k*c : (k+1)*c]
			if argmax(row) == t {
				right++
			}
			total++
			s.truth[t]++
			s.rows = append(s.rows, row)
			win = append(win, row)
		}
		if len(win) > 0 {
			s.windows = append(s.windows, win)
		}
	}
	out := []result{{"per packet", float64(right) / float64(max(total, 1))}}
	for _, r := range rules {
		dev, typ, n := 0, 0, 0
		for _, s := range streams {
			if len(s.rows) == 0 {
				continue
			}
			n++
			truth, got := labels[best(counts(s.truth))], labels[r.pick(s.rows, s.windows)]
			if got == truth {
				dev++
			}
			if evaluate.TypeOf(got) == evaluate.TypeOf(truth) {
				typ++
			}
		}
		out = append(out, result{"sessions, " + r.name, float64(dev) / float64(max(n, 1))},
			result{"types, " + r.name, float64(typ) / float64(max(n, 1))})
	}
	return out
}

func counts(xs []int) map[int]int {
	m := map[int]int{}
	for i, x := range xs {
		if x > 0 {
			m[i] = x
		}
	}
	return m
}

// best is the class of most votes, the lower class on a tie.
func best(votes map[int]int) int {
	b, n := -1, -1
	for c, v := range votes {
		if v > n || v == n && c < b {
			b, n = c, v
		}
	}
	return b
}

func argmax(xs []float32) int {
	b := 0
	for i, x := range xs {
		if x > xs[b] {
			b = i
		}
	}
	return b
}

// argmaxSum is the class of highest summed log-probability, or of highest
// summed probability with prob.
func argmaxSum(rows [][]float32, prob bool) int {
	sum := make([]float64, len(rows[0]))
	for _, r := range rows {
		for j, v := range r {
			if prob {
				sum[j] += math.Exp(float64(v))
			} else {
				sum[j] += float64(v)
			}
		}
	}
	b := 0
	for i, x := range sum {
		if x > sum[b] {
			b = i
		}
	}
	return b
}
