package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/homemole/homemole/pipeline/build"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/tools/internal/toolmain"
)

// NonIoT is the one label every non-IoT device of the home gets in noise
// datasets: the model must tell a packet is none of the IoT devices', not
// which phone sent it.
const NonIoT = "non-iot"

// Config is one run of the matrix.
type Config struct {
	Dir   string // work folder: captures, embedded state, outputs
	Home  homegen.Config
	Views []string // napt, vpn
	Kinds []string // ind, noise
	Model string   // rf, lstm, blstm
	Learn learn.Config
	// Cipher is the VPN's data-channel cipher; the paper's OpenVPN ran
	// block ciphers in CBC mode (Section 3.3), so CBC is the default.
	Cipher gateway.Cipher
	// KeepPorts has the NAPT keep a flow's LAN source port when it is free,
	// as the paper's gateway (Linux iptables on a Raspberry Pi, Section
	// 3.2) does; otherwise external ports are drawn at random.
	KeepPorts bool
	Window    int
	Folds     int
	CVMode    string // train.CVGrouped (default) or train.CVRandom (the paper's split)
	Seed      uint64
	Cap       int // windows per device (0: all); the paper caps at 5,000
	Parallel  int // folds trained at once
	Log       *slog.Logger
	// Out receives progress lines.
	Out io.Writer
}

// Cell is one of the matrix's four results.
type Cell struct {
	View  string `json:"view"`
	Kind  string `json:"kind"`
	Model string `json:"model"`
	// Accuracy is per packet over the IoT devices' packets (the paper's
	// overall accuracy over its ten devices), mean and standard deviation
	// over folds; AccuracyAll includes the non-IoT class of noise datasets.
	Accuracy    train.Spread `json:"accuracy"`
	AccuracyAll train.Spread `json:"accuracy_all_packets"`
	// MacroF1 is over the ten IoT classes.
	MacroF1   train.Spread       `json:"macro_f1"`
	PerDevice map[string]float64 `json:"per_device"` // category accuracy, all folds' held-out packets
	// PacketsPerDevice counts each device's held-out packets over all folds.
	PacketsPerDevice map[string]int `json:"packets_per_device"`
	// Paper is the paper's figure for this cell and model, PaperSource
	// where it is printed.
	Paper          float64            `json:"paper"`
	PaperSource    string             `json:"paper_source"`
	PaperPerDevice map[string]float64 `json:"paper_per_device,omitempty"`
	Windows        int                `json:"windows"`
	Sessions       int                `json:"sessions"`
	Packets        int                `json:"labeled_packets_judged"`
	FoldAccuracy   []float64          `json:"fold_accuracy"`
	BuildSeconds   float64            `json:"build_seconds"`
	CVSeconds      float64            `json:"cv_seconds"`
	Report         string             `json:"report"` // the cell's cross-validation report, beside the JSON
}

// Result is the whole run, as matrix.json holds it.
type Result struct {
	Household      string   `json:"household"`
	Devices        []string `json:"iot_devices"`
	Background     []string `json:"non_iot_devices"`
	Seed           uint64   `json:"seed"`
	Sessions       int      `json:"sessions"`
	SessionMinutes float64  `json:"session_minutes"`
	// PacketsRead is what a cell's capture agents read: the LAN capture
	// and the emulated WAN capture of every session.
	PacketsRead int     `json:"packets_read_per_cell"`
	Model       string  `json:"model"`
	Epochs      int     `json:"epochs,omitempty"`
	Window      int     `json:"window"`
	Folds       int     `json:"folds"`
	CVMode      string  `json:"cv_mode"`
	Cipher      string  `json:"vpn_cipher"`
	KeepPorts   bool    `json:"napt_keeps_ports"`
	LenEmbed    int     `json:"len_embed_dim"`
	Balance     bool    `json:"balance"`
	Cells       []*Cell `json:"cells"`
	Seconds     float64 `json:"seconds"`
}

// Run generates the home, builds a dataset per cell through the real
// pipeline and cross-validates the model on each.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	start := time.Now()
	if err := (train.Spec{Name: cfg.Model}).Check(); err != nil {
		return nil, err
	}
	cfg.Home.Household = homegen.HouseholdPaper
	if cfg.CVMode == "" {
		cfg.CVMode = train.CVGrouped
	}
	if cfg.CVMode != train.CVGrouped && cfg.CVMode != train.CVRandom {
		return nil, fmt.Errorf("cross-validation mode %q: want %s or %s", cfg.CVMode, train.CVGrouped, train.CVRandom)
	}
	if err := os.RemoveAll(cfg.Dir); err != nil {
		return nil, fmt.Errorf("clear %s: %w", cfg.Dir, err)
	}
	fmt.Fprintf(cfg.Out, "generating the paper's household: %d sessions of %s (seed %d)\n", cfg.Home.Sessions, cfg.Home.SessionDuration, cfg.Home.Seed)
	home, err := homegen.Generate(cfg.Home, filepath.Join(cfg.Dir, "captures"))
	if err != nil {
		return nil, err
	}
	env, err := toolmain.Embedded(ctx, cfg.Dir, "homemole-matrix", cfg.Log)
	if err != nil {
		return nil, err
	}
	defer env.Close()

	res := &Result{Household: homegen.HouseholdPaper, Devices: homegen.PaperIoT, Background: homegen.PaperNonIoT,
		Seed: cfg.Home.Seed, Sessions: cfg.Home.Sessions, SessionMinutes: cfg.Home.SessionDuration.Minutes(),
		Model: cfg.Model, Window: cfg.Window, Folds: cfg.Folds, CVMode: cfg.CVMode, Cipher: string(cfg.Cipher), KeepPorts: cfg.KeepPorts,
		LenEmbed: cfg.Learn.LenEmbedDim, Balance: cfg.Learn.Balance}
	if cfg.Model != "rf" {
		res.Epochs = cfg.Learn.Epochs
	}
	for _, view := range cfg.Views {
		for _, kind := range cfg.Kinds {
			cell, packets, err := runCell(ctx, cfg, env, home, view, kind)
			if err != nil {
				return nil, fmt.Errorf("%s/%s: %w", view, kind, err)
			}
			res.PacketsRead = packets
			res.Cells = append(res.Cells, cell)
			fmt.Fprintf(cfg.Out, "  %s/%s: accuracy %.1f ± %.1f %% (paper %.1f %%), macro F1 %.3f, %d windows, build %.0f s, cv %.0f s\n",
				view, kind, 100*cell.Accuracy.Mean, 100*cell.Accuracy.Std, cell.Paper, cell.MacroF1.Mean, cell.Windows, cell.BuildSeconds, cell.CVSeconds)
		}
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// campaignOf is the generated home as a campaign of its own name: every
// cell builds from a fresh campaign so that its stream, labeler and
// windower consumers are its own. In noise campaigns every non-IoT device
// is named NonIoT.
func campaignOf(home *homegen.Home, name, kind string) (*campaign.Campaign, error) {
	c := home.Campaign(name, "home-1")
	if kind == schemas.KindNoise {
		inv := c.Homes[0].Inventory
		for i := range inv {
			if inv[i].Category == campaign.CategoryNonIoT {
				inv[i].Name = NonIoT
			}
		}
	}
	return c, c.Validate()
}

// labelsOf is the cell's label vocabulary: the ten IoT devices, and the
// non-IoT class in noise datasets.
func labelsOf(kind string) []string {
	labels := slices.Clone(homegen.PaperIoT)
	if kind == schemas.KindNoise {
		labels = append(labels, NonIoT)
	}
	return labels
}

// runCell builds one cell's dataset and cross-validates the model on it. It
// returns the packets the capture agents read (LAN and WAN taps).
func runCell(ctx context.Context, cfg Config, env *endpoints.Env, home *homegen.Home, view, kind string) (*Cell, int, error) {
	st := env.Store
	name := fmt.Sprintf("matrix-%s-%s", view, kind)
	c, err := campaignOf(home, name, kind)
	if err != nil {
		return nil, 0, err
	}
	fmt.Fprintf(cfg.Out, "[%s/%s] emulating the %s gateway and building the dataset (windows of %d)\n", view, kind, view, cfg.Window)
	t0 := time.Now()
	mode, err := gateway.ParseMode(view)
	if err != nil {
		return nil, 0, err
	}
	if err := build.EmulateWAN(ctx, c, mode, gateway.Config{Cipher: cfg.Cipher, Seed: cfg.Seed, KeepPorts: cfg.KeepPorts}, filepath.Join(cfg.Dir, "wan", name)); err != nil {
		return nil, 0, err
	}
	spec := window.Spec{Dataset: name, Version: "v1", Kind: kind, Size: cfg.Window, Labels: labelsOf(kind), Views: []string{view},
		Cap: cfg.Cap, CapSeed: cfg.Seed}
	if err := spec.Validate(); err != nil {
		return nil, 0, err
	}
	b, err := (&build.Build{Campaign: c, Spec: spec, Bus: env.Bus, Store: st, Log: cfg.Log}).Run(ctx)
	if err != nil {
		return nil, 0, err
	}
	packets := 0
	for _, a := range b.Agents {
		packets += a.Packets
	}
	cell := &Cell{View: view, Kind: kind, Model: cfg.Model, Windows: b.Manifest.KeptWindows, Sessions: len(b.Manifest.Groups),
		BuildSeconds: time.Since(t0).Seconds()}
	cell.Paper, cell.PaperSource, cell.PaperPerDevice = paperFigure(view, kind, cfg.Model)

	t1 := time.Now()
	run := name + "-" + cfg.Model
	cv := &train.CrossValidation{Store: st, Dataset: name, Version: "v1", RunName: run, Spec: train.Spec{Name: cfg.Model, Learn: cfg.Learn},
		Folds: cfg.Folds, Mode: cfg.CVMode, Seed: cfg.Seed, Parallel: cfg.Parallel, Log: cfg.Log}
	cvRes, html, err := cv.Run(ctx)
	if err != nil {
		return nil, 0, err
	}
	cell.CVSeconds = time.Since(t1).Seconds()
	if err := cell.fill(ctx, st, cvRes); err != nil {
		return nil, 0, err
	}
	cell.Report = name + ".html"
	if err := os.WriteFile(filepath.Join(cfg.Dir, cell.Report), html, 0o644); err != nil {
		return nil, 0, fmt.Errorf("write the cell's report: %w", err)
	}
	return cell, packets, nil
}

// fill derives the cell's figures from the folds' held-out confusion
// matrices: accuracy over the IoT devices' packets and macro F1 over the
// IoT classes, per fold, then mean and spread.
func (cell *Cell) fill(ctx context.Context, st store.Store, cv *train.CVResult) error {
	var acc, all, f1 []float64
	iot := len(homegen.PaperIoT) // the IoT classes come first in every vocabulary
	for _, f := range cv.Folds {
		data, err := st.Get(ctx, f.Report)
		if err != nil {
			return fmt.Errorf("fold %d report: %w", f.Fold, err)
		}
		var rep evaluate.Report
		if err := json.Unmarshal(data, &rep); err != nil {
			return fmt.Errorf("fold %d report: %w", f.Fold, err)
		}
		if rep.Confusion == nil {
			return fmt.Errorf("fold %d report has no confusion matrix", f.Fold)
		}
		a, m := iotFigures(rep.Confusion, iot)
		acc, f1, all = append(acc, a), append(f1, m), append(all, f.Accuracy)
		cell.FoldAccuracy = append(cell.FoldAccuracy, a)
	}
	cell.Accuracy, cell.MacroF1, cell.AccuracyAll = train.SpreadOf(acc), train.SpreadOf(f1), train.SpreadOf(all)
	cell.PerDevice, cell.PacketsPerDevice = map[string]float64{}, map[string]int{}
	for _, pc := range cv.Confusion.PerClass() {
		cell.PerDevice[pc.Device] = pc.Accuracy
		cell.PacketsPerDevice[pc.Device] = pc.Packets
		cell.Packets += pc.Packets
	}
	return nil
}

// iotFigures is the accuracy over the packets of the first n classes and
// the macro F1 over them (predictions of any class count against precision).
func iotFigures(c *evaluate.Confusion, n int) (acc, macroF1 float64) {
	var right, total int
	var f1s []float64
	for i := 0; i < n && i < len(c.Counts); i++ {
		row, col := 0, 0
		for j := range c.Counts {
			row += c.Counts[i][j]
			col += c.Counts[j][i]
		}
		right += c.Counts[i][i]
		total += row
		if row == 0 {
			continue // a device without held-out packets in this fold
		}
		tp := float64(c.Counts[i][i])
		f1 := 0.0
		if tp > 0 {
			p, r := tp/float64(col), tp/float64(row)
			f1 = 2 * p * r / (p + r)
		}
		f1s = append(f1s, f1)
	}
	if total > 0 {
		acc = float64(right) / float64(total)
	}
	for _, f := range f1s {
		macroF1 += f / float64(len(f1s))
	}
	return acc, macroF1
}
