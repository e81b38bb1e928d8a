//go:build linux

// Package netnstest gives tests network namespaces of their own, so that a
// live capture sees only the traffic the test makes and the host's
// interfaces are left alone. Tests that use it need root (or CAP_NET_RAW
// and CAP_SYS_ADMIN) and iproute2's ip; NeedRoot skips them otherwise.
package netnstest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// NeedRoot skips the test unless it may create namespaces and capture.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("live capture needs root or CAP_NET_RAW, and these tests create network namespaces (CAP_SYS_ADMIN): run them as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("the live capture tests need `ip` from iproute2 to create namespaces and veth pairs: apt-get install iproute2")
	}
}

// Run runs a command and fails the test with its output if it fails.
func Run(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

var nsSeq atomic.Int32

// UniqueID keeps the names of concurrent test runs (and of the tests in one
// run) apart and short: an interface name has at most 15 bytes.
func UniqueID() string {
	return fmt.Sprintf("%d%d", os.Getpid()%100000, nsSeq.Add(1))
}

// NewNetns creates a namespace with loopback up and IPv6 off, so that no
// router solicitation or duplicate address probe mixes into a capture.
func NewNetns(t testing.TB, name string) {
	t.Helper()
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("remove namespace %s: %v\n%s", name, err, out)
		}
	})
	err := InNetns(name, func() error {
		for _, conf := range []string{"all", "default"} {
			err := os.WriteFile("/proc/sys/net/ipv6/conf/"+conf+"/disable_ipv6", []byte("1"), 0)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("turn IPv6 off in %s: %v", name, err)
	}
	Run(t, "ip", "-n", name, "link", "set", "lo", "up")
}

// InNetns runs fn on a thread in the named namespace. The thread stays
// locked, so it ends with the goroutine instead of going back to the
// scheduler in a foreign namespace.
func InNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + name)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Do runs fn in the named namespace, as InNetns does, and fails the test
// when fn fails, saying what it was doing there.
func Do(t testing.TB, name, what string, fn func() error) {
	t.Helper()
	if err := InNetns(name, fn); err != nil {
		t.Fatalf("%s in namespace %s: %v", what, name, err)
	}
}

// Gateway is a home gateway in namespaces: a device (10.78.1.2) on the
// gateway's LAN interface (10.78.1.1), an internet host (10.78.2.2) on its
// WAN interface (10.78.2.1), and forwarding between them, through NAPT
// (iptables MASQUERADE) when asked.
type Gateway struct {
	Dev, GW, Inet  string // namespaces
	LANIf, WANIf   string // the gateway's interfaces, in GW
	DevIP, InetIP  net.IP
	DevMAC, GWLMAC string // the device's MAC, the gateway's LAN MAC
}

// NewGateway builds the namespaces, skipping the test unless it may
// (NeedRoot); with nat, the gateway masquerades the device behind its WAN
// address (iptables must be installed: the test is skipped otherwise).
func NewGateway(t testing.TB, nat bool) *Gateway {
	t.Helper()
	NeedRoot(t)
	if _, err := exec.LookPath("iptables"); nat && err != nil {
		t.Skip("the NAPT gateway needs iptables: apt-get install iptables (go tool task test installs it)")
	}
	id := UniqueID()
	g := &Gateway{Dev: "hmgd" + id, GW: "hmgg" + id, Inet: "hmgi" + id, LANIf: "hmgl" + id, WANIf: "hmgw" + id,
		DevIP: net.IPv4(10, 78, 1, 2).To4(), InetIP: net.IPv4(10, 78, 2, 2).To4()}
	for _, ns := range []string{g.Dev, g.GW, g.Inet} {
		NewNetns(t, ns)
	}
	Run(t, "ip", "-n", g.GW, "link", "add", g.LANIf, "type", "veth", "peer", "name", "eth0", "netns", g.Dev)
	Run(t, "ip", "-n", g.GW, "link", "add", g.WANIf, "type", "veth", "peer", "name", "eth0", "netns", g.Inet)
	Run(t, "ip", "-n", g.Dev, "addr", "add", "10.78.1.2/24", "dev", "eth0")
	Run(t, "ip", "-n", g.GW, "addr", "add", "10.78.1.1/24", "dev", g.LANIf)
	Run(t, "ip", "-n", g.GW, "addr", "add", "10.78.2.1/24", "dev", g.WANIf)
	Run(t, "ip", "-n", g.Inet, "addr", "add", "10.78.2.2/24", "dev", "eth0")
	for _, l := range [][2]string{{g.Dev, "eth0"}, {g.GW, g.LANIf}, {g.GW, g.WANIf}, {g.Inet, "eth0"}} {
		Run(t, "ip", "-n", l[0], "link", "set", l[1], "up")
	}
	Run(t, "ip", "-n", g.Dev, "route", "add", "default", "via", "10.78.1.1")
	if !nat {
		Run(t, "ip", "-n", g.Inet, "route", "add", "10.78.1.0/24", "via", "10.78.2.1")
	}
	if err := InNetns(g.GW, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0)
	}); err != nil {
		t.Fatalf("turn forwarding on in the gateway: %v", err)
	}
	if nat {
		Run(t, "ip", "netns", "exec", g.GW, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", g.WANIf, "-j", "MASQUERADE")
	}
	mac := func(ns, iface string) string {
		var m string
		if err := InNetns(ns, func() error {
			i, err := net.InterfaceByName(iface)
			if err == nil {
				m = i.HardwareAddr.String()
			}
			return err
		}); err != nil {
			t.Fatalf("MAC of %s in %s: %v", iface, ns, err)
		}
		return m
	}
	g.DevMAC, g.GWLMAC = mac(g.Dev, "eth0"), mac(g.GW, g.LANIf)
	return g
}

// SendUDP sends n datagrams from the device to the internet host, one every
// gap, the i-th to port base+i, so that each is known by its port.
func (g *Gateway) SendUDP(t testing.TB, n, base int, gap time.Duration) {
	t.Helper()
	Do(t, g.Dev, "send from the device", func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: g.DevIP})
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range n {
			if _, err := c.WriteToUDP([]byte(fmt.Sprint("datagram ", i)), &net.UDPAddr{IP: g.InetIP, Port: base + i}); err != nil {
				return err
			}
			time.Sleep(gap)
		}
		return nil
	})
}
