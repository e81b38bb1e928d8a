package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/gateway/defense"
	"github.com/homemole/homemole/services/internal/cli"
)

func runDefend(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("defend", "--in LAN.pcap --defense SPEC [--mode napt|vpn] --out WAN.pcap --truth truth.csv",
		"Emulates the home gateway as homemole gateway does, then defends its WAN view against\n"+
			"traffic analysis, and prints what the defence costs the home: byte and packet overhead,\n"+
			"added KB/s, and how long each real packet waits (mean, p99). SPEC joins defences with +:\n"+
			"  pad:N, pad:mtu   pad every IP packet up to a multiple of N bytes, or to the 1500-byte MTU\n"+
			"  cbr:RATE         send RATE packets/s per home, slots taking turns up and down (RATE/2 each\n"+
			"                   way): the oldest packet waiting that way, a dummy when none may leave\n"+
			"  stp:RATE         RATE cover bursts per minute, replays of the home's own bursts at random times\n"+
			"  mimic:DEVICE     cover bursts of another device type, from --mimic-dir DIR/DEVICE\n"+
			"  vpn-pad          the tunnel pads to the MTU: every tunnel packet is full-sized (vpn only)\n"+
			"Cover traffic is added first, then shaping, then padding, whatever the order in SPEC.\n"+
			"The truth file has a row per WAN packet; a dummy's lan_index is empty.")
	in := fs.String("in", "", "LAN capture (pcap or pcapng, optionally gzipped)")
	spec := fs.String("defense", "", "the defences, e.g. pad:mtu+cbr:20 (none: the gateway alone)")
	mode := fs.String("mode", "", "napt or vpn (default napt, vpn with vpn-pad)")
	cipher := fs.String("cipher", string(gateway.AES256GCM), "vpn: aes-256-gcm, aes-256-cbc or wireguard")
	seed := fs.Uint64("seed", 1, "seed of every random choice (gateway and defence)")
	outPath := fs.String("out", "", "defended WAN capture to write (pcap)")
	truthPath := fs.String("truth", "", "ground-truth CSV to write")
	mimicDir := fs.String("mimic-dir", "", "mimic: a folder with one sub-folder of captures per device type (IoT Sentinel's layout)")
	home := homeFlags(fs, "gateway-mac")
	if err := parseRequired(fs, args, "defend needs --in LAN.pcap, --defense SPEC, --out WAN.pcap and --truth truth.csv", in, spec, outPath, truthPath); err != nil {
		return err
	}
	sp, err := defense.ParseSpec(*spec)
	if err != nil {
		return cli.Usagef("defend: --defense: %v", err)
	}
	m := gateway.NAPT
	if sp.VPNPad {
		m = gateway.VPN
	}
	if *mode != "" {
		if m, err = modeFlag("defend", "mode", *mode); err != nil {
			return err
		}
		if sp.VPNPad && m != gateway.VPN {
			return cli.Usagef("defend: vpn-pad pads the VPN tunnel: use --mode vpn or leave --mode out")
		}
	}
	c, err := cipherFlag("defend", *cipher, false)
	if err != nil {
		return err
	}
	if sp.Mimic != "" && *mimicDir == "" {
		return cli.Usagef("defend: mimic:%s needs --mimic-dir DIR with captures of it in DIR/%s", sp.Mimic, sp.Mimic)
	}
	if err := refuseWANOutputs("defend", *in, *outPath, *truthPath); err != nil {
		return err
	}
	cfg := gateway.Config{Mode: m, Cipher: c, Seed: *seed}
	opt := defense.Options{Cipher: c, Seed: *seed}
	if sp.Mimic != "" {
		if opt.Mimic, err = defense.ViewsOfDir(ctx, filepath.Join(*mimicDir, sp.Mimic), cfg); err != nil {
			return fmt.Errorf("defend: mimic:%s: %w", sp.Mimic, err)
		}
	}
	hc, err := home.Of(ctx, "defend", *in, out)
	if err != nil {
		return err
	}
	st, cost, err := defense.File(ctx, *in, *outPath, *truthPath, hc, cfg, sp, opt)
	if err != nil {
		return fmt.Errorf("defend: %w", err)
	}
	if st.FirstError != nil {
		log.Warn("defend: packets skipped", "count", st.Undecodable, "first", st.FirstError)
	}
	fmt.Fprintf(out, "defend %s (%s): %d LAN packets, %d crossed to the WAN; %d WAN packets undefended, %d defended (%d dummies)\n",
		sp, m, st.LANPackets, st.Crossing, cost.RealPackets, cost.Packets, cost.Dummies)
	fmt.Fprintf(out, "  bytes %d -> %d over %.1f s: byte overhead %.1f %%, %.3f KB/s per home added; packet overhead %.1f %%\n",
		cost.RealBytes, cost.Bytes, cost.Seconds, 100*cost.ByteOverhead(), cost.KBps(), 100*cost.PacketOverhead())
	fmt.Fprintf(out, "  added latency per real packet: mean %.3f ms, p99 %.3f ms\n",
		float64(cost.LatencyMean.Microseconds())/1000, float64(cost.LatencyP99.Microseconds())/1000)
	fmt.Fprintf(out, "  wrote %s and %s\n", *outPath, *truthPath)
	return nil
}
