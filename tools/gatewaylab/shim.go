package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/gateway/defense"
)

// The padding shim carries the OpenVPN tunnel across the WAN with every
// datagram padded to its bucket (pad:N, pad:mtu): OpenVPN has no padding
// option, and WireGuard's own is fixed at 16 bytes of plaintext (see
// gateway.PayloadSize), so the lab pads outside the tunnel, as an
// obfuscating proxy in front of a VPN does. Each end relays between its
// OpenVPN on loopback and the other end on the WAN:
//
//	gw:  OpenVPN client -> 127.0.0.1:1194 shim -> 203.0.113.1:1194
//	isp: 203.0.113.1:1194 shim -> 127.0.0.1:1194 OpenVPN server
//
// A padded datagram is the tunnel datagram, random bytes, and a 2-byte
// trailer holding the tunnel datagram's length masked with a key the two
// ends share: an observer cannot read the real size off the trailer, and
// OpenVPN's opcode stays the first byte, where the lab's tunnel-order
// ground truth (truthVPN) looks for it. One goroutine per direction keeps
// each direction's order, which that truth relies on too.
type padShim struct {
	pad  int
	key  [32]byte
	errs atomic.Int64
	err  atomic.Value
	wg   sync.WaitGroup
	// conns are closed by stop, which ends the relays.
	conns []*net.UDPConn
}

// shimTrailer is the masked length at the end of a padded datagram.
const shimTrailer = 2

// shimPrefix is how much of a padded datagram seeds its trailer's mask:
// OpenVPN's opcode, peer id and packet id, unique per datagram and
// direction (random padding where the datagram is shorter).
const shimPrefix = 8

// startPadShim starts both ends of the shim in the lab's gateway and isp
// namespaces.
func (l *lab) startPadShim(pad int) (*padShim, error) {
	sh := &padShim{pad: pad}
	if _, err := rand.Read(sh.key[:]); err != nil {
		return nil, err
	}
	udp := func(ns, listen, dial string) (*net.UDPConn, error) {
		return inNS(ns, func() (*net.UDPConn, error) {
			if listen != "" {
				a, err := net.ResolveUDPAddr("udp4", listen)
				if err != nil {
					return nil, err
				}
				return net.ListenUDP("udp4", a)
			}
			a, err := net.ResolveUDPAddr("udp4", dial)
			if err != nil {
				return nil, err
			}
			return net.DialUDP("udp4", nil, a)
		})
	}
	gwLocal, err := udp(l.gw, "127.0.0.1:1194", "")
	if err != nil {
		return nil, fmt.Errorf("padding shim, gateway end: %w", err)
	}
	sh.conns = append(sh.conns, gwLocal)
	gwWAN, err := udp(l.gw, "", ispWANAddr+":1194")
	if err != nil {
		sh.stop()
		return nil, fmt.Errorf("padding shim, gateway end: %w", err)
	}
	sh.conns = append(sh.conns, gwWAN)
	ispWAN, err := udp(l.isp, ispWANAddr+":1194", "")
	if err != nil {
		sh.stop()
		return nil, fmt.Errorf("padding shim, isp end: %w", err)
	}
	sh.conns = append(sh.conns, ispWAN)
	ispLocal, err := udp(l.isp, "", "127.0.0.1:1194")
	if err != nil {
		sh.stop()
		return nil, fmt.Errorf("padding shim, isp end: %w", err)
	}
	sh.conns = append(sh.conns, ispLocal)

	// Each listening socket answers whoever spoke to it last: the OpenVPN
	// client's port on the gateway, the gateway end's on the isp.
	var client, gwEnd atomic.Pointer[net.UDPAddr]
	fromListener := func(c *net.UDPConn, peer *atomic.Pointer[net.UDPAddr]) func([]byte) (int, error) {
		return func(b []byte) (int, error) {
			n, a, err := c.ReadFromUDP(b)
			if err == nil {
				peer.Store(a)
			}
			return n, err
		}
	}
	toListener := func(c *net.UDPConn, peer *atomic.Pointer[net.UDPAddr]) func([]byte) error {
		return func(b []byte) error {
			a := peer.Load()
			if a == nil {
				return errors.New("no peer has spoken yet")
			}
			_, err := c.WriteToUDP(b, a)
			return err
		}
	}
	write := func(c *net.UDPConn) func([]byte) error {
		return func(b []byte) error { _, err := c.Write(b); return err }
	}
	sh.relay("gateway, outbound", fromListener(gwLocal, &client), write(gwWAN), sh.wrap)
	sh.relay("gateway, inbound", gwWAN.Read, toListener(gwLocal, &client), sh.unwrap)
	sh.relay("isp, outbound", fromListener(ispWAN, &gwEnd), write(ispLocal), sh.unwrap)
	sh.relay("isp, inbound", ispLocal.Read, toListener(ispWAN, &gwEnd), sh.wrap)
	return sh, nil
}

// relay moves datagrams from read to write through conv until read fails
// (stop closes its socket).
func (sh *padShim) relay(name string, read func([]byte) (int, error), write func([]byte) error, conv func([]byte, []byte) ([]byte, error)) {
	sh.wg.Add(1)
	go func() {
		defer sh.wg.Done()
		in := make([]byte, 65536)
		out := make([]byte, 65536+defense.MTU)
		for {
			n, err := read(in)
			if err != nil {
				return
			}
			b, err := conv(out, in[:n])
			if err == nil {
				err = write(b)
			}
			if err != nil && sh.errs.Add(1) == 1 {
				sh.err.Store(fmt.Errorf("padding shim (%s): %w", name, err))
			}
		}
	}()
}

// firstErr is the first error a relay met, nil when none did.
func (sh *padShim) firstErr() error {
	if err, ok := sh.err.Load().(error); ok {
		return fmt.Errorf("%w (%d errors in all)", err, sh.errs.Load())
	}
	return nil
}

func (sh *padShim) stop() {
	for _, c := range sh.conns {
		c.Close()
	}
	sh.wg.Wait()
}

// paddedLen is the IP length of the padded datagram that carries a tunnel
// datagram of n bytes: the defence's bucket (defense.Spec.Pad, never past
// the MTU) of the IP packet with the trailer. Only a datagram within 2
// bytes of its bucket, or already at the MTU, costs the trailer more than
// the emulator's padding.
func paddedLen(n, pad int) int {
	ip := gateway.OuterUDPOverhead + n + shimTrailer
	if ip >= defense.MTU {
		return ip
	}
	return min((ip+pad-1)/pad*pad, defense.MTU)
}

func (sh *padShim) mask(body []byte) uint16 {
	h := sha256.New()
	h.Write(sh.key[:])
	h.Write(body[:min(len(body), shimPrefix)])
	return binary.BigEndian.Uint16(h.Sum(nil))
}

// wrap pads a tunnel datagram into out.
func (sh *padShim) wrap(out, datagram []byte) ([]byte, error) {
	if len(datagram) > 0xffff-shimTrailer {
		return nil, fmt.Errorf("tunnel datagram of %d bytes: too long to frame", len(datagram))
	}
	size := paddedLen(len(datagram), sh.pad) - gateway.OuterUDPOverhead
	b := out[:size]
	copy(b, datagram)
	rand.Read(b[len(datagram) : size-shimTrailer])
	binary.BigEndian.PutUint16(b[size-shimTrailer:], uint16(len(datagram))^sh.mask(b[:size-shimTrailer]))
	return b, nil
}

// unwrap is wrap undone, the tunnel datagram (it may alias both buffers).
func (sh *padShim) unwrap(_, padded []byte) ([]byte, error) {
	n, err := sh.innerLen(padded)
	if err != nil {
		return nil, err
	}
	return padded[:n], nil
}

// innerLen reads a padded datagram's tunnel datagram length.
func (sh *padShim) innerLen(padded []byte) (int, error) {
	if len(padded) < shimTrailer {
		return 0, fmt.Errorf("padded datagram of %d bytes: shorter than its trailer", len(padded))
	}
	body := padded[:len(padded)-shimTrailer]
	n := int(binary.BigEndian.Uint16(padded[len(body):]) ^ sh.mask(body))
	if n > len(body) {
		return 0, fmt.Errorf("padded datagram of %d bytes declares %d bytes of tunnel datagram: not from this shim", len(padded), n)
	}
	return n, nil
}
