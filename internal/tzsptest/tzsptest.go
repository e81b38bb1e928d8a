// Package tzsptest streams frames as a remote sniffer does (MikroTik's
// packet sniffer, an access point's): each in a TZSP datagram to a
// collector, over IPv4, in IP fragments when the datagram is larger than
// the sniffer's MTU. The decoder's tests and the capture readers' build
// their streamed captures with it.
package tzsptest

import "encoding/binary"

// The sniffer and the collector it streams to.
var (
	SnifferMAC   = []byte{0x02, 0, 0, 0, 0, 0xaa}
	CollectorMAC = []byte{0x02, 0, 0, 0, 0, 0xbb}
	SnifferIP    = []byte{172, 16, 0, 1}
	CollectorIP  = []byte{172, 16, 0, 2}
)

// Port is TZSP's UDP port.
const Port = 37008

// MTU is the sniffer's: a full-size Ethernet frame with TZSP's, UDP's and
// IPv4's headers is larger, and goes in two fragments.
const MTU = 1500

// Sniffed is frame as the sniffer streams it: an Ethernet frame (TZSP
// encapsulation 1) received, with an RSSI tag, in a datagram of IP ID id,
// as the Ethernet frames the collector receives: one, or two fragments.
func Sniffed(frame []byte, id uint16) [][]byte {
	payload := append([]byte{1, 0, 0, 1, 10, 1, 0xc4, 1}, frame...)
	datagram := binary.BigEndian.AppendUint16([]byte{0x9c, 0x40, Port >> 8, Port & 0xff}, uint16(8+len(payload)))
	datagram = append(append(datagram, 0, 0), payload...)
	if 20+len(datagram) <= MTU {
		return [][]byte{piece(datagram, id, 0, false)}
	}
	const cut = (MTU - 20) &^ 7 // fragments but the last are multiples of 8
	return [][]byte{piece(datagram[:cut], id, 0, true), piece(datagram[cut:], id, cut, false)}
}

// piece is the Ethernet frame of one IPv4 fragment holding b, the bytes at
// off of the datagram.
func piece(b []byte, id uint16, off int, more bool) []byte {
	f := make([]byte, 14+20, 14+20+len(b))
	copy(f[0:6], CollectorMAC)
	copy(f[6:12], SnifferMAC)
	f[12], f[13] = 0x08, 0x00
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(b)))
	binary.BigEndian.PutUint16(ip[4:], id)
	frag := uint16(off / 8)
	if more {
		frag |= 0x2000
	}
	binary.BigEndian.PutUint16(ip[6:], frag)
	copy(ip[12:16], SnifferIP)
	copy(ip[16:20], CollectorIP)
	return append(f, b...)
}
