package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/internal/netnstest"
	"github.com/homemole/homemole/schemas"
)

// The live tests capture in network namespaces of their own, so that they
// see only the traffic they make and leave the host's interfaces alone. A
// capture is opened on a goroutine whose thread has joined the namespace:
// the socket stays in it whatever thread reads it later.

// vethPair is two namespaces joined by a veth pair: the capture runs in
// capNS on capIf (10.77.0.1), traffic comes from peerNS (10.77.0.2).
type vethPair struct {
	id            string
	capNS, peerNS string
	capIf, peerIf string
	capIP, peerIP net.IP
}

func newVethPair(t testing.TB) *vethPair {
	t.Helper()
	id := netnstest.UniqueID()
	p := &vethPair{
		id:     id,
		capNS:  "hmlive" + id + "c",
		peerNS: "hmlive" + id + "p",
		capIf:  "hmc" + id,
		peerIf: "hmp" + id,
		capIP:  net.IPv4(10, 77, 0, 1).To4(),
		peerIP: net.IPv4(10, 77, 0, 2).To4(),
	}
	netnstest.NewNetns(t, p.capNS)
	netnstest.NewNetns(t, p.peerNS)
	netnstest.Run(t, "ip", "-n", p.capNS, "link", "add", p.capIf, "type", "veth", "peer", "name", p.peerIf, "netns", p.peerNS)
	netnstest.Run(t, "ip", "-n", p.capNS, "addr", "add", "10.77.0.1/24", "dev", p.capIf)
	netnstest.Run(t, "ip", "-n", p.peerNS, "addr", "add", "10.77.0.2/24", "dev", p.peerIf)
	netnstest.Run(t, "ip", "-n", p.capNS, "link", "set", p.capIf, "up")
	netnstest.Run(t, "ip", "-n", p.peerNS, "link", "set", p.peerIf, "up")
	return p
}

func openIn(t testing.TB, ns, iface string, opts LiveOptions) *LiveSource {
	t.Helper()
	var src Source
	netnstest.Do(t, ns, "OpenLive("+iface+")", func() (err error) {
		src, err = OpenLive(iface, opts)
		return err
	})
	ls := src.(*LiveSource)
	t.Cleanup(func() { ls.Close() })
	return ls
}

// sendUDP sends one datagram per payload from ns to dst, to ports port,
// port+1, ... A listener on the receiving side keeps the kernel from
// answering with port-unreachable errors that would mix into the capture.
func sendUDP(t testing.TB, ns string, src, dst net.IP, port int, payloads [][]byte) {
	t.Helper()
	netnstest.Do(t, ns, "send UDP", func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: src})
		if err != nil {
			return err
		}
		defer c.Close()
		for i, p := range payloads {
			if _, err := c.WriteToUDP(p, &net.UDPAddr{IP: dst, Port: port + i}); err != nil {
				return err
			}
		}
		return nil
	})
}

func listenUDP(t testing.TB, ns string, ip net.IP, port, n int) {
	t.Helper()
	netnstest.Do(t, ns, "listen for UDP", func() error {
		for i := range n {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: port + i})
			if err != nil {
				return err
			}
			t.Cleanup(func() { c.Close() })
		}
		return nil
	})
}

// ping sends ICMP echo requests with a payload of size bytes from ns to dst
// and waits for each reply, as `ping -c n -s size` does, without needing
// iputils.
func ping(t testing.TB, ns string, dst net.IP, n, size int) {
	t.Helper()
	netnstest.Do(t, ns, "ping", func() error {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		if err != nil {
			return err
		}
		defer c.Close()
		for seq := 1; seq <= n; seq++ {
			msg := make([]byte, 8+size)
			msg[0] = 8 // echo request
			binary.BigEndian.PutUint16(msg[4:], 0x4d4d)
			binary.BigEndian.PutUint16(msg[6:], uint16(seq))
			for i := 8; i < len(msg); i++ {
				msg[i] = byte(i)
			}
			binary.BigEndian.PutUint16(msg[2:], inetChecksum(msg))
			if _, err := c.WriteTo(msg, &net.IPAddr{IP: dst}); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 2048)
			for {
				k, _, err := c.ReadFrom(buf)
				if err != nil {
					return fmt.Errorf("echo reply %d: %w", seq, err)
				}
				if k >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[6:]) == uint16(seq) {
					break
				}
			}
		}
		return nil
	})
}

func inetChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// captured is one frame as Next returned it, copied and decoded.
type captured struct {
	f   Frame
	rec schemas.Packet
	err error
}

// collect reads frames until done says the capture holds everything
// expected, failing after a deadline (a watchdog Close ends a blocked Next).
// It checks what every frame must satisfy: consecutive offsets from 0,
// timestamps that never go back and lie within the test, lengths that agree.
func collect(t *testing.T, src *LiveSource, done func([]captured) bool) []captured {
	t.Helper()
	start := time.Now()
	timer := time.AfterFunc(10*time.Second, func() { src.Close() })
	defer timer.Stop()
	dec := features.NewDecoder(features.HomeConfig{})
	var got []captured
	var prev time.Time
	for !done(got) {
		f, err := src.Next()
		if err == io.EOF {
			t.Fatalf("the capture ended (10s deadline) after %d frames without all the expected ones: %s", len(got), describe(got))
		}
		if err != nil {
			t.Fatalf("Next after %d frames: %v", len(got), err)
		}
		if f.Offset != uint64(len(got)) {
			t.Errorf("frame %d has Offset %d", len(got), f.Offset)
		}
		if f.CI.CaptureLength != len(f.Data) || f.CI.Length < f.CI.CaptureLength {
			t.Errorf("frame %d: CaptureLength %d, Length %d, %d bytes of data", f.Offset, f.CI.CaptureLength, f.CI.Length, len(f.Data))
		}
		ts := f.CI.Timestamp
		// The kernel stamps frames as they arrive, on whichever CPU takes
		// them, and may queue them to the socket in another order: a
		// loaded machine shows steps back of a fraction of a millisecond
		// (so do tcpdump's captures). A garbled stamp is off by far more.
		if prev.Sub(ts) > 50*time.Millisecond {
			t.Errorf("frame %d: timestamp %v is %v before the previous frame's %v", f.Offset, ts, prev.Sub(ts), prev)
		}
		if ts.Before(start.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
			t.Errorf("frame %d: timestamp %v is not within the test (started %v)", f.Offset, ts, start)
		}
		prev = ts
		c := captured{f: f}
		c.f.Data = bytes.Clone(f.Data)
		c.err = dec.Decode(f.LinkType, f.Data, f.CI, f.Offset, &c.rec)
		got = append(got, c)
	}
	return got
}

func describe(got []captured) string {
	var b strings.Builder
	for _, c := range got {
		fmt.Fprintf(&b, "\n  #%d %s len %d/%d transport %d dport %d", c.f.Offset, c.f.LinkType, c.f.CI.CaptureLength, c.f.CI.Length, c.rec.Transport, c.rec.DPort)
	}
	return b.String()
}

func udpTo(got []captured, port int) *captured {
	for i := range got {
		if got[i].err == nil && got[i].rec.Transport == 17 && got[i].rec.DPort == int32(port) {
			return &got[i]
		}
	}
	return nil
}

func countICMP(got []captured, size int) (n int) {
	for _, c := range got {
		if c.err == nil && c.rec.Transport == 1 && c.rec.FrameLen == uint32(14+20+8+size) {
			n++
		}
	}
	return n
}

func livePayloads() [][]byte {
	var ps [][]byte
	for _, n := range []int{0, 1, 100, 1000, 1472} {
		ps = append(ps, bytes.Repeat([]byte{'x'}, n))
	}
	return append(ps, []byte("hello"))
}

// modes runs a test against the ring and against the recvmsg fallback.
func modes(t *testing.T, test func(t *testing.T, opts LiveOptions)) {
	t.Run("ring", func(t *testing.T) { test(t, LiveOptions{}) })
	t.Run("recvmsg", func(t *testing.T) { test(t, LiveOptions{noRing: true}) })
}

// vethModes runs test in both modes, the two in parallel, each on a veth
// pair of its own so that neither sees the other's packets.
func vethModes(t *testing.T, test func(t *testing.T, opts LiveOptions, p *vethPair)) {
	netnstest.NeedRoot(t)
	modes(t, func(t *testing.T, opts LiveOptions) {
		t.Parallel()
		test(t, opts, newVethPair(t))
	})
}

// nsModes runs test in both modes, the two in parallel, each in a network
// namespace of its own; suffix ends the namespace's name and tells the
// tests' namespaces apart in `ip netns` while they run.
func nsModes(t *testing.T, suffix string, test func(t *testing.T, opts LiveOptions, ns string)) {
	netnstest.NeedRoot(t)
	modes(t, func(t *testing.T, opts LiveOptions) {
		t.Parallel()
		ns := "hmlive" + netnstest.UniqueID() + suffix
		netnstest.NewNetns(t, ns)
		test(t, opts, ns)
	})
}

func TestLiveVeth(t *testing.T) {
	vethModes(t, func(t *testing.T, opts LiveOptions, p *vethPair) {
		src := openIn(t, p.capNS, p.capIf, opts)
		if mech := src.Mechanism(); strings.Contains(mech, "TPACKET_V3") == opts.noRing {
			t.Errorf("Mechanism() = %q with noRing %v", mech, opts.noRing)
		}
		const port, pingSize, pings = 40000, 100, 3
		payloads := livePayloads()
		listenUDP(t, p.capNS, p.capIP, port, len(payloads))
		sendUDP(t, p.peerNS, p.peerIP, p.capIP, port, payloads)
		ping(t, p.peerNS, p.capIP, pings, pingSize)

		got := collect(t, src, func(got []captured) bool {
			for i := range payloads {
				if udpTo(got, port+i) == nil {
					return false
				}
			}
			return countICMP(got, pingSize) == 2*pings
		})
		for i, payload := range payloads {
			c := udpTo(got, port+i)
			want := 14 + 20 + 8 + len(payload)
			if c.f.CI.Length != want || c.f.CI.CaptureLength != want {
				t.Errorf("datagram of %d bytes: CaptureLength %d, Length %d, want %d for both", len(payload), c.f.CI.CaptureLength, c.f.CI.Length, want)
			}
			if c.f.LinkType != features.LinkTypeEthernet {
				t.Errorf("datagram of %d bytes: link type %s, want Ethernet", len(payload), c.f.LinkType)
			}
			if c.rec.ProtoBits&schemas.ProtoUDP == 0 || c.rec.FrameLen != uint32(want) {
				t.Errorf("datagram of %d bytes decodes to proto bits %s, frame length %d; want UDP, %d", len(payload), schemas.ProtoBitsString(c.rec.ProtoBits), c.rec.FrameLen, want)
			}
			if !bytes.Equal(c.f.Data[42:], payload) {
				t.Errorf("datagram of %d bytes: payload differs", len(payload))
			}
			if !bytes.Equal(c.rec.SrcMAC[:], c.f.Data[6:12]) {
				t.Errorf("datagram of %d bytes: source MAC %v, frame says % x", len(payload), c.rec.SrcMAC, c.f.Data[6:12])
			}
		}
		// Both directions are captured: the requests coming in, the replies
		// this namespace sends.
		var requests, replies int
		for _, c := range got {
			if c.err == nil && c.rec.Transport == 1 && c.rec.FrameLen == 14+20+8+pingSize {
				switch c.f.Data[34] {
				case 8:
					requests++
				case 0:
					replies++
				}
			}
		}
		if requests != pings || replies != pings {
			t.Errorf("captured %d echo requests and %d replies, want %d of each", requests, replies, pings)
		}

		st, err := src.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Delivered != uint64(len(got)) || st.Received < st.Delivered || st.Dropped != 0 {
			t.Errorf("Stats() = %+v after %d frames, want them delivered and received, none dropped", st, len(got))
		}
		t.Logf("%s: %d frames, stats %+v", src.Mechanism(), len(got), st)
	})
}

func TestLiveSnapLen(t *testing.T) {
	vethModes(t, func(t *testing.T, opts LiveOptions, p *vethPair) {
		opts.SnapLen = 64
		src := openIn(t, p.capNS, p.capIf, opts)
		const port = 41000
		listenUDP(t, p.capNS, p.capIP, port, 1)
		sendUDP(t, p.peerNS, p.peerIP, p.capIP, port, [][]byte{make([]byte, 1000)})
		got := collect(t, src, func(got []captured) bool { return udpTo(got, port) != nil })
		c := udpTo(got, port)
		if c.f.CI.CaptureLength != 64 || c.f.CI.Length != 1042 || c.rec.FrameLen != 1042 {
			t.Errorf("1000-byte datagram at snap length 64: CaptureLength %d, Length %d, decoded frame length %d; want 64, 1042, 1042",
				c.f.CI.CaptureLength, c.f.CI.Length, c.rec.FrameLen)
		}
		if c.rec.PayloadLen != 1000 {
			t.Errorf("decoded payload length %d, want 1000 from the IP header", c.rec.PayloadLen)
		}
	})
}

// TestLiveVLAN sends an 802.1Q-tagged frame: the kernel takes the tag off
// before captures see the frame (with or without a VLAN device, which this
// test does not need), the capture puts it back.
func TestLiveVLAN(t *testing.T) {
	vethModes(t, func(t *testing.T, opts LiveOptions, p *vethPair) {
		src := openIn(t, p.capNS, p.capIf, opts)
		const port, vlan = 42000, 7
		payload := []byte("tagged")
		frame := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, vlan, 0x81, 0x00, 0xa0, vlan, 0x08, 0x00}
		ip := make([]byte, 20+8+len(payload))
		ip[0], ip[8], ip[9] = 0x45, 64, 17
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
		copy(ip[12:], p.peerIP)
		copy(ip[16:], p.capIP)
		binary.BigEndian.PutUint16(ip[10:], inetChecksum(ip[:20]))
		binary.BigEndian.PutUint16(ip[20:], 12345)
		binary.BigEndian.PutUint16(ip[22:], port)
		binary.BigEndian.PutUint16(ip[24:], uint16(8+len(payload)))
		copy(ip[28:], payload)
		frame = append(frame, ip...)
		netnstest.Do(t, p.peerNS, "send a tagged frame", func() error {
			ifi, err := net.InterfaceByName(p.peerIf)
			if err != nil {
				return err
			}
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}})
		})
		got := collect(t, src, func(got []captured) bool { return udpTo(got, port) != nil })
		c := udpTo(got, port)
		if !bytes.Equal(c.f.Data, frame) || c.f.CI.Length != len(frame) {
			t.Errorf("captured %d of %d bytes:\n% x\nwant the %d bytes sent:\n% x", c.f.CI.CaptureLength, c.f.CI.Length, c.f.Data, len(frame), frame)
		}
	})
}

// TestLiveLoopback checks that each loopback packet comes once, although the
// kernel shows it to captures leaving and arriving.
func TestLiveLoopback(t *testing.T) {
	nsModes(t, "l", func(t *testing.T, opts LiveOptions, ns string) {
		src := openIn(t, ns, "lo", opts)
		const port = 43000
		lo := net.IPv4(127, 0, 0, 1).To4()
		payloads := livePayloads()
		listenUDP(t, ns, lo, port, len(payloads))
		sendUDP(t, ns, lo, lo, port, payloads)
		got := collect(t, src, func(got []captured) bool { return len(got) == len(payloads) })
		for i, payload := range payloads {
			c := udpTo(got, port+i)
			if c == nil {
				t.Fatalf("no datagram to port %d among %s", port+i, describe(got))
			}
			if c.f.LinkType != features.LinkTypeEthernet || c.f.CI.Length != 42+len(payload) || !c.rec.SrcMAC.IsZero() {
				t.Errorf("loopback datagram of %d bytes: %s, length %d, source MAC %v; want Ethernet, %d, zero MAC", len(payload), c.f.LinkType, c.f.CI.Length, c.rec.SrcMAC, 42+len(payload))
			}
		}
		// Anything else would be a second copy.
		time.Sleep(200 * time.Millisecond)
		src.Close()
		if f, err := src.Next(); err != io.EOF {
			t.Errorf("Next after Close = frame %d, %v; want io.EOF", f.Offset, err)
		}
		if st, _ := src.Stats(); st.Received != uint64(len(payloads)) {
			t.Errorf("the kernel passed %d packets to the capture, want %d: loopback packets are counted twice", st.Received, len(payloads))
		}
	})
}

// TestLiveTun captures on a layer-3 device: the frames are raw IP.
func TestLiveTun(t *testing.T) {
	nsModes(t, "t", func(t *testing.T, opts LiveOptions, ns string) {
		name := "hmt" + strings.TrimPrefix(ns, "hmlive")
		var tun *os.File
		err := netnstest.InNetns(ns, func() error {
			fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			ifr, err := unix.NewIfreq(name)
			if err != nil {
				return err
			}
			ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
			if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
				unix.Close(fd)
				return err
			}
			tun = os.NewFile(uintptr(fd), "/dev/net/tun")
			return nil
		})
		if err != nil {
			t.Skipf("no tun device here (/dev/net/tun): %v", err)
		}
		t.Cleanup(func() { tun.Close() })
		netnstest.Run(t, "ip", "-n", ns, "addr", "add", "10.79.0.1/24", "dev", name)
		netnstest.Run(t, "ip", "-n", ns, "link", "set", name, "up")
		src := openIn(t, ns, name, opts)

		// A datagram from 10.79.0.2 written to the tun file arrives on the device.
		const port = 44000
		payload := []byte("raw ip payload")
		pkt := make([]byte, 20+8+len(payload))
		pkt[0], pkt[8], pkt[9] = 0x45, 64, 17
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		copy(pkt[12:], []byte{10, 79, 0, 2, 10, 79, 0, 1})
		binary.BigEndian.PutUint16(pkt[10:], inetChecksum(pkt[:20]))
		binary.BigEndian.PutUint16(pkt[20:], 12345)
		binary.BigEndian.PutUint16(pkt[22:], port)
		binary.BigEndian.PutUint16(pkt[24:], uint16(8+len(payload)))
		copy(pkt[28:], payload)
		if _, err := tun.Write(pkt); err != nil {
			t.Fatalf("write to the tun device: %v", err)
		}
		got := collect(t, src, func(got []captured) bool { return udpTo(got, port) != nil })
		c := udpTo(got, port)
		if c.f.LinkType != features.LinkTypeRaw || c.f.CI.Length != len(pkt) || !bytes.Equal(c.f.Data, pkt) {
			t.Errorf("tun datagram: %s, length %d, data % x; want raw IP, %d, the packet written", c.f.LinkType, c.f.CI.Length, c.f.Data, len(pkt))
		}
	})
}

func TestLiveCloseUnblocksNext(t *testing.T) {
	nsModes(t, "i", func(t *testing.T, opts LiveOptions, ns string) {
		src := openIn(t, ns, "lo", opts) // nothing is sent there
		type result struct {
			f   Frame
			err error
		}
		res := make(chan result, 1)
		go func() {
			f, err := src.Next()
			res <- result{f, err}
		}()
		time.Sleep(200 * time.Millisecond)
		select {
		case r := <-res:
			t.Fatalf("Next returned frame %d, %v on an idle interface", r.f.Offset, r.err)
		default:
		}
		closed := time.Now()
		if err := src.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case r := <-res:
			if r.err != io.EOF {
				t.Errorf("blocked Next after Close returned %v, want io.EOF", r.err)
			}
			t.Logf("Next returned %v after Close", time.Since(closed))
		case <-time.After(time.Second):
			t.Fatal("Next still blocked a second after Close")
		}
		if err := src.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := src.Next(); err != io.EOF {
			t.Errorf("Next after Close = %v, want io.EOF", err)
		}
	})
}

// TestLiveInterfaceDownUpRemoved: the capture survives the interface going
// down and up, and ends with ErrNoInterface when it is deleted.
func TestLiveInterfaceDownUpRemoved(t *testing.T) {
	vethModes(t, func(t *testing.T, opts LiveOptions, p *vethPair) {
		src := openIn(t, p.capNS, p.capIf, opts)
		const port = 45000
		listenUDP(t, p.capNS, p.capIP, port, 2)
		sendUDP(t, p.peerNS, p.peerIP, p.capIP, port, [][]byte{[]byte("before")})
		collect(t, src, func(got []captured) bool { return udpTo(got, port) != nil })

		netnstest.Run(t, "ip", "-n", p.capNS, "link", "set", p.capIf, "down")
		time.Sleep(100 * time.Millisecond)
		netnstest.Run(t, "ip", "-n", p.capNS, "link", "set", p.capIf, "up")
		// The link needs a moment to come up: keep sending until one arrives.
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
					netnstest.InNetns(p.peerNS, func() error {
						c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: p.capIP, Port: port + 1})
						if err == nil {
							c.Write([]byte("after"))
							c.Close()
						}
						return nil
					})
				}
			}
		}()
		dec := features.NewDecoder(features.HomeConfig{})
		deadline := time.AfterFunc(10*time.Second, func() { src.Close() })
		defer deadline.Stop()
		for {
			f, err := src.Next()
			if err != nil {
				t.Fatalf("no packet after the interface came back up: %v", err)
			}
			var rec schemas.Packet
			if dec.Decode(f.LinkType, f.Data, f.CI, f.Offset, &rec) == nil && rec.DPort == port+1 {
				break
			}
		}

		removed := time.Now()
		netnstest.Run(t, "ip", "-n", p.capNS, "link", "del", p.capIf)
		for {
			_, err := src.Next()
			if err == nil {
				continue
			}
			if !errors.Is(err, ErrNoInterface) {
				t.Fatalf("Next after the interface was removed = %v, want ErrNoInterface", err)
			}
			if d := time.Since(removed); d > 3*time.Second {
				t.Errorf("the removal was noticed after %v", d)
			}
			t.Logf("after %v: %v", time.Since(removed), err)
			break
		}
		if _, err := src.Next(); !errors.Is(err, ErrNoInterface) {
			t.Errorf("the next Next = %v, want the same error again", err)
		}
	})
}

// TestLiveOpenWhileDown opens a capture on an interface that is down: it
// waits, and captures once the interface is up.
func TestLiveOpenWhileDown(t *testing.T) {
	vethModes(t, func(t *testing.T, opts LiveOptions, p *vethPair) {
		netnstest.Run(t, "ip", "-n", p.capNS, "link", "set", p.capIf, "down")
		src := openIn(t, p.capNS, p.capIf, opts)
		res := make(chan error, 1)
		go func() {
			_, err := src.Next()
			res <- err
		}()
		time.Sleep(300 * time.Millisecond)
		select {
		case err := <-res:
			t.Fatalf("Next on a down interface returned %v instead of waiting", err)
		default:
		}
		netnstest.Run(t, "ip", "-n", p.capNS, "link", "set", p.capIf, "up")
		const port = 46000
		listenUDP(t, p.capNS, p.capIP, port, 1)
		// The link needs a moment to come up.
		for range 50 {
			sendUDP(t, p.peerNS, p.peerIP, p.capIP, port, [][]byte{[]byte("up")})
			select {
			case err := <-res:
				if err != nil {
					t.Fatalf("Next after the interface came up: %v", err)
				}
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		t.Fatal("nothing captured in 5s after the interface came up")
	})
}

func TestLiveInterfaceNotFound(t *testing.T) {
	for _, name := range []string{"hmnope0", "", "an-interface-name-too-long"} {
		_, err := OpenLive(name, LiveOptions{})
		if !errors.Is(err, ErrNoInterface) || !strings.Contains(err.Error(), "not found") || !strings.Contains(err.Error(), "`ip link`") {
			t.Errorf("OpenLive(%q) = %v, want interface not found, with `ip link`", name, err)
		}
	}
}

func TestLiveBadOptions(t *testing.T) {
	for _, opts := range []LiveOptions{{SnapLen: -1}, {SnapLen: maxFrameLen + 1}, {BufferBytes: -1}, {PollTimeout: time.Microsecond}} {
		if _, err := OpenLive("lo", opts); err == nil || !strings.Contains(err.Error(), "LiveOptions.") {
			t.Errorf("OpenLive(lo, %+v) = %v, want an error naming the option", opts, err)
		}
	}
}

// TestLiveNoPermission drops CAP_NET_RAW from one thread (capabilities are
// per thread) and opens a capture there.
func TestLiveNoPermission(t *testing.T) {
	netnstest.NeedRoot(t)
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: it dies with the goroutine instead of
		// running other goroutines without the capability.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		data[0].Effective &^= 1 << unix.CAP_NET_RAW
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		src, err := OpenLive("lo", LiveOptions{})
		if err == nil {
			src.Close()
			err = errors.New("OpenLive succeeded")
		}
		errc <- err
	}()
	err := <-errc
	if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "needs root or CAP_NET_RAW") {
		t.Errorf("OpenLive without CAP_NET_RAW = %v, want a permission error naming CAP_NET_RAW", err)
	}
}

func TestLiveLinkTypes(t *testing.T) {
	for _, c := range []struct {
		hw       uint16
		loopback bool
		want     features.LinkType
	}{
		{unix.ARPHRD_ETHER, false, features.LinkTypeEthernet},
		{unix.ARPHRD_LOOPBACK, true, features.LinkTypeEthernet},
		{unix.ARPHRD_NONE, false, features.LinkTypeRaw},
		{unix.ARPHRD_RAWIP, false, features.LinkTypeRaw},
		{unix.ARPHRD_PPP, false, features.LinkTypeRaw},
		{unix.ARPHRD_IEEE80211_RADIOTAP, false, features.LinkTypeRadiotap},
		{unix.ARPHRD_IEEE80211, false, features.LinkTypeIEEE80211},
		{unix.ARPHRD_IEEE80211_PRISM, false, features.LinkTypePrism},
	} {
		if got, err := liveLinkType(c.hw, c.loopback); got != c.want || err != nil {
			t.Errorf("ARPHRD %d: %s, %v; want %s", c.hw, got, err, c.want)
		}
	}
	// A CAN bus carries no IP.
	if _, err := liveLinkType(unix.ARPHRD_CAN, false); err == nil {
		t.Error("a CAN interface got a link type")
	}
}

// BenchmarkLive measures packets per second through a veth pair flooded with
// 64-byte datagrams from the peer namespace.
func BenchmarkLive(b *testing.B) {
	netnstest.NeedRoot(b)
	for _, mode := range []struct {
		name string
		opts LiveOptions
	}{{"ring", LiveOptions{}}, {"recvmsg", LiveOptions{noRing: true}}} {
		b.Run(mode.name, func(b *testing.B) {
			p := newVethPair(b)
			src := openIn(b, p.capNS, p.capIf, mode.opts)
			stop := make(chan struct{})
			flooding := make(chan error, 1)
			go func() {
				flooding <- netnstest.InNetns(p.peerNS, func() error {
					c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: p.capIP, Port: 9})
					if err != nil {
						return err
					}
					defer c.Close()
					payload := make([]byte, 64)
					for {
						select {
						case <-stop:
							return nil
						default:
						}
						c.Write(payload)
					}
				})
			}()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if _, err := src.Next(); err != nil {
					b.Fatal(err)
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			close(stop)
			if err := <-flooding; err != nil {
				b.Fatal(err)
			}
			st, _ := src.Stats()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pkts/s")
			b.ReportMetric(float64(st.Dropped)/float64(max(st.Received, 1))*100, "%dropped")
		})
	}
}

// TestLiveWithoutNetAdmin: the capture DaemonSet gets CAP_NET_RAW
// and not CAP_NET_ADMIN. Both capture mechanisms must open, with the
// interface promiscuous, and capture, on a thread without CAP_NET_ADMIN.
func TestLiveWithoutNetAdmin(t *testing.T) {
	netnstest.NeedRoot(t)
	modes(t, func(t *testing.T, opts LiveOptions) {
		ns := "hmlive" + netnstest.UniqueID() + "a"
		netnstest.NewNetns(t, ns)
		opts.Promiscuous = true
		var src Source
		err := netnstest.InNetns(ns, func() error {
			hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
			var data [2]unix.CapUserData
			if err := unix.Capget(&hdr, &data[0]); err != nil {
				return err
			}
			data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
			if err := unix.Capset(&hdr, &data[0]); err != nil {
				return err
			}
			// The drop took: what needs CAP_NET_ADMIN now fails.
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 1<<20); !errors.Is(err, unix.EPERM) {
				return fmt.Errorf("SO_RCVBUFFORCE without CAP_NET_ADMIN = %v, want EPERM: the capability was not dropped", err)
			}
			src, err = OpenLive("lo", opts)
			return err
		})
		if err != nil {
			t.Fatalf("OpenLive without CAP_NET_ADMIN: %v", err)
		}
		ls := src.(*LiveSource)
		defer ls.Close()
		t.Logf("mechanism: %s", ls.Mechanism())
		const port = 43500
		lo := net.IPv4(127, 0, 0, 1).To4()
		payloads := livePayloads()
		listenUDP(t, ns, lo, port, len(payloads))
		sendUDP(t, ns, lo, lo, port, payloads)
		got := collect(t, ls, func(got []captured) bool { return len(got) >= len(payloads) })
		if udpTo(got, port) == nil {
			t.Errorf("nothing captured to port %d: %s", port, describe(got))
		}
	})
}
