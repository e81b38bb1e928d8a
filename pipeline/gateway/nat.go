package gateway

import (
	"encoding/binary"
	"net/netip"
)

// flowKey names a NAPT translation as Linux conntrack does: protocol, the
// LAN endpoint and the remote endpoint (for ICMP the identifier stands in
// for the LAN port and the remote port is 0).
type flowKey struct {
	proto  uint8
	lan    netip.AddrPort
	remote netip.AddrPort
}

// portKey is an external port of one protocol. A port serves one mapping
// at a time, whatever the remote end, so a WAN port names one LAN endpoint
// while its mapping lives (endpoint-independent mapping, RFC 4787).
type portKey struct {
	proto uint8
	port  uint16
}

type mapping struct {
	key    flowKey
	ext    uint16
	last   int64
	closed bool // a TCP FIN or RST was seen
}

func (e *emulator) timeout(m *mapping) int64 {
	switch m.key.proto {
	case ProtoTCP:
		if m.closed {
			return int64(e.cfg.TCPClosedTimeout)
		}
		return int64(e.cfg.TCPTimeout)
	case ProtoUDP:
		return int64(e.cfg.UDPTimeout)
	case ProtoICMP:
		return int64(e.cfg.ICMPTimeout)
	}
	return int64(e.cfg.OtherTimeout)
}

func (e *emulator) expired(m *mapping, ts int64) bool { return ts-m.last > e.timeout(m) }

func (e *emulator) release(m *mapping) {
	delete(e.nat, m.key)
	pk := portKey{m.key.proto, m.ext}
	if e.ports[pk] == m {
		delete(e.ports, pk)
	}
}

// lookup returns the flow's live mapping, creating one (and allocating its
// external port) when there is none or the old one timed out. An inbound
// packet without a mapping gets one too: its flow began before the capture.
func (e *emulator) lookup(key flowKey, ts int64) *mapping {
	if m := e.nat[key]; m != nil {
		if !e.expired(m, ts) {
			return m
		}
		e.release(m)
	}
	m := &mapping{key: key, last: ts}
	m.ext = e.allocate(key, ts)
	e.nat[key] = m
	pk := portKey{key.proto, m.ext}
	e.ports[pk] = m
	e.mappings++
	if e.everUsed[pk] {
		e.reused++
	}
	e.everUsed[pk] = true
	return m
}

// allocate picks a free external port: the LAN port when KeepPorts allows
// and it is free, else random draws from the range, else the first free
// one. A port whose mapping timed out is free again.
func (e *emulator) allocate(key flowKey, ts int64) uint16 {
	free := func(p uint16) bool {
		m := e.ports[portKey{key.proto, p}]
		if m == nil {
			return true
		}
		if e.expired(m, ts) {
			e.release(m)
			return true
		}
		return false
	}
	if e.cfg.KeepPorts && free(key.lan.Port()) {
		return key.lan.Port()
	}
	lo, n := int(e.cfg.PortMin), int(e.cfg.PortMax)-int(e.cfg.PortMin)+1
	for range 64 {
		if p := uint16(lo + e.rng.IntN(n)); free(p) {
			return p
		}
	}
	for i := range n {
		if p := uint16(lo + i); free(p) {
			return p
		}
	}
	// Every port is taken: Linux would drop the packet; sharing a port
	// keeps the emulation going and the truth file still says what is what.
	return uint16(lo + e.rng.IntN(n))
}

// translate rewrites one IP packet in place as it leaves the gateway
// outbound (source onto the WAN address and external port) or as it arrived
// inbound before the gateway rewrote it (destination on the WAN address).
// The TTL differs by the hop the gateway is. IP ID and TCP sequence numbers
// pass through as Linux leaves them.
func (e *emulator) translate(st *Stats, ip []byte, h Header, out bool, ts int64) {
	if h.V6 {
		// No NAT for IPv6: the home's prefix is routed.
		if out {
			ip[7]--
		} else if ip[7] < 255 {
			ip[7]++
		}
		return
	}
	if out {
		ip[8]--
	} else if ip[8] < 255 {
		ip[8]++
	}

	wan := e.cfg.WANAddr.As4()
	addrAt := 16
	if out {
		addrAt = 12
	}
	var oldAddr [4]byte
	copy(oldAddr[:], ip[addrAt:addrAt+4])
	copy(ip[addrAt:addrAt+4], wan[:])
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:12], checksum(ip[:h.HdrLen], 0))

	if h.Later {
		return
	}
	t := ip[h.L4:]
	csumAt := -1
	switch h.Proto {
	case ProtoTCP:
		csumAt = 16
	case ProtoUDP:
		csumAt = 6
	case ProtoICMP:
		csumAt = 2
	}
	var sum uint16
	haveSum := csumAt >= 0 && len(t) >= csumAt+2
	if haveSum {
		sum = binary.BigEndian.Uint16(t[csumAt:])
	}
	// UDP over IPv4 may go without a checksum; it stays without.
	if h.Proto == ProtoUDP && sum == 0 {
		haveSum = false
	}
	if haveSum && (h.Proto == ProtoTCP || h.Proto == ProtoUDP) {
		sum = adjustBytes(sum, oldAddr[:], wan[:])
	}
	if h.HasPorts {
		key := flowKey{proto: h.Proto}
		if out {
			key.lan = netip.AddrPortFrom(h.Src, h.SrcPort)
			key.remote = netip.AddrPortFrom(h.Dst, h.DstPort)
		} else {
			key.lan = netip.AddrPortFrom(h.Dst, h.DstPort)
			key.remote = netip.AddrPortFrom(h.Src, h.SrcPort)
		}
		if h.Proto == ProtoICMP {
			key.remote = netip.AddrPortFrom(key.remote.Addr(), 0)
		}
		m := e.lookup(key, ts)
		m.last = ts
		if h.Proto == ProtoTCP {
			switch {
			case h.Flags&0x05 != 0: // FIN or RST
				m.closed = true
			case h.Flags&0x12 == 0x02: // a new SYN reopens the flow
				m.closed = false
			}
		}
		portAt := 2 // inbound: destination port
		if out {
			portAt = 0
		}
		if h.Proto == ProtoICMP {
			portAt = 4
		}
		old := binary.BigEndian.Uint16(t[portAt:])
		binary.BigEndian.PutUint16(t[portAt:], m.ext)
		if haveSum {
			sum = adjust(sum, old, m.ext)
		}
	}
	if haveSum && h.Proto == ProtoICMP && isICMPError(h.ICMPType) && len(t) >= 8 {
		sum = e.translateQuoted(t[8:], out, ts, sum)
	}
	if haveSum {
		if h.Proto == ProtoUDP && sum == 0 {
			sum = 0xffff
		}
		binary.BigEndian.PutUint16(t[csumAt:], sum)
	}
}

// isICMPError: unreachable, source quench, redirect, time exceeded and
// parameter problem quote the packet they are about.
func isICMPError(typ uint8) bool {
	return typ == 3 || typ == 4 || typ == 5 || typ == 11 || typ == 12
}

// translateQuoted rewrites the packet an ICMP error quotes so that it names
// the WAN side, as the packet it is about looked there (RFC 5508 section
// 4.2), and returns the ICMP checksum adjusted for every changed byte. The
// quoted packet went the other way: an inbound error quotes an outbound
// packet of the LAN host. Only a live mapping is used; a stray error is
// left as it is.
func (e *emulator) translateQuoted(q []byte, out bool, ts int64, icmpSum uint16) uint16 {
	if len(q) < 20 || q[0]>>4 != 4 {
		return icmpSum
	}
	ihl := int(q[0]&0xf) * 4
	if ihl < 20 || len(q) < ihl+4 {
		return icmpSum
	}
	proto := q[9]
	if proto != ProtoTCP && proto != ProtoUDP {
		return icmpSum
	}
	l4 := q[ihl:]
	// Quoted outbound (inbound error): LAN end is the quoted source.
	addrAt, portAt := 12, 0
	key := flowKey{proto: proto,
		lan:    netip.AddrPortFrom(netip.AddrFrom4([4]byte(q[12:16])), binary.BigEndian.Uint16(l4[0:2])),
		remote: netip.AddrPortFrom(netip.AddrFrom4([4]byte(q[16:20])), binary.BigEndian.Uint16(l4[2:4]))}
	if out {
		addrAt, portAt = 16, 2
		key.lan, key.remote = key.remote, key.lan
	}
	m := e.nat[key]
	if m == nil || e.expired(m, ts) {
		return icmpSum
	}
	wan := e.cfg.WANAddr.As4()
	var oldAddr [4]byte
	copy(oldAddr[:], q[addrAt:addrAt+4])
	oldPort := binary.BigEndian.Uint16(l4[portAt:])
	oldIPSum := binary.BigEndian.Uint16(q[10:12])

	copy(q[addrAt:addrAt+4], wan[:])
	binary.BigEndian.PutUint16(l4[portAt:], m.ext)
	newIPSum := adjustBytes(oldIPSum, oldAddr[:], wan[:])
	binary.BigEndian.PutUint16(q[10:12], newIPSum)

	icmpSum = adjustBytes(icmpSum, oldAddr[:], wan[:])
	icmpSum = adjust(icmpSum, oldPort, m.ext)
	icmpSum = adjust(icmpSum, oldIPSum, newIPSum)
	// A quoted UDP header carries its checksum within the 8 bytes
	// every error quotes; TCP's lies beyond them.
	csumAt := 6
	if proto == ProtoTCP {
		csumAt = 16
	}
	if len(l4) >= csumAt+2 {
		old := binary.BigEndian.Uint16(l4[csumAt:])
		if old != 0 || proto == ProtoTCP {
			nsum := adjustBytes(old, oldAddr[:], wan[:])
			nsum = adjust(nsum, oldPort, m.ext)
			if proto == ProtoUDP && nsum == 0 {
				nsum = 0xffff
			}
			binary.BigEndian.PutUint16(l4[csumAt:], nsum)
			icmpSum = adjust(icmpSum, old, nsum)
		}
	}
	return icmpSum
}
