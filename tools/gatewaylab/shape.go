package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/gateway"
)

// The constant-rate shaper (cbr:RATE) runs on the tunnel's tun device at
// both ends, so that an observer of the WAN sees OpenVPN packets leave at
// a constant rate in each direction, the dummies encrypted like the rest:
//
//   - tc shapes: an HTB root whose size table (stab mpu) charges every
//     packet the same 1600 bytes, so its byte rate is a packet rate, RATE/2
//     per direction (the emulator's cbr:RATE is RATE packets per second for
//     the home, dummies alternating directions). Under it two HTB classes
//     borrow from that rate, real traffic first (prio 0), dummies (UDP port
//     9) second; each class alone is held to 8 bit/s, so every packet waits
//     for the shared rate's next token: a slot.
//   - a dummy sender beside tc keeps the dummy class's one-packet queue
//     full, so a slot no real packet takes carries a dummy (tc makes no
//     packets of its own). Like the emulator's, a dummy has the size of the
//     last real packet that left in its direction, which a tap on the tun
//     device reads (pipeline/capture's AF_PACKET capture). The queue drops
//     at its head (pfifo_head_drop): each offer replaces the dummy waiting,
//     so the one a slot takes was sized at most an offer ago, after the
//     real packet of the slot before. A queue that dropped the offer
//     instead kept a dummy sized before that packet left, a real packet
//     behind the emulator's, and so cost the bursts' shape in bytes: 7 to
//     11 % under the emulator's byte overhead in five runs.
//
// The gateway's end shapes what the home sends; the VPN server's end, in
// the isp namespace, shapes what it receives, which no box in the home can
// do for a packet already on the WAN.
type shaper struct {
	stop func()
	errs atomic.Int64
	err  atomic.Value
	// sending gates the dummy senders: they offer dummies only while the
	// captures run, so that each capture starts and ends in a quiet
	// tunnel, where the tunnel-order truth can line the WAN up with the
	// tun device.
	sending atomic.Bool
}

// dummyPort is where dummies go (discard); both ends drop them on arrival.
const dummyPort = 9

// shapeCost is the size every packet is charged (stab mpu): more than a
// packet of the tunnel's MTU, so that all cost the same.
const shapeCost = 1600

// dummyEvery is how often a dummy sender offers a dummy: well inside the
// slot of any rate the lab shapes at (up to 100 packets/s per direction),
// so the dummy waiting at a slot is fresh.
const dummyEvery = 2 * time.Millisecond

// maxShapeRate bounds cbr in the lab: beyond it the dummy senders' offers
// would come too seldom to fill every slot.
const maxShapeRate = 200

func (sh *shaper) fail(err error) {
	if sh.errs.Add(1) == 1 {
		sh.err.Store(err)
	}
}

func (sh *shaper) firstErr() error {
	if err, ok := sh.err.Load().(error); ok {
		return fmt.Errorf("%w (%d errors in all)", err, sh.errs.Load())
	}
	return nil
}

// startShaper shapes both ends of the tunnel at rate packets per second
// for the home and starts their dummy senders. It needs the tunnel up.
func (l *lab) startShaper(ctx context.Context, rate float64) (*shaper, error) {
	if rate > maxShapeRate {
		return nil, fmt.Errorf("cbr:%g: the lab shapes at most %d packets/s (its dummy senders offer one every %s)", rate, maxShapeRate, dummyEvery)
	}
	bits := fmt.Sprintf("%dbit", int64(rate/2*shapeCost*8+0.5))
	gwTun := netip4(tunNet, 2)
	sides := []struct {
		ns, dev string
		// from and to address the dummies: from the gateway's tunnel
		// address to the server's, and back from the isp's internet
		// side, so that the lab's truth (tunOut) tells their direction
		// by source as it does the home's packets'.
		from, to string
		out      func(gateway.Header) bool
	}{
		// On the gateway the home's packets leave from its tunnel address
		// (masqueraded); on the server they leave towards it.
		{l.gw, l.tun, "", netip4(tunNet, 1), func(h gateway.Header) bool { return h.Src.String() == gwTun }},
		{l.isp, "tun0", ispNetAddr, gwTun, func(h gateway.Header) bool { return h.Dst.String() == gwTun }},
	}
	for _, s := range sides {
		burst := fmt.Sprintf("%db", shapeCost)
		for _, c := range [][]string{
			{"tc", "qdisc", "add", "dev", s.dev, "root", "handle", "1:", "stab", "mpu", fmt.Sprint(shapeCost), "htb", "default", "10"},
			{"tc", "class", "add", "dev", s.dev, "parent", "1:", "classid", "1:1", "htb", "rate", bits, "ceil", bits, "burst", burst, "cburst", burst, "quantum", fmt.Sprint(shapeCost)},
			{"tc", "class", "add", "dev", s.dev, "parent", "1:1", "classid", "1:10", "htb", "rate", "8bit", "ceil", bits, "burst", burst, "cburst", burst, "prio", "0", "quantum", fmt.Sprint(shapeCost)},
			{"tc", "class", "add", "dev", s.dev, "parent", "1:1", "classid", "1:20", "htb", "rate", "8bit", "ceil", bits, "burst", burst, "cburst", burst, "prio", "1", "quantum", fmt.Sprint(shapeCost)},
			{"tc", "qdisc", "add", "dev", s.dev, "parent", "1:10", "handle", "10:", "pfifo", "limit", "100000"},
			{"tc", "qdisc", "add", "dev", s.dev, "parent", "1:20", "handle", "20:", "pfifo_head_drop", "limit", "1"},
			{"tc", "filter", "add", "dev", s.dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
				"match", "ip", "protocol", "17", "0xff", "match", "ip", "dport", fmt.Sprint(dummyPort), "0xffff", "flowid", "1:20"},
			// A dummy that arrived is dropped, not answered with an
			// ICMP error that would travel back as traffic of its own.
			{"iptables", "-A", "INPUT", "-i", s.dev, "-p", "udp", "--dport", fmt.Sprint(dummyPort), "-j", "DROP"},
		} {
			if err := l.in(ctx, s.ns, c...); err != nil {
				return nil, fmt.Errorf("shape %s in %s: %w", s.dev, s.ns, err)
			}
		}
	}
	sh := &shaper{}
	stopCh := make(chan struct{})
	var wg sync.WaitGroup
	var closers []func()
	for _, s := range sides {
		var last atomic.Int64
		last.Store(100) // until a real packet has left
		tap, err := inNS(s.ns, func() (capture.Source, error) {
			return capture.OpenLive(s.dev, capture.LiveOptions{SnapLen: 128, PollTimeout: 2 * time.Millisecond})
		})
		if err != nil {
			close(stopCh)
			for _, c := range closers {
				c()
			}
			return nil, fmt.Errorf("tap %s in %s: %w", s.dev, s.ns, err)
		}
		closers = append(closers, func() { tap.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				fr, err := tap.Next()
				if err != nil {
					return
				}
				h, err := gateway.ParseHeader(fr.LinkType, fr.Data)
				if err != nil || !s.out(h) || h.Proto == gateway.ProtoUDP && h.DstPort == dummyPort {
					continue
				}
				last.Store(int64(h.Len))
			}
		}()
		conn, err := inNS(s.ns, func() (*net.UDPConn, error) {
			var from *net.UDPAddr
			if s.from != "" {
				from = &net.UDPAddr{IP: net.ParseIP(s.from)}
			}
			return net.DialUDP("udp4", from, &net.UDPAddr{IP: net.ParseIP(s.to), Port: dummyPort})
		})
		if err != nil {
			close(stopCh)
			for _, c := range closers {
				c()
			}
			return nil, fmt.Errorf("dummy sender in %s: %w", s.ns, err)
		}
		closers = append(closers, func() { conn.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			tick := time.NewTicker(dummyEvery)
			defer tick.Stop()
			for {
				select {
				case <-stopCh:
					return
				case <-tick.C:
				}
				if !sh.sending.Load() {
					continue
				}
				n := max(int(last.Load())-gateway.OuterUDPOverhead, 0)
				// The dummy queue drops the dummy it held for this one:
				// that is how the sender keeps it full and fresh without
				// knowing when slots come. (ENOBUFS: a full socket buffer
				// on a loaded machine; the next offer comes in 2 ms.)
				if _, err := conn.Write(buf[:n]); err != nil && !errors.Is(err, syscall.ENOBUFS) {
					sh.fail(fmt.Errorf("dummy sender in %s: %w", s.ns, err))
				}
			}
		}()
	}
	sh.stop = func() {
		close(stopCh)
		for _, c := range closers {
			c()
		}
		wg.Wait()
	}
	return sh, nil
}

// netip4 is the address host of a /24 network such as tunNet.
func netip4(network string, host byte) string {
	ip := net.ParseIP(network).To4()
	return net.IPv4(ip[0], ip[1], ip[2], host).String()
}
