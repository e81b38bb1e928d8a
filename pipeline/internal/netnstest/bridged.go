//go:build linux

package netnstest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

// BridgedGateway is a home gateway in namespaces, as real ones are built: two
// devices on ports of the gateway's LAN bridge, NAPT (IPv4) and routing
// (IPv6, the home's own prefix) onto a WAN link to an ISP router, and
// internet hosts behind that router.
//
//	dev1 --p1--+
//	           br0 [gw] wan0 --- isp --- inet (4 addresses of each family)
//	dev2 --p2--+
type BridgedGateway struct {
	Dev1, Dev2, GW, ISP, Inet string // namespaces
	// The gateway's interfaces: the bridge's ports, the bridge, the uplink.
	P1, P2, Bridge, WAN string
}

// The internet hosts' addresses.
var (
	Inet4 = []string{"198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5"}
	Inet6 = []string{"2001:db8:100::2", "2001:db8:100::3", "2001:db8:100::4", "2001:db8:100::5"}
)

// NewBridgedGateway builds the namespaces, skipping the test unless it may
// (NeedRoot, and iptables for the NAPT).
func NewBridgedGateway(t testing.TB) *BridgedGateway {
	t.Helper()
	NeedRoot(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("the bridged gateway's NAPT needs iptables: apt-get install iptables (go tool task test installs it)")
	}
	id := UniqueID()
	l := &BridgedGateway{Dev1: "hmkd1" + id, Dev2: "hmkd2" + id, GW: "hmkg" + id, ISP: "hmki" + id, Inet: "hmkn" + id,
		P1: "hmkp1" + id, P2: "hmkp2" + id, Bridge: "hmkb" + id, WAN: "hmkw" + id}
	for _, ns := range []string{l.Dev1, l.Dev2, l.GW, l.ISP, l.Inet} {
		NewNetns(t, ns)
	}
	run := func(ns string, args ...string) { Run(t, append([]string{"ip", "-n", ns}, args...)...) }
	// IPv6 back on, without duplicate address detection or router
	// solicitations, which would only delay the first packets.
	sysctl := func(ns string, kv ...string) {
		Do(t, ns, "sysctl", func() error {
			for i := 0; i < len(kv); i += 2 {
				if err := os.WriteFile("/proc/sys/net/"+kv[i], []byte(kv[i+1]), 0); err != nil {
					return err
				}
			}
			return nil
		})
	}
	for _, ns := range []string{l.Dev1, l.Dev2, l.GW, l.ISP, l.Inet} {
		sysctl(ns, "ipv6/conf/default/accept_dad", "0", "ipv6/conf/default/router_solicitations", "0",
			"ipv6/conf/all/disable_ipv6", "0", "ipv6/conf/default/disable_ipv6", "0")
	}
	run(l.GW, "link", "add", l.Bridge, "type", "bridge")
	run(l.GW, "link", "add", l.P1, "type", "veth", "peer", "name", "eth0", "netns", l.Dev1)
	run(l.GW, "link", "add", l.P2, "type", "veth", "peer", "name", "eth0", "netns", l.Dev2)
	run(l.GW, "link", "add", l.WAN, "type", "veth", "peer", "name", "wan0", "netns", l.ISP)
	run(l.ISP, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", l.Inet)
	run(l.GW, "link", "set", l.P1, "master", l.Bridge)
	run(l.GW, "link", "set", l.P2, "master", l.Bridge)
	addrs := map[[2]string][]string{
		{l.Dev1, "eth0"}: {"192.168.50.2/24", "2001:db8:50::2/64"},
		{l.Dev2, "eth0"}: {"192.168.50.3/24", "2001:db8:50::3/64"},
		{l.GW, l.Bridge}: {"192.168.50.1/24", "2001:db8:50::1/64"},
		{l.GW, l.WAN}:    {"203.0.113.2/30", "2001:db8:f::2/64"},
		{l.ISP, "wan0"}:  {"203.0.113.1/30", "2001:db8:f::1/64"},
		{l.ISP, "up0"}:   {"198.51.100.1/24", "2001:db8:100::1/64"},
		{l.Inet, "eth0"}: append(withSuffix(Inet4, "/24"), withSuffix(Inet6, "/64")...),
	}
	for k, as := range addrs {
		for _, a := range as {
			run(k[0], "addr", "add", a, "dev", k[1], "nodad")
		}
	}
	for _, k := range [][2]string{{l.Dev1, "eth0"}, {l.Dev2, "eth0"}, {l.GW, l.P1}, {l.GW, l.P2}, {l.GW, l.Bridge}, {l.GW, l.WAN},
		{l.ISP, "wan0"}, {l.ISP, "up0"}, {l.Inet, "eth0"}} {
		run(k[0], "link", "set", k[1], "up")
	}
	for _, ns := range []string{l.Dev1, l.Dev2} {
		run(ns, "route", "add", "default", "via", "192.168.50.1")
		run(ns, "-6", "route", "add", "default", "via", "2001:db8:50::1")
	}
	run(l.GW, "route", "add", "default", "via", "203.0.113.1")
	run(l.GW, "-6", "route", "add", "default", "via", "2001:db8:f::1")
	run(l.ISP, "-6", "route", "add", "2001:db8:50::/64", "via", "2001:db8:f::2")
	run(l.Inet, "route", "add", "default", "via", "198.51.100.1")
	run(l.Inet, "-6", "route", "add", "default", "via", "2001:db8:100::1")
	for _, ns := range []string{l.GW, l.ISP} {
		sysctl(ns, "ipv4/ip_forward", "1", "ipv6/conf/all/forwarding", "1")
	}
	Run(t, "ip", "netns", "exec", l.GW, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", l.WAN, "-j", "MASQUERADE")
	return l
}

func withSuffix(s []string, suffix string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = v + suffix
	}
	return out
}

// Traffic is what a home does: each device talks UDP and TCP to the
// internet hosts over both IP versions (to TCP 8443, an echo of 3
// messages, and UDP 5353, an echo of 4 datagrams, on every address), the
// devices talk to each other across the bridge (dev1 to dev2's UDP 7000,
// 5 datagrams echoed, over each IP version), and each pings the gateway
// (3 echoes, dev1 over IPv4, dev2 over IPv6).
func (l *BridgedGateway) Traffic(t testing.TB) {
	t.Helper()
	stop := make(chan struct{})
	done := make(chan error, 1)
	ready := make(chan error, 1)
	go func() {
		done <- InNetns(l.Inet, func() error {
			var ls []net.Listener
			var us []*net.UDPConn
			defer func() {
				for _, x := range ls {
					x.Close()
				}
				for _, u := range us {
					u.Close()
				}
			}()
			for _, a := range append(slices.Clone(Inet4), Inet6...) {
				tl, err := net.Listen("tcp", net.JoinHostPort(a, "8443"))
				if err != nil {
					ready <- err
					return err
				}
				ls = append(ls, tl)
				go func() {
					for {
						c, err := tl.Accept()
						if err != nil {
							return
						}
						go func() { defer c.Close(); io.Copy(c, c) }()
					}
				}()
				u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(a), Port: 5353})
				if err != nil {
					ready <- err
					return err
				}
				us = append(us, u)
				go func() {
					buf := make([]byte, 2048)
					for {
						n, from, err := u.ReadFromUDP(buf)
						if err != nil {
							return
						}
						u.WriteToUDP(buf[:n], from)
					}
				}()
			}
			ready <- nil
			<-stop
			return nil
		})
	}()
	if err := <-ready; err != nil {
		t.Fatalf("internet host: %v", err)
	}
	// dev2 listens for dev1.
	peerUp := make(chan error, 1)
	peerDone := make(chan error, 1)
	go func() {
		peerDone <- InNetns(l.Dev2, func() error {
			u, err := net.ListenUDP("udp", &net.UDPAddr{Port: 7000})
			if err != nil {
				peerUp <- err
				return err
			}
			peerUp <- nil
			defer u.Close()
			go func() { <-stop; u.Close() }()
			buf := make([]byte, 2048)
			for {
				n, from, err := u.ReadFromUDP(buf)
				if err != nil {
					return nil
				}
				u.WriteToUDP(buf[:n], from)
			}
		})
	}()
	if err := <-peerUp; err != nil {
		t.Fatalf("dev2 listener: %v", err)
	}
	for d, ns := range []string{l.Dev1, l.Dev2} {
		Do(t, ns, "talk to the internet", func() error {
			for i, a := range append(slices.Clone(Inet4), Inet6...) {
				c, err := net.DialTimeout("tcp", net.JoinHostPort(a, "8443"), 5*time.Second)
				if err != nil {
					return err
				}
				msg := bytes.Repeat([]byte{byte('a' + i)}, 100+300*i+d)
				buf := make([]byte, len(msg))
				for range 3 {
					c.Write(msg)
					if _, err := io.ReadFull(c, buf); err != nil {
						c.Close()
						return fmt.Errorf("echo from %s: %w", a, err)
					}
				}
				c.Close()
				u, err := net.Dial("udp", net.JoinHostPort(a, "5353"))
				if err != nil {
					return err
				}
				u.SetReadDeadline(time.Now().Add(5 * time.Second))
				for j := range 4 {
					u.Write([]byte(fmt.Sprintf("query %d from device %d", j, d)))
					if _, err := u.Read(buf); err != nil {
						u.Close()
						return fmt.Errorf("UDP echo from %s: %w", a, err)
					}
				}
				u.Close()
			}
			return nil
		})
	}
	Do(t, l.Dev1, "talk to dev2", func() error {
		for _, a := range []string{"192.168.50.3", "2001:db8:50::3"} {
			u, err := net.Dial("udp", net.JoinHostPort(a, "7000"))
			if err != nil {
				return err
			}
			u.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			for j := range 5 {
				u.Write([]byte(fmt.Sprintf("hello %d", j)))
				if _, err := u.Read(buf); err != nil {
					u.Close()
					return err
				}
			}
			u.Close()
		}
		return nil
	})
	Run(t, "ip", "netns", "exec", l.Dev1, "ping", "-c", "3", "-i", "0.2", "192.168.50.1")
	Run(t, "ip", "netns", "exec", l.Dev2, "ping", "-6", "-c", "3", "-i", "0.2", "2001:db8:50::1")
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("internet host: %v", err)
	}
	if err := <-peerDone; err != nil {
		t.Fatalf("dev2: %v", err)
	}
}

// LogLAN logs the gateway's LAN as a router's owner would with netfilter:
// an NFLOG rule in the mangle table for every packet the IP stack takes in
// from the bridge and every packet it sends out on it, IPv4 and IPv6, to
// group. With sendAtOnce the rules ask the kernel to send each record at
// once (--nflog-threshold 1), as the README's recipe does; without it, the
// kernel batches records for up to a second unless the listener asks
// otherwise. Whether the frames the bridge forwards between the devices
// pass the IP hooks too is BridgeNetfilter's.
func (l *BridgedGateway) LogLAN(t testing.TB, group string, sendAtOnce bool) {
	t.Helper()
	target := []string{"-j", "NFLOG", "--nflog-group", group}
	if sendAtOnce {
		target = append(target, "--nflog-threshold", "1")
	}
	for _, ipt := range []string{"iptables", "ip6tables"} {
		Run(t, append([]string{"ip", "netns", "exec", l.GW, ipt, "-t", "mangle", "-A", "PREROUTING", "-i", l.Bridge}, target...)...)
		Run(t, append([]string{"ip", "netns", "exec", l.GW, ipt, "-t", "mangle", "-A", "POSTROUTING", "-o", l.Bridge}, target...)...)
	}
}

// LogLANBridge logs the gateway's LAN at the bridge's own hooks
// (ebtables, the nftables bridge family): every frame the bridge hands the
// gateway (INPUT), forwards between the devices (FORWARD) or sends for the
// gateway (OUTPUT), of every EtherType, to group, as a router's owner who
// wants the whole LAN would log it. sendAtOnce as for LogLAN.
func (l *BridgedGateway) LogLANBridge(t testing.TB, group string, sendAtOnce bool) {
	t.Helper()
	target := []string{"--nflog-group", group}
	if sendAtOnce {
		target = append(target, "--nflog-threshold", "1")
	}
	// The gateway has one bridge, so no rule names it: --logical-in needs
	// nft_meta_bridge, which not every kernel has (this one does not).
	for _, chain := range []string{"INPUT", "FORWARD", "OUTPUT"} {
		Run(t, append([]string{"ip", "netns", "exec", l.GW, "ebtables", "-A", chain}, target...)...)
	}
}

// BridgeNetfilter turns br_netfilter's passing of bridged frames to the IP
// hooks (bridge-nf-call-iptables and -ip6tables) on or off in the gateway's
// namespace: on, as wherever Docker runs and by default in this kernel's
// new namespaces, iptables sees the frames the bridge forwards between the
// devices; off, as on a router without br_netfilter, it does not.
func (l *BridgedGateway) BridgeNetfilter(t testing.TB, on bool) {
	t.Helper()
	v := []byte("0")
	if on {
		v = []byte("1")
	}
	Do(t, l.GW, "set bridge-nf-call-iptables", func() error {
		for _, f := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables"} {
			if err := os.WriteFile("/proc/sys/net/bridge/"+f, v, 0); err != nil {
				if on || !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("%s (br_netfilter: modprobe br_netfilter): %w", f, err)
				}
			}
		}
		return nil
	})
}
