package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/homecount"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
)

func runHosts(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	return runSubcommand(ctx, log, out, args, map[string]runFunc{
		"learn": runHostsLearn,
		"count": runHostsCount,
	}, "hosts needs a subcommand: learn --from-dir DIR --out hosts.json [--wan] | count --model hosts.json --in lan.pcap")
}

func runHostsLearn(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("hosts learn", "--from-dir DIR --out hosts.json [--wan]",
		"Learns the LAN host counter's model from every capture of a folder laid out like\n"+
			"../shared/data/iot-sentinel-dev: per hardware type (or family of look-alikes its\n"+
			"captures cannot tell apart) the signature keys (transport, port, IP length) only its\n"+
			"captures show, and every capture's key set. `hosts count` and the detector's --hosts\n"+
			"count with it; `home hosts` measures the same rule on homes held out from it.\n"+
			"--wan learns from what each capture sends beyond the gateway instead, for a WAN tap\n"+
			"beyond a NAPT, whose hosts are IP ID sequences (home chains measures it): only the\n"+
			"units whose captures form one sequence each are counted there.")
	dir := fs.String("from-dir", "", "folder of device folders with captures and _iotdevice-mac.txt")
	outPath := fs.String("out", "", "model file to write (JSON)")
	wan := fs.Bool("wan", false, "learn for a WAN tap beyond a NAPT: the keys of what crosses the gateway, and which units form one IP ID sequence each")
	if err := parseRequired(fs, args, "hosts learn needs --from-dir DIR and --out FILE", dir, outPath); err != nil {
		return err
	}
	hc, err := loadHostCounter(ctx, "hosts learn", *dir, *wan)
	if err != nil {
		return err
	}
	m := hc.Model(nil)
	if err := m.SaveFile(*outPath); err != nil {
		return fmt.Errorf("hosts learn: %w", err)
	}
	var blind []string
	for _, u := range m.Units {
		if len(u.Signature) == 0 {
			blind = append(blind, u.Name)
		}
	}
	view := "a LAN tap"
	if m.Chains != nil {
		view = "a WAN tap beyond a NAPT, by IP ID sequences"
	}
	fmt.Fprintf(out, "host model %s: %d units from %d captures, for %s\n", *outPath, len(m.Units), len(m.Captures), view)
	for _, u := range m.Units {
		note := ""
		if m.Chains != nil && u.OneSequence {
			note = "  (counted: one sequence a unit)"
		}
		fmt.Fprintf(out, "  %-40s %3d signature keys  %s%s\n", u.Name, len(u.Signature), strings.Join(u.Members, ", "), note)
	}
	if len(blind) > 0 {
		fmt.Fprintf(out, "never counted (no key of their own): %s\n", strings.Join(blind, ", "))
	}
	log.Debug("hosts learn done", "units", len(m.Units))
	return nil
}

func runHostsCount(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("hosts count", "--model hosts.json --in lan.pcap [--gateway-mac MAC] [--window 20s --every 10s --late 20s] [--json]",
		"Counts the device units on a LAN tap's capture host by host, as the detector's --hosts\n"+
			"mode does live: a host (a source MAC) is a unit of a type when the training capture\n"+
			"nearest its keys is the type's and it sent a key of the type's signature. Every window\n"+
			"is judged --late after it ends, with what each host sent since it was first seen. The\n"+
			"gateway (named, or found because it forwards from public addresses) is never a unit.\n"+
			"With a model of `hosts learn --wan` it counts a capture beyond a NAPT instead: each\n"+
			"IPv4 IP ID sequence is a host (home chains).")
	modelPath := fs.String("model", "", "host model from `homemole hosts learn`")
	in := fs.String("in", "", "LAN capture (pcap or pcapng), or the WAN view beyond a NAPT for a WAN model")
	gw := fs.String("gateway-mac", "", "the home gateway's MAC (default: found by what it forwards)")
	cfg := homecount.DefaultLiveConfig()
	fs.DurationVar(&cfg.Window, "window", cfg.Window, "window length")
	fs.DurationVar(&cfg.Step, "every", cfg.Step, "one window ends every this long")
	fs.DurationVar(&cfg.Late, "late", cfg.Late, "how long after a window ends it is judged")
	asJSON := fs.Bool("json", false, "write each window as JSON (the detector's Seen layout), one per line")
	if err := parseRequired(fs, args, "hosts count needs --model FILE and --in CAPTURE", modelPath, in); err != nil {
		return err
	}
	if *gw != "" {
		mac, err := schemas.ParseMAC(*gw)
		if err != nil {
			return cli.Usagef("hosts count: --gateway-mac: %v", err)
		}
		cfg.Gateway = mac
	}
	if err := cfg.Validate(); err != nil {
		return cli.Usagef("hosts count: --window %s --every %s --late %s: %v", cfg.Window, cfg.Step, cfg.Late, err)
	}
	m, err := homecount.LoadHostModel(*modelPath)
	if err != nil {
		return fmt.Errorf("hosts count: --model: %w", err)
	}
	h, err := homecount.NewLiveHome(m, cfg)
	if err != nil {
		return err
	}
	var windows []schemas.SeenWindow
	var packets uint64
	if _, err := capture.ReadFile(ctx, *in, features.PrivateHome(), func(p *schemas.Packet) error {
		packets++
		windows = append(windows, h.Add(p)...)
		return nil
	}); err != nil {
		return fmt.Errorf("hosts count: %w", err)
	}
	windows = append(windows, h.Flush()...)
	if m.Chains != nil {
		if packets > 0 && h.Unlinked == packets {
			return fmt.Errorf("hosts count: %s: none of its %d packets is IPv4 with an IP ID: a WAN host model counts a NAPT's WAN view by its IP ID sequences, which IPv6 and a VPN do not show", *in, packets)
		}
	} else if packets > 0 && h.NoMAC == packets {
		return fmt.Errorf("hosts count: %s: none of its %d packets has a source MAC: the host counter reads a LAN tap's capture (Ethernet), not the view beyond the gateway", *in, packets)
	}
	if m.Chains == nil && packets > 0 && !slices.ContainsFunc(windows, func(w schemas.SeenWindow) bool { return w.Hosts > 0 }) {
		// Beyond the gateway every frame is the gateway's or its ISP's,
		// both forwarding from public addresses.
		return fmt.Errorf("hosts count: %s: of its %d packets none came from a LAN host, only from MACs that forward from public addresses: the host counter reads a LAN tap's capture, not the view beyond the gateway", *in, packets)
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		for _, w := range windows {
			if err := enc.Encode(schemas.Seen{Version: schemas.SeenVersion, SeenWindow: w}); err != nil {
				return fmt.Errorf("hosts count: %w", err)
			}
		}
		return nil
	}
	most := map[string]int{}
	var names []string
	for _, w := range windows {
		var parts []string
		for _, d := range w.Detections {
			parts = append(parts, fmt.Sprintf("%s %d", d.Device, d.Count))
			if _, ok := most[d.Device]; !ok {
				names = append(names, d.Device)
			}
			most[d.Device] = max(most[d.Device], d.Count)
		}
		fmt.Fprintf(out, "%s  %3d hosts  %s\n", time.Unix(0, w.StartNs).UTC().Format("2006-01-02 15:04:05"), w.Hosts, strings.Join(parts, ", "))
	}
	slices.Sort(names)
	fmt.Fprintf(out, "%d packets, %d windows of %s; most units in one window:", packets, len(windows), cfg.Window)
	if len(names) == 0 {
		fmt.Fprint(out, " none")
	}
	for _, n := range names {
		fmt.Fprintf(out, " %s %d;", n, most[n])
	}
	fmt.Fprintln(out)
	log.Debug("hosts count done", "windows", len(windows), "hosts", h.Hosts())
	return nil
}
