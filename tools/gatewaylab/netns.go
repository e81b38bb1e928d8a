package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Addresses of the lab. The LAN is a home prefix; the WAN link and the
// "internet" use documentation prefixes, which never leave these namespaces
// because no namespace of the lab has a route to the host's own network.
const (
	lanNet     = "192.168.77.0/24"
	devAddr    = "192.168.77.2"
	gwLANAddr  = "192.168.77.1"
	gwWANAddr  = "203.0.113.2"
	ispWANAddr = "203.0.113.1" // the VPN server's public address, and the gateway's next hop
	ispNetAddr = "198.51.100.1"
	inetAddr   = "198.51.100.2"
	tunNet     = "10.8.0.0"

	// With IPv6 (runs with --ipv6) the home has a global prefix of its
	// own, which the VPN server routes to the gateway's tunnel (no NAT66,
	// as ISPs delegate prefixes), and the internet host an address of
	// another documentation /64.
	lanNet6     = "2001:db8:77::/64"
	devAddr6    = "2001:db8:77::2"
	gwLANAddr6  = "2001:db8:77::1"
	ispNetAddr6 = "2001:db8:100::1"
	inetAddr6   = "2001:db8:100::2"
	tunNet6     = "2001:db8:8::/64"
)

const nsPrefix = "hmlab-"

// mldSettle is how long an IPv6 run waits after the tunnel is up before it
// captures: the tun devices' MLD reports are sent by then.
const mldSettle = 1500 * time.Millisecond

// lab is one set of namespaces and the processes started in them; close
// undoes all of it.
type lab struct {
	id                 string
	dev, gw, isp, inet string
	mu                 sync.Mutex
	procs              []*exec.Cmd
	nsCreated          []string
	verbose            bool
	// tun is the gateway's tunnel interface: tun0 for OpenVPN.
	tun string
	// ipv6 gives the device, the gateway's LAN and the internet host
	// global IPv6 addresses; the WAN link stays IPv4 only.
	ipv6 bool
	// padded puts OpenVPN behind the padding shim (padShim): its ends
	// talk to their shims on loopback.
	padded bool
}

func newLab(verbose, ipv6 bool) *lab { return newLabNamed(verbose, ipv6, "") }

// newLabNamed is newLab for one of several labs of this process at once:
// name keeps their namespaces apart (they may use the same addresses, each
// in its own namespaces).
func newLabNamed(verbose, ipv6 bool, name string) *lab {
	id := strconv.Itoa(os.Getpid())
	if name != "" {
		// The pid stays first: removeStale reads it back.
		id += "-" + name
	}
	l := &lab{id: id, verbose: verbose, tun: "tun0", ipv6: ipv6}
	l.dev = nsPrefix + id + "-dev"
	l.gw = nsPrefix + id + "-gw"
	l.isp = nsPrefix + id + "-isp"
	l.inet = nsPrefix + id + "-inet"
	return l
}

// run runs a command to completion and returns its error with its output,
// which is where ip and iptables say what went wrong.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (l *lab) in(ctx context.Context, ns string, args ...string) error {
	return run(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

// up builds the topology
//
//	dev (eth0) --- (lan0) gw (wan0) --- (wan0) isp (net0) --- (eth0) inet
//
// where isp is both the gateway's upstream router and, in VPN mode, the
// VPN server.
func (l *lab) up(ctx context.Context) error {
	for _, ns := range []string{l.dev, l.gw, l.isp, l.inet} {
		if err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
		l.mu.Lock()
		l.nsCreated = append(l.nsCreated, ns)
		l.mu.Unlock()
		// IPv6 would add router solicitations and DAD to the captures;
		// where the run wants it, it is on without either.
		sysctls := []string{"net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"}
		if l.ipv6 {
			sysctls = []string{"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
				"net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0",
				"net.ipv6.conf.default.router_solicitations=0"}
		}
		for _, k := range sysctls {
			if err := l.in(ctx, ns, "sysctl", "-qw", k); err != nil {
				return err
			}
		}
		if err := l.in(ctx, ns, "ip", "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	links := [][4]string{
		{l.dev, "eth0", l.gw, "lan0"},
		{l.gw, "wan0", l.isp, "wan0"},
		{l.isp, "net0", l.inet, "eth0"},
	}
	for _, k := range links {
		if err := run(ctx, "ip", "link", "add", "hmtmp0", "netns", k[0], "type", "veth", "peer", "name", "hmtmp1", "netns", k[2]); err != nil {
			return err
		}
		if err := l.in(ctx, k[0], "ip", "link", "set", "hmtmp0", "name", k[1]); err != nil {
			return err
		}
		if err := l.in(ctx, k[2], "ip", "link", "set", "hmtmp1", "name", k[3]); err != nil {
			return err
		}
	}
	// A veth delivers a frame on the CPU that sent it, so two frames of one
	// flow sent from two CPUs (a goroutine, or OpenVPN, moved between its
	// writes) race each other through the receiving namespace's stack, and
	// may reach the next device or the tunnel in the other order, after
	// the capture on the way in saw them in theirs. A real gateway's NIC
	// hashes each flow to one queue (RSS) and keeps its order; Receive
	// Packet Steering does the same here, so an order the lab measures is
	// the defence's, not the veth's. A kernel or sysfs that refuses it
	// leaves the lab working, its order checks open to that race.
	mask := rpsMask(runtime.NumCPU())
	for _, k := range links {
		for _, end := range [][2]string{{k[0], k[1]}, {k[2], k[3]}} {
			if err := l.in(ctx, end[0], "sh", "-c", fmt.Sprintf("echo %s > /sys/class/net/%s/queues/rx-0/rps_cpus", mask, end[1])); err != nil {
				fmt.Printf("warning: %s in %s keeps the veth's CPU per frame (setting Receive Packet Steering failed: %v); a flow's frames may race and swap\n", end[1], end[0], err)
			}
		}
	}
	steps := [][]string{
		{l.dev, "ip", "addr", "add", devAddr + "/24", "dev", "eth0"},
		{l.dev, "ip", "link", "set", "eth0", "up"},
		{l.dev, "ip", "route", "add", "default", "via", gwLANAddr},
		{l.gw, "ip", "addr", "add", gwLANAddr + "/24", "dev", "lan0"},
		{l.gw, "ip", "addr", "add", gwWANAddr + "/24", "dev", "wan0"},
		{l.gw, "ip", "link", "set", "lan0", "up"},
		{l.gw, "ip", "link", "set", "wan0", "up"},
		{l.gw, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{l.isp, "ip", "addr", "add", ispWANAddr + "/24", "dev", "wan0"},
		{l.isp, "ip", "addr", "add", ispNetAddr + "/24", "dev", "net0"},
		{l.isp, "ip", "link", "set", "wan0", "up"},
		{l.isp, "ip", "link", "set", "net0", "up"},
		{l.isp, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{l.inet, "ip", "addr", "add", inetAddr + "/24", "dev", "eth0"},
		{l.inet, "ip", "link", "set", "eth0", "up"},
		{l.inet, "ip", "route", "add", "default", "via", ispNetAddr},
		// Offloads would let tcpdump see one 64 KiB segment where the
		// wire carries many, on one side of the gateway and not the other.
		{l.dev, "ethtool", "-K", "eth0", "tso", "off", "gso", "off", "gro", "off"},
		{l.gw, "ethtool", "-K", "lan0", "tso", "off", "gso", "off", "gro", "off"},
		{l.gw, "ethtool", "-K", "wan0", "tso", "off", "gso", "off", "gro", "off"},
		{l.isp, "ethtool", "-K", "wan0", "tso", "off", "gso", "off", "gro", "off"},
		{l.isp, "ethtool", "-K", "net0", "tso", "off", "gso", "off", "gro", "off"},
		{l.inet, "ethtool", "-K", "eth0", "tso", "off", "gso", "off", "gro", "off"},
	}
	if l.ipv6 {
		steps = append(steps, [][]string{
			// The tunnel runs over IPv4: the WAN link carries no IPv6.
			{l.gw, "sysctl", "-qw", "net.ipv6.conf.wan0.disable_ipv6=1"},
			{l.isp, "sysctl", "-qw", "net.ipv6.conf.wan0.disable_ipv6=1"},
			{l.dev, "ip", "-6", "addr", "add", devAddr6 + "/64", "dev", "eth0", "nodad"},
			{l.dev, "ip", "-6", "route", "add", "default", "via", gwLANAddr6},
			{l.gw, "ip", "-6", "addr", "add", gwLANAddr6 + "/64", "dev", "lan0", "nodad"},
			{l.gw, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
			{l.isp, "ip", "-6", "addr", "add", ispNetAddr6 + "/64", "dev", "net0", "nodad"},
			{l.isp, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
			{l.inet, "ip", "-6", "addr", "add", inetAddr6 + "/64", "dev", "eth0", "nodad"},
			{l.inet, "ip", "-6", "route", "add", "default", "via", ispNetAddr6},
			// A tun device that comes up with IPv6 sends MLD reports
			// through the tunnel (its ends route, so they join the
			// all-routers group), which would add tunnel packets that
			// no replay made. Made quick, they are over before the
			// captures start (runMode waits mldSettle).
			{l.gw, "sysctl", "-qw", "net.ipv6.conf.default.mldv2_unsolicited_report_interval=50"},
			{l.isp, "sysctl", "-qw", "net.ipv6.conf.default.mldv2_unsolicited_report_interval=50"},
		}...)
	}
	for _, s := range steps {
		if s[1] == "ethtool" {
			if _, err := exec.LookPath("ethtool"); err != nil {
				continue
			}
		}
		if err := l.in(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// start starts a long-running process in a namespace; close stops it.
func (l *lab) start(ns string, stdout, stderr *os.File, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// Its own process group: a Ctrl-C at the terminal reaches this program,
	// which then stops the children in order instead of all at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.procs = append(l.procs, cmd)
	l.mu.Unlock()
	return cmd, nil
}

// stop ends one process gently (tcpdump flushes its file on SIGINT) and
// forcibly after a grace period.
func stop(cmd *exec.Cmd, grace time.Duration) {
	if cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-done
	}
}

// close stops every process the lab started and deletes its namespaces,
// which takes their veths and tun devices with them. It is safe to call
// more than once and after a partial up.
func (l *lab) close() {
	l.mu.Lock()
	procs, nss := l.procs, l.nsCreated
	l.procs, l.nsCreated = nil, nil
	l.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		stop(procs[i], 3*time.Second)
	}
	for _, ns := range nss {
		if err := run(context.Background(), "ip", "netns", "del", ns); err != nil {
			fmt.Fprintf(os.Stderr, "gatewaylab: cleanup: %v\n", err)
		}
	}
}

// removeStale deletes namespaces left by a lab whose process is gone (one
// killed with SIGKILL cannot clean up after itself).
func removeStale() {
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, nsPrefix) {
			continue
		}
		pid, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(name, nsPrefix), "-", 2)[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil {
			continue
		}
		if err := run(context.Background(), "ip", "netns", "del", name); err == nil {
			fmt.Printf("removed stale namespace %s\n", name)
		}
	}
}

// inNS runs fn on a thread switched into the namespace ns. Sockets keep the
// namespace they were created in, so fn creates them and any goroutine may
// use them afterwards. The thread is never unlocked: Go then discards it
// rather than reuse a thread in the wrong namespace.
func inNS[T any](ns string, fn func() (T, error)) (T, error) {
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		var zero T
		f, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			ch <- res{zero, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{zero, fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		v, err := fn()
		ch <- res{v, err}
	}()
	r := <-ch
	return r.v, r.err
}

// makePKI writes a throw-away CA, a server and a client certificate (EC
// P-256: quick to make) into dir. Nothing of it outlives the run.
func makePKI(ctx context.Context, dir string) error {
	p := func(n string) string { return filepath.Join(dir, n) }
	if err := os.WriteFile(p("server.ext"), []byte("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\nextendedKeyUsage=serverAuth\n"), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(p("client.ext"), []byte("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"), 0o600); err != nil {
		return err
	}
	ec := []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"}
	cmds := [][]string{
		append(append([]string{"req", "-x509"}, ec...), "-keyout", p("ca.key"), "-out", p("ca.crt"), "-days", "1",
			"-subj", "/CN=homemole-lab-ca", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"),
	}
	for _, who := range []string{"server", "client"} {
		cmds = append(cmds,
			append(append([]string{"req"}, ec...), "-keyout", p(who+".key"), "-out", p(who+".csr"), "-subj", "/CN=homemole-lab-"+who),
			[]string{"x509", "-req", "-in", p(who + ".csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"), "-CAcreateserial",
				"-out", p(who + ".crt"), "-days", "1", "-extfile", p(who + ".ext")})
	}
	for _, c := range cmds {
		if err := run(ctx, "openssl", c...); err != nil {
			return err
		}
	}
	return nil
}

// vpnCiphers maps the lab's cipher names to OpenVPN's data-channel options.
var vpnCiphers = map[string][]string{
	"aes-256-gcm": {"--data-ciphers", "AES-256-GCM", "--cipher", "AES-256-GCM"},
	// SHA1 is the HMAC the pairing's size function assumes for CBC.
	"aes-256-cbc": {"--data-ciphers", "AES-256-CBC", "--cipher", "AES-256-CBC", "--auth", "SHA1"},
}

// startVPN starts the server in the isp namespace and the client in the
// gateway namespace, waits until the tunnel is up, then routes the
// gateway's traffic through it.
func (l *lab) startVPN(ctx context.Context, dir, cipher string, tcp bool) error {
	opts, ok := vpnCiphers[cipher]
	if !ok {
		return fmt.Errorf("cipher %q: want aes-256-gcm or aes-256-cbc", cipher)
	}
	if err := makePKI(ctx, dir); err != nil {
		return err
	}
	p := func(n string) string { return filepath.Join(dir, n) }
	// No keepalive, no compression, no renegotiation within a run: every
	// data-channel packet on the WAN then carries exactly one packet of
	// the tun device, which the ground truth relies on.
	// Over TCP the server listens (tcp-server) and the client connects
	// (tcp-client); the data channel is the same, each packet a record
	// behind a 2-byte length in the stream.
	proto := [2]string{"udp", "udp"}
	if tcp {
		proto = [2]string{"tcp-server", "tcp-client"}
	}
	common := []string{"--dev", "tun0", "--dev-type", "tun", "--verb", "3",
		"--ca", p("ca.crt"), "--reneg-sec", "0", "--persist-tun"}
	// Behind the padding shim each end talks to its shim on loopback, and
	// the shims carry the tunnel across the WAN (padShim).
	local, remote := ispWANAddr, ispWANAddr
	if l.padded {
		local, remote = "127.0.0.1", "127.0.0.1"
	}
	server := append(append(priority(ctx), "openvpn", "--mode", "server", "--tls-server", "--port", "1194", "--local", local,
		"--server", tunNet, "255.255.255.0", "--topology", "subnet",
		"--cert", p("server.crt"), "--key", p("server.key"), "--dh", "none",
		"--log", p("server.log"), "--writepid", p("server.pid")), common...)
	server = append(append(server, opts...), "--proto", proto[0])
	if l.ipv6 {
		// The home's prefix is routed to the client by name (its
		// certificate's CN names its client-config-dir file).
		ccd := p("ccd")
		if err := os.MkdirAll(ccd, 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(ccd, "homemole-lab-client"), []byte("iroute-ipv6 "+lanNet6+"\n"), 0o600); err != nil {
			return err
		}
		server = append(server, "--server-ipv6", tunNet6, "--route-ipv6", lanNet6, "--client-config-dir", ccd)
	}
	client := append(append(priority(ctx), "openvpn", "--client", "--remote", remote, "1194", "--nobind",
		"--remote-cert-tls", "server", "--cert", p("client.crt"), "--key", p("client.key"),
		"--route-nopull", "--log", p("client.log"), "--writepid", p("client.pid")), common...)
	client = append(append(client, opts...), "--proto", proto[1])
	if _, err := l.start(l.isp, nil, nil, server...); err != nil {
		return err
	}
	if err := waitLog(ctx, p("server.log"), "Initialization Sequence Completed", 15*time.Second); err != nil {
		return fmt.Errorf("openvpn server: %w", err)
	}
	if _, err := l.start(l.gw, nil, nil, client...); err != nil {
		return err
	}
	if err := waitLog(ctx, p("client.log"), "Initialization Sequence Completed", 30*time.Second); err != nil {
		return fmt.Errorf("openvpn client: %w", err)
	}
	return nil
}

// priority is the command prefix the tunnel's processes run under. A
// gateway is a box of its own; on a machine shared with builds the lab's
// OpenVPN would wait tens of milliseconds for a CPU (seen: 20 to 70 ms at a
// load of 6 to 12 on 2 cores, and still 27 ms at nice -15), beyond any
// pairing window, so it runs real-time (SCHED_FIFO 10), or at nice -15
// where real-time scheduling is not allowed (a container without the
// capability).
func priority(ctx context.Context) []string {
	if exec.CommandContext(ctx, "chrt", "-f", "10", "true").Run() == nil {
		return []string{"chrt", "-f", "10"}
	}
	return []string{"nice", "-n", "-15"}
}

// waitLog polls a log until it holds want; OpenVPN says nothing else that
// tells a finished handshake from a pending one.
func waitLog(ctx context.Context, path, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(path)
		if bytes.Contains(b, []byte(want)) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %q after %s; log ends:\n%s", want, timeout, tail(string(b), 15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// negotiated reads the data-channel cipher OpenVPN reports in its log.
func negotiated(logPath string) string {
	b, _ := os.ReadFile(logPath)
	for _, line := range strings.Split(string(b), "\n") {
		if i := strings.Index(line, "Data Channel: cipher '"); i >= 0 {
			return strings.TrimSpace(line[i+len("Data Channel: "):])
		}
	}
	return ""
}

// wireguardBin finds wireguard-go (WireGuard's userspace implementation;
// this machine has no WireGuard kernel module): on the PATH, else in Go's
// bin folder, where go install builds it when it is missing.
func wireguardBin(ctx context.Context) (string, error) {
	if p, err := exec.LookPath("wireguard"); err == nil {
		return p, nil
	}
	gopath, err := exec.CommandContext(ctx, "go", "env", "GOPATH").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOPATH: %w", err)
	}
	p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "wireguard")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	fmt.Println("building wireguard-go: go install golang.zx2c4.com/wireguard@latest")
	cmd := exec.CommandContext(ctx, "go", "install", "golang.zx2c4.com/wireguard@latest")
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOBIN=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install golang.zx2c4.com/wireguard@latest: %w\n%s", err, tail(string(out), 10))
	}
	return p, nil
}

// startWireGuard runs wireguard-go in the isp namespace (the server, on
// 51820) and in the gateway (the client), keys made by wg, and sends a few
// pings through the tunnel so that the handshake is over before any
// capture starts. No persistent keepalive: every data message on the WAN
// then carries one packet of the tun device. Interface names carry the
// lab's id, since wireguard-go's control sockets (/var/run/wireguard) are
// shared by all namespaces.
func (l *lab) startWireGuard(ctx context.Context, dir string) error {
	bin, err := wireguardBin(ctx)
	if err != nil {
		return err
	}
	key := func(name string) (string, error) {
		priv, err := exec.CommandContext(ctx, "wg", "genkey").Output()
		if err != nil {
			return "", fmt.Errorf("wg genkey: %w", err)
		}
		path := filepath.Join(dir, name+".key")
		if err := os.WriteFile(path, priv, 0o600); err != nil {
			return "", err
		}
		cmd := exec.CommandContext(ctx, "wg", "pubkey")
		cmd.Stdin = bytes.NewReader(priv)
		pub, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("wg pubkey: %w", err)
		}
		return strings.TrimSpace(string(pub)), nil
	}
	srvPub, err := key("server")
	if err != nil {
		return err
	}
	cliPub, err := key("client")
	if err != nil {
		return err
	}
	srvIf := "wgs" + l.id
	l.tun = "wgc" + l.id
	for _, side := range []struct{ ns, ifc string }{{l.isp, srvIf}, {l.gw, l.tun}} {
		logf, err := os.Create(filepath.Join(dir, side.ifc+".log"))
		if err != nil {
			return err
		}
		_, err = l.start(side.ns, logf, logf, bin, "-f", side.ifc)
		logf.Close()
		if err != nil {
			return err
		}
		sock := "/var/run/wireguard/" + side.ifc + ".sock"
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(filepath.Join(dir, side.ifc+".log"))
				return fmt.Errorf("wireguard-go %s: no %s after 10 s:\n%s", side.ifc, sock, tail(string(b), 10))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, c := range []struct {
		ns   string
		args []string
	}{
		{l.isp, []string{"wg", "set", srvIf, "private-key", filepath.Join(dir, "server.key"), "listen-port", "51820",
			"peer", cliPub, "allowed-ips", "10.8.0.2/32"}},
		{l.isp, []string{"ip", "addr", "add", "10.8.0.1/24", "dev", srvIf}},
		{l.isp, []string{"ip", "link", "set", srvIf, "up"}},
		{l.gw, []string{"wg", "set", l.tun, "private-key", filepath.Join(dir, "client.key"),
			"peer", srvPub, "endpoint", ispWANAddr + ":51820", "allowed-ips", "0.0.0.0/0"}},
		{l.gw, []string{"ip", "addr", "add", "10.8.0.2/24", "dev", l.tun}},
		{l.gw, []string{"ip", "link", "set", l.tun, "up"}},
		{l.gw, []string{"ping", "-c", "3", "-i", "0.2", "-W", "2", "10.8.0.1"}},
	} {
		if err := l.in(ctx, c.ns, c.args...); err != nil {
			return err
		}
	}
	return nil
}

// rpsMask is the rps_cpus mask of the first n CPUs (at most 32: one word
// of the mask is plenty for steering a lab's few flows).
func rpsMask(n int) string {
	return strconv.FormatUint(uint64(1)<<min(max(n, 1), 32)-1, 16)
}
