package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/build"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/tools/internal/toolmain"
)

// Home names say which side of the time split a home is on: training homes
// are assembled from the early captures, test homes from the late ones.
const (
	trainPrefix = "early-"
	testPrefix  = "late-"
)

// Config is one run: assembled homes behind each view, each model trained
// on the early homes and judged on the late ones.
type Config struct {
	Dir        string // work folder, rebuilt: homes, WAN views, embedded state
	Sentinel   string // device folders (IoT Sentinel layout)
	TrainHomes int
	TestHomes  int
	Devices    int // device types per home (0: every folder)
	Duration   time.Duration
	Views      []string // napt, vpn
	Models     []string // rf, lstm, blstm
	Learn      learn.Config
	Window     int
	Seed       uint64
	Log        *slog.Logger
	Out        io.Writer // progress lines
}

// Cell is one view and model.
type Cell struct {
	View  string `json:"view"`
	Model string `json:"model"`
	// Accuracy is per packet over the late homes' labeled packets.
	Accuracy float64 `json:"accuracy"`
	// SessionAccuracy is over the late homes' units: each unit is one
	// held-out capture session of one device, named by the majority of its
	// packets' labels.
	SessionAccuracy float64 `json:"session_accuracy"`
	Sessions        int     `json:"sessions"`
	// TypeSessionAccuracy counts a session right when the vote names its
	// device type (evaluate.TypeOf: identical units such as EdimaxCam1 and
	// EdimaxCam2 are one type).
	TypeSessionAccuracy float64 `json:"type_session_accuracy"`
	Packets             int     `json:"packets"`
	// MajorityShare is the busiest device's share of those packets: what
	// naming it for every packet would score.
	MajorityShare float64 `json:"majority_share"`
	// PerDevice is each device's per-packet accuracy (the paper's category
	// accuracy), for the smart plugs its noisy VPN text singles out.
	PerDevice    map[string]float64 `json:"per_device"`
	TrainWindows int                `json:"train_windows"`
	TestWindows  int                `json:"test_windows"`
	// Paper is the paper's noisy overall accuracy (Sec. 4.3, Figs. 9-10).
	Paper float64 `json:"paper"`
}

// Result is the run.
type Result struct {
	Devices    []string `json:"devices"`
	TrainHomes int      `json:"train_homes"`
	TestHomes  int      `json:"test_homes"`
	Minutes    float64  `json:"home_minutes"`
	Epochs     int      `json:"epochs"`
	Window     int      `json:"window"`
	Cells      []*Cell  `json:"cells"`
	Seconds    float64  `json:"seconds"`
}

// paperNoisy is the HomeMole paper's overall per-packet accuracy on its
// noisy datasets (Section 4.3, Figures 9 and 10), in per cent.
var paperNoisy = map[string]map[string]float64{
	"napt": {"rf": 84.5, "lstm": 87.1, "blstm": 92.1},
	"vpn":  {"rf": 67.6, "lstm": 74.1, "blstm": 81.0},
}

// Run assembles the homes, builds one noise dataset per view through the
// real pipeline and fits every model on the early homes' windows.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	start := time.Now()
	for _, m := range cfg.Models {
		if err := (train.Spec{Name: m}).Check(); err != nil {
			return nil, err
		}
	}
	if cfg.TrainHomes < 1 || cfg.TestHomes < 1 {
		return nil, fmt.Errorf("%d training and %d test homes: want at least one of each", cfg.TrainHomes, cfg.TestHomes)
	}
	devs, err := realhome.LoadDevices(cfg.Sentinel)
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(cfg.Dir); err != nil {
		return nil, fmt.Errorf("clear %s: %w", cfg.Dir, err)
	}
	homes, err := assemble(ctx, cfg, devs)
	if err != nil {
		return nil, err
	}
	var labels []string
	for _, d := range devs {
		labels = append(labels, d.Name)
	}
	env, err := toolmain.Embedded(ctx, cfg.Dir, "homemole-realnoise", cfg.Log)
	if err != nil {
		return nil, err
	}
	defer env.Close()
	res := &Result{Devices: labels, TrainHomes: cfg.TrainHomes, TestHomes: cfg.TestHomes, Minutes: cfg.Duration.Minutes(),
		Epochs: cfg.Learn.Epochs, Window: cfg.Window}
	for _, view := range cfg.Views {
		trainW, testW, err := buildView(ctx, cfg, env, homes, labels, view)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", view, err)
		}
		for _, model := range cfg.Models {
			spec := train.Spec{Name: model, Learn: cfg.Learn}
			out, err := train.Evaluate(ctx, &train.Evaluation{Spec: spec, Train: trainW, Test: testW, Labels: labels,
				Report: evaluate.Report{Run: "realnoise-" + view + "-" + model, Dataset: "realnoise-" + view}, VoteBy: unitOf, Store: env.Store, Log: cfg.Log})
			if err != nil {
				return nil, fmt.Errorf("%s/%s: %w", view, model, err)
			}
			cell := judge(testW, out.Preds, labels, out.Report.Sessions)
			cell.View, cell.Model, cell.Paper = view, model, paperNoisy[view][model]
			cell.TrainWindows, cell.TestWindows = len(trainW), len(testW)
			res.Cells = append(res.Cells, cell)
			fmt.Fprintf(cfg.Out, "  %s/%s: per-packet %.1f %% (paper, noisy: %.1f %%), session %.1f %% of %d, %d packets\n",
				view, model, 100*cell.Accuracy, cell.Paper, 100*cell.SessionAccuracy, cell.Sessions, cell.Packets)
		}
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// assemble writes the training and test homes' LAN captures and returns
// them as campaign homes whose inventory names each unit by its device.
func assemble(ctx context.Context, cfg Config, devs []realhome.Device) ([]*campaign.Home, error) {
	dir := filepath.Join(cfg.Dir, "homes")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	devices := cfg.Devices
	if devices == 0 {
		devices = len(devs)
	}
	var out []*campaign.Home
	for i := range cfg.TrainHomes + cfg.TestHomes {
		name, split := fmt.Sprintf("%s%d", trainPrefix, i+1), realhome.EarlySessions
		if i >= cfg.TrainHomes {
			name, split = fmt.Sprintf("%s%d", testPrefix, i-cfg.TrainHomes+1), realhome.LateSessions
		}
		h, err := realhome.Assemble(ctx, devs, realhome.Config{Devices: devices, Duration: cfg.Duration, Sessions: split, Seed: cfg.Seed + uint64(i)})
		if err != nil {
			return nil, fmt.Errorf("home %s: %w", name, err)
		}
		path := filepath.Join(dir, name+".pcap")
		f, err := os.Create(path)
		if err != nil {
			return nil, fmt.Errorf("home %s: %w", name, err)
		}
		err = h.WritePcap(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("home %s: %w", name, err)
		}
		ch := &campaign.Home{Name: name, Gateway: campaign.Gateway{Mode: "napt", MAC: h.GatewayMAC.String(), LANNets: []string{h.LAN.String()}},
			Taps: []campaign.Tap{{Name: "lan", Files: []string{path}}}}
		for _, u := range h.Units {
			ch.Inventory = append(ch.Inventory, campaign.Device{MAC: u.MAC.String(), Name: u.Device, Category: campaign.CategoryIoT})
		}
		fmt.Fprintf(cfg.Out, "assembled %s from %s captures: %d units, %d packets\n", name, split, len(h.Units), len(h.Packets))
		out = append(out, ch)
	}
	return out, nil
}

// buildView emulates the view's gateway for every home, builds the noise
// dataset through the pipeline and splits its windows by home.
func buildView(ctx context.Context, cfg Config, env *endpoints.Env, homes []*campaign.Home, labels []string, view string) (trainW, testW []*schemas.Window, err error) {
	name := "realnoise-" + view
	c := &campaign.Campaign{Name: name}
	for _, h := range homes {
		cp := *h
		cp.Taps = slices.Clone(h.Taps)
		c.Homes = append(c.Homes, &cp)
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	mode, err := gateway.ParseMode(view)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(cfg.Out, "[%s] emulating the gateway and building noise windows of %d\n", view, cfg.Window)
	if err := build.EmulateWAN(ctx, c, mode, gateway.Config{Cipher: gateway.AES256CBC, Seed: cfg.Seed, KeepPorts: true}, filepath.Join(cfg.Dir, "wan", name)); err != nil {
		return nil, nil, err
	}
	spec := window.Spec{Dataset: name, Version: "v1", Kind: schemas.KindNoise, Size: cfg.Window, Labels: labels, Views: []string{view}}
	if err := spec.Validate(); err != nil {
		return nil, nil, err
	}
	if _, err := (&build.Build{Campaign: c, Spec: spec, Bus: env.Bus, Store: env.Store, Log: cfg.Log}).Run(ctx); err != nil {
		return nil, nil, err
	}
	m, err := dataset.Load(ctx, env.Store, name, "v1")
	if err != nil {
		return nil, nil, err
	}
	if trainW, err = dataset.Windows(ctx, env.Store, m, func(g string) bool { return strings.HasPrefix(g, trainPrefix) }); err != nil {
		return nil, nil, err
	}
	if testW, err = dataset.Windows(ctx, env.Store, m, func(g string) bool { return strings.HasPrefix(g, testPrefix) }); err != nil {
		return nil, nil, err
	}
	if len(trainW) == 0 || len(testW) == 0 {
		return nil, nil, fmt.Errorf("%d training and %d test windows: the homes are too short for windows of %d packets (give a longer --duration)", len(trainW), len(testW), cfg.Window)
	}
	fmt.Fprintf(cfg.Out, "[%s] %d training windows (early homes), %d test windows (late homes)\n", view, len(trainW), len(testW))
	return trainW, testW, nil
}

// unitOf is the unit packet i of w votes in: one device's packets in one
// late home (a held-out capture session of that device), since a noise
// window holds every device of its home.
func unitOf(w *schemas.Window, i int) string {
	return w.Home + "/" + strconv.Itoa(int(w.Label[i]))
}

// judge scores the late homes' packets per packet, and per unit from the
// evaluation's votes (by unitOf).
func judge(ws []*schemas.Window, preds [][]int32, labels []string, votes []evaluate.SessionVote) *Cell {
	cell := &Cell{}
	right, per, perRight := 0, make([]int, len(labels)), make([]int, len(labels))
	for i, w := range ws {
		for k := 0; k < w.Len; k++ {
			t, p := int(w.Label[k]), int(preds[i][k])
			if t < 0 {
				continue // the gateway's own packets belong to no device
			}
			cell.Packets++
			if t < len(per) {
				per[t]++
			}
			if t == p {
				right++
				if t < len(perRight) {
					perRight[t]++
				}
			}
		}
	}
	if cell.Packets > 0 {
		cell.Accuracy = float64(right) / float64(cell.Packets)
		cell.MajorityShare = float64(slices.Max(per)) / float64(cell.Packets)
	}
	cell.PerDevice = map[string]float64{}
	for i, n := range per {
		if n > 0 {
			cell.PerDevice[labels[i]] = float64(perRight[i]) / float64(n)
		}
	}
	cell.Sessions = len(votes)
	cell.SessionAccuracy, cell.TypeSessionAccuracy = evaluate.SessionAccuracy(votes)
	return cell
}
