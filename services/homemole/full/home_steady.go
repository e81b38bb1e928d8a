package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/heartbeat"
	"github.com/homemole/homemole/pipeline/homecount"
	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/services/internal/cli"
)

func runHomeSteady(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("home steady", "--from-dir DIR [--device TYPE] [--units 1-10] [--homes K] [--view napt|lan] [--held-out]",
		"Counts real units by their steady cloud connections. First, from each device's own\n"+
			"captures (the device alone, by its MAC), it decides which types the rule counts: a\n"+
			"steady connection is one connection (transport, server and port, device port) with at\n"+
			"least 3 outbound packets over at least 10 s; a type is eligible when 90 % of its\n"+
			"captures show exactly one, all of one service (transport and server port), and every\n"+
			"other type that shows one of that service in more than 10 % of its captures is\n"+
			"eligible by it too (they form a family, counted together). Then, per n, --homes homes\n"+
			"are assembled (as home assemble does) with n units of each eligible type (or --device)\n"+
			"from distinct captures of --sessions and --others other devices, seen beyond the\n"+
			"emulated --view gateway or on the LAN; the count is the steady connections of the\n"+
			"type's service in the home (each unit's connection is a flow of its own beyond a NAPT:\n"+
			"its own external port). The counter fits nothing to any capture; the service is all it\n"+
			"takes from the type. The error is |count - units| / units, units being the family's\n"+
			"units in the home (n, and any drawn among the others). --held-out decides each\n"+
			"home's eligibility and service again from every capture but those the home drew on;\n"+
			"a home that leaves too few of the type's captures to name it is not counted (shown\n"+
			"as u: homes unnamed), and the error is over the homes named.")
	hm := homeMeasureFlags(fs, "1-10", 10, realhome.AllSessions, "lan or napt")
	device := fs.String("device", "", "count only this type (default: every eligible type)")
	heldOut := fs.Bool("held-out", false, "name the type per home from the captures the home did not draw on")
	if err := parseRequired(fs, args, "home steady needs --from-dir DIR", hm.dir); err != nil {
		return err
	}
	units, split, mode, err := hm.check("home steady")
	if err != nil {
		return err
	}
	if mode == gateway.VPN {
		return cli.Usagef("home steady: --view vpn: a tunnel carries every connection inside one, so there are none to count; home count measures the heartbeat and sequence-profile counters there")
	}
	devs, err := realhome.LoadDevices(*hm.dir)
	if err != nil {
		return fmt.Errorf("home steady: --from-dir: %w", err)
	}
	cs, err := homecount.ReadCaptureServices(ctx, devs, heartbeat.DefaultSteady())
	if err != nil {
		return fmt.Errorf("home steady: %w", err)
	}
	types := cs.Eligibility(nil)
	var named *homecount.CaptureServices
	if *heldOut {
		named = cs
	}
	var counted []heartbeat.TypeService
	found := *device == ""
	fmt.Fprintf(out, "%-20s %-9s %s\n", "type", "eligible", "steady connections in its own captures")
	for _, ts := range types {
		if ts.Device == *device {
			found = true
		}
		if !ts.Eligible {
			fmt.Fprintf(out, "%-20s %-9s %s\n", ts.Device, "no", ts.Why)
			continue
		}
		fmt.Fprintf(out, "%-20s %-9s one of %s in %d of %d captures; counted with %s\n", ts.Device, "yes", ts.Service, ts.One, ts.Captures, strings.Join(ts.Family, ", "))
		if *device == "" || ts.Device == *device {
			counted = append(counted, ts)
		}
	}
	if !found {
		return cli.Usagef("home steady: --device %s: no such device folder in %s", *device, *hm.dir)
	}
	if len(counted) == 0 {
		fmt.Fprintf(out, "no eligible type to count\n")
		return nil
	}
	tmp, err := os.MkdirTemp("", "homemole-steady-")
	if err != nil {
		return fmt.Errorf("home steady: %w", err)
	}
	defer os.RemoveAll(tmp)
	naming := "the type named from all its captures"
	width := 7
	if *heldOut {
		naming, width = "the type named per home from the captures it did not draw on (u: homes unnamed)", 11
	}
	fmt.Fprintf(out, "\nmean count error, %s, %d homes per n of %s with %d other devices, units from %s captures, %s:\n", *hm.view, *hm.homes, *hm.duration, *hm.others, split, naming)
	head := fmt.Sprintf("%-20s", "type")
	for _, n := range units {
		head += fmt.Sprintf(" %*s", width, fmt.Sprintf("n=%d", n))
	}
	fmt.Fprintf(out, "%s %7s %s\n", head, "worst", "exact")
	for _, ts := range counted {
		var us []int
		for _, n := range units {
			if n <= ts.Captures {
				us = append(us, n)
			}
		}
		pts, err := homecount.Run(ctx, devs, nil, nil, homecount.Config{Device: ts.Device, Units: us, Homes: *hm.homes, Others: *hm.others,
			Duration: *hm.duration, Sessions: split, View: mode, Seed: *hm.seed, Dir: tmp, Steady: &ts, HeldOut: named})
		if err != nil {
			return fmt.Errorf("home steady: %w", err)
		}
		row := fmt.Sprintf("%-20s", ts.Device)
		worst, exact, judged := 0.0, 0, 0
		for _, n := range units {
			cell := "-"
			for _, p := range pts {
				if p.N != n {
					continue
				}
				var est, want []int
				for i, st := range p.Steady {
					if st >= 0 {
						est, want = append(est, st), append(want, p.Truth()[i])
					}
				}
				if len(est) > 0 {
					e, x := homecount.Err(est, want)
					cell = fmt.Sprintf("%.1f%%", 100*e)
					worst = max(worst, e)
					exact += x
					judged += len(est)
				}
				if p.Unnamed > 0 {
					cell += fmt.Sprintf(" %du", p.Unnamed)
				}
			}
			row += fmt.Sprintf(" %*s", width, cell)
		}
		fmt.Fprintf(out, "%s %7s %d/%d\n", row, fmt.Sprintf("%.1f%%", 100*worst), exact, judged)
	}
	log.Debug("home steady done", "types", len(counted))
	return nil
}

// identicalPairs are IoT Sentinel's four pairs of one model in two folders.
var identicalPairs = [][2]string{{"EdimaxCam1", "EdimaxCam2"}, {"EdnetCam1", "EdnetCam2"}, {"WeMoInsightSwitch", "WeMoInsightSwitch2"}, {"WeMoSwitch", "WeMoSwitch2"}}

func runHomePairs(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("home pairs", "--from-dir DIR [--pair A,B] [--homes K] [--window D] [--step D]",
		"Counts identical pairs on the LAN: per pair (default IoT Sentinel's four: EdimaxCam1/2,\n"+
			"EdnetCam1/2, WeMoInsightSwitch/2, WeMoSwitch/2), --homes homes with one unit of each\n"+
			"folder and --others other devices, each --duration long. The model's signature is\n"+
			"learned per home from the captures the home did not draw on: the (transport, port,\n"+
			"IP length) keys at least two of the pair's captures show and no capture of another\n"+
			"type shows. In every --window (every --step) where both units send a frame, the count\n"+
			"is the LAN hosts (but the gateway) that send anything there and a signature packet\n"+
			"somewhere in the capture; live, one sent before the window's end. Right is a count of 2.")
	dir := fs.String("from-dir", "", "folder of device folders with captures and _iotdevice-mac.txt")
	pair := fs.String("pair", "", "one pair A,B (default: the four identical pairs)")
	homes := fs.Int("homes", 20, "homes per pair")
	others := fs.Int("others", 3, "other device types in each home")
	duration := fs.Duration("duration", 100*time.Second, "each home's length")
	window := fs.Duration("window", 20*time.Second, "window length")
	step := fs.Duration("step", 10*time.Second, "window step")
	seed := fs.Uint64("seed", 1, "seed of the homes")
	if err := parseRequired(fs, args, "home pairs needs --from-dir DIR", dir); err != nil {
		return err
	}
	if *homes < 1 || *others < 0 || *duration <= 0 || *window <= 0 || *step <= 0 || *window > *duration {
		return cli.Usagef("home pairs: --homes from 1, --others from 0, positive --duration, --window and --step, the window within the duration")
	}
	pairs := identicalPairs
	if *pair != "" {
		a, b, ok := strings.Cut(*pair, ",")
		if !ok || a == "" || b == "" {
			return cli.Usagef("home pairs: --pair %q: want two device folders A,B", *pair)
		}
		pairs = [][2]string{{a, b}}
	}
	devs, err := realhome.LoadDevices(*dir)
	if err != nil {
		return fmt.Errorf("home pairs: --from-dir: %w", err)
	}
	for _, p := range pairs {
		for _, name := range p {
			if !slices.ContainsFunc(devs, func(d realhome.Device) bool { return d.Name == name }) {
				return cli.Usagef("home pairs: --pair: no device folder %s in %s", name, *dir)
			}
		}
	}
	tmp, err := os.MkdirTemp("", "homemole-pairs-")
	if err != nil {
		return fmt.Errorf("home pairs: %w", err)
	}
	defer os.RemoveAll(tmp)
	fmt.Fprintf(out, "%-38s %-24s %-18s %s\n", "pair (LAN)", "windows both active", "counted 2", "counted 2 live")
	for _, p := range pairs {
		res, err := homecount.RunPair(ctx, devs, homecount.PairConfig{A: p[0], B: p[1], Homes: *homes, Others: *others, Duration: *duration,
			Window: *window, Step: *step, Seed: *seed, Dir: tmp})
		if err != nil {
			return fmt.Errorf("home pairs: %w", err)
		}
		pct := func(k int) string {
			return fmt.Sprintf("%d (%.1f %%)", k, 100*float64(k)/float64(max(res.Windows, 1)))
		}
		fmt.Fprintf(out, "%-38s %-24d %-18s %s\n", p[0]+"/"+p[1], res.Windows, pct(res.Right), pct(res.RightLive))
	}
	log.Debug("home pairs done", "pairs", len(pairs))
	return nil
}
