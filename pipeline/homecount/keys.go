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

// DHCPOption is the port of a key that is a DHCP client's fingerprint
// (schemas.DHCPClient), plus the option's code; the key's IPLen is the
// option's hash folded to 16 bits. Of the three options the fingerprint
// holds, only the host name (12) is a key: firmware names its model there
// (a D-Link siren and water sensor send one parameter list, one vendor
// class and one request length, and name themselves DCH-S220 and
// DCH-S160). Every host sends it when it joins and again at each lease
// renewal. The parameter request list and the vendor class are a stack's
// and a build's: keyed too (measured with the name as a key like any
// other, before a name decided among near captures), the list counted no
// type more, and the vendor class one more at the cost of 20 more
// captures of types left out of training counted as another vendor's
// units (HostCounter.Unseen; the OEM cameras of D-Link and Ednet run one
// udhcp build).
const DHCPOption = 1 << 17

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

// packetKeys are the keys a packet shows: hostKey's, and for a DHCP
// client's message that names its host, that name's (DHCPOption).
func packetKeys(p *schemas.Packet, served *servedPorts) (keys [2]heartbeat.Key, n int) {
	keys[0], n = hostKey(p, served), 1
	if h := p.DHCP.Name; h != 0 {
		keys[1], n = dhcpNameKey(h), 2
	}
	return keys, n
}

// dhcpNameKey is the key of a DHCP host name's hash.
func dhcpNameKey(h uint32) heartbeat.Key { return nameKey(uint16(h ^ h>>16)) }

// nameKey is the key of a host name whose hash folds to v.
func nameKey(v uint16) heartbeat.Key {
	return heartbeat.Key{Transport: 17, Port: DHCPOption + dhcpHostName, IPLen: v}
}

// dhcpHostName is the DHCP option that names the client.
const dhcpHostName = 12

// hostKeyer keys the packets of a capture or a home, each host with the
// ports it serves. The hosts behind a MAC-NAT repeater are told apart by
// address before (readHosts); a capture of one device is read without.
type hostKeyer struct {
	served map[schemas.MAC]*servedPorts
}

// packets appends a hostPacket for each key of every frame with a source
// MAC, ARP included: any frame shows its host is there; only those with a
// transport can show what it is. The host is the frame's source MAC.
func (kr *hostKeyer) packets(dst []hostPacket, p *schemas.Packet) []hostPacket {
	return kr.packetsOf(dst, p, p.SrcMAC)
}

// packetsOf is packets with the frame given to host.
func (kr *hostKeyer) packetsOf(dst []hostPacket, p *schemas.Packet, host schemas.MAC) []hostPacket {
	if p.SrcMAC.IsZero() {
		return dst
	}
	if kr.served == nil {
		kr.served = map[schemas.MAC]*servedPorts{}
	}
	s := kr.served[host]
	if s == nil {
		s = new(servedPorts)
		kr.served[host] = s
	}
	keys, n := packetKeys(p, s)
	for _, k := range keys[:n] {
		dst = append(dst, hostPacket{TsNs: p.TsNs, Host: host, Key: k})
	}
	return dst
}
