package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

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
