package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/defensestudy"
	"github.com/homemole/homemole/pipeline/forest"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/gateway/defense"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/services/internal/cli"
)

// withStudyDefenses routes "study defenses" to the defence study, run in
// this build when its attacks need no torch, and every other study to run
// (the torch window-size study; in the CGO-free build, the torch build).
func withStudyDefenses(run runFunc) runFunc {
	return func(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
		if len(args) > 0 && args[0] == "defenses" {
			// Before the flags are parsed: the torch build's model flags
			// (--epochs, ...) are unknown here.
			if !torchBuild && slices.ContainsFunc(studyAttackNames(args[1:]), torchAttack) {
				return run(ctx, log, out, args)
			}
			return runStudyDefenses(ctx, log, out, args[1:])
		}
		return run(ctx, log, out, args)
	}
}

// torchAttack says the attack trains through libtorch (the sequence
// profiles' CNNs too).
func torchAttack(name string) bool { return name == "lstm" || name == "blstm" || name == "sp" }

// studyAttackNames reads --attacks from the study's arguments, as the flag
// package would: the last one given wins.
func studyAttackNames(args []string) []string {
	v := "rf"
	for i, a := range args {
		if a == "--" {
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "attacks" {
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				break
			}
			val = args[i+1]
		}
		v = val
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		out = append(out, strings.TrimSpace(s))
	}
	return out
}

// studyAttackFlags are the attack flags of the build and how it makes an
// attack other than rf.
type studyAttackFlags struct {
	trees *int
	build func(log *slog.Logger, name string) (defensestudy.Attack, error)
}

func runStudyDefenses(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("study defenses", "--from-dir DIR --defenses LIST [--attacks rf,blstm,sp] [--view napt|vpn] [--devices LIST] --json OUT [--report OUT.html]",
		"Judges gateway defences (homemole defend's specs) by the attacks they face: every capture\n"+
			"of every device folder (IoT Sentinel layout) goes through the emulated gateway and the\n"+
			"defence; the attack is trained on defended training captures (the adversary knows the\n"+
			"defence) and tested on defended held-out captures, captures grouped into --folds folds.\n"+
			"Writes {\"rows\": [...]}, one row per defence and attack, with session, type and\n"+
			"per-packet accuracy, detection F1 and the defence's cost. rf runs CGO-free; lstm and blstm\n"+
			"train through libtorch (the torch build) with the model flags every trainer shares; sp (the\n"+
			"sequence profiles and their CNNs, as homemole sp train) too. On a generated home every row\n"+
			"also has activity_f1: the sequence-profile interaction detector (homemole sp interactions)\n"+
			"finding the smart plug's switchings under the defence. In --defenses, cbr:peak is a rate that\n"+
			"gives each direction (cbr gives each half its rate) one packet/s more than the busiest second\n"+
			"either way of any studied capture's undefended WAN view. --span longest (the default) defends\n"+
			"every capture for as long as the longest one, so the always-on defences (cbr, stp, mimic) go on\n"+
			"sending after a short capture ends, as at a real gateway; --span capture cuts each defended\n"+
			"capture at its last real packet, leaving its length to tell the device.")
	dir := fs.String("from-dir", "", "folder of device folders (IoT Sentinel layout)")
	genSessions := fs.Int("generated-home", 0, "instead of --from-dir: generate a home (pipeline/homegen, seeded by --seed) of this many sessions; each device's packets of each session are one of its captures")
	genMinutes := fs.Int("session-minutes", 10, "--generated-home: minutes per session")
	defenses := fs.String("defenses", "none,pad:mtu,cbr:20,pad:mtu+cbr:20", "comma-separated defence specs (none: the gateway alone)")
	attacks := fs.String("attacks", "rf", "comma-separated attacks: rf, lstm, blstm, sp")
	mimicDir := fs.String("mimic-dir", "", "mimic:DEVICE imitates the captures in DIR/DEVICE (default: --from-dir)")
	view := fs.String("view", "napt", "napt or vpn")
	devices := fs.String("devices", "", "comma-separated device folders to keep (default: all)")
	maxFiles := fs.Int("max-files", 0, "keep each device's first N captures (0: all)")
	folds := fs.Int("folds", 5, "grouped folds: captures dealt round-robin per device")
	win := fs.Int("window", 20, "packets per window")
	spanFlag := fs.String("span", "longest", "how long each capture is defended from its first WAN packet: longest (the longest studied capture's span), capture (its own), or a duration such as 10m")
	maxWindows := fs.Int("max-windows", 0, "keep at most N windows of each session for rf, lstm and blstm, evenly spread over it (0: all); sp reads every packet")
	af := studyAttacks(fs)
	seed := fs.Uint64("seed", 1, "seed of the gateway, the defences and the forest")
	jsonOut := fs.String("json", "", "file to write {\"rows\": [...]} to")
	report := fs.String("report", "", "HTML file to write: accuracy against overhead per attack, the Pareto front, per-device accuracy")
	reportFrom := fs.String("report-from", "", "instead of a study: comma-separated --json files of earlier runs, whose rows --report draws as one report")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *reportFrom != "" {
		return reportFromFiles(*reportFrom, *report)
	}
	if (*dir == "") == (*genSessions == 0) || *jsonOut == "" || *genSessions < 0 || *genMinutes < 1 {
		return cli.Usagef("study defenses needs one of --from-dir DIR or --generated-home SESSIONS (with --session-minutes 1 or more), and --json OUT")
	}
	m, err := modeFlag("study defenses", "view", *view)
	if err != nil {
		return err
	}
	specTexts := strings.Split(*defenses, ",")
	for _, s := range specTexts {
		// cbr:peak is only known once the captures are read (below).
		sp, err := defense.ParseSpec(strings.ReplaceAll(s, "cbr:peak", "cbr:1"))
		if err != nil {
			return cli.Usagef("study defenses: --defenses: %v", err)
		}
		if sp.Mimic != "" && *dir == "" && *mimicDir == "" {
			return cli.Usagef("study defenses: %s needs --mimic-dir DIR with captures of %s in DIR/%s", sp, sp.Mimic, sp.Mimic)
		}
		if sp.VPNPad && m != gateway.VPN {
			return cli.Usagef("study defenses: %s needs --view vpn", sp)
		}
	}
	trees := af.trees
	if *trees == 0 {
		*trees = forest.DefaultConfig().Trees
	}
	if *folds < 2 || *win < 1 || *trees < 1 || *maxFiles < 0 || *maxWindows < 0 {
		return cli.Usagef("study defenses: want --folds 2 or more, --window and --trees 1 or more, --max-files and --max-windows 0 or more")
	}
	cfg := defensestudy.Config{Dir: *dir, MaxFiles: *maxFiles, Gateway: gateway.Config{Mode: m},
		Folds: *folds, Window: *win, Seed: *seed, Forest: forest.DefaultConfig(), MimicDir: *mimicDir, MaxWindows: *maxWindows, Log: log}
	cfg.Forest.Trees = *trees
	for _, a := range strings.Split(*attacks, ",") {
		a = strings.TrimSpace(a)
		if a == "rf" {
			cfg.Attacks = append(cfg.Attacks, defensestudy.ForestAttack{Config: cfg.Forest})
			continue
		}
		at, err := af.build(log, a)
		if err != nil {
			return err
		}
		cfg.Attacks = append(cfg.Attacks, at)
	}
	if *devices != "" {
		cfg.Devices = strings.Split(*devices, ",")
	}
	if *genSessions > 0 {
		h, cleanup, err := generateHome("study defenses", *seed, *genSessions, *genMinutes)
		if err != nil {
			return err
		}
		defer cleanup()
		if cfg.Homes, err = defensestudy.GeneratedHome(h); err != nil {
			return err
		}
		cfg.Actions = defensestudy.Switchings(h)
		log.Info("generated home", "devices", len(cfg.Homes), "sessions", *genSessions, "seed", *seed)
	}
	if cfg.Defenses, cfg.Span, err = studySpecs(ctx, log, cfg, specTexts, *spanFlag); err != nil {
		return err
	}
	rows, err := defensestudy.Run(ctx, cfg)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(map[string]any{"rows": rows}, "", "  ")
	if err != nil {
		return fmt.Errorf("study defenses: %w", err)
	}
	if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("study defenses: write --json: %w", err)
	}
	if *report != "" {
		page, err := defensestudy.HTML(rows)
		if err != nil {
			return err
		}
		if err := os.WriteFile(*report, page, 0o644); err != nil {
			return fmt.Errorf("study defenses: write --report: %w", err)
		}
	}
	fmt.Fprintf(out, "%-24s %-6s %8s %8s %8s %7s %8s %10s %10s %9s %10s %10s\n", "defense", "attack", "session", "type", "packet", "det F1", "activity", "bytes +%", "packets +%", "KB/s", "lat mean", "lat p99")
	for _, r := range rows {
		act := "-"
		if r.ActivityF1 != nil {
			act = fmt.Sprintf("%.3f", *r.ActivityF1)
		}
		fmt.Fprintf(out, "%-24s %-6s %7.1f%% %7.1f%% %7.1f%% %7.3f %8s %10.1f %10.1f %9.3f %8.1fms %8.1fms\n", r.Defense, r.Attack,
			100*r.SessionAccuracy, 100*r.TypeAccuracy, 100*r.PerPacketAccuracy, r.DetectionF1, act, 100*r.ByteOverhead, 100*r.PacketOverhead, r.KBps, r.LatencyMsMean, r.LatencyMsP99)
	}
	fmt.Fprintf(out, "wrote %s (%d sessions per row, %s view)\n", *jsonOut, rows[0].Sessions, m)
	return nil
}

// studySpecs parses the defences, cbr:peak replaced by a rate that gives
// each direction one packet/s more than the busiest second either way of
// the studied captures' WAN views, and --span: longest is the longest of
// those views.
func studySpecs(ctx context.Context, log *slog.Logger, cfg defensestudy.Config, texts []string, spanFlag string) ([]defense.Spec, time.Duration, error) {
	var span time.Duration
	switch spanFlag {
	case "longest", "capture":
	default:
		d, err := time.ParseDuration(spanFlag)
		if err != nil || d <= 0 {
			return nil, 0, cli.Usagef("study defenses: --span %q: want longest, capture or a positive duration such as 10m", spanFlag)
		}
		span = d
	}
	var tr *defensestudy.Traffic
	survey := func() (*defensestudy.Traffic, error) {
		if tr == nil {
			t, err := defensestudy.Survey(ctx, cfg)
			if err != nil {
				return nil, fmt.Errorf("study defenses: read the captures' WAN views: %w", err)
			}
			tr = &t
		}
		return tr, nil
	}
	var specs []defense.Spec
	rate := 0
	for _, t := range texts {
		if strings.Contains(t, "cbr:peak") {
			if rate == 0 {
				tr, err := survey()
				if err != nil {
					return nil, 0, err
				}
				rate = 2 * (tr.Peak + 1)
				log.Info("cbr:peak", "peak_packets_per_s_one_way", tr.Peak, "capture", tr.PeakIn, "rate", rate)
			}
			t = strings.ReplaceAll(t, "cbr:peak", "cbr:"+strconv.Itoa(rate))
		}
		sp, err := defense.ParseSpec(t)
		if err != nil {
			return nil, 0, cli.Usagef("study defenses: --defenses: %v", err)
		}
		specs = append(specs, sp)
	}
	if spanFlag == "longest" {
		tr, err := survey()
		if err != nil {
			return nil, 0, err
		}
		span = tr.Longest
		log.Info("every capture defended as long as the longest", "span", span.Round(time.Millisecond).String(), "capture", tr.LongestIn)
	}
	return specs, span, nil
}

// reportFromFiles draws the rows of earlier studies' --json files as one
// report, so that runs split by view or defence read as one study.
func reportFromFiles(files, report string) error {
	if report == "" {
		return cli.Usagef("study defenses: --report-from needs --report OUT.html")
	}
	var rows []defensestudy.Row
	for _, f := range strings.Split(files, ",") {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("study defenses: --report-from: %w", err)
		}
		var got struct {
			Rows []defensestudy.Row `json:"rows"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			return fmt.Errorf("study defenses: --report-from %s: not the rows of a study (%v): give files its --json wrote", f, err)
		}
		if len(got.Rows) == 0 {
			return fmt.Errorf("study defenses: --report-from %s: no rows: give files its --json wrote", f)
		}
		rows = append(rows, got.Rows...)
	}
	page, err := defensestudy.HTML(rows)
	if err != nil {
		return err
	}
	if err := os.WriteFile(report, page, 0o644); err != nil {
		return fmt.Errorf("study defenses: write --report: %w", err)
	}
	return nil
}

// generateHome generates a home of sessions captures of minutes each into
// a temporary folder, for the commands that study one (--generated-home);
// cleanup removes the folder once its captures are read.
func generateHome(cmd string, seed uint64, sessions, minutes int) (h *homegen.Home, cleanup func(), err error) {
	tmp, err := os.MkdirTemp("", "homemole-generated-home-")
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", cmd, err)
	}
	h, err = homegen.Generate(homegen.Config{Seed: seed, Sessions: sessions, SessionDuration: time.Duration(minutes) * time.Minute}, tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, nil, fmt.Errorf("%s: generate the home: %w", cmd, err)
	}
	return h, func() { os.RemoveAll(tmp) }, nil
}
