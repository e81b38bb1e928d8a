// Command gatewaylab runs a real home gateway in network namespaces on this
// machine and measures how well pipeline/pair pairs what it captured.
//
// A device namespace sits behind a gateway namespace doing Linux NAPT
// (iptables MASQUERADE) or running an OpenVPN client; an isp namespace is
// its upstream router and the OpenVPN server, and an inet namespace answers
// the device. The flows of a LAN capture whose client is its busiest device
// are replayed through real sockets, tcpdump records the gateway's LAN, WAN
// and (VPN) tun interfaces, and pair.Pair pairs WAN with LAN; ground truth
// comes from payload tags (NAPT, LAN to tun) and tunnel order (tun to WAN).
//
// Needs root. Run from the repository root:
//
//	go run ./tools/gatewaylab --in ../shared/data/iot-sentinel-dev/HueBridge/Setup-A-1-STA.pcap
//
// Every namespace and process it creates is removed on exit, also on error
// and on SIGINT/SIGTERM; namespaces of an earlier run killed with SIGKILL
// are removed at the next start.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/pair"
)

// Debian packages the lab runs, by the command each provides.
var debPackages = [][2]string{
	{"ip", "iproute2"}, {"iptables", "iptables"}, {"tcpdump", "tcpdump"},
	{"openvpn", "openvpn"}, {"openssl", "openssl"}, {"wg", "wireguard-tools"}, {"ping", "iputils-ping"},
}

type row struct {
	mode, cipher   string
	lan, wan, tun  int
	rate           float64
	correct, total int
	replayed       int64
	note           string
	ipv6           bool
	flows6         int // flows replayed over IPv6
	// tunSide scores pairing the WAN with the tun side's capture, the home
	// inferred: once per link type it was written as.
	tunSide []tunScore
	// cooked and cookedWAN compare the gateway's tcpdump -i any capture,
	// read as capture reads it as the LAN and as the WAN side, with its
	// LAN and WAN interfaces' own captures; several and severalWAN its
	// dumpcap capture of its LAN, WAN and tunnel interfaces into one
	// pcapng file.
	cooked, cookedWAN, several, severalWAN cookedScore
}

// cookedScore is how a cooked capture's view of one side compares with the
// capture of that side's interface in the same run.
type cookedScore struct {
	what              string // the capture: "tcpdump -i any", "dumpcap -i lan0 -i wan0"
	side              capture.Side
	iface             string
	frames, lan, same int // lan: the interface's frames
	stats             capture.CookedStats
}

func (c cookedScore) String() string {
	return fmt.Sprintf("%s: %d frames in its %v view, %s's capture has %d, %d of them the same frame byte for byte; %s",
		c.what, c.frames, c.side, c.iface, c.lan, c.same, c.stats.Summary())
}

// cookedView reads the view of side of a capture of several interfaces
// (what, at anyPath) and matches its frames, as a multiset of their bytes,
// with the capture of the side's interface iface.
func cookedView(what, anyPath, iface, ifacePath string, side capture.Side) (cookedScore, error) {
	c := cookedScore{what: what, side: side, iface: iface}
	want := map[string]int{}
	if err := eachFrame(ifacePath, func(fr capture.Frame) { want[string(fr.Data)]++; c.lan++ }); err != nil {
		return c, err
	}
	src, err := capture.OpenFileSide(anyPath, side)
	if err != nil {
		return c, err
	}
	defer src.Close()
	for {
		fr, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return c, fmt.Errorf("%s: %w", anyPath, err)
		}
		c.frames++
		if want[string(fr.Data)] > 0 {
			want[string(fr.Data)]--
			c.same++
		}
	}
	c.stats, _ = capture.CookedStatsOf(src)
	return c, nil
}

// tunScore is the tun side's pairing as written with one link type.
type tunScore struct {
	link           int
	correct, total int
	inferred       string
}

func (t tunScore) accuracy() float64 { return float64(t.correct) / float64(max(t.total, 1)) }

func main() {
	in := flag.String("in", "../shared/data/iot-sentinel-dev/HueBridge/Setup-A-1-STA.pcap", "LAN capture whose busiest device's flows are replayed (pcap or pcapng); \"homegen\" generates a home with pipeline/homegen and uses its first session")
	dryRun := flag.Bool("dry-run", false, "only print what would be replayed (no root needed)")
	modes := flag.String("modes", "napt,vpn:aes-256-gcm,vpn:aes-256-cbc", "comma-separated runs: napt, vpn:aes-256-gcm, vpn:aes-256-cbc, vpn:wireguard (wireguard-go), and OpenVPN over TCP as vpn-tcp:aes-256-gcm, vpn-tcp:aes-256-cbc")
	maxPackets := flag.Int("max-packets", 2000, "replay at most this many of the device's packets")
	maxLength := flag.Duration("max-duration", 60*time.Second, "replay at most this much of the (gap-shortened) capture")
	maxGap := flag.Duration("max-gap", time.Second, "shorten idle gaps of the capture to this")
	maxPayload := flag.Int("max-payload", 1300, "cap payload sizes (bytes), so that no packet is fragmented or resegmented")
	outDir := flag.String("out", "", "keep the captures, truth and pairs here (default: a temp dir, removed)")
	defences := flag.String("defenses", "", "instead of --modes, run these defences for real through the OpenVPN (AES-256-GCM) gateway, comma-separated: none (first: its tunnel delay is the others' undefended time), pad:N, pad:mtu, cbr:RATE, joined by + (pad:mtu+cbr:40); prints their costs beside the emulator's for the same LAN traffic")
	ipv6 := flag.Bool("ipv6", false, "give the device a global IPv6 address ("+devAddr6+", its /64 routed through the tunnel) and replay every other flow over IPv6 to "+inetAddr6+"; OpenVPN modes only")
	flag.Parse()
	if *dryRun {
		s, err := loadInput(*in, limits{maxPackets: *maxPackets, maxLength: *maxLength, maxGap: *maxGap, minPayload: 8, maxPayload: *maxPayload})
		if err != nil {
			fmt.Fprintln(os.Stderr, "gatewaylab:", err)
			os.Exit(1)
		}
		printScript(s, *in)
		return
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "gatewaylab: needs root (network namespaces, iptables, tcpdump)")
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if *defences != "" {
		if err := defencesMain(ctx, *in, *defences, *outDir, limits{
			maxPackets: *maxPackets, maxLength: *maxLength, maxGap: *maxGap, minPayload: 8, maxPayload: *maxPayload,
		}); err != nil {
			fmt.Fprintln(os.Stderr, "gatewaylab:", err)
			os.Exit(1)
		}
		return
	}
	if err := mainErr(ctx, *in, *modes, *outDir, *ipv6, limits{
		maxPackets: *maxPackets, maxLength: *maxLength, maxGap: *maxGap, minPayload: 8, maxPayload: *maxPayload,
	}); err != nil {
		fmt.Fprintln(os.Stderr, "gatewaylab:", err)
		os.Exit(1)
	}
}

// prepare installs what the lab runs, removes stale namespaces, loads the
// script and makes the output folder: outDir, or a temporary one that
// cleanup removes.
func prepare(ctx context.Context, in, outDir string, lim limits) (s *script, dir string, cleanup func(), err error) {
	cleanup = func() {}
	if err := install(ctx); err != nil {
		return nil, "", cleanup, err
	}
	removeStale()
	if s, err = loadInput(in, lim); err != nil {
		return nil, "", cleanup, err
	}
	printScript(s, in)
	if len(s.flows) == 0 {
		return nil, "", cleanup, errors.New("nothing to replay")
	}
	if outDir != "" {
		return s, outDir, cleanup, os.MkdirAll(outDir, 0o755)
	}
	if dir, err = os.MkdirTemp("", "gatewaylab-"); err != nil {
		return nil, "", cleanup, err
	}
	return s, dir, func() { os.RemoveAll(dir) }, nil
}

func mainErr(ctx context.Context, in, modes, outDir string, ipv6 bool, lim limits) error {
	keep := outDir != ""
	s, outDir, cleanup, err := prepare(ctx, in, outDir, lim)
	defer cleanup()
	if err != nil {
		return err
	}
	var rows []row
	for _, m := range strings.Split(modes, ",") {
		m = strings.TrimSpace(m)
		mode, cipher, _ := strings.Cut(m, ":")
		if mode != "napt" && mode != "vpn" && mode != "vpn-tcp" {
			return fmt.Errorf("mode %q: want napt, vpn:CIPHER or vpn-tcp:CIPHER", m)
		}
		if mode != "napt" && cipher == "" {
			cipher = string(gateway.AES256GCM)
		}
		if ipv6 && (mode == "napt" || cipher == string(gateway.WireGuard)) {
			return fmt.Errorf("mode %q: --ipv6 runs OpenVPN modes only (vpn:CIPHER, vpn-tcp:CIPHER)", m)
		}
		dir := filepath.Join(outDir, strings.ReplaceAll(m, ":", "-"))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		fmt.Printf("\n== %s\n", m)
		start := time.Now()
		r, err := runMode(ctx, s, mode, cipher, dir, ipv6)
		if err != nil {
			return fmt.Errorf("%s: %w", m, err)
		}
		fmt.Printf("%s done in %s\n", m, time.Since(start).Round(100*time.Millisecond))
		rows = append(rows, r)
	}
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tcipher\tLAN pkts\tWAN pkts\ttun pkts\tpaired %\taccuracy %\tcorrect/total\t")
	for _, r := range rows {
		tun := "-"
		if r.mode != "napt" {
			tun = fmt.Sprint(r.tun)
		}
		c := r.cipher
		if c == "" {
			c = "-"
		}
		m := r.mode
		if r.ipv6 {
			m += "+ipv6"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%.2f\t%.2f\t%d/%d\t\n", m, c, r.lan, r.wan, tun, 100*r.rate,
			100*float64(r.correct)/float64(max(r.total, 1)), r.correct, r.total)
	}
	tw.Flush()
	for _, r := range rows {
		if r.note != "" {
			fmt.Printf("%s %s: %s\n", r.mode, r.cipher, r.note)
		}
	}
	if keep {
		fmt.Printf("captures, truth and pairs in %s\n", outDir)
	}
	return nil
}

func printScript(s *script, in string) {
	udp := 0
	for _, f := range s.flows {
		if !f.tcp {
			udp++
		}
	}
	fmt.Printf("flows of %s from %s: %d flows (%d UDP, %d TCP), %d payloads over %s; %d TCP flows not opened by the device skipped\n",
		s.device, in, len(s.flows), udp, len(s.flows)-udp, s.packets, s.length.Round(time.Millisecond), s.skipped)
}

// loadInput reads the script from a capture, or from a generated home.
func loadInput(in string, lim limits) (*script, error) {
	if in != "homegen" {
		return loadScript(in, lim)
	}
	dir, err := os.MkdirTemp("", "gatewaylab-home-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	h, err := homegen.Generate(homegen.Config{Seed: 1, Sessions: 1, SessionDuration: 5 * time.Minute}, dir)
	if err != nil {
		return nil, err
	}
	return loadScript(h.Files[0], lim)
}

// install installs the Debian packages of the commands that are missing.
func install(ctx context.Context) error {
	var missing []string
	for _, p := range debPackages {
		if _, err := exec.LookPath(p[0]); err != nil {
			missing = append(missing, p[1])
		}
	}
	if len(missing) == 0 {
		fmt.Println("Debian packages: all present (iproute2 iptables tcpdump openvpn openssl)")
		return nil
	}
	fmt.Printf("installing Debian packages: %s\n", strings.Join(missing, " "))
	args := append([]string{"install", "-y", "--no-install-recommends"}, missing...)
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		// A fresh machine has no package lists yet.
		if err := run(ctx, "apt-get", "update", "-qq"); err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out2, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get install %s: %w\n%s\n%s", strings.Join(missing, " "), err, tail(string(out), 5), tail(string(out2), 10))
		}
	}
	fmt.Printf("installed: %s\n", strings.Join(missing, " "))
	return nil
}

// tcpdump starts a capture and waits until it is listening.
func (l *lab) tcpdump(ctx context.Context, ns, iface, path string) (func() (string, error), error) {
	args := []string{"tcpdump", "-i", iface, "-w", path, "-s", "0", "-B", "32768", "-n", "-U", "--immediate-mode",
		"--time-stamp-precision=nano", "-Z", "root", "ip or ip6"}
	return l.capturing(ctx, ns, path, args, "listening on", func(log string) error {
		var captured, filtered int
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, "dropped by kernel") && !strings.HasPrefix(line, "0 ") {
				return fmt.Errorf("tcpdump on %s: %s", iface, line)
			}
			fmt.Sscanf(line, "%d packets captured", &captured)
			fmt.Sscanf(line, "%d packets received by filter", &filtered)
		}
		// Packets the kernel accepted but tcpdump had not read when it
		// stopped are lost to the file without counting as drops.
		if captured != filtered {
			return fmt.Errorf("tcpdump on %s: %d packets captured of %d received by filter", iface, captured, filtered)
		}
		return nil
	})
}

// dumpcap captures the interfaces of namespace ns into one pcapng file at
// path, as tcpdump does one (IP only); the returned function stops it and
// fails where dumpcap or the kernel dropped a packet.
func (l *lab) dumpcap(ctx context.Context, ns string, ifaces []string, path string) (func() (string, error), error) {
	// A filter before the first -i is every interface's.
	args := []string{"dumpcap", "-q", "-w", path, "-B", "32", "-f", "ip or ip6"}
	for _, i := range ifaces {
		args = append(args, "-i", i)
	}
	return l.capturing(ctx, ns, path, args, "Capturing on", func(log string) error {
		// "Packets received/dropped on interface 'lan0': 120/0 (...)"
		for _, m := range dumpcapDrops.FindAllStringSubmatch(log, -1) {
			if m[1] != "0" {
				return fmt.Errorf("dumpcap on %v dropped packets: %s", ifaces, log)
			}
		}
		return nil
	})
}

// capturing starts a capturing program (args, writing path) in namespace
// ns, its stderr logged beside path, and waits until the log says ready;
// the returned function stops it and gives its log, or lost's error where
// the log says it lost packets.
func (l *lab) capturing(ctx context.Context, ns, path string, args []string, ready string, lost func(log string) error) (func() (string, error), error) {
	errPath := path + ".log"
	ef, err := os.Create(errPath)
	if err != nil {
		return nil, err
	}
	defer ef.Close()
	cmd, err := l.start(ns, nil, ef, args...)
	if err != nil {
		return nil, err
	}
	if err := waitLog(ctx, errPath, ready, 10*time.Second); err != nil {
		return nil, fmt.Errorf("%s for %s: %w", args[0], path, err)
	}
	return func() (string, error) {
		stop(cmd, 5*time.Second)
		b, _ := os.ReadFile(errPath)
		if err := lost(string(b)); err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}, nil
}

var dumpcapDrops = regexp.MustCompile(`received/dropped on interface .*: \d+/(\d+) \(`)

// captureSet is a run's tcpdumps, stopped together.
type captureSet []func() (string, error)

func (c *captureSet) start(ctx context.Context, l *lab, ns, iface, path string) error {
	st, err := l.tcpdump(ctx, ns, iface, path)
	if err != nil {
		return err
	}
	*c = append(*c, st)
	return nil
}

// stop stops every capture still running and returns the first error, a
// capture that lost packets; a second call does nothing.
func (c *captureSet) stop() error {
	var first error
	for _, st := range *c {
		if _, err := st(); err != nil && first == nil {
			first = err
		}
	}
	*c = nil
	return first
}

func runMode(ctx context.Context, s *script, mode, cipher, dir string, ipv6 bool) (r row, err error) {
	r.mode, r.cipher, r.ipv6 = mode, cipher, ipv6
	l := newLab(false, ipv6)
	defer l.close()
	if err := l.up(ctx); err != nil {
		return r, err
	}
	if err := l.route(ctx, mode, cipher, dir); err != nil {
		return r, err
	}
	tunnel, overTCP := mode != "napt", mode == "vpn-tcp"
	lanPath, wanPath, tunPath := filepath.Join(dir, "lan.pcap"), filepath.Join(dir, "wan.pcap"), filepath.Join(dir, "tun.pcap")
	var caps captureSet
	defer caps.stop()
	ifaces := [][2]string{{"lan0", lanPath}, {"wan0", wanPath}}
	if tunnel {
		ifaces = append(ifaces, [2]string{l.tun, tunPath})
	}
	// And the whole gateway as people capture it: every interface at once,
	// and its interfaces into one pcapng file, as Wireshark does.
	anyPath := filepath.Join(dir, "any.pcap")
	ifaces = append(ifaces, [2]string{"any", anyPath})
	for _, c := range ifaces {
		if err := caps.start(ctx, l, l.gw, c[0], c[1]); err != nil {
			return r, err
		}
	}
	severalPath := filepath.Join(dir, "several.pcapng")
	several := []string{"lan0", "wan0"}
	if tunnel {
		several = append(several, l.tun)
	}
	st, err := l.dumpcap(ctx, l.gw, several, severalPath)
	if err != nil {
		return r, err
	}
	caps = append(caps, st)
	rs, err := l.replay(ctx, s.withIPv6(ipv6))
	if err != nil {
		return r, err
	}
	r.replayed, r.flows6 = rs.sent.Load(), rs.v6
	// Let the last packets reach every tap before tcpdump stops.
	time.Sleep(time.Second)
	if err := caps.stop(); err != nil {
		return r, err
	}
	fmt.Printf("replayed %d flows (%d UDP, %d TCP, %d over IPv6), %d payloads sent", rs.flows, rs.udp, rs.tcp, rs.v6, r.replayed)
	if n := rs.errs.Load(); n > 0 {
		fmt.Printf("; %d flow errors, first: %v", n, rs.firstErr.Load())
	}
	fmt.Println()
	for _, v := range []struct {
		score     *cookedScore
		what, in  string
		iface, at string
		side      capture.Side
	}{
		{&r.cooked, "tcpdump -i any", anyPath, "lan0", lanPath, capture.SideLAN},
		{&r.cookedWAN, "tcpdump -i any", anyPath, "wan0", wanPath, capture.SideWAN},
		{&r.several, "dumpcap -i " + strings.Join(several, " -i "), severalPath, "lan0", lanPath, capture.SideLAN},
		{&r.severalWAN, "dumpcap -i " + strings.Join(several, " -i "), severalPath, "wan0", wanPath, capture.SideWAN},
	} {
		if *v.score, err = cookedView(v.what, v.in, v.iface, v.at, v.side); err != nil {
			return r, err
		}
		fmt.Println(*v.score)
	}

	var truth []int64
	var ti truthInfo
	gc := gateway.Cipher(cipher)
	switch {
	case overTCP:
		truth, ti, err = truthVPNTCP(lanPath, tunPath, wanPath, gc)
	case tunnel:
		truth, ti, err = truthVPN(lanPath, tunPath, wanPath, gc)
	default:
		truth, ti, err = truthNAPT(lanPath, wanPath)
	}
	if err != nil {
		return r, err
	}
	r.lan, r.wan, r.tun = ti.lan, ti.wan, ti.tun
	if tunnel {
		fmt.Printf("tunnel order: %d/%d outbound and %d/%d inbound data packets (WAN/tun)", ti.wanOut, ti.tunOut, ti.wanIn, ti.tunIn)
		if ti.sizeMismatch > 0 {
			var ds []string
			for d, n := range ti.delta {
				ds = append(ds, fmt.Sprintf("%+d bytes x%d", d, n))
			}
			sort.Strings(ds)
			fmt.Printf("; %d outer sizes differ from pair's size function (%s)", ti.sizeMismatch, strings.Join(ds, ", "))
			r.note = fmt.Sprintf("outer size = size function %s", strings.Join(ds, ", "))
		}
		fmt.Println()
	}

	if err := writeCSV(filepath.Join(dir, "truth.csv"), truth); err != nil {
		return r, err
	}
	if err := pairRun(ctx, &r, lanPath, wanPath, filepath.Join(dir, "pairs.csv"), gc, truth); err != nil {
		return r, err
	}
	if tunnel {
		if r.tunSide, err = pairTunSide(ctx, tunPath, wanPath, dir, ti.tunTruth); err != nil {
			return r, err
		}
		var notes []string
		for _, t := range r.tunSide {
			notes = append(notes, fmt.Sprintf("tun side (link type %d, no flags) %.2f %%", t.link, 100*t.accuracy()))
		}
		r.note = strings.TrimPrefix(r.note+"; "+strings.Join(notes, ", "), "; ")
	}
	return r, nil
}

// route makes the gateway a home gateway of the mode: NAPT onto wan0, or a
// tunnel (OpenVPN with cipher, or WireGuard) that everything of the LAN
// leaves through, masqueraded onto the tunnel device.
func (l *lab) route(ctx context.Context, mode, cipher, dir string) error {
	tunnel, overTCP := mode != "napt", mode == "vpn-tcp"
	wireGuard := cipher == string(gateway.WireGuard)
	switch {
	case wireGuard && overTCP:
		return fmt.Errorf("WireGuard runs over UDP only")
	case wireGuard:
		if err := l.startWireGuard(ctx, dir); err != nil {
			return err
		}
	case tunnel:
		if err := l.startVPN(ctx, dir, cipher, overTCP); err != nil {
			return err
		}
	}
	if tunnel {
		for _, c := range [][]string{
			{"ip", "route", "replace", "default", "dev", l.tun},
			{"iptables", "-t", "nat", "-A", "POSTROUTING", "-o", l.tun, "-j", "MASQUERADE"},
			// Nothing of the LAN may leave outside the tunnel.
			{"iptables", "-A", "FORWARD", "-o", "wan0", "-j", "DROP"},
		} {
			if err := l.in(ctx, l.gw, c...); err != nil {
				return err
			}
		}
		if l.ipv6 {
			// Without multicast on the tunnel, neither end sends MLD
			// reports through it: every tunnel packet is the replay's.
			for _, c := range [][]string{
				{l.gw, "ip", "-6", "route", "replace", "default", "dev", l.tun},
				{l.gw, "ip", "link", "set", l.tun, "multicast", "off"},
				{l.isp, "ip", "link", "set", l.tun, "multicast", "off"},
			} {
				if err := l.in(ctx, c[0], c[1:]...); err != nil {
					return err
				}
			}
			time.Sleep(mldSettle)
		}
		if wireGuard {
			fmt.Println("tunnel up: WireGuard (wireguard-go)")
		} else {
			fmt.Println("tunnel up:", negotiated(filepath.Join(dir, "client.log")))
		}
	} else {
		for _, c := range [][]string{
			{"ip", "route", "add", "default", "via", ispWANAddr},
			{"iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE"},
		} {
			if err := l.in(ctx, l.gw, c...); err != nil {
				return err
			}
		}
	}
	return nil
}

// pairTunSide pairs the WAN with the tun device's capture, as a VPN client
// user would capture it, with nothing said about the home (its side is
// inferred, as homemole pair does without flags): once as tcpdump wrote it
// (link type 101), once with the header's link type rewritten to DLT_RAW's
// 12, as several capture tools write raw IP.
func pairTunSide(ctx context.Context, tunPath, wanPath, dir string, truth []int64) ([]tunScore, error) {
	if err := writeCSV(filepath.Join(dir, "truth-tun.csv"), truth); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(tunPath)
	if err != nil {
		return nil, err
	}
	if len(raw) < 24 || raw[0] != 0x4d && raw[0] != 0xd4 {
		return nil, fmt.Errorf("%s: not a little-endian pcap as tcpdump writes here", tunPath)
	}
	if lt := binary.LittleEndian.Uint32(raw[20:24]); lt != 101 {
		return nil, fmt.Errorf("%s: link type %d, want tcpdump's 101 (LINKTYPE_RAW) on a tun device", tunPath, lt)
	}
	as12 := bytes.Clone(raw)
	binary.LittleEndian.PutUint32(as12[20:24], 12)
	path12 := filepath.Join(dir, "tun-linktype12.pcap")
	if err := os.WriteFile(path12, as12, 0o644); err != nil {
		return nil, err
	}
	var scores []tunScore
	for _, c := range []struct {
		path string
		link int
	}{{tunPath, 101}, {path12, 12}} {
		// What homemole pair --lan TUN --wan WAN --mode vpn does.
		inf, err := capture.InferHome(ctx, c.path)
		if err != nil {
			return nil, err
		}
		tun, err := capture.OpenFile(c.path)
		if err != nil {
			return nil, err
		}
		wan, err := capture.OpenFile(wanPath)
		if err != nil {
			tun.Close()
			return nil, err
		}
		res, err := pair.Pair(ctx, tun, wan, pair.Config{Mode: gateway.VPN, Home: inf.Home})
		tun.Close()
		wan.Close()
		if err != nil {
			return nil, fmt.Errorf("pair the tun side %s: %w", c.path, err)
		}
		t := tunScore{link: c.link, inferred: inf.String()}
		t.correct, t.total = pair.Score(res.Pairs, truth)
		fmt.Printf("tun side as link type %d, home inferred (%s): %d of %d WAN packets paired right (%.2f %%)\n",
			t.link, t.inferred, t.correct, t.total, 100*t.accuracy())
		scores = append(scores, t)
	}
	return scores, nil
}

// pairRun pairs with pair.Pair as a user of the pipeline would and scores
// the result against the truth.
func pairRun(ctx context.Context, r *row, lanPath, wanPath, pairsPath string, gc gateway.Cipher, truth []int64) error {
	lan, err := capture.OpenFile(lanPath)
	if err != nil {
		return err
	}
	defer lan.Close()
	wan, err := capture.OpenFile(wanPath)
	if err != nil {
		return err
	}
	defer wan.Close()
	cfg := pair.Config{Mode: gateway.NAPT, Home: features.HomeConfig{LANNets: []netip.Prefix{netip.MustParsePrefix(lanNet), netip.MustParsePrefix(lanNet6)}}}
	if r.mode != "napt" {
		cfg.Mode, cfg.Cipher = gateway.VPN, gc
	}
	res, err := pair.Pair(ctx, lan, wan, cfg)
	if err != nil {
		return err
	}
	r.rate = res.Rate()
	r.correct, r.total = pair.Score(res.Pairs, truth)
	if err := writeCSV(pairsPath, res.Pairs); err != nil {
		return err
	}
	fmt.Printf("pair: %d of %d WAN packets paired, %d LAN packets crossing, %d of them unpaired, %d WAN other\n",
		res.Paired, len(res.Pairs), res.LANCrossing, res.LANUnpaired, res.WANOther)
	return nil
}

func writeCSV(path string, pairs []int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := gateway.WriteTruth(f, pairs); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
