package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/gateway"
)

// event is one payload of a flow at a time relative to the replay's start.
type event struct {
	at   time.Duration
	out  bool // from the device
	size int
}

type flow struct {
	tcp bool
	// v6 replays the flow between the device's and the internet host's
	// IPv6 addresses.
	v6     bool
	start  time.Duration
	events []event
}

type script struct {
	device  netip.Addr
	flows   []flow
	packets int // payload events
	length  time.Duration
	// skipped counts TCP flows whose SYN the capture does not show from the
	// device: the device is not their client, or they began earlier.
	skipped int
}

type limits struct {
	maxPackets int
	maxLength  time.Duration
	maxGap     time.Duration
	minPayload int
	maxPayload int
}

// withIPv6 is the script with every other flow replayed over IPv6 when on
// (the capture's flows are IPv4: a home's devices talk both).
func (s *script) withIPv6(on bool) *script {
	c := *s
	c.flows = slices.Clone(s.flows)
	for i := range c.flows {
		c.flows[i].v6 = on && i%2 == 1
	}
	return &c
}

func isPublic(a netip.Addr) bool {
	return a.IsValid() && a.Is4() && a.IsGlobalUnicast() && !a.IsPrivate()
}

// loadScript takes the flows of the capture's busiest device whose client
// is the device, in the capture's time with idle gaps shortened to maxGap.
func loadScript(path string, lim limits) (*script, error) {
	type pkt struct {
		ts      time.Time
		h       gateway.Header
		payload int
	}
	read := func(fn func(pkt)) error {
		return eachFrame(path, func(fr capture.Frame) {
			h, err := gateway.ParseHeader(fr.LinkType, fr.Data)
			if err != nil || h.V6 || h.Later || !h.HasPorts || (h.Proto != gateway.ProtoTCP && h.Proto != gateway.ProtoUDP) {
				return
			}
			fn(pkt{fr.CI.Timestamp, h, payloadLen(fr.Data, h)})
		})
	}
	count := map[netip.Addr]int{}
	if err := read(func(p pkt) {
		if p.h.Src.IsPrivate() && isPublic(p.h.Dst) {
			count[p.h.Src]++
		}
	}); err != nil {
		return nil, err
	}
	s := &script{}
	for a, n := range count {
		if !s.device.IsValid() || n > count[s.device] || (n == count[s.device] && a.Less(s.device)) {
			s.device = a
		}
	}
	if !s.device.IsValid() {
		return nil, fmt.Errorf("%s: no private host talks to a public address", path)
	}
	type key struct {
		proto  uint8
		remote netip.AddrPort
		local  uint16
	}
	index := map[key]int{} // -1: not replayed
	var last time.Time
	var now time.Duration
	seen := 0
	errStop := errors.New("stop")
	err := read(func(p pkt) {
		if seen >= lim.maxPackets || now > lim.maxLength {
			return
		}
		out := p.h.Src == s.device && isPublic(p.h.Dst)
		in := p.h.Dst == s.device && isPublic(p.h.Src)
		if !out && !in {
			return
		}
		k := key{p.h.Proto, netip.AddrPortFrom(p.h.Dst, p.h.DstPort), p.h.SrcPort}
		if in {
			k = key{p.h.Proto, netip.AddrPortFrom(p.h.Src, p.h.SrcPort), p.h.DstPort}
		}
		if !last.IsZero() {
			gap := p.ts.Sub(last)
			if gap < 0 {
				gap = 0
			}
			now += min(gap, lim.maxGap)
		}
		last = p.ts
		if now > lim.maxLength {
			return
		}
		seen++
		i, ok := index[k]
		if !ok {
			tcp := p.h.Proto == gateway.ProtoTCP
			const syn, ack = 0x02, 0x10
			if !out || (tcp && p.h.Flags&(syn|ack) != syn) {
				index[k] = -1
				if tcp {
					s.skipped++
				}
				return
			}
			i = len(s.flows)
			index[k] = i
			s.flows = append(s.flows, flow{tcp: tcp, start: now})
		}
		if i < 0 || p.payload == 0 {
			return
		}
		size := min(max(p.payload, lim.minPayload), lim.maxPayload)
		f := &s.flows[i]
		f.events = append(f.events, event{at: now, out: out, size: size})
		s.packets++
		s.length = now
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	return s, nil
}

// payloadLen is the transport payload's length on the wire.
func payloadLen(data []byte, h gateway.Header) int {
	l4 := h.Len - h.HdrLen
	if h.Proto == gateway.ProtoUDP {
		return max(l4-8, 0)
	}
	at := h.IPStart + h.L4 + 12
	if at >= len(data) {
		return 0
	}
	return max(l4-int(data[at]>>4)*4, 0)
}

// tagger makes payloads: the first 8 bytes are a sequence number unique in
// the run, the rest bytes drawn from a generator seeded with it, so that any
// piece of any payload, even one TCP cut differently, is unique as well.
type tagger struct{ seq atomic.Uint64 }

func (t *tagger) payload(size int) []byte {
	n := t.seq.Add(1)
	b := make([]byte, max(size, 8))
	binary.BigEndian.PutUint64(b, n)
	r := rand.New(rand.NewPCG(n, 0x686f6d656d6f6c65))
	for i := 8; i < len(b); i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], r.Uint64())
		copy(b[i:], w[:])
	}
	return b[:size]
}

type replayStats struct {
	flows, udp, tcp, v6 int
	sent, recv          atomic.Int64
	errs                atomic.Int64
	firstErr            atomic.Value
}

func (st *replayStats) fail(err error) {
	if err == nil {
		return
	}
	if st.errs.Add(1) == 1 {
		st.firstErr.Store(err)
	}
}

const basePort = 20000

// server is the responder's address of flow i and the networks to reach it.
func (f flow) server(i int) (addr, tcpNet, udpNet string) {
	if f.v6 {
		return net.JoinHostPort(inetAddr6, fmt.Sprint(basePort+i)), "tcp6", "udp6"
	}
	return net.JoinHostPort(inetAddr, fmt.Sprint(basePort+i)), "tcp4", "udp4"
}

// replay plays the script: for flow i, a responder in the internet namespace
// on port basePort+i and a client in the device namespace, each writing its
// side's payloads at the script's times.
func (l *lab) replay(ctx context.Context, s *script) (*replayStats, error) {
	st := &replayStats{flows: len(s.flows)}
	tg := &tagger{}
	type listener struct {
		udp *net.UDPConn
		tcp *net.TCPListener
	}
	ls := make([]listener, len(s.flows))
	closeAll := func() {
		for _, x := range ls {
			if x.udp != nil {
				x.udp.Close()
			}
			if x.tcp != nil {
				x.tcp.Close()
			}
		}
	}
	defer closeAll()
	for i, f := range s.flows {
		addr, tcpNet, udpNet := f.server(i)
		if f.v6 {
			st.v6++
		}
		var err error
		if f.tcp {
			st.tcp++
			ls[i].tcp, err = inNS(l.inet, func() (*net.TCPListener, error) {
				a, err := net.ResolveTCPAddr(tcpNet, addr)
				if err != nil {
					return nil, err
				}
				return net.ListenTCP(tcpNet, a)
			})
		} else {
			st.udp++
			ls[i].udp, err = inNS(l.inet, func() (*net.UDPConn, error) {
				a, err := net.ResolveUDPAddr(udpNet, addr)
				if err != nil {
					return nil, err
				}
				return net.ListenUDP(udpNet, a)
			})
		}
		if err != nil {
			return nil, err
		}
	}
	// Closing the listeners is what ends an Accept or ReadFrom at once on
	// an interrupt, instead of at their deadlines.
	stopCh := make(chan struct{})
	defer close(stopCh)
	go func() {
		select {
		case <-ctx.Done():
		case <-stopCh:
			return
		}
		closeAll()
	}()
	t0 := time.Now().Add(300 * time.Millisecond)
	until := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Until(t0.Add(d))):
			return true
		}
	}
	linger := 1500 * time.Millisecond
	// play writes one side's events of a flow on w, each at its time, and
	// holds the connection open for the linger after the flow's last event;
	// a failed write ends that side at once.
	play := func(w io.Writer, events []event, out bool, end time.Duration) {
		for _, e := range events {
			if e.out == out && until(e.at) {
				if _, err := w.Write(tg.payload(e.size)); err != nil {
					st.fail(err)
					return
				}
				st.sent.Add(1)
			}
		}
		until(end + linger)
	}
	var wg sync.WaitGroup
	for i, f := range s.flows {
		end := f.start
		if n := len(f.events); n > 0 {
			end = f.events[n-1].at
		}
		deadline := t0.Add(end + linger + 2*time.Second)
		server, tcpNet, udpNet := f.server(i)
		if f.tcp {
			wg.Add(2)
			go func(ln *net.TCPListener) {
				defer wg.Done()
				ln.SetDeadline(deadline)
				c, err := ln.AcceptTCP()
				if err != nil {
					st.fail(fmt.Errorf("flow %d accept: %w", i, err))
					return
				}
				defer c.Close()
				c.SetDeadline(deadline.Add(time.Second))
				go func() { n, _ := io.Copy(io.Discard, c); st.recv.Add(n) }()
				play(c, f.events, false, end)
			}(ls[i].tcp)
			go func() {
				defer wg.Done()
				if !until(f.start) {
					return
				}
				c, err := inNS(l.dev, func() (*net.TCPConn, error) {
					d := net.Dialer{Timeout: 3 * time.Second}
					c, err := d.DialContext(ctx, tcpNet, server)
					if err != nil {
						return nil, err
					}
					return c.(*net.TCPConn), nil
				})
				if err != nil {
					st.fail(fmt.Errorf("flow %d dial: %w", i, err))
					return
				}
				defer c.Close()
				c.SetNoDelay(true)
				c.SetDeadline(deadline.Add(time.Second))
				go func() { n, _ := io.Copy(io.Discard, c); st.recv.Add(n) }()
				play(c, f.events, true, end)
			}()
			continue
		}
		wg.Add(2)
		peer := make(chan net.Addr, 1)
		go func(pc *net.UDPConn) {
			defer wg.Done()
			pc.SetDeadline(deadline)
			go func() {
				buf := make([]byte, 65536)
				first := true
				for {
					n, a, err := pc.ReadFrom(buf)
					if err != nil {
						if first {
							close(peer)
						}
						return
					}
					st.recv.Add(int64(n))
					if first {
						peer <- a
						first = false
					}
				}
			}()
			var to net.Addr
			for _, e := range f.events {
				if e.out {
					continue
				}
				if to == nil {
					// A reply cannot leave before the request that
					// tells the responder where to send it.
					select {
					case a, ok := <-peer:
						if !ok {
							return
						}
						to = a
					case <-ctx.Done():
						return
					}
				}
				if !until(e.at) {
					return
				}
				if _, err := pc.WriteTo(tg.payload(e.size), to); err != nil {
					st.fail(err)
					return
				}
				st.sent.Add(1)
			}
			until(end + linger)
		}(ls[i].udp)
		go func() {
			defer wg.Done()
			if !until(f.start) {
				return
			}
			c, err := inNS(l.dev, func() (*net.UDPConn, error) {
				a, err := net.ResolveUDPAddr(udpNet, server)
				if err != nil {
					return nil, err
				}
				return net.DialUDP(udpNet, nil, a)
			})
			if err != nil {
				st.fail(fmt.Errorf("flow %d: %w", i, err))
				return
			}
			defer c.Close()
			c.SetDeadline(deadline)
			go func() {
				buf := make([]byte, 65536)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					st.recv.Add(int64(n))
				}
			}()
			play(c, f.events, true, end)
		}()
	}
	wg.Wait()
	return st, ctx.Err()
}
