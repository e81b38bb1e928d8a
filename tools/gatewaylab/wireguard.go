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
