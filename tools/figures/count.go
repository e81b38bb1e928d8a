package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// pairsSeeds are the seeds of the identical-pair homes: seed 1's homes are
// the README's table; the counter was shaped on seeds 1 to 300, and 400
// and 500 are homes it met only once it was fixed.
var pairsSeeds = []int{1, 100, 200, 300, 400, 500}

// pairsNames are the README's names of IoT Sentinel's identical pairs, by
// their first folder.
var pairsNames = []string{"EdimaxCam1", "EdnetCam1", "WeMoInsightSwitch", "WeMoSwitch"}

const pairsCommand = "go run ./services/homemole home pairs --from-dir " + sentinelDir

var pairsShareRe = regexp.MustCompile(`\((\d+(?:\.\d+)?) %\)`)

// pairsRow is one pair's row of home pairs: the share of windows where
// both units are active counted 2 by the whole capture, live, late, and by
// the detector's own counter.
type pairsRow struct{ whole, live, late, detector float64 }

// parsePairs reads home pairs' table by each row's first folder.
func parsePairs(out string) (map[string]pairsRow, error) {
	rows := map[string]pairsRow{}
	for line := range strings.Lines(out) {
		name, _, ok := strings.Cut(strings.TrimSpace(line), "/")
		if !ok || strings.HasPrefix(line, "pair") {
			continue
		}
		m := pairsShareRe.FindAllStringSubmatch(line, -1)
		if len(m) != 4 {
			continue
		}
		var v [4]float64
		for i := range v {
			var err error
			if v[i], err = strconv.ParseFloat(m[i][1], 64); err != nil {
				return nil, fmt.Errorf("home pairs row %q: %w", line, err)
			}
		}
		rows[name] = pairsRow{v[0], v[1], v[2], v[3]}
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("no pair rows in home pairs' output:\n%s", tail(out))
	}
	return rows, nil
}

// pairsRunners are the identical pairs counted on the LAN (README
// "Identical pairs on the LAN"): seed 1's three columns, and the least of
// the other seeds' by the whole capture and late.
func pairsRunners(r *reruns) []runner {
	bySeed := func(ctx context.Context, seed int) (map[string]pairsRow, error) {
		return homeTable(ctx, r, "pairs", parsePairs, "--seed", strconv.Itoa(seed))
	}
	row := func(ctx context.Context, seed int, name string) (pairsRow, error) {
		rows, err := bySeed(ctx, seed)
		if err != nil {
			return pairsRow{}, err
		}
		p, ok := rows[name]
		if !ok {
			return p, fmt.Errorf("home pairs --seed %d printed no row for %s", seed, name)
		}
		return p, nil
	}
	pct := func(v float64) string { return fmt.Sprintf("%.1f %%", v) }
	var rs []runner
	for _, name := range pairsNames {
		for col, f := range map[string]func(pairsRow) float64{
			"":          func(p pairsRow) float64 { return p.whole },
			".live":     func(p pairsRow) float64 { return p.live },
			".late":     func(p pairsRow) float64 { return p.late },
			".detector": func(p pairsRow) float64 { return p.detector },
		} {
			rs = append(rs, runner{key: "count.pairs." + name + col, command: pairsCommand, measure: func(ctx context.Context) (string, error) {
				p, err := row(ctx, 1, name)
				if err != nil {
					return "", err
				}
				return pct(f(p)), nil
			}})
		}
		for col, f := range map[string]func(pairsRow) float64{
			"":          func(p pairsRow) float64 { return p.whole },
			".late":     func(p pairsRow) float64 { return p.late },
			".detector": func(p pairsRow) float64 { return p.detector },
		} {
			rs = append(rs, runner{key: "count.pairs.seeds." + name + col, command: pairsCommand + " --seed S (S = 100 to 500 by 100; the least)",
				measure: func(ctx context.Context) (string, error) {
					least := 100.0
					for _, seed := range pairsSeeds[1:] {
						p, err := row(ctx, seed, name)
						if err != nil {
							return "", err
						}
						least = min(least, f(p))
					}
					return pct(least), nil
				}})
		}
	}
	return rs
}

const hostsCommand = "go run ./services/homemole home hosts --from-dir " + sentinelDir

// hostsRow is one type's row of home hosts: its worst mean error over n,
// and whether every home counted it exactly.
type hostsRow struct {
	typ   string
	worst float64
	exact bool
	// live is the share of windows the live counter got right, in %.
	live float64
}

// parseHosts reads home hosts' table: per type, the worst error (the
// column after the n columns) and the exact homes (judged/homes).
func parseHosts(out string) ([]hostsRow, error) {
	var rows []hostsRow
	cols := -1
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "type" {
			cols = slices.Index(f, "worst")
			continue
		}
		if cols < 0 || len(f) < cols+2 {
			continue
		}
		if f[cols] == "-" {
			continue // a type too few captures measured
		}
		worst, err := strconv.ParseFloat(strings.TrimSuffix(f[cols], "%"), 64)
		if err != nil {
			return nil, fmt.Errorf("home hosts row %q: worst %q: %w", strings.TrimSpace(line), f[cols], err)
		}
		got, all, ok := strings.Cut(f[cols+1], "/")
		if !ok {
			return nil, fmt.Errorf("home hosts row %q: exact %q: want k/n", strings.TrimSpace(line), f[cols+1])
		}
		row := hostsRow{typ: f[0], worst: worst, exact: got == all}
		if len(f) > cols+2 && strings.HasSuffix(f[cols+2], "%") {
			if row.live, err = strconv.ParseFloat(strings.TrimSuffix(f[cols+2], "%"), 64); err != nil {
				return nil, fmt.Errorf("home hosts row %q: live %q: %w", strings.TrimSpace(line), f[cols+2], err)
			}
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("no type rows in home hosts' output:\n%s", tail(out))
	}
	return rows, nil
}

// hostsRunners are the LAN count of every type, host by host (README
// "Every type on the LAN, host by host"), on two seeds' homes and on
// busier homes.
func hostsRunners(r *reruns) []runner {
	var rs []runner
	for _, v := range []struct {
		key  string
		args []string
	}{
		{"count.hosts", nil},
		{"count.hosts.seed100", []string{"--seed", "100"}},
		{"count.hosts.others10", []string{"--others", "10"}},
		{"count.hosts.late60", []string{"--late", "60s"}},
		{"count.hosts.settle0", []string{"--settle", "0s"}},
		{"count.hosts.ipv6", []string{"--ipv6"}},
		{"count.hosts.relay", []string{"--relay"}},
		{"count.hosts.relay6", []string{"--relay", "--ipv6"}},
		{"count.hosts.ipv6.slaac", []string{"--ipv6", "--slaac"}},
		{"count.hosts.relay6.slaac", []string{"--relay", "--ipv6", "--slaac"}},
		{"count.hosts.nodhcp", []string{"--no-dhcp"}},
	} {
		key, command := v.key, strings.Join(append([]string{hostsCommand}, v.args...), " ")
		table := func(ctx context.Context) ([]hostsRow, error) {
			return homeTable(ctx, r, "hosts", parseHosts, v.args...)
		}
		rs = append(rs, metRunners(key, command, table)...)
		rs = append(rs,
			runner{key: key + ".live", command: command, measure: func(ctx context.Context) (string, error) {
				rows, err := table(ctx)
				if err != nil {
					return "", err
				}
				return liveShare(rows), nil
			}})
	}
	rs = append(rs, runner{key: "count.hosts.n10", command: hostsCommand + " --units 1-10", measure: func(ctx context.Context) (string, error) {
		return homeTable(ctx, r, "hosts", parseTenUnits, "--units", "1-10")
	}})
	rs = append(rs, runner{key: "count.hosts.long", command: "go run ./services/homemole home long --from-dir " + sentinelDir, measure: func(ctx context.Context) (string, error) {
		return homeTable(ctx, r, "long", parseLong)
	}})
	return rs
}

var longRe = regexp.MustCompile(`^(\d+) of (\d+) devices whose unit has a signature counted as one unit in 90 % of their windows or more; the most keys a host held: (\d+) \(bound (\d+)\)`)

// parseLong reads home long's last line: the devices counted right in 90 %
// of their windows, and the most keys a host held against the bound.
func parseLong(out string) (string, error) {
	for line := range strings.Lines(out) {
		if m := longRe.FindStringSubmatch(line); m != nil {
			return fmt.Sprintf("%s of %s devices in 90 %% of their windows or more; at most %s keys a host (the bound: %s)", m[1], m[2], m[3], m[4]), nil
		}
	}
	return "", fmt.Errorf("no summary line in home long's output:\n%s", tail(out))
}

// metRunners are a count table's key.met (the types within 10 % at every
// n, and those exact in every home) and key.missed (the others, each with
// its worst n).
func metRunners(key, command string, table func(context.Context) ([]hostsRow, error)) []runner {
	return []runner{
		{key: key + ".met", command: command, measure: func(ctx context.Context) (string, error) {
			rows, err := table(ctx)
			if err != nil {
				return "", err
			}
			met, exact := 0, 0
			for _, row := range rows {
				if row.worst <= 10 {
					met++
				}
				if row.exact {
					exact++
				}
			}
			return fmt.Sprintf("%d of %d types (%d counted exactly in every home)", met, len(rows), exact), nil
		}},
		{key: key + ".missed", command: command, measure: func(ctx context.Context) (string, error) {
			rows, err := table(ctx)
			if err != nil {
				return "", err
			}
			var missed []string
			for _, row := range rows {
				if row.worst > 10 {
					missed = append(missed, fmt.Sprintf("%s %.1f %%", row.typ, row.worst))
				}
			}
			if len(missed) == 0 {
				return "none", nil
			}
			return strings.Join(missed, ", "), nil
		}},
	}
}

// chainsRunners are the count beyond the NAPT by IP ID sequences (README
// "Counting by IP ID beyond the NAPT") of every eligible type: as the
// captures hold the IDs and with each unit's counter at an offset of its
// own, on two seeds' homes and on busier homes, and the live counter's
// share of windows.
func chainsRunners(r *reruns) []runner {
	var rs []runner
	for _, v := range []struct {
		key  string
		args []string
		live bool
	}{
		{"count.chains", nil, true},
		{"count.chains.seed100", []string{"--seed", "100"}, false},
		{"count.chains.others10", []string{"--others", "10"}, false},
		{"count.chains.offsets", []string{"--id-offsets"}, true},
		{"count.chains.offsets.seed100", []string{"--id-offsets", "--seed", "100"}, false},
		{"count.chains.offsets.others10", []string{"--id-offsets", "--others", "10"}, false},
	} {
		command := strings.Join(append([]string{"go run ./services/homemole home chains --from-dir " + sentinelDir}, v.args...), " ")
		table := func(ctx context.Context) ([]hostsRow, error) {
			return homeTable(ctx, r, "chains", parseHosts, v.args...)
		}
		rs = append(rs, metRunners(v.key, command, table)...)
		if v.live {
			rs = append(rs, runner{key: v.key + ".live", command: command, measure: func(ctx context.Context) (string, error) {
				rows, err := table(ctx)
				if err != nil {
					return "", err
				}
				return liveShare(rows), nil
			}})
		}
	}
	return rs
}

// parseTenUnits reads home hosts --units 1-10's table: the types measured
// at n = 10 (those with 12 captures or more: two stay out of every home)
// and their worst error over n = 1..10.
func parseTenUnits(out string) (string, error) {
	ten, worst := -1, -1
	var parts []string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "type" {
			ten, worst = slices.Index(f, "n=10"), slices.Index(f, "worst")
			continue
		}
		if ten < 0 || worst < 0 || len(f) <= worst || f[ten] == "-" {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %s", f[0], strings.Replace(f[worst], "%", " %", 1)))
	}
	if ten < 0 {
		return "", fmt.Errorf("no n=10 column in home hosts' output:\n%s", tail(out))
	}
	if len(parts) == 0 {
		return "none", nil
	}
	return strings.Join(parts, ", "), nil
}

// liveShare says, of the types the whole capture counts within 10 %, how
// many the live counter gets right in 90 % of windows or more, and the
// others' shares.
func liveShare(rows []hostsRow) string {
	met, good := 0, 0
	var below []string
	for _, row := range rows {
		if row.worst > 10 {
			continue
		}
		met++
		if row.live >= 90 {
			good++
		} else {
			below = append(below, fmt.Sprintf("%s %.1f %%", row.typ, row.live))
		}
	}
	s := fmt.Sprintf("%d of those %d types in 90 %% of windows or more", good, met)
	if len(below) > 0 {
		s += "; below: " + strings.Join(below, ", ")
	}
	return s
}

// homeTable runs homemole home SUB on the IoT Sentinel captures with args,
// once per figures run, and parses its table.
func homeTable[T any](ctx context.Context, r *reruns, sub string, parse func(string) (T, error), args ...string) (T, error) {
	v, err := r.once(strings.Join(append([]string{"home", sub}, args...), " "), func() (any, error) {
		if err := needSentinel(); err != nil {
			return nil, err
		}
		out, err := r.homemole(ctx, append([]string{"home", sub, "--from-dir", sentinelDir}, args...)...)
		if err != nil {
			return nil, err
		}
		return parse(out)
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return v.(T), nil
}

var (
	nearestRe = regexp.MustCompile(`^(\d+) of (\d+) captures named by their nearest capture's type \((\d+(?:\.\d+)?) %\)`)
	unseenRe  = regexp.MustCompile(`^(\d+) of (\d+) captures counted as a unit of another type .*\((\d+(?:\.\d+)?) %; (\d+) as another vendor's`)
)

// nearestResult is home nearest's account: its first line's share, and
// its misses as printed, one "truth -> named count" each; then the share
// of unseen types' captures counted as another type's units.
type nearestResult struct {
	share  string
	misses []string
	unseen string
}

func parseNearest(out string) (nearestResult, error) {
	var res nearestResult
	for line := range strings.Lines(out) {
		if m := nearestRe.FindStringSubmatch(line); m != nil {
			res.share = fmt.Sprintf("%s of %s captures (%s %%)", m[1], m[2], m[3])
			continue
		}
		if m := unseenRe.FindStringSubmatch(line); m != nil {
			res.unseen = fmt.Sprintf("%s of %s captures (%s %%), %s of them as another vendor's", m[1], m[2], m[3], m[4])
			continue
		}
		if res.share != "" && res.unseen == "" && strings.Contains(line, " -> ") {
			f := strings.Fields(line)
			res.misses = append(res.misses, strings.Join(f[:len(f)-1], " ")+" "+f[len(f)-1])
		}
	}
	if res.share == "" || res.unseen == "" {
		return res, fmt.Errorf("no share of nearest names or of unseen types in home nearest's output:\n%s", tail(out))
	}
	return res, nil
}

// nearestRunners are the nearest-capture names of every capture (README
// "cv --mode time, and vendor families"): how far the keys alone tell the
// IoT Sentinel types apart.
func nearestRunners(r *reruns) []runner {
	const command = "go run ./services/homemole home nearest --from-dir " + sentinelDir
	result := func(ctx context.Context) (nearestResult, error) {
		return homeTable(ctx, r, "nearest", parseNearest)
	}
	return []runner{
		{key: "keys.nearest", command: command, measure: func(ctx context.Context) (string, error) {
			res, err := result(ctx)
			if err != nil {
				return "", err
			}
			return res.share, nil
		}},
		{key: "keys.unseen", command: command, measure: func(ctx context.Context) (string, error) {
			res, err := result(ctx)
			if err != nil {
				return "", err
			}
			return res.unseen, nil
		}},
		{key: "keys.nearest.misses", command: command, measure: func(ctx context.Context) (string, error) {
			res, err := result(ctx)
			if err != nil {
				return "", err
			}
			if len(res.misses) == 0 {
				return "none", nil
			}
			return strings.Join(res.misses, ", "), nil
		}},
	}
}

var combinedRe = regexp.MustCompile(`^mean count error over (\d+) homes:.* combined (\d+(?:\.\d+)?) % \((\d+) exact\)`)

// parseCombined reads home count's summary line: the combined count's mean
// error over its homes.
func parseCombined(out string) (string, error) {
	for line := range strings.Lines(out) {
		if m := combinedRe.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			return fmt.Sprintf("%s %% mean count error over %s homes of n = 1..8 (%s exact)", m[2], m[1], m[3]), nil
		}
	}
	return "", fmt.Errorf("no summary line in home count's output:\n%s", tail(out))
}

// combinedRunners are home count's combined count of a type that only the
// unit counters count (README "How the estimators combine"): Aria beyond
// the NAPT (its IP ID sequences) and on the LAN (its hosts).
func combinedRunners(r *reruns) []runner {
	var rs []runner
	for _, view := range []string{"napt", "lan"} {
		args := []string{"--device", "Aria", "--view", view, "--sessions", "all", "--units", "1-8"}
		rs = append(rs, runner{key: "count.combined.aria." + view, command: "go run ./services/homemole home count --from-dir " + sentinelDir + " " + strings.Join(args, " "),
			measure: func(ctx context.Context) (string, error) { return homeTable(ctx, r, "count", parseCombined, args...) }})
	}
	return rs
}
