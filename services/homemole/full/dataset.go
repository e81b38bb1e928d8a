package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/homemole/homemole/internal/atomicfile"
	"github.com/homemole/homemole/pipeline/build"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
)

func runBuild(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs, ep := newStoreFlags("build", "(--campaign FILE | --from-dir DIR) --dataset NAME [--version V] [--kind ind|noise] [--window N]",
		"Publishes every capture of the campaign's homes, labels the LAN packets from each home's\n"+
			"inventory, cuts traffic windows and writes them with a manifest to S3 under\n"+
			"datasets/NAME/V/. Datasets are immutable: a version is built once.\n\n"+
			"--from-dir takes a folder laid out like the IoT Sentinel captures: one folder per\n"+
			"device holding its captures and its MAC in _iotdevice-mac.txt; each folder becomes a\n"+
			"home, and the rest of its traffic is background.")
	file := fs.String("campaign", "", "campaign file (YAML): homes, taps, inventories")
	dir := fs.String("from-dir", "", "folder of device folders (IoT Sentinel layout) instead of a campaign file")
	view := viewFlags(fs)
	vpnProtoFlag(fs, view)
	home := homeFlags(fs, "gateway-mac")
	spec := window.Spec{}
	spec.RegisterFlags(fs)
	legacyName := fs.String("name", "", "deprecated: use --dataset (every command names the dataset --dataset)")
	retention := bus.RetentionFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *legacyName != "" {
		log.Warn("build: --name is deprecated and will go; use --dataset", "dataset", *legacyName)
		if spec.Dataset != "" && spec.Dataset != *legacyName {
			return cli.Usagef("build: --name %q and --dataset %q disagree; give --dataset only", *legacyName, spec.Dataset)
		}
		spec.Dataset = *legacyName
	}
	if (*file == "") == (*dir == "") || spec.Dataset == "" {
		return cli.Usagef("build needs --dataset NAME and one of --campaign FILE or --from-dir DIR")
	}
	if *file != "" && home.Given() {
		return cli.Usagef("build: --gateway-mac and --lan-net describe the homes of --from-dir; a campaign file says each home's gateway itself")
	}
	if view.tcp && (view.mode != gateway.VPN || view.cipher == gateway.WireGuard) {
		return cli.Usagef("build: --vpn-proto tcp needs --view vpn with an OpenVPN cipher (aes-256-gcm or aes-256-cbc)")
	}
	var c *campaign.Campaign
	var err error
	if *file != "" {
		// A one-off build reads what watched folders hold when it starts.
		if c, err = campaign.Load(*file); err == nil {
			err = c.SnapshotWatched()
		}
	} else {
		c, err = campaign.FromDeviceDirs(*dir, spec.Dataset)
		if err == nil {
			err = applyHome(home, c)
		}
	}
	if err != nil {
		return err
	}

	spec.Labels = build.LabelsOf(c)
	spec.Views = []string{view.name}
	if view.mode != "" {
		dir := filepath.Join(ep.Home, "emulated", spec.Dataset, spec.Version)
		if err := build.EmulateWAN(ctx, c, view.mode, gateway.Config{Cipher: view.cipher, VPNTCP: view.tcp}, dir); err != nil {
			return err
		}
		fmt.Fprintf(out, "WAN captures (%s) emulated under %s\n", view.mode, dir)
	}
	if ep.Retention, err = retention(c.Retention); err != nil {
		return cli.Usagef("%v", err)
	}
	env, err := endpoints.Open(ctx, *ep, "homemole-build", log)
	if err != nil {
		return err
	}
	defer env.Close()
	res, err := (&build.Build{Campaign: c, Spec: spec, Bus: env.Bus, Store: env.Store, Log: log}).Run(ctx)
	if err != nil {
		return err
	}
	printBuild(out, res, env)
	return nil
}

// applyHome gives every home of a --from-dir campaign the home side of the
// flags, or, without them, `gateway: auto`: the home side each capture
// shows, as every other command infers it. The agents print what they
// inferred (printBuild).
func applyHome(h *homeChoice, c *campaign.Campaign) error {
	for _, home := range c.Homes {
		home.Gateway = campaign.Gateway{Mode: home.Gateway.Mode, MAC: campaign.GatewayAuto}
		if h.Given() {
			hc := h.Flags()
			home.Gateway.MAC, home.Gateway.LANNets = "", nil
			if !hc.GatewayMAC.IsZero() {
				home.Gateway.MAC = hc.GatewayMAC.String()
			}
			for _, p := range hc.LANNets {
				home.Gateway.LANNets = append(home.Gateway.LANNets, p.String())
			}
		}
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("device folders: %w", err)
	}
	return nil
}

func printBuild(out io.Writer, res *build.Result, env *endpoints.Env) {
	m := res.Manifest
	fmt.Fprintf(out, "\nDataset %s/%s built in %s\n", m.Dataset, m.Version, res.Elapsed.Round(time.Millisecond))
	homes := slices.Sorted(maps.Keys(res.Agents))
	for _, home := range homes {
		st := res.Agents[home]
		fmt.Fprintf(out, "  home %-10s %d captures, %d packets read, %d undecodable, %d unreadable captures", home, st.Files, st.Packets, st.DecodeErrors, st.ReadErrors)
		if st.NotPackets > 0 {
			fmt.Fprintf(out, ", %d frames of the link's own (%s)", st.NotPackets, features.NotPacketKinds)
		}
		if st.OtherViews > 0 {
			fmt.Fprintf(out, ", %d frames left out (%s)", st.OtherViews, capture.OtherViewKinds)
		}
		fmt.Fprintln(out)
		printHomeSides(out, st.HomeSides)
	}
	fmt.Fprintf(out, "  %d windows of %d packets (%s) from %d sessions; of %d packets, %d belong to no inventory device",
		m.Windows, m.WindowSize, m.Kind, len(m.Groups), m.Packets, m.UnlabeledPackets)
	if m.BackgroundPackets > 0 {
		fmt.Fprintf(out, " and %d to non-IoT background left out of %s windows", m.BackgroundPackets, m.Kind)
	}
	fmt.Fprintln(out)
	for _, l := range m.Labels {
		if n := m.WindowsPerDevice[l]; n > 0 {
			fmt.Fprintf(out, "    %-22s %6d windows\n", l, n)
		}
	}
	fmt.Fprintf(out, "  manifest: %s\n", env.Store.Location(dataset.Key(m.Dataset, m.Version)))
}

// printHomeSides tells the home sides a home's agent inferred, each with
// the number of captures it was inferred for, commonest first, so that a
// user sees what decided direction and can correct it with --gateway-mac
// and --lan-net.
func printHomeSides(out io.Writer, sides []string) {
	count := map[string]int{}
	for _, s := range sides {
		count[s]++
	}
	keys := slices.SortedFunc(maps.Keys(count), func(a, b string) int {
		if c := cmp.Compare(count[b], count[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	for _, k := range keys {
		fmt.Fprintf(out, "    home side inferred for %d of %d captures: %s\n", count[k], len(sides), k)
	}
}

// vantage is the point of view a dataset is built for: lan, or the napt or vpn
// view the gateway emulator makes, with the VPN cipher it uses.
type vantage struct {
	name   string
	mode   gateway.Mode // "" for lan
	cipher gateway.Cipher
	// tcp runs the emulated OpenVPN tunnel over TCP (build --vpn-proto).
	tcp bool
}

// viewFlags adds --view and --cipher, checked as they are parsed.
func viewFlags(fs *flag.FlagSet) *vantage {
	v := &vantage{name: "lan", cipher: gateway.AES256GCM}
	fs.Func("view", "lan (what the home network sees), or napt or vpn: what an observer beyond the gateway sees; homes without a wan tap get one from the gateway emulator (default lan)", func(s string) error {
		if s == "lan" {
			v.name, v.mode = s, ""
			return nil
		}
		m, err := gateway.ParseMode(s)
		if err != nil {
			return fmt.Errorf("%v (or lan)", err)
		}
		v.name, v.mode = s, m
		return nil
	})
	fs.Func("cipher", "VPN data channel the emulator uses for --view vpn: aes-256-gcm, aes-256-cbc or wireguard (default aes-256-gcm)", func(s string) error {
		c, err := gateway.ParseCipher(s)
		v.cipher = c
		return err
	})
	return v
}

// vpnProtoFlag adds --vpn-proto to a command whose emulated tunnel may run
// over TCP.
func vpnProtoFlag(fs *flag.FlagSet, v *vantage) {
	fs.Func("vpn-proto", "the emulated OpenVPN tunnel's transport for --view vpn: udp or tcp (records framed by their length in one TCP stream, which capture agents cut into records for the labeler) (default udp)", func(s string) error {
		switch s {
		case "udp", "tcp":
			v.tcp = s == "tcp"
			return nil
		}
		return fmt.Errorf("%q: want udp or tcp", s)
	})
}

func runDataset(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	subs := sharedSubcommands(runDatasetStore, "ls", "inspect", "verify", "assemble")
	subs["build"], subs["export"], subs["to-pcap"] = runBuild, runDatasetExport, runDatasetToPcap
	return runSubcommand(ctx, log, out, args, subs,
		"dataset needs a subcommand: build ... | ls | inspect, verify or assemble --dataset NAME --version V | export or to-pcap --dataset NAME --out FILE ...")
}

// runDatasetStore is dataset ls, inspect, verify and assemble: they read
// the store alone, with one flag set.
func runDatasetStore(ctx context.Context, log *slog.Logger, out io.Writer, sub string, args []string) error {
	fs, ep := newStoreFlags("dataset "+sub, "[--dataset NAME --version V]",
		"ls lists the dataset versions in the store; inspect shows windows per device and\n"+
			"view and the label mix; verify re-reads every object of a\n"+
			"version and checks its size, SHA-256 and window count against the manifest;\n"+
			"assemble writes the manifest of a version that separate windower workers built.")
	name := fs.String("dataset", "", "dataset name (verify)")
	version := fs.String("version", "v1", "dataset version (verify)")
	if err := parse(fs, args); err != nil {
		return err
	}
	env, err := endpoints.OpenStore(ctx, *ep, log)
	if err != nil {
		return err
	}
	defer env.Close()
	if sub == "ls" {
		names, err := dataset.List(ctx, env.Store)
		if err != nil {
			return err
		}
		for _, n := range names {
			fmt.Fprintln(out, n)
		}
		return nil
	}
	if *name == "" {
		return cli.Usagef("dataset %s needs --dataset NAME", sub)
	}
	if sub == "assemble" {
		spec, err := window.LoadSpec(ctx, env.Store, *name, *version)
		if err != nil {
			return err
		}
		m, err := dataset.Assemble(ctx, env.Store, spec)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "manifest %s: %d windows from %d sessions\n", env.Store.Location(dataset.Key(m.Dataset, m.Version)), m.Windows, len(m.Groups))
		return nil
	}
	// inspect and verify read a built version's manifest.
	m, err := dataset.Load(ctx, env.Store, *name, *version)
	if err != nil {
		return err
	}
	if sub == "inspect" {
		in, err := dataset.Inspect(ctx, env.Store, m)
		if err != nil {
			return err
		}
		return in.Print(out, m)
	}
	if err := dataset.Verify(ctx, env.Store, m); err != nil {
		return fmt.Errorf("dataset %s/%s failed verification:\n%w", *name, *version, err)
	}
	objs := 0
	for _, p := range m.Parts {
		objs += len(p.Objects)
	}
	fmt.Fprintf(out, "dataset %s/%s verified: %d objects, %d windows, hashes and counts match the manifest\n", *name, *version, objs, m.Windows)
	return nil
}

func runServe(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	ep := endpoints.FromEnv()
	fs := newFlags("serve", "[--home DIR] [--http ADDR] [--campaign FILE]",
		"Starts the embedded NATS (JetStream) and S3 servers and keeps them up until\n"+
			"interrupted, so workers in other processes can share them. It also serves the\n"+
			"campaign status page at http://ADDR/campaign (loopback only; the address is printed).")
	fs.StringVar(&ep.Home, "home", ep.Home, "folder for the servers' state (env HOMEMOLE_HOME)")
	httpAddr := fs.String("http", "127.0.0.1:0", "loopback address of the campaign status page (port 0: any free port)")
	file := fs.String("campaign", "", "campaign file: the status page shows its homes and taps only")
	if err := parse(fs, args); err != nil {
		return err
	}
	watch, err := newWatcher(log, *file)
	if err != nil {
		return err
	}
	ep.NATSURL, ep.S3 = "", ""
	env, err := endpoints.Open(ctx, ep, "homemole-serve", log)
	if err != nil {
		return err
	}
	defer env.Close()
	// The keys are this run's own: the person who started serve needs them
	// to point workers at it; they are also in the state folder, mode 0600.
	srv := env.Servers()
	fmt.Fprint(out, srv.Env())
	fmt.Fprintf(out, "# the same lines are in %s (mode 0600) until serve stops: `set -a; . %s; set +a`\n", srv.Credentials, srv.Credentials)
	watch.JS, watch.Store = env.Bus.JS, env.Store
	sub, err := watch.Listen(env.Bus.NC)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	url, done, err := serveStatus(ctx, log, *httpAddr, watch)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "# campaign status: %s\n", url)
	<-ctx.Done()
	return <-done
}

func runDatasetExport(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs, ep := newStoreFlags("dataset export", "--dataset NAME [--version V] --out FILE.parquet [--session NAME]",
		"Writes a dataset version as one Parquet file for pandas, Polars or DuckDB: a row per\n"+
			"window with the columns of the dataset's Arrow objects (per-packet columns as\n"+
			"lists of the window size), the windows trainers read (after the per-device cap),\n"+
			"in manifest order. The label vocabulary is in the file's key-value metadata\n"+
			"(homemole.labels, a JSON array a label indexes; -1 is unlabeled):\n\n"+
			"  pandas:  pd.read_parquet(\"d.parquet\")\n"+
			"  DuckDB:  SELECT window_id, label FROM 'd.parquet'")
	name, version, outPath, session := exportFlags(fs)
	if err := parseRequired(fs, args, "dataset export needs --dataset NAME and --out FILE.parquet", name, outPath); err != nil {
		return err
	}
	env, m, keep, err := openSelection(ctx, *ep, log, *name, *version, *session)
	if err != nil {
		return err
	}
	defer env.Close()
	rows := 0
	err = writeOutput(*outPath, out, func(w io.Writer) error {
		rows, err = dataset.ExportParquet(ctx, env.Store, m, w, keep)
		return err
	})
	if err != nil {
		return err
	}
	if *outPath != "-" {
		fmt.Fprintf(out, "dataset %s/%s: %d windows of %d packets written to %s\n", m.Dataset, m.Version, rows, m.WindowSize, *outPath)
	}
	return nil
}

func runDatasetToPcap(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs, ep := newStoreFlags("dataset to-pcap", "--dataset NAME [--version V] --out FILE.pcap (--window ID | [--from I] [--to J]) [--session NAME]",
		"Writes windows of a dataset back out as a pcap, one record per packet, to look at\n"+
			"them in Wireshark or run them through `homemole features`. The capture is rebuilt\n"+
			"from the windows' metadata, not the original bytes: timestamps, destination ports,\n"+
			"frame lengths, directions, TTL and TCP header fields are the dataset's; addresses\n"+
			"are placeholders (home side 10.x.y.z, remote 192.0.2.1; a labeled packet's home\n"+
			"address 10.1.x.y encodes its label index) and payloads are zeros. Decode it with\n"+
			"`homemole features --in FILE.pcap --lan-net 10.0.0.0/8`.\n\n"+
			"Windows are numbered from 0 in manifest order, among the windows trainers read\n"+
			"(after the per-device cap, unless --uncapped) of the selected --session.")
	name, version, outPath, session := exportFlags(fs)
	from := fs.Int("from", 0, "first window to write (index from 0)")
	to := fs.Int("to", -1, "window index to stop before; -1 writes to the last window")
	id := fs.String("window", "", "write only the window of this `ID` (the window_id column of a Parquet export) instead of --from/--to")
	uncapped := fs.Bool("uncapped", false, "number and search every window the windower wrote, ignoring the per-device cap")
	if err := parseRequired(fs, args, "dataset to-pcap needs --dataset NAME and --out FILE.pcap", name, outPath); err != nil {
		return err
	}
	if *from < 0 || *to < -1 || (*to >= 0 && *to <= *from) {
		return cli.Usagef("dataset to-pcap: --from %d --to %d selects no window; want 0 <= from < to, or --to -1 for all after from", *from, *to)
	}
	if *id != "" && (*from != 0 || *to != -1) {
		return cli.Usagef("dataset to-pcap: give --window or --from/--to, not both")
	}
	env, m, keep, err := openSelection(ctx, *ep, log, *name, *version, *session)
	if err != nil {
		return err
	}
	defer env.Close()
	// errDone ends the read once the last selected window is written:
	// a window near the start should not cost a pass over the dataset.
	errDone := errors.New("selection written")
	windows, packets := 0, 0
	err = writeOutput(*outPath, out, func(w io.Writer) error {
		pw, err := dataset.NewPcapWriter(w)
		if err != nil {
			return err
		}
		i := 0
		err = dataset.Stream(ctx, env.Store, m, dataset.ReadOptions{Keep: keep, Uncapped: *uncapped}, func(win *schemas.Window) error {
			defer func() { i++ }()
			switch {
			case *id != "":
				if win.ID != *id {
					return nil
				}
			case i < *from:
				return nil
			case *to >= 0 && i >= *to:
				return errDone
			}
			if err := pw.WriteWindow(win); err != nil {
				return err
			}
			windows++
			if *id != "" {
				return errDone
			}
			return nil
		})
		packets = pw.Packets
		if errors.Is(err, errDone) {
			err = nil
		}
		if err == nil && windows == 0 {
			// An error, so that no empty capture is left behind.
			what := fmt.Sprintf("no window from index %d", *from)
			if *id != "" {
				what = fmt.Sprintf("no window %q", *id)
			}
			err = fmt.Errorf("dataset %s/%s: %s among the windows read (%s); window IDs are the window_id column of `homemole dataset export`; or widen --session, --uncapped",
				m.Dataset, m.Version, what, sessionWord(*session))
		}
		return err
	})
	if err != nil {
		return err
	}
	if *outPath != "-" {
		fmt.Fprintf(out, "dataset %s/%s: %d packets of %d windows written to %s (metadata rebuilt, not the original bytes)\n",
			m.Dataset, m.Version, packets, windows, *outPath)
	}
	return nil
}

func exportFlags(fs *flag.FlagSet) (name, version, outPath, session *string) {
	name = fs.String("dataset", "", "dataset name")
	version = fs.String("version", "v1", "dataset version")
	outPath = fs.String("out", "", "`FILE` to write; - writes to standard output")
	session = fs.String("session", "", "only this capture session: its `NAME` (lan-session-01), HOME/NAME, or its group HOME/session-01 (default: all)")
	return
}

// openSelection opens the store, the dataset an export reads and the
// filter of its --session; the caller closes the store.
func openSelection(ctx context.Context, ep endpoints.Config, log *slog.Logger, name, version, session string) (*endpoints.Env, *dataset.Manifest, func(group string) bool, error) {
	env, err := endpoints.OpenStore(ctx, ep, log)
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := dataset.Load(ctx, env.Store, name, version)
	if err != nil {
		env.Close()
		return nil, nil, nil, err
	}
	keep, err := sessionFilter(m, session)
	if err != nil {
		env.Close()
		return nil, nil, nil, err
	}
	return env, m, keep, nil
}

// sessionFilter keeps the groups of the sessions matching s ("" keeps all),
// refusing a name no part of the manifest has, which would export nothing.
func sessionFilter(m *dataset.Manifest, s string) (func(group string) bool, error) {
	if s == "" {
		return nil, nil
	}
	groups := map[string]bool{}
	for _, p := range m.Parts {
		if s == p.Session || s == p.Home+"/"+p.Session || s == window.GroupOf(p.Home, p.Session) {
			groups[window.GroupOf(p.Home, p.Session)] = true
		}
	}
	if len(groups) == 0 {
		return nil, fmt.Errorf("dataset %s/%s has no session %q; its sessions are the groups %v", m.Dataset, m.Version, s, m.Groups)
	}
	return func(g string) bool { return groups[g] }, nil
}

func sessionWord(s string) string {
	if s == "" {
		return "every session"
	}
	return "session " + s
}

// writeOutput writes to path through a temporary file renamed on success,
// so a failed export leaves no truncated file that looks complete, and
// records its SHA-256 beside it in path.sha256 (the format `sha256sum -c`
// checks), so a copy damaged later is caught; "-" writes to stdout.
func writeOutput(path string, stdout io.Writer, write func(io.Writer) error) error {
	if path == "-" {
		bw := bufio.NewWriterSize(stdout, 1<<20)
		if err := write(bw); err != nil {
			return err
		}
		return bw.Flush()
	}
	f, err := atomicfile.Create(path)
	if err != nil {
		return err
	}
	defer f.Abort()
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	if err := write(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	sum := fmt.Sprintf("%x  %s\n", h.Sum(nil), filepath.Base(path))
	if err := os.WriteFile(path+".sha256", []byte(sum), 0o644); err != nil {
		return fmt.Errorf("write %s.sha256: %w", path, err)
	}
	return f.Commit()
}
