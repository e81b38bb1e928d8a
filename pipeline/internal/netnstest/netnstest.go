//go:build linux

// Package netnstest gives tests network namespaces of their own, so that a
// live capture sees only the traffic the test makes and the host's
// interfaces are left alone. Tests that use it need root (or CAP_NET_RAW
// and CAP_SYS_ADMIN) and iproute2's ip; NeedRoot skips them otherwise.
package netnstest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

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
