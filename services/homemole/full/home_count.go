package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/heartbeat"
	"github.com/homemole/homemole/pipeline/homecount"
	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/services/internal/cli"
)

func runHomeCount(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("home count", "--from-dir DIR --device TYPE [--also TYPE2] [--units 1-5] [--homes K] [--sp-model MODEL]",
		"Measures counting on real units: per n, --homes homes assembled (as home assemble does)\n"+
			"with n units of --device from distinct captures of --sessions and --others other devices,\n"+
			"seen beyond the emulated --view gateway, each counted by the heartbeat estimator (its\n"+
			"heartbeats learned from the device's --learn captures: a keepalive of one transport,\n"+
			"server port and IP length at a steady period, in at least two of them; the count is the\n"+
			"most heartbeat trains alive at once) and, with --sp-model, by that model's sequence-\n"+
			"profile counter; on the LAN by the host counter (as home hosts: a host is a unit when\n"+
			"it sends a key of the unit's signature and its keys are nearest the unit's captures,\n"+
			"learned from every capture the home did not draw on); beyond the NAPT by its IP ID\n"+
			"sequences where its units each number their packets from one counter (as home chains).\n"+
			"Combined: on the LAN the host count; else a type that steady connections count (see\n"+
			"home steady: one steady cloud connection per unit) by them; else by its sequences; any\n"+
			"other, the larger of heartbeat and sequence profiles (heartbeat trains alive at once\n"+
			"are distinct units, a lower bound). --sp-model needs libtorch. --also names the other folder of an identical pair (n\n"+
			"units split over the two; the sequence-profile count is the sum of the two types'). The\n"+
			"error is |estimate - n| / n; the most units active at one time (between their first and\n"+
			"last packet) is shown beside it, as short captures overlap only in part.")
	hm := homeMeasureFlags(fs, "1-5", 5, realhome.LateSessions, "lan, napt or vpn")
	device := fs.String("device", "", "device folder (type) to count")
	also := fs.String("also", "", "the other folder of an identical pair, whose units count as --device's")
	learn := fs.String("learn", string(realhome.EarlySessions), "captures the heartbeats are learned from: all, early or late")
	spModel := fs.String("sp-model", "", "model from `homemole sp train` whose counter to measure beside the heartbeats")
	if err := parseRequired(fs, args, "home count needs --from-dir DIR and --device TYPE", hm.dir, device); err != nil {
		return err
	}
	units, split, mode, err := hm.check("home count")
	if err != nil {
		return err
	}
	learnSplit, err := realhome.ParseSplit(*learn)
	if err != nil {
		return cli.Usagef("home count: --learn: %v", err)
	}
	devs, err := realhome.LoadDevices(*hm.dir)
	if err != nil {
		return fmt.Errorf("home count: --from-dir: %w", err)
	}
	var profiles []heartbeat.Profile
	found := false
	for _, d := range devs {
		if d.Name == *device {
			found = true
			if profiles, err = homecount.LearnEarly(ctx, d, learnSplit); err != nil {
				return fmt.Errorf("home count: %w", err)
			}
		}
	}
	if !found {
		return cli.Usagef("home count: --device %s: no such device folder in %s", *device, *hm.dir)
	}
	var sp homecount.Counter
	if *spModel != "" {
		if !spCounterLinked {
			return torchCommand("home")(ctx, log, out, append([]string{"count"}, args...))
		}
		c, closer, err := loadSPCounter(*spModel)
		if err != nil {
			return err
		}
		defer closer()
		sp = c
	}
	// The unit counters, each where it sees the units: a LAN tap the
	// hosts, beyond a NAPT the IP ID sequences.
	var hosts, chains *homecount.HostCounter
	switch mode {
	case "":
		if hosts, err = homecount.NewHostCounter(ctx, devs); err != nil {
			return fmt.Errorf("home count: %w", err)
		}
	case gateway.NAPT:
		if chains, err = homecount.NewWANHostCounter(ctx, devs, homecount.DefaultChains()); err != nil {
			return fmt.Errorf("home count: %w", err)
		}
	}
	tmp, err := os.MkdirTemp("", "homemole-count-")
	if err != nil {
		return fmt.Errorf("home count: %w", err)
	}
	defer os.RemoveAll(tmp)
	if len(profiles) == 0 {
		fmt.Fprintf(out, "%s: no heartbeat in its %s captures\n", *device, learnSplit)
	}
	for _, p := range profiles {
		fmt.Fprintf(out, "%s heartbeat: %s every %s (%d %s captures)\n", *device, p.Key, p.Period.Round(time.Millisecond), p.Sessions, learnSplit)
	}
	var steady *heartbeat.TypeService
	types, err := homecount.SteadyEligibility(ctx, devs, heartbeat.DefaultSteady())
	if err != nil {
		return fmt.Errorf("home count: %w", err)
	}
	for _, ts := range types {
		if ts.Device == *device && ts.Eligible && *also == "" {
			fmt.Fprintf(out, "%s steady connection: %s (one in %d of %d captures), counted with %s\n", *device, ts.Service, ts.One, ts.Captures, strings.Join(ts.Family, ", "))
			steady = &ts
		}
	}
	pts, err := homecount.Run(ctx, devs, profiles, sp, homecount.Config{Device: *device, Also: *also, Units: units, Homes: *hm.homes,
		Others: *hm.others, Duration: *hm.duration, Sessions: split, View: mode, Seed: *hm.seed, Dir: tmp, Steady: steady,
		Hosts: hosts, Chains: chains})
	fmt.Fprintf(out, "%-3s %-16s %-28s %-28s %-28s %-28s %-28s %s\n", "n", "most at once", "heartbeat: err, exact", "sp counter: err, exact", "steady: err, exact",
		"hosts: err, exact", "ip-id: err, exact", "combined: err, exact")
	names := []string{"heartbeat", "sp", "steady", "hosts", "ip-id", "combined"}
	var sums [6]float64
	var exacts, judged [6]int
	for _, p := range pts {
		row := fmt.Sprintf("%-3d %-16s", p.N, ints(p.Active))
		for i, all := range [][]int{p.HB, p.SP, p.Steady, p.Hosts, p.Chains, p.Combined} {
			// An estimator is judged in the homes it counted (-1: it had
			// nothing to say there; the combined count always has).
			var est, truth []int
			for k, e := range all {
				if e >= 0 {
					est, truth = append(est, e), append(truth, p.Truth()[k])
				}
			}
			if len(est) == 0 {
				row += fmt.Sprintf(" %-28s", "-")
				continue
			}
			e, x := homecount.Err(est, truth)
			sums[i] += e * float64(len(est))
			exacts[i] += x
			judged[i] += len(est)
			row += fmt.Sprintf(" %-28s", fmt.Sprintf("%s %.0f%% %d/%d", ints(all), 100*e, x, len(est)))
		}
		fmt.Fprintln(out, strings.TrimRight(row, " "))
	}
	if judged[5] > 0 {
		fmt.Fprintf(out, "mean count error over %d homes:", judged[5])
		for i, name := range names {
			if judged[i] > 0 {
				fmt.Fprintf(out, " %s %.1f %% (%d exact)", name, 100*sums[i]/float64(judged[i]), exacts[i])
			}
		}
		fmt.Fprintln(out)
	}
	if err != nil {
		return fmt.Errorf("home count: %w", err)
	}
	log.Debug("home count done", "device", *device)
	return nil
}

// ints writes v as "1,2,4".
func ints(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}
