package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/homemole/homemole/internal/atomicfile"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/heartbeat"
	"github.com/homemole/homemole/pipeline/homecount"
	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/services/internal/cli"
)

func runHome(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	return runSubcommand(ctx, log, out, args, map[string]runFunc{
		"assemble": runHomeAssemble,
		"count":    runHomeCount,
		"steady":   runHomeSteady,
		"pairs":    runHomePairs,
		"hosts":    runHomeHosts,
		"nearest":  runHomeNearest,
		"long":     runHomeLong,
		"chains":   runHomeChains,
	}, "home needs a subcommand: assemble --from-dir DIR --devices N --duration D --out home.pcap --truth truth.csv | count --from-dir DIR --device TYPE | steady --from-dir DIR | pairs --from-dir DIR | hosts --from-dir DIR | nearest --from-dir DIR | long --from-dir DIR | chains --from-dir DIR")
}

func runHomeAssemble(ctx context.Context, _ *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("home assemble", "--from-dir DIR --devices N --duration D --out home.pcap --truth truth.csv [--units TYPE=K] [--sessions all|early|late] [--view lan|napt|vpn] [--seed N]",
		"Assembles a home from real per-device captures (a folder laid out like\n"+
			"../shared/data/iot-sentinel-dev: one folder per device, its MAC in _iotdevice-mac.txt).\n"+
			"Each unit is one capture's frames to or from the device's MAC, moved onto a MAC of\n"+
			"its own (the vendor's OUI kept) and a LAN address of its own in 192.168.1.0/24, the\n"+
			"lab router becoming the home gateway 192.168.1.1, and shifted to a random start in\n"+
			"--duration (what runs past the end is cut). Several units of one type (--units)\n"+
			"come from distinct captures. --sessions late draws only on the later half of each\n"+
			"device's captures by sequence number (Setup-X-N-STA: N), the half held out from a\n"+
			"model trained on --sessions early. --view napt or vpn writes what the emulated\n"+
			"gateway's WAN observer captures instead of the LAN. The truth file has one row\n"+
			"index,lan_index,unit,device,mac per packet of --out. The same seed gives the same bytes.")
	dir := fs.String("from-dir", "", "folder of device folders with captures and _iotdevice-mac.txt")
	devices := fs.Int("devices", 0, "device folders (types) in the home, those of --units included (default: the --units types)")
	duration := fs.Duration("duration", 10*time.Minute, "the home's length")
	outPath := fs.String("out", "", "capture to write (pcap, Ethernet)")
	truthPath := fs.String("truth", "", "truth CSV to write")
	sessions := fs.String("sessions", string(realhome.AllSessions), "captures to draw on: all, early (earlier half by sequence number) or late (later half, held out)")
	view := fs.String("view", "lan", "lan, or napt or vpn: the WAN capture of the emulated gateway")
	cipher := fs.String("cipher", string(gateway.AES256GCM), "vpn: the data channel cipher (aes-256-gcm, aes-256-cbc, wireguard)")
	seed := fs.Uint64("seed", 1, "seed of every random choice (devices, captures, start times, MACs, the gateway's)")
	ipv6 := fs.Bool("ipv6", false, "an IPv6-only home: every TCP and UDP segment and ping over IPv6 (hosts in 2001:db8:1:1::/64, each server in a /64 of its own); ARP, DHCP, IGMP and other ICMP left out")
	slaac := fs.Bool("slaac", false, "with --ipv6: each host's address formed from its MAC (SLAAC with modified EUI-64 identifiers, as many embedded stacks do) instead of ::N, its IPv4 address's last byte")
	idOffsets := fs.Bool("id-offsets", false, "shift each unit's IPv4 IDs by a random offset of its own, as a device's counter stands after hours up (a setup capture starts at boot)")
	relay := fs.Bool("relay", false, "every unit behind one Wi-Fi repeater that translates MACs (MAC-NAT): the LAN sees all their frames from its MAC")
	noDHCP := fs.Bool("no-dhcp", false, "every unit's DHCP left out, as a tap started on a home whose devices joined hours before sees none until their leases renew")
	units := map[string]int{}
	fs.Func("units", "TYPE=K: K units of the device folder TYPE, each from a capture of its own; repeat or separate with commas", func(s string) error {
		for _, part := range strings.Split(s, ",") {
			name, k, ok := strings.Cut(strings.TrimSpace(part), "=")
			n, err := strconv.Atoi(k)
			if !ok || name == "" || err != nil || n < 1 {
				return fmt.Errorf("%q: want TYPE=K with K a count from 1, such as EdimaxCam1=3", part)
			}
			units[name] = n
		}
		return nil
	})
	if err := parseRequired(fs, args, "home assemble needs --from-dir DIR, --out home.pcap and --truth truth.csv", dir, outPath, truthPath); err != nil {
		return err
	}
	if *slaac && !*ipv6 {
		return fmt.Errorf("home assemble: --slaac forms IPv6 addresses, and needs --ipv6")
	}
	if *devices == 0 && len(units) == 0 {
		return cli.Usagef("home assemble: give --devices N, --units TYPE=K, or both")
	}
	if *devices < 0 {
		return cli.Usagef("home assemble: --devices %d: want a count", *devices)
	}
	if *duration <= 0 {
		return cli.Usagef("home assemble: --duration %s: want a positive length such as 10m", *duration)
	}
	split, err := realhome.ParseSplit(*sessions)
	if err != nil {
		return cli.Usagef("home assemble: --sessions: %v", err)
	}
	mode, err := viewFlag("home assemble", *view)
	if err != nil {
		return err
	}
	c, err := cipherFlag("home assemble", *cipher, false)
	if err != nil {
		return err
	}
	if filepath.Clean(*outPath) == filepath.Clean(*truthPath) {
		return cli.Usagef("home assemble: --out and --truth are the same file")
	}
	devs, err := realhome.LoadDevices(*dir)
	if err != nil {
		return fmt.Errorf("home assemble: --from-dir: %w", err)
	}
	var inputs []string
	for _, d := range devs {
		inputs = append(inputs, d.Files...)
	}
	// Both outputs are created before the home is assembled and named
	// only once both are whole: a missing folder or an error part-way leaves
	// neither behind.
	capFile, err := createOutput("home assemble", "out", *outPath, inputs...)
	if err != nil {
		return err
	}
	defer capFile.Abort()
	truthFile, err := createOutput("home assemble", "truth", *truthPath, inputs...)
	if err != nil {
		return err
	}
	defer truthFile.Abort()
	h, err := realhome.Assemble(ctx, devs, realhome.Config{Devices: *devices, Units: units, Duration: *duration, Sessions: split, Seed: *seed, IPv6: *ipv6, SLAAC: *slaac, IDOffsets: *idOffsets, Relay: *relay, NoDHCP: *noDHCP})
	if err != nil {
		return fmt.Errorf("home assemble: %w", err)
	}
	var lan []int64
	var st gateway.Stats
	if mode == "" {
		err = h.WritePcap(capFile)
	} else {
		lan, st, err = h.View(ctx, gateway.Config{Mode: mode, Cipher: c, Seed: *seed}, capFile)
	}
	if err != nil {
		return fmt.Errorf("home assemble: %s: %w", *outPath, err)
	}
	if err := h.WriteTruth(truthFile, lan); err != nil {
		return fmt.Errorf("home assemble: %s: %w", *truthPath, err)
	}
	if err := atomicfile.Commit(capFile, truthFile); err != nil {
		return fmt.Errorf("home assemble: %w", err)
	}
	fmt.Fprintf(out, "home assemble: %d units of %d devices over %s, %d LAN packets (%d past the end cut); gateway %s %s on %s\n",
		len(h.Units), countDevices(h.Units), *duration, len(h.Packets), h.Cut, h.GatewayIP, h.GatewayMAC, h.LAN)
	if h.IPv6 {
		fmt.Fprintf(out, "  IPv6-only: %d frames without an IPv6 twin left out (ARP, DHCP, IGMP, other ICMP)\n", h.Left6)
		if h.SLAAC {
			fmt.Fprintf(out, "  each host at the address SLAAC forms from its MAC (modified EUI-64)\n")
		}
	}
	if !h.Relay.IsZero() {
		fmt.Fprintf(out, "  every unit behind a MAC-NAT repeater: their frames carry %s on the LAN, and their %d EAPOL frames (Wi-Fi handshakes with the repeater) are left out\n", h.Relay, h.LeftEAPOL)
	}
	if h.NoDHCP {
		fmt.Fprintf(out, "  the units joined before the tap started: %d DHCP frames left out\n", h.LeftDHCP)
	}
	for _, u := range h.Units {
		fmt.Fprintf(out, "  %-24s %s %-15s from %s at +%s, %d packets\n", u.Name, u.MAC, u.IP, filepath.Base(u.Session), u.Offset.Round(time.Millisecond), u.Packets)
	}
	if mode != "" {
		fmt.Fprintf(out, "  %s view: %d of the LAN packets crossed the gateway, %d WAN packets\n", mode, st.Crossing, st.WANPackets)
	}
	fmt.Fprintf(out, "  wrote %s and %s\n", *outPath, *truthPath)
	return nil
}

func countDevices(us []realhome.Unit) int {
	seen := map[string]bool{}
	for _, u := range us {
		seen[u.Device] = true
	}
	return len(seen)
}

// parseUnits reads "1-5" or "1,2,4".
func parseUnits(s string) ([]int, error) {
	if a, b, ok := strings.Cut(s, "-"); ok {
		lo, err1 := strconv.Atoi(a)
		hi, err2 := strconv.Atoi(b)
		if err1 != nil || err2 != nil || lo < 1 || hi < lo || hi > 100 {
			return nil, fmt.Errorf("%q: want a range such as 1-5 within 1-100", s)
		}
		var out []int
		for n := lo; n <= hi; n++ {
			out = append(out, n)
		}
		return out, nil
	}
	var out []int
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 || n > 100 {
			return nil, fmt.Errorf("%q: want counts from 1 to 100 such as 1,2,4 or a range 1-5", p)
		}
		out = append(out, n)
	}
	return out, nil
}

// homeMeasure is the flag set home count and home steady share: the n to
// measure, how many homes of what, drawn on which captures, seen how.
type homeMeasure struct {
	dir, units, sessions, view *string
	homes, others              *int
	duration                   *time.Duration
	seed                       *uint64
}

// homeMeasureFlags registers the shared flags with each command's defaults
// and the views it takes.
func homeMeasureFlags(fs *flag.FlagSet, units string, homes int, sessions realhome.Split, views string) *homeMeasure {
	return &homeMeasure{
		dir:      fs.String("from-dir", "", "folder of device folders with captures and _iotdevice-mac.txt"),
		units:    fs.String("units", units, "the n to measure: a range A-B or a list"),
		homes:    fs.Int("homes", homes, "homes per n"),
		others:   fs.Int("others", 3, "other device types in each home"),
		duration: fs.Duration("duration", 100*time.Second, "each home's length"),
		sessions: fs.String("sessions", string(sessions), "captures the homes draw on: all, early or late"),
		view:     fs.String("view", "napt", views),
		seed:     fs.Uint64("seed", 1, "seed of the homes"),
	}
}

// check checks the shared flags once parsed and returns them decoded.
func (m *homeMeasure) check(cmd string) ([]int, realhome.Split, gateway.Mode, error) {
	units, err := parseUnits(*m.units)
	if err != nil {
		return nil, "", "", cli.Usagef("%s: --units: %v", cmd, err)
	}
	if *m.homes < 1 || *m.others < 0 || *m.duration <= 0 {
		return nil, "", "", cli.Usagef("%s: --homes from 1, --others from 0 and a positive --duration", cmd)
	}
	split, err := realhome.ParseSplit(*m.sessions)
	if err != nil {
		return nil, "", "", cli.Usagef("%s: --sessions: %v", cmd, err)
	}
	mode, err := viewFlag(cmd, *m.view)
	if err != nil {
		return nil, "", "", err
	}
	return units, split, mode, nil
}

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
	fs := newFlags("home pairs", "--from-dir DIR [--pair A,B] [--homes K] [--window D] [--step D] [--late D]",
		"Counts identical pairs on the LAN: per pair (default IoT Sentinel's four: EdimaxCam1/2,\n"+
			"EdnetCam1/2, WeMoInsightSwitch/2, WeMoSwitch/2), --homes homes with one unit of each\n"+
			"folder and --others other devices, each --duration long. The model is learned per home\n"+
			"from the captures the home did not draw on: its signature (the (transport, port, IP\n"+
			"length) keys at least two of the pair's captures show and no capture of another type\n"+
			"shows) and every capture's keys. In every --window (every --step) where both units send\n"+
			"a frame, the count is the LAN hosts (but the gateway) that send anything there, a\n"+
			"signature key, and keys nearest one of the pair's captures: over the whole capture;\n"+
			"live, what they sent before the window's end; late, before --late after it. Right is a\n"+
			"count of 2.")
	dir := fs.String("from-dir", "", "folder of device folders with captures and _iotdevice-mac.txt")
	pair := fs.String("pair", "", "one pair A,B (default: the four identical pairs)")
	homes := fs.Int("homes", 20, "homes per pair")
	others := fs.Int("others", 3, "other device types in each home")
	duration := fs.Duration("duration", 100*time.Second, "each home's length")
	window := fs.Duration("window", 20*time.Second, "window length")
	step := fs.Duration("step", 10*time.Second, "window step")
	late := fs.Duration("late", 20*time.Second, "how long after a window ends the late live count is made")
	seed := fs.Uint64("seed", 1, "seed of the homes")
	if err := parseRequired(fs, args, "home pairs needs --from-dir DIR", dir); err != nil {
		return err
	}
	if *homes < 1 || *others < 0 || *duration <= 0 || *window <= 0 || *step <= 0 || *window > *duration || *late < 0 {
		return cli.Usagef("home pairs: --homes from 1, --others from 0, positive --duration, --window and --step, the window within the duration, --late from 0")
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
	hc, err := homecount.NewHostCounter(ctx, devs)
	if err != nil {
		return fmt.Errorf("home pairs: %w", err)
	}
	tmp, err := os.MkdirTemp("", "homemole-pairs-")
	if err != nil {
		return fmt.Errorf("home pairs: %w", err)
	}
	defer os.RemoveAll(tmp)
	fmt.Fprintf(out, "%-38s %-24s %-18s %-18s %-26s %s\n", "pair (LAN)", "windows both active", "counted 2", "counted 2 live", "counted 2 live, "+late.String()+" late", "the detector's counter")
	for _, p := range pairs {
		res, err := hc.RunPair(ctx, homecount.PairConfig{A: p[0], B: p[1], Homes: *homes, Others: *others, Duration: *duration,
			Window: *window, Step: *step, Late: *late, Seed: *seed, Dir: tmp})
		if err != nil {
			return fmt.Errorf("home pairs: %w", err)
		}
		pct := func(k int) string {
			return fmt.Sprintf("%d (%.1f %%)", k, 100*float64(k)/float64(max(res.Windows, 1)))
		}
		detector := fmt.Sprintf("%d of %d (%.1f %%)", res.DetectorRight, res.Detector, 100*float64(res.DetectorRight)/float64(max(res.Detector, 1)))
		fmt.Fprintf(out, "%-38s %-24d %-18s %-18s %-26s %s\n", p[0]+"/"+p[1], res.Windows, pct(res.Right), pct(res.RightLive), pct(res.RightLate), detector)
	}
	log.Debug("home pairs done", "pairs", len(pairs))
	return nil
}

func runHomeHosts(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("home hosts", "--from-dir DIR [--device TYPE] [--units 1-8] [--homes K] [--others K] [--seed S]",
		"Counts real units on the LAN, host by host, for every device type (or --device; the two\n"+
			"folders of an identical pair are one type, and lend it units in turn): per n, --homes\n"+
			"homes with n units of the type from distinct captures and --others other devices, each\n"+
			"--duration long. On a LAN every unit is a host (a MAC) of its own; a host is a unit of\n"+
			"the type when it sends a key of the type's signature (a (transport, port, IP payload length)\n"+
			"key at least two of its captures show and no capture of another type shows) and the\n"+
			"capture whose keys are nearest its own is one of the type's. Both are learned per home\n"+
			"from the captures the home did not draw on, so every n leaves two of the type's\n"+
			"captures out: with 10 a type, n up to 8. A type whose captures those take for\n"+
			"another's (each matched to its nearest other; 5 % of a type's captures) is counted\n"+
			"with that family. The error is |count - units| / units, units being what was counted\n"+
			"in the home: n, and any unit of the family drawn among the others. The live column plays\n"+
			"each home through the detector's counter (hosts count, detector --hosts), the gateway not\n"+
			"named: the share of its 20 s windows whose count was the units that sent in them, each\n"+
			"judged --late after it ends.")
	th := newTypeHomeFlags(fs, 5, "every type")
	ipv6 := fs.Bool("ipv6", false, "IPv6-only homes: every unit's TCP, UDP and pings carried over IPv6 (home assemble --ipv6); the model still learns from the IPv4 captures")
	slaac := fs.Bool("slaac", false, "with --ipv6: each host's IPv6 address formed from its MAC (home assemble --slaac)")
	relay := fs.Bool("relay", false, "every unit of the homes behind one MAC-NAT repeater (home assemble --relay): the counter tells them apart by address")
	noDHCP := fs.Bool("no-dhcp", false, "every unit's DHCP left out (home assemble --no-dhcp): homes whose devices joined before the tap started, so no DHCP name is seen")
	if err := parseRequired(fs, args, "home hosts needs --from-dir DIR", th.dir); err != nil {
		return err
	}
	if *slaac && !*ipv6 {
		return fmt.Errorf("home hosts: --slaac forms IPv6 addresses, and needs --ipv6")
	}
	cfg, units, err := th.check("home hosts")
	if err != nil {
		return err
	}
	cfg.IPv6, cfg.SLAAC, cfg.Relay, cfg.NoDHCP = *ipv6, *slaac, *relay, *noDHCP
	hc, err := loadHostCounter(ctx, "home hosts", *th.dir, false)
	if err != nil {
		return err
	}
	types, err := th.types("home hosts", hc)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "homemole-hosts-")
	if err != nil {
		return fmt.Errorf("home hosts: %w", err)
	}
	defer os.RemoveAll(tmp)
	cfg.Dir = tmp
	fmt.Fprintf(out, "mean count error on the LAN, %d homes per n of %s with %d other devices, every home counted by what the captures it did not draw on teach:\n", cfg.Homes, cfg.Duration, cfg.Others)
	fmt.Fprintf(out, "%s %7s %5s %6s  %s\n", errHead(units), "worst", "exact", "live", "counted as (homes)")
	for _, t := range types {
		cfg.Type, cfg.Units = t, heldOutUnits(hc, t, units)
		pts, err := hc.Run(ctx, cfg)
		if err != nil {
			return fmt.Errorf("home hosts: %w", err)
		}
		windows, right := 0, 0
		cells := map[int]errCell{}
		for _, p := range pts {
			windows += p.Windows
			right += p.LiveRight
			cells[p.N] = errCell{count: p.Count, units: p.Units}
		}
		fmt.Fprintf(out, "%s %6s  %s\n", errRow(t, units, cells), liveCell(windows, right), countedAs(pts))
	}
	log.Debug("home hosts done", "types", len(types))
	return nil
}

// liveCell is the share of windows the live counter got right, or "-".
func liveCell(windows, right int) string {
	if windows == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(right)/float64(windows))
}

// typeHomeFlags are the flags of a command that counts units of each
// type in assembled homes (home hosts, home chains).
type typeHomeFlags struct {
	dir, device, units *string
	homes, others      *int
	duration           *time.Duration
	seed               *uint64
	live               homecount.LiveConfig // its Late is --late
}

func newTypeHomeFlags(fs *flag.FlagSet, homes int, every string) *typeHomeFlags {
	f := &typeHomeFlags{
		dir:      fs.String("from-dir", "", "folder of device folders with captures and _iotdevice-mac.txt"),
		device:   fs.String("device", "", "count only this type, or the type of this folder (default: "+every+")"),
		units:    fs.String("units", "1-8", "the n to measure: a range A-B or a list"),
		homes:    fs.Int("homes", homes, "homes per n"),
		others:   fs.Int("others", 3, "other device types in each home"),
		duration: fs.Duration("duration", 100*time.Second, "each home's length"),
		seed:     fs.Uint64("seed", 1, "seed of the homes"),
		live:     homecount.DefaultLiveConfig(),
	}
	fs.DurationVar(&f.live.Late, "late", f.live.Late, "the live column: how long after each window (20 s every 10 s) ends the detector's counter judges it")
	fs.DurationVar(&f.live.Settle, "settle", f.live.Settle, "the live column: how long a new LAN host is given to show what it is; a window it is active in and not yet named waits for it (0: none waits)")
	return f
}

// check parses --units and checks the counts.
func (f *typeHomeFlags) check(cmd string) (homecount.HostsConfig, []int, error) {
	units, err := parseUnits(*f.units)
	if err != nil {
		return homecount.HostsConfig{}, nil, cli.Usagef("%s: --units: %v", cmd, err)
	}
	if *f.homes < 1 || *f.others < 0 || *f.duration <= 0 || f.live.Late < 0 || f.live.Settle < 0 {
		return homecount.HostsConfig{}, nil, cli.Usagef("%s: --homes from 1, --others from 0, a positive --duration, and --late and --settle from 0", cmd)
	}
	return homecount.HostsConfig{Homes: *f.homes, Others: *f.others, Duration: *f.duration, Seed: *f.seed, Live: f.live}, units, nil
}

// types are the counter's types, or --device's.
func (f *typeHomeFlags) types(cmd string, hc *homecount.HostCounter) ([]string, error) {
	types := hc.Types()
	if *f.device == "" {
		return types, nil
	}
	t := evaluate.TypeOf(*f.device)
	if !slices.Contains(types, t) {
		return nil, cli.Usagef("%s: --device %s: no such device folder or type in %s", cmd, *f.device, *f.dir)
	}
	return []string{t}, nil
}

// heldOutUnits are the n of units that leave two of the type's captures
// out of every home, to learn its signature from.
func heldOutUnits(hc *homecount.HostCounter, typ string, units []int) []int {
	_, captures := hc.Folders(typ)
	var us []int
	for _, n := range units {
		if n+homecount.MinSignatureCaptures <= captures {
			us = append(us, n)
		}
	}
	return us
}

// errCell is one n's homes: the counts, the units, and a note for the cell.
type errCell struct {
	count, units []int
	note         string
}

// errHead is the head of errRow's columns.
func errHead(units []int) string {
	head := fmt.Sprintf("%-20s", "type")
	for _, n := range units {
		head += fmt.Sprintf(" %7s", fmt.Sprintf("n=%d", n))
	}
	return head
}

// errRow is a type's mean count error per n, its worst and its exact
// homes ("-" where an n counted no home).
func errRow(typ string, units []int, cells map[int]errCell) string {
	row := fmt.Sprintf("%-20s", typ)
	worst, exact, judged := 0.0, 0, 0
	for _, n := range units {
		cell := "-"
		if c, ok := cells[n]; ok && len(c.count) > 0 {
			e, x := homecount.Err(c.count, c.units)
			cell = fmt.Sprintf("%.1f%%", 100*e) + c.note
			worst = max(worst, e)
			exact += x
			judged += len(c.count)
		}
		row += fmt.Sprintf(" %7s", cell)
	}
	worstCell := fmt.Sprintf("%.1f%%", 100*worst)
	if judged == 0 {
		// Too few captures to leave two out of any home: nothing measured.
		worstCell = "-"
	}
	return fmt.Sprintf("%s %7s %5s", row, worstCell, fmt.Sprintf("%d/%d", exact, judged))
}

// countedAs says what a type was counted as in the homes of its points: its
// folders' hardware type or a family, with the homes of each.
func countedAs(pts []homecount.HostsPoint) string {
	homes := map[string]int{}
	var names []string
	for _, p := range pts {
		for _, c := range p.Counted {
			name := evaluate.TypeOf(c[0])
			if len(c) > 1 && evaluate.TypeOf(c[0]) != evaluate.TypeOf(c[len(c)-1]) {
				name = evaluate.FamilyName(c) + " (" + strings.Join(c, ", ") + ")"
			}
			if homes[name] == 0 {
				names = append(names, name)
			}
			homes[name]++
		}
	}
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d", n, homes[n]))
	}
	return strings.Join(parts, "; ")
}

func runHomeNearest(ctx context.Context, _ *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("home nearest", "--from-dir DIR",
		"Names every capture by the type of the capture whose keys (transport, port, IP payload length of\n"+
			"what the device sent, by its MAC) are nearest its own, leaving it out: how far the keys\n"+
			"alone tell the types apart (the two folders of an identical pair are one type), and\n"+
			"which types they take for which. Then, for every type left out of what it learns, how\n"+
			"many of its captures the LAN host rule (home hosts) would count as a unit of another\n"+
			"type: a device no type it knows.")
	dir := fs.String("from-dir", "", "folder of device folders with captures and _iotdevice-mac.txt")
	if err := parseRequired(fs, args, "home nearest needs --from-dir DIR", dir); err != nil {
		return err
	}
	hc, err := loadHostCounter(ctx, "home nearest", *dir, false)
	if err != nil {
		return err
	}
	res := hc.Nearest()
	fmt.Fprintf(out, "%d of %d captures named by their nearest capture's type (%.1f %%)\n", res.Right, res.Captures, 100*float64(res.Right)/float64(max(res.Captures, 1)))
	printCounts(out, res.Misses)
	un := hc.Unseen()
	counted, across := un.Totals()
	fmt.Fprintf(out, "%d of %d captures counted as a unit of another type by the host rule, their own type left out of what it learns (%.1f %%; %d as another vendor's; the rest counted as nothing)\n",
		counted, un.Captures, 100*float64(counted)/float64(max(un.Captures, 1)), across)
	printCounts(out, un.Counted)
	return nil
}

func runHomeChains(ctx context.Context, _ *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("home chains", "--from-dir DIR [--device TYPE] [--units 1-8] [--homes K] [--others K] [--seed S]",
		"Counts real units beyond the emulated NAPT by their IP ID sequences: a NAPT rewrites\n"+
			"addresses and ports but keeps the IP ID, and a stack that numbers all it sends from one\n"+
			"counter is one rising sequence of IDs, so the hosts behind one address are told apart\n"+
			"as a LAN tells them apart by MAC. Outbound IPv4 packets are linked into sequences (a\n"+
			"packet continues the one whose last ID is the least below its own, by at most 64, and\n"+
			"at most a minute old; three packets make a host), and each sequence is classified by\n"+
			"the host rule of home hosts, learned from what each capture sends beyond the gateway.\n"+
			"A type is counted only where 90 % of its captures, each alone, form one sequence (a\n"+
			"stack that numbers each connection apart forms many). Per n, --homes homes with n\n"+
			"units of the type from distinct captures and --others other devices; the model and\n"+
			"the type's eligibility are learned per home from the captures it did not draw on, so\n"+
			"every n leaves two of the type's captures out. The error is |count - units| / units.\n"+
			"The live column plays each home's WAN view through the detector's counter (hosts\n"+
			"learn --wan, detector --hosts with --tap wan): the share of its 20 s windows whose count\n"+
			"was the type's units that sent beyond the gateway in them, each judged --late after it ends.")
	th := newTypeHomeFlags(fs, 10, "every type its captures make eligible")
	offsets := fs.Bool("id-offsets", false, "shift each unit's IPv4 IDs by a random offset of its own: a setup capture starts at boot, so every unit's counter starts near the same small number, where a home's devices have been up for hours")
	if err := parseRequired(fs, args, "home chains needs --from-dir DIR", th.dir); err != nil {
		return err
	}
	cfg, units, err := th.check("home chains")
	if err != nil {
		return err
	}
	cfg.IDOffsets = *offsets
	hc, err := loadHostCounter(ctx, "home chains", *th.dir, true)
	if err != nil {
		return err
	}
	types, err := th.types("home chains", hc)
	if err != nil {
		return err
	}
	var counted []string
	fmt.Fprintf(out, "%-20s %-9s %s\n", "type", "eligible", "captures forming one IP ID sequence beyond the gateway")
	for _, t := range types {
		ok, one, captures := hc.ChainEligible(t, nil)
		yes := "no"
		if ok {
			yes = "yes"
			counted = append(counted, t)
		}
		fmt.Fprintf(out, "%-20s %-9s %d of %d\n", t, yes, one, captures)
	}
	if len(counted) == 0 {
		fmt.Fprintf(out, "no eligible type to count\n")
		return nil
	}
	tmp, err := os.MkdirTemp("", "homemole-chains-")
	if err != nil {
		return fmt.Errorf("home chains: %w", err)
	}
	defer os.RemoveAll(tmp)
	cfg.Dir = tmp
	fmt.Fprintf(out, "\nmean count error beyond the NAPT, %d homes per n of %s with %d other devices, every home counted by what the captures it did not draw on teach (u: homes whose other captures do not make the type eligible):\n", cfg.Homes, cfg.Duration, cfg.Others)
	fmt.Fprintf(out, "%s %7s %5s %6s\n", errHead(units), "worst", "exact", "live")
	for _, t := range counted {
		cfg.Type, cfg.Units = t, heldOutUnits(hc, t, units)
		pts, err := hc.RunChains(ctx, cfg)
		if err != nil {
			return fmt.Errorf("home chains: %w", err)
		}
		cells := map[int]errCell{}
		windows, right := 0, 0
		for _, p := range pts {
			c := errCell{count: p.Count, units: p.Units}
			if p.Unnamed > 0 {
				c.note = fmt.Sprintf("u%d", p.Unnamed)
			}
			cells[p.N] = c
			windows += p.Windows
			right += p.LiveRight
		}
		fmt.Fprintf(out, "%s %6s\n", errRow(t, units, cells), liveCell(windows, right))
	}
	return nil
}

func runHomeLong(ctx context.Context, _ *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("home long", "--from-dir DIR [--gap D] [--late D]",
		"Plays every device's later half of captures (by sequence number) one after another\n"+
			"under its one MAC through the detector's LAN host counter (hosts count, detector\n"+
			"--hosts), --gap apart, with the model learned from every other capture: a unit set up\n"+
			"again and again, as near a long session as setup captures come. Each capture is played\n"+
			"whole (the phone, the lab's router: the gateway is not named). Per device: the windows\n"+
			"it sent in, the share of them whose count of its unit was one, and the keys its host\n"+
			"held after each session: a key set grows with every session, as a host's does over\n"+
			"weeks, and a host past the counter's bound is never a unit.")
	dir := fs.String("from-dir", "", "folder of device folders with captures and _iotdevice-mac.txt")
	gap := fs.Duration("gap", time.Minute, "silence between one capture's last frame and the next one's first")
	live := homecount.DefaultLiveConfig()
	fs.DurationVar(&live.Late, "late", live.Late, "how long after each window (20 s every 10 s) ends the counter judges it")
	if err := parseRequired(fs, args, "home long needs --from-dir DIR", dir); err != nil {
		return err
	}
	if *gap < 0 || live.Late < 0 {
		return cli.Usagef("home long: --gap and --late from 0")
	}
	hc, err := loadHostCounter(ctx, "home long", *dir, false)
	if err != nil {
		return err
	}
	rs, err := hc.Long(ctx, live, *gap)
	if err != nil {
		return fmt.Errorf("home long: %w", err)
	}
	fmt.Fprintf(out, "%-20s %-24s %8s %7s %6s  %s\n", "device", "counted as", "sessions", "windows", "right", "keys after each session")
	signed, met, most := 0, 0, 0
	var saturated, unsigned []string
	for _, r := range rs {
		share := 100 * float64(r.Right) / float64(max(r.Windows, 1))
		keys := make([]string, len(r.Keys))
		for i, k := range r.Keys {
			keys[i] = strconv.Itoa(k)
			most = max(most, k)
		}
		note := ""
		if !r.Signed {
			note = " (no signature: never counted)"
			unsigned = append(unsigned, r.Folder)
		} else {
			signed++
			if share >= 90 {
				met++
			}
		}
		if r.Saturated {
			saturated = append(saturated, r.Folder)
		}
		fmt.Fprintf(out, "%-20s %-24s %8d %7d %5.1f%%  %s%s\n", r.Folder, r.Unit, r.Sessions, r.Windows, share, strings.Join(keys, " "), note)
	}
	fmt.Fprintf(out, "%d of %d devices whose unit has a signature counted as one unit in 90 %% of their windows or more; the most keys a host held: %d (bound %d); past the bound: %s; no signature: %s\n",
		met, signed, most, live.MaxHostKeys, listOrNone(saturated), listOrNone(unsigned))
	return nil
}

// listOrNone is the names, or "none".
func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// printCounts prints "from -> to" counts, the largest first.
func printCounts(out io.Writer, counts map[string]int) {
	keys := slices.Collect(maps.Keys(counts))
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(counts[b]-counts[a], strings.Compare(a, b)) })
	for _, k := range keys {
		fmt.Fprintf(out, "  %-45s %d\n", k, counts[k])
	}
}

// loadHostCounter reads every capture's keys of the device folders in dir:
// of all the device sent, or with wan of what crossed the gateway
// (homecount.NewWANHostCounter).
func loadHostCounter(ctx context.Context, cmd, dir string, wan bool) (*homecount.HostCounter, error) {
	devs, err := realhome.LoadDevices(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: --from-dir: %w", cmd, err)
	}
	var hc *homecount.HostCounter
	if wan {
		hc, err = homecount.NewWANHostCounter(ctx, devs, homecount.DefaultChains())
	} else {
		hc, err = homecount.NewHostCounter(ctx, devs)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return hc, nil
}
