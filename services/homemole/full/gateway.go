package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/pair"
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

func createOutput(cmd, flagName, path string, inputs ...string) (*os.File, error) {
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
	in := fs.String("in", "", "LAN capture (pcap or pcapng, optionally gzipped)")
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
	fs := newFlags("pair", "--lan FILE --wan FILE --mode napt|vpn [--out pairs.csv] [--truth truth.csv]",
		"Pairs every WAN packet with the LAN packet it came from, so LAN labels can follow it.\n"+
			"napt matches what survives translation (IP length and ID, protocol, remote address and\n"+
			"port, TCP sequence numbers and flags) within --window, learning the port mapping; vpn\n"+
			"predicts each tunnel packet's size from the cipher's size function (detected when\n"+
			"--cipher is auto), assigns one-to-one and keeps the tunnel's order. Writes one row\n"+
			"wan_index,lan_index per WAN packet (lan_index empty when unpaired) and prints the\n"+
			"pairing rate, and the accuracy against --truth when given. Both captures may be of any\n"+
			"link type the capture reader takes (Ethernet, SLL, raw IP).")
	lanPath := fs.String("lan", "", "LAN capture")
	wanPath := fs.String("wan", "", "WAN capture")
	mode := fs.String("mode", "", "napt or vpn")
	cipher := fs.String("cipher", "auto", "vpn: aes-256-gcm, aes-256-cbc (OpenVPN), wireguard, or auto to detect")
	method := fs.String("method", string(pair.MethodExact), "vpn: exact (size function, one-to-one, in order) or window (the paper's rule)")
	window := fs.Duration("window", 0, "largest gap between a WAN packet and its LAN packet (default 5ms napt, 20ms vpn)")
	vpnPort := fs.Uint("vpn-port", 0, "vpn: the VPN server's UDP port (default: found in the WAN capture, the server end of its busiest UDP flow)")
	outPath := fs.String("out", "-", "pairs CSV to write; - is stdout")
	truthPath := fs.String("truth", "", "ground truth from homemole gateway, to report accuracy")
	home := homeFlags(fs, "gateway-mac")
	if err := parseRequired(fs, args, "pair needs --lan FILE, --wan FILE and --mode napt|vpn", lanPath, wanPath, mode); err != nil {
		return err
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
	wan, err := capture.OpenFile(*wanPath)
	if err != nil {
		return err
	}
	defer wan.Close()
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
		defer f.Close()
		if err := gateway.WriteTruth(f, res.Pairs); err != nil {
			return fmt.Errorf("pair: %s: %w", *outPath, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("pair: write %s: %w", *outPath, err)
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
