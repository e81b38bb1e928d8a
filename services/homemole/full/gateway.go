package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/homemole/homemole/internal/atomicfile"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/gateway/defense"
	"github.com/homemole/homemole/pipeline/label"
	"github.com/homemole/homemole/pipeline/pair"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/homemole/internal/cmdkit"
	"github.com/homemole/homemole/services/internal/cli"
)

// The home-side flags and the output guards are cmdkit's, which the
// front's features command shares.
type homeChoice = cmdkit.HomeChoice

func homeFlags(fs *flag.FlagSet, macFlag string) *homeChoice { return cmdkit.HomeFlags(fs, macFlag) }

func refuseInput(cmd, flagName, path string, inputs ...string) error {
	return cmdkit.RefuseInput(cmd, flagName, path, inputs...)
}

// modeFlag reads cmd's --NAME as a gateway mode, napt or vpn; anything else
// is a usage error naming the command and the flag.
func modeFlag(cmd, name, value string) (gateway.Mode, error) {
	m, err := gateway.ParseMode(value)
	if err != nil {
		return "", cli.Usagef("%s: --%s: %v", cmd, name, err)
	}
	return m, nil
}

// viewFlag reads cmd's --view: lan, the zero mode (the home network's own
// view, no gateway), or the mode of the gateway an observer looks beyond.
func viewFlag(cmd, value string) (gateway.Mode, error) {
	if value == "lan" {
		return "", nil
	}
	m, err := gateway.ParseMode(value)
	if err != nil {
		return "", cli.Usagef("%s: --view: %v (or lan)", cmd, err)
	}
	return m, nil
}

// cipherFlag reads cmd's --cipher. Where auto is allowed, "auto" is the
// zero cipher: the pairing detects it from the WAN capture.
func cipherFlag(cmd, value string, auto bool) (gateway.Cipher, error) {
	if auto && value == "auto" {
		return "", nil
	}
	c, err := gateway.ParseCipher(value)
	if err == nil {
		return c, nil
	}
	if auto {
		return "", cli.Usagef("%s: --cipher: %v (or auto)", cmd, err)
	}
	return "", cli.Usagef("%s: --cipher: %v", cmd, err)
}

// refuseWANOutputs refuses a --out and --truth that are one file, or
// either of them the --in capture: gateway and defend write the WAN capture
// and its truth from it.
func refuseWANOutputs(cmd, in, outPath, truthPath string) error {
	if filepath.Clean(outPath) == filepath.Clean(truthPath) {
		return cli.Usagef("%s: --out and --truth are the same file", cmd)
	}
	if err := refuseInput(cmd, "out", outPath, in); err != nil {
		return err
	}
	return refuseInput(cmd, "truth", truthPath, in)
}

func createOutput(cmd, flagName, path string, inputs ...string) (*atomicfile.File, error) {
	return cmdkit.CreateOutput(cmd, flagName, path, inputs...)
}

func runGateway(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("gateway", "--in LAN.pcap --mode napt|vpn [--cipher C] [--seed N] --out WAN.pcap --truth truth.csv",
		"Emulates a home gateway: turns a LAN capture into what an observer on the WAN link would\n"+
			"capture. napt translates addresses and ports onto the gateway's WAN address (mappings\n"+
			"with timeouts, TTL one hop apart, checksums updated, IP ID and TCP sequence numbers kept,\n"+
			"50-500 us forwarding delay); vpn wraps every crossing packet into one OpenVPN UDP flow to\n"+
			"port 1194 (one TCP stream with --vpn-proto tcp; WireGuard to 51820 with --cipher\n"+
			"wireguard), sized by the cipher, delayed\n"+
			"0.5-20 ms. Only packets that cross the gateway\n"+
			"appear: LAN-local, ARP and multicast traffic stays home. The WAN capture is an Ethernet\n"+
			"pcap with nanosecond timestamps, in WAN time order; the truth file has one row\n"+
			"wan_index,lan_index per WAN packet (0-based packet ordinals). The same seed gives the\n"+
			"same bytes.")
	in := fs.String("in", "", "LAN capture (pcap or pcapng, optionally compressed with gzip, zstd or lz4)")
	mode := fs.String("mode", "napt", "napt or vpn")
	cipher := fs.String("cipher", string(gateway.AES256GCM), "VPN data channel: aes-256-gcm or aes-256-cbc (with HMAC-SHA1) for OpenVPN, or wireguard")
	seed := fs.Uint64("seed", 1, "seed of every random choice (ports, delays, payload bytes)")
	outPath := fs.String("out", "", "WAN capture to write (pcap)")
	truthPath := fs.String("truth", "", "ground-truth CSV to write")
	reorder := fs.Bool("reorder", false, "vpn: let per-packet jitter reorder packets of one direction")
	ping := fs.Duration("vpn-ping", 10*time.Second, "vpn: keepalive after this much silence in a direction (OpenVPN --ping); 0 sends none")
	loss := fs.Float64("loss", 0, "share of outbound packets the gateway loses, 0 to below 1")
	vpnProto := fs.String("vpn-proto", "udp", "vpn: the tunnel's transport, udp or tcp (OpenVPN records framed by their length in one TCP stream)")
	home := homeFlags(fs, "gateway-mac")
	if err := parseRequired(fs, args, "gateway needs --in LAN.pcap, --out WAN.pcap and --truth truth.csv", in, outPath, truthPath); err != nil {
		return err
	}
	m, err := modeFlag("gateway", "mode", *mode)
	if err != nil {
		return err
	}
	c, err := cipherFlag("gateway", *cipher, false)
	if err != nil {
		return err
	}
	if err := refuseWANOutputs("gateway", *in, *outPath, *truthPath); err != nil {
		return err
	}
	if *loss < 0 || *loss >= 1 {
		return cli.Usagef("gateway: --loss %g: want a share from 0 up to, not including, 1", *loss)
	}
	if *ping < 0 {
		return cli.Usagef("gateway: --vpn-ping %s: want 0 (none) or a positive interval", *ping)
	}
	if *vpnProto != "udp" && *vpnProto != "tcp" {
		return cli.Usagef("gateway: --vpn-proto %q: want udp or tcp", *vpnProto)
	}
	cfg := gateway.Config{Mode: m, Cipher: c, Seed: *seed, Reorder: *reorder, VPNPing: *ping, Loss: *loss, VPNTCP: *vpnProto == "tcp"}
	hc, err := home.Of(ctx, "gateway", *in, out)
	if err != nil {
		return err
	}
	st, err := gateway.EmulateFile(ctx, *in, *outPath, *truthPath, hc, cfg)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	fmt.Fprintf(out, "gateway %s: %d LAN packets, %d crossed to the WAN, %d stayed local, %d undecodable, %d expired (TTL 1), %d lost\n",
		m, st.LANPackets, st.Crossing, st.Local, st.Undecodable, st.Dropped, st.Lost)
	if st.NotPackets > 0 {
		fmt.Fprintf(out, "  %d frames of the link's own left out (%s)\n", st.NotPackets, features.NotPacketKinds)
	}
	if st.OtherViews > 0 {
		fmt.Fprintf(out, "  %d frames left out: %s\n", st.OtherViews, capture.OtherViewKinds)
	}
	if m == gateway.VPN {
		fmt.Fprintf(out, "  %d keepalive pings (WAN packets without a LAN packet)\n", st.Pings)
	}
	if m == gateway.NAPT {
		fmt.Fprintf(out, "  %d NAPT mappings, %d on a port an expired mapping had\n", st.Mappings, st.Reused)
	}
	if st.FirstError != nil {
		log.Warn("gateway: packets skipped", "count", st.Undecodable, "first", st.FirstError)
	}
	fmt.Fprintf(out, "  wrote %s (%d packets) and %s\n", *outPath, st.WANPackets, *truthPath)
	return nil
}

func runPair(ctx context.Context, _ *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("pair", "--lan FILE --wan FILE | --any FILE, --mode napt|vpn [--out pairs.csv] [--truth truth.csv]",
		"Pairs every WAN packet with the LAN packet it came from, so LAN labels can follow it.\n"+
			"napt matches what survives translation (IP length and ID, protocol, remote address and\n"+
			"port, TCP sequence numbers and flags) within --window, learning the port mapping; vpn\n"+
			"predicts each tunnel packet's size from the cipher's size function (detected when\n"+
			"--cipher is auto), assigns one-to-one and keeps the tunnel's order. Writes one row\n"+
			"wan_index,lan_index per WAN packet (lan_index empty when unpaired) and prints the\n"+
			"pairing rate, and the accuracy against --truth when given. Both captures may be of any\n"+
			"link type the capture reader takes (Ethernet, SLL, raw IP). A capture of the gateway on\n"+
			"every interface (tcpdump -i any), or of its interfaces into one pcapng (dumpcap -i br-lan\n"+
			"-i eth1), is read as its LAN side given as --lan, and as its WAN\n"+
			"side (its other Ethernet interfaces, frames numbered as in a capture of them alone) given\n"+
			"as --wan. --any FILE is --lan FILE --wan FILE, refusing a capture that is no gateway's.")
	lanPath := fs.String("lan", "", "LAN capture")
	wanPath := fs.String("wan", "", "WAN capture")
	anyPath := fs.String("any", "", "the gateway captured on every interface (tcpdump -i any) or on its LAN and WAN interfaces into one pcapng (dumpcap -i LAN -i WAN), instead of --lan and --wan")
	mode := fs.String("mode", "", "napt or vpn")
	cipher := fs.String("cipher", "auto", "vpn: aes-256-gcm, aes-256-cbc (OpenVPN), wireguard, or auto to detect")
	method := fs.String("method", string(pair.MethodExact), "vpn: exact (size function, one-to-one, in order) or window (the paper's rule)")
	window := fs.Duration("window", 0, "largest gap between a WAN packet and its LAN packet (default 5ms napt, 20ms vpn)")
	vpnPort := fs.Uint("vpn-port", 0, "vpn: the VPN server's UDP port (default: found in the WAN capture, the server end of its busiest UDP flow)")
	outPath := fs.String("out", "-", "pairs CSV to write; - is stdout")
	truthPath := fs.String("truth", "", "ground truth from homemole gateway, to report accuracy")
	home := homeFlags(fs, "gateway-mac")
	if err := parseRequired(fs, args, "pair needs --lan FILE and --wan FILE (or --any FILE), and --mode napt|vpn", mode); err != nil {
		return err
	}
	switch {
	case *anyPath != "" && (*lanPath != "" || *wanPath != ""):
		return cli.Usagef("pair: --any FILE is both captures: give it or --lan and --wan, not both")
	case *anyPath != "":
		*lanPath, *wanPath = *anyPath, *anyPath
	case *lanPath == "" || *wanPath == "":
		return cli.Usagef("pair needs --lan FILE and --wan FILE (or --any FILE), and --mode napt|vpn")
	}
	m, err := modeFlag("pair", "mode", *mode)
	if err != nil {
		return err
	}
	cfg := pair.Config{Mode: m, Method: pair.Method(*method), Window: *window}
	if cfg.Cipher, err = cipherFlag("pair", *cipher, true); err != nil {
		return err
	}
	if *vpnPort > 65535 {
		return cli.Usagef("pair: --vpn-port %d is not a port", *vpnPort)
	}
	cfg.VPNPort = uint16(*vpnPort)
	if *window < 0 || *window > time.Minute {
		return cli.Usagef("pair: --window %s: want a gap up to a minute", *window)
	}
	truth, err := readTruthFile("pair", *truthPath)
	if err != nil {
		return err
	}
	// The summary must not mix into the CSV on stdout.
	report := out
	if *outPath == "-" {
		report = os.Stderr
	}
	if cfg.Home, err = home.Of(ctx, "pair", *lanPath, report); err != nil {
		return err
	}
	lan, err := capture.OpenFile(*lanPath)
	if err != nil {
		return err
	}
	defer lan.Close()
	// A gateway's capture on every interface given as --wan is read as its
	// WAN side; --any also refuses a capture that is no gateway's.
	openWAN := func(path string) (capture.Source, error) { return capture.OpenFileSide(path, capture.SideWAN) }
	if *anyPath != "" {
		openWAN = capture.OpenWANSide
	}
	wan, err := openWAN(*wanPath)
	if err != nil {
		return err
	}
	defer wan.Close()
	cfg.WANName = *wanPath
	res, err := pair.Pair(ctx, lan, wan, cfg)
	if err != nil {
		return fmt.Errorf("pair %s with %s: %w", *wanPath, *lanPath, err)
	}
	if *outPath == "-" {
		if err := gateway.WriteTruth(out, res.Pairs); err != nil {
			return err
		}
	} else {
		f, err := createOutput("pair", "out", *outPath, *lanPath, *wanPath)
		if err != nil {
			return err
		}
		defer f.Abort()
		if err := gateway.WriteTruth(f, res.Pairs); err != nil {
			return fmt.Errorf("pair: %s: %w", *outPath, err)
		}
		if err := f.Commit(); err != nil {
			return fmt.Errorf("pair: %w", err)
		}
	}
	fmt.Fprintf(report, "pair %s: %d WAN packets, %d paired (%.2f %%), %d not the gateway's traffic; %d of %d crossing LAN packets unpaired",
		m, len(res.Pairs), res.Paired, 100*res.Rate(), res.WANOther, res.LANUnpaired, res.LANCrossing)
	if m == gateway.VPN && res.Cipher != "" {
		proto := "UDP"
		if res.VPNTCP {
			proto = "TCP"
		}
		fmt.Fprintf(report, "; cipher %s, server %s port %d", res.Cipher, proto, res.VPNPort)
	}
	if m == gateway.NAPT && res.WANAddr.IsValid() {
		fmt.Fprintf(report, "; WAN address %s", res.WANAddr)
	}
	fmt.Fprintln(report)
	if truth != nil {
		if len(truth) != len(res.Pairs) {
			return fmt.Errorf("pair: --truth %s has %d WAN packets, %s has %d: they are not of the same capture", *truthPath, len(truth), *wanPath, len(res.Pairs))
		}
		c, n := pair.Score(res.Pairs, truth)
		fmt.Fprintf(report, "accuracy against %s: %d of %d (%.3f %%)\n", *truthPath, c, n, 100*float64(c)/float64(max(n, 1)))
	}
	return nil
}

// readTruthFile reads the --truth file of pair and label, which judge
// their pairing against it; no path, no truth.
func readTruthFile(cmd, path string) ([]int64, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: open --truth: %w", cmd, err)
	}
	defer f.Close()
	return gateway.ReadTruth(f, path)
}

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
	in := fs.String("in", "", "LAN capture (pcap or pcapng, optionally compressed with gzip, zstd or lz4)")
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

// runLabel runs the labeler's own code (pipeline/label) on a LAN and a WAN
// capture of one session, without NATS, to see what it would publish.
func runLabel(ctx context.Context, _ *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("label", "--lan FILE --wan FILE --inventory FILE --mode napt|vpn [--cipher auto] [--truth truth.csv]",
		"Labels a LAN capture from the inventory (MAC -> device) and pairs every packet of the WAN\n"+
			"capture of the same session with its LAN packet, as the labeler worker does on the\n"+
			"records capture agents publish: WAN packets take the label of their LAN packet, or stay\n"+
			"unlabeled when unpaired. Prints packets, labeled packets per device on both sides, the\n"+
			"pairing rate, and with --truth (from homemole gateway) the pairing accuracy.")
	lanPath := fs.String("lan", "", "LAN capture")
	wanPath := fs.String("wan", "", "WAN capture of the same session")
	invPath := fs.String("inventory", "", "inventory YAML: a list of {mac, name, category}")
	mode := fs.String("mode", "", "the gateway's mode: napt or vpn")
	cipher := fs.String("cipher", "auto", "vpn: aes-256-gcm, aes-256-cbc (OpenVPN), wireguard, or auto to detect")
	truthPath := fs.String("truth", "", "ground truth from homemole gateway, to report pairing accuracy")
	home := homeFlags(fs, "gateway-mac")
	if err := parseRequired(fs, args, "label needs --lan FILE, --wan FILE, --inventory FILE and --mode napt|vpn", lanPath, wanPath, invPath, mode); err != nil {
		return err
	}
	m, err := modeFlag("label", "mode", *mode)
	if err != nil {
		return err
	}
	inv, err := campaign.LoadInventory(*invPath)
	if err != nil {
		return fmt.Errorf("label: --inventory: %w", err)
	}
	hc, err := home.Of(ctx, "label", *lanPath, out)
	if err != nil {
		return err
	}
	gw := campaign.Gateway{Mode: string(m)}
	for _, p := range hc.LANNets {
		gw.LANNets = append(gw.LANNets, p.String())
	}
	if !hc.GatewayMAC.IsZero() {
		gw.MAC = hc.GatewayMAC.String()
	}
	c := &campaign.Campaign{Name: "label", Homes: []*campaign.Home{{
		Name: "home", Gateway: gw, Inventory: inv,
		Taps: []campaign.Tap{{Name: label.TapLAN, Files: []string{*lanPath}}, {Name: label.TapWAN, Files: []string{*wanPath}}},
	}}}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return fmt.Errorf("label: %w", err)
	}
	l, err := label.New(c)
	if err != nil {
		return fmt.Errorf("label: %w", err)
	}
	if l.Cipher, err = cipherFlag("label", *cipher, true); err != nil {
		return err
	}
	truth, err := readTruthFile("label", *truthPath)
	if err != nil {
		return err
	}
	dc, err := features.HomeFromCampaign(c.Homes[0])
	if err != nil {
		return err
	}
	// The records are read as the capture agent reads them: a gateway's
	// capture on every interface as the side its tap captures, and the WAN
	// side's segments of a tunnel over TCP told by the records they hold
	// (pair.TunnelTracker), which pairing needs.
	read := func(tap, path string, side capture.Side) (*schemas.Batch, error) {
		b := &schemas.Batch{Kind: schemas.KindPackets, Campaign: c.Name, Home: "home", Tap: tap,
			Source: path, Session: campaign.SessionName(tap, path), Final: true}
		src, err := capture.OpenFileSide(path, side)
		if err != nil {
			return nil, fmt.Errorf("label: %w", err)
		}
		defer src.Close()
		var tunnels *pair.TunnelTracker
		if side == capture.SideWAN {
			tunnels = pair.NewTunnelTracker()
		}
		if _, err := capture.ReadFrames(ctx, src, dc, func(fr capture.Frame, p *schemas.Packet) error {
			if tunnels != nil {
				tunnels.Observe(fr.LinkType, fr.Data, p)
			}
			b.Packets = append(b.Packets, *p)
			return nil
		}); err != nil {
			return nil, fmt.Errorf("label: read %s: %w", path, err)
		}
		return b, nil
	}
	lan, err := read(label.TapLAN, *lanPath, capture.SideLAN)
	if err != nil {
		return err
	}
	wan, err := read(label.TapWAN, *wanPath, capture.SideWAN)
	if err != nil {
		return err
	}
	res, err := l.LabelPair("home", []*schemas.Batch{lan}, []*schemas.Batch{wan})
	if err != nil {
		return fmt.Errorf("label: %w", err)
	}
	if res.PairErr != nil {
		fmt.Fprintf(out, "warning: %v: every WAN packet is unlabeled\n", res.PairErr)
	}
	pr := res.Pairing
	fmt.Fprintf(out, "lan %s: %d packets\n", *lanPath, len(lan.Packets))
	fmt.Fprintf(out, "%s %s: %d packets, %d paired with a LAN packet (pairing rate %.2f %%), %d unpaired and kept unlabeled",
		m, *wanPath, len(wan.Packets), pr.Paired, 100*pr.Rate(), len(pr.Pairs)-pr.Paired)
	if m == gateway.VPN && pr.Cipher != "" {
		fmt.Fprintf(out, "; cipher %s", pr.Cipher)
	}
	if m == gateway.NAPT && pr.WANAddr.IsValid() {
		fmt.Fprintf(out, "; WAN address %s", pr.WANAddr)
	}
	fmt.Fprintln(out)
	lanCount, wanCount := countLabels(res.LAN), countLabels(res.WAN)
	names := make([]string, 0, len(lanCount))
	for n := range lanCount {
		names = append(names, n)
	}
	for n := range wanCount {
		if _, ok := lanCount[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	fmt.Fprintf(out, "%-24s %10s %10s\n", "device", "lan", string(m))
	for _, n := range names {
		fmt.Fprintf(out, "%-24s %10d %10d\n", n, lanCount[n], wanCount[n])
	}
	if truth != nil {
		if len(truth) != len(wan.Packets) {
			return fmt.Errorf("label: --truth has %d WAN packets, %s decoded to %d: not the truth of this capture", len(truth), *wanPath, len(wan.Packets))
		}
		// Pairs are positions in the record slices; the truth speaks of
		// capture ordinals.
		byOrdinal := make([]int64, len(truth))
		for i := range byOrdinal {
			byOrdinal[i] = -1
		}
		for j, k := range pr.Pairs {
			if k >= 0 && wan.Packets[j].Offset < uint64(len(byOrdinal)) {
				byOrdinal[wan.Packets[j].Offset] = int64(lan.Packets[k].Offset)
			}
		}
		correct, total := pair.Score(byOrdinal, truth)
		fmt.Fprintf(out, "pairing accuracy against %s: %d of %d WAN packets (%.3f %%)\n", *truthPath, correct, total, 100*float64(correct)/float64(max(total, 1)))
	}
	return nil
}

// countLabels counts labeled packets per device name; "(unlabeled)" the rest.
func countLabels(bs []*schemas.Batch) map[string]int {
	out := map[string]int{}
	for _, b := range bs {
		for _, l := range b.Labels {
			if l == schemas.Unlabeled {
				out["(unlabeled)"]++
			} else {
				out[b.Devices[l].Name]++
			}
		}
	}
	return out
}

// runFeatures is cmdkit's features command, the one the front runs
// itself; this build runs it when called directly.
func runFeatures(ctx context.Context, _ *slog.Logger, out io.Writer, args []string) error {
	return cmdkit.Features(ctx, out, os.Stderr, args)
}
