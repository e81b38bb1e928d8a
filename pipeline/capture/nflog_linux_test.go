package capture

import (
	"cmp"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/internal/netnstest"
)

// TestNFLOGCaptureIsTheLANView logs a gateway's LAN traffic the way a
// router's owner would with netfilter (iptables NFLOG in the mangle table:
// every packet the IP stack takes in from the LAN bridge and every packet
// it sends out on it, IPv4 and IPv6), captures the log with `tcpdump -i
// nflog:7` beside a capture of the bridge itself, and requires the log to
// read back as exactly the IP packets of the bridge's capture, byte for
// byte, each once.
func TestNFLOGCaptureIsTheLANView(t *testing.T) {
	l := newCookedLab(t)
	// Bridged frames between the devices stay off the IP hooks, as on a
	// router without br_netfilter, so the log holds what the bridge device's
	// own capture holds.
	netnstest.Do(t, l.GW, "keep bridged frames off iptables", func() error {
		for _, f := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables"} {
			if err := os.WriteFile("/proc/sys/net/bridge/"+f, []byte("0"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return nil
	})
	for _, ipt := range []string{"iptables", "ip6tables"} {
		netnstest.Run(t, "ip", "netns", "exec", l.GW, ipt, "-t", "mangle", "-A", "PREROUTING", "-i", l.Bridge, "-j", "NFLOG", "--nflog-group", "7", "--nflog-prefix", "lan-in")
		netnstest.Run(t, "ip", "netns", "exec", l.GW, ipt, "-t", "mangle", "-A", "POSTROUTING", "-o", l.Bridge, "-j", "NFLOG", "--nflog-group", "7", "--nflog-prefix", "lan-out")
	}
	dir := t.TempDir()
	nflog, bridge := filepath.Join(dir, "nflog.pcap"), filepath.Join(dir, "bridge.pcap")
	time.Sleep(2 * time.Second)
	for attempt := 1; ; attempt++ {
		// -p: the bridge device out of promiscuous mode, so that its
		// capture holds what the bridge hands its own IP stack, not the
		// frames between the devices.
		stops := []func() error{l.tcpdump(t, nflog, "-i", "nflog:7"), l.tcpdump(t, bridge, "-p", "-i", l.Bridge)}
		time.Sleep(300 * time.Millisecond)
		l.Traffic(t)
		time.Sleep(300 * time.Millisecond)
		var dropped error
		for i := len(stops) - 1; i >= 0; i-- {
			dropped = cmp.Or(stops[i](), dropped)
		}
		if dropped == nil {
			break
		}
		if attempt == 3 {
			t.Fatalf("three runs: %v", dropped)
		}
		t.Logf("run %d: %v; running again", attempt, dropped)
	}

	// The bridge's IP packets, without the Ethernet header and padding.
	want := map[string]int{}
	n := 0
	src, err := OpenFile(bridge)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range readAll(t, src) {
		et, ip := binary.BigEndian.Uint16(f.data[12:14]), f.data[14:]
		switch et {
		case 0x0800:
			ip = ip[:binary.BigEndian.Uint16(ip[2:4])]
		case 0x86dd:
			ip = ip[:40+binary.BigEndian.Uint16(ip[4:6])]
		default:
			continue // ARP: no IP hook sees it
		}
		want[string(ip)]++
		n++
	}
	if n < 150 {
		t.Fatalf("the bridge saw %d IP packets: the traffic did not run", n)
	}

	src, err = OpenFile(nflog)
	if err != nil {
		t.Fatal(err)
	}
	var got []labFrame
	v6 := 0
	for i, f := range readAll(t, src) {
		if f.link != features.LinkTypeIPv4 && f.link != features.LinkTypeIPv6 || f.ci.CaptureLength != len(f.data) || f.ci.Length != len(f.data) {
			t.Fatalf("NFLOG frame %d: link type %v, %d of %d bytes, %d in the slice: want a whole IP packet", i, f.link, f.ci.CaptureLength, f.ci.Length, len(f.data))
		}
		v6 += btoi(f.link == features.LinkTypeIPv6)
		got = append(got, labFrame{data: string(f.data)})
	}
	sameMultiset(t, "bridge", got, want, n)
	t.Logf("%d IP packets in the log (%d IPv6), every one the bridge's, byte for byte", len(got), v6)
	if v6 == 0 || v6 == len(got) {
		t.Errorf("%d of %d packets IPv6: the log should hold both versions", v6, len(got))
	}
}
