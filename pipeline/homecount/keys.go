package homecount

import (
	"slices"

	"github.com/homemole/homemole/pipeline/heartbeat"
	"github.com/homemole/homemole/schemas"
)

// ServedPort is added to a key's port when its host sent the packet from a
// port it serves to the client's port: an answer names the service, and
// the client's port is its operating system's pick for that one
// connection. Keyed by the client's port, every connection a phone opened
// to a bridge's web server was a new key: a Hue bridge showed 6,888
// distinct keys over its ten setup captures, of 1,563 ports, and a host
// that serves for a week would pass any bound on its keys; keyed by the
// port served, 292, and the same keys come back in the next session.
const ServedPort = 1 << 16

// maxServed bounds the TCP ports one host is known to serve.
const maxServed = 64

// servedPorts are the TCP ports a host answered a connection on (sent a
// SYN-ACK from), ascending.
type servedPorts []uint16

func (s *servedPorts) add(port int32) {
	i, found := slices.BinarySearch(*s, uint16(port))
	if !found && len(*s) < maxServed {
		*s = slices.Insert(*s, i, uint16(port))
	}
}

func (s servedPorts) has(port int32) bool {
	_, found := slices.BinarySearch(s, uint16(port))
	return found
}

// hostKey is what a packet tells of its host's type: its transport, the
// service's port and the length of its IP payload (the transport header
// and what it carries), stored in the key's IPLen.
//
// The service's port is the destination port, or ServedPort plus the
// source port when the host answers as the server: a TCP SYN-ACK, any TCP
// segment from a port it sent one from (served, which it updates), and a
// packet from a well-known port (below 1024, never a client's pick) to one
// above.
//
// The IP payload, not the IP length, so that a device's segments are the
// same keys over IPv4 and IPv6, whose headers are 20 bytes apart (and IPv4
// options and IPv6 extension headers count for neither); ICMPv6 is ICMP's
// place in IPv6, so a ping is one key in both. A model learned on IPv4
// captures then counts an IPv6-only home.
func hostKey(p *schemas.Packet, served *servedPorts) heartbeat.Key {
	n := p.PayloadLen
	switch p.Transport {
	case 6:
		if p.DPort != schemas.NoPort {
			n += 20 + uint32(p.TCPOptionsLen)
		}
	case 17:
		if p.DPort != schemas.NoPort {
			n += 8
		}
	}
	t := p.Transport
	if t == 58 {
		t = 1
	}
	return heartbeat.Key{Transport: t, Port: servicePort(p, served), IPLen: uint16(min(n, 0xffff))}
}

// servicePort is the port of the service a packet is of; see hostKey.
func servicePort(p *schemas.Packet, served *servedPorts) int32 {
	if p.DPort == schemas.NoPort || p.SrcPort == schemas.NoPort || p.DPort < 0 || p.SrcPort < 0 {
		return p.DPort
	}
	const syn, ack = 0x02, 0x10
	if p.Transport == 6 && p.TCPFlags&syn != 0 {
		if p.TCPFlags&ack == 0 {
			return p.DPort
		}
		served.add(p.SrcPort)
		return ServedPort + p.SrcPort
	}
	if (p.Transport == 6 && served.has(p.SrcPort)) || (p.SrcPort < 1024 && p.DPort >= 1024) {
		return ServedPort + p.SrcPort
	}
	return p.DPort
}

// hostKeyer keys the packets of a capture or a home, each host with the
// ports it serves.
type hostKeyer struct {
	served map[schemas.MAC]*servedPorts
}

// packet keeps every frame with a source MAC, ARP included: any frame
// shows its host is there; only those with a transport can show what it
// is.
func (kr *hostKeyer) packet(p *schemas.Packet) (hostPacket, bool) {
	if p.SrcMAC.IsZero() {
		return hostPacket{}, false
	}
	if kr.served == nil {
		kr.served = map[schemas.MAC]*servedPorts{}
	}
	s := kr.served[p.SrcMAC]
	if s == nil {
		s = new(servedPorts)
		kr.served[p.SrcMAC] = s
	}
	return hostPacket{TsNs: p.TsNs, Host: p.SrcMAC, Key: hostKey(p, s)}, true
}
