package gateway

import (
	"encoding/binary"
	"time"
)

// OpenVPN over TCP frames every data-channel packet as a record: a 2-byte
// big-endian length, then the packet as it would travel over UDP. The
// records of one direction form one TCP stream, which the kernel cuts into
// segments as it pleases: records written close together share a segment
// (up to the MSS), and a record that does not fit continues in the next
// one. So a WAN packet may hold the ends and starts of several records,
// and the pairing has to find the records in the stream.
const (
	// tcpMSS is the payload a segment carries at most (Ethernet MTU, no
	// TCP options).
	tcpMSS = 1460
	// tcpCoalesce is how close together records must be written to share
	// a segment.
	tcpCoalesce = int64(300 * time.Microsecond)
	// RecordLenSize is the length prefix of an OpenVPN record over TCP.
	RecordLenSize = 2
)

// tcpStream is one direction of the tunnel's TCP connection.
type tcpStream struct {
	seq uint32 // the next sequence number
	// open is the last segment, which a record written soon enough
	// joins; payload its bytes, openSeq its sequence number.
	open    *item
	payload []byte
	openSeq uint32
}

// tcpRecord writes one packet's record into its direction's stream. The
// ground truth of a segment is the packet whose record holds the
// segment's first byte.
func (e *emulator) tcpRecord(h Header, out bool, ts int64, lan uint64, noLAN bool) {
	n := PayloadSize(e.cfg.Cipher, h.Len)
	rec := make([]byte, RecordLenSize+n)
	binary.BigEndian.PutUint16(rec, uint16(n))
	e.payload.Read(rec[RecordLenSize:])
	e.openvpnHeader(rec[RecordLenSize:], out)
	d, s := -e.vpnDelay(&e.baseIn), &e.tcp[0]
	if out {
		d, s = e.vpnDelay(&e.baseOut), &e.tcp[1]
	}
	wan := e.fifo(out, ts+d)
	for len(rec) > 0 {
		if s.open == nil || s.open.sent || wan-s.open.ts > tcpCoalesce || len(s.payload) == tcpMSS {
			s.open = &item{ts: wan, lan: lan, noLAN: noLAN}
			s.payload, s.openSeq = nil, s.seq
			s.open.h.ID = e.nextID(out)
			e.push(s.open)
		}
		k := min(len(rec), tcpMSS-len(s.payload))
		s.payload = append(s.payload, rec[:k]...)
		s.seq += uint32(k)
		rec = rec[k:]
		e.tcpFrame(s, out)
	}
}

func (e *emulator) nextID(out bool) uint16 {
	id := &e.inID
	if out {
		id = &e.outID
	}
	*id++
	return *id - 1
}

// tcpFrame (re)builds the open segment's frame from its payload so far.
func (e *emulator) tcpFrame(s *tcpStream, out bool) {
	const hdr = 20 + 20
	n := len(s.payload)
	frame := make([]byte, 14+hdr+n)
	e.ether(frame, out, false)
	ip := frame[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(hdr+n))
	binary.BigEndian.PutUint16(ip[4:6], s.open.h.ID)
	binary.BigEndian.PutUint16(ip[6:8], 0x4000)
	ip[9] = ProtoTCP
	gw, srv := e.cfg.WANAddr.As4(), e.cfg.VPNServer.Addr().As4()
	tcp := ip[20:]
	other := &e.tcp[1]
	if out {
		ip[8] = 64
		copy(ip[12:16], gw[:])
		copy(ip[16:20], srv[:])
		binary.BigEndian.PutUint16(tcp[0:2], e.vpnPort)
		binary.BigEndian.PutUint16(tcp[2:4], e.cfg.VPNServer.Port())
		other = &e.tcp[0]
	} else {
		ip[8] = 52
		copy(ip[12:16], srv[:])
		copy(ip[16:20], gw[:])
		binary.BigEndian.PutUint16(tcp[0:2], e.cfg.VPNServer.Port())
		binary.BigEndian.PutUint16(tcp[2:4], e.vpnPort)
	}
	binary.BigEndian.PutUint16(ip[10:12], checksum(ip[:20], 0))
	binary.BigEndian.PutUint32(tcp[4:8], s.openSeq)
	binary.BigEndian.PutUint32(tcp[8:12], other.seq)
	tcp[12] = 5 << 4
	tcp[13] = 0x18 // PSH, ACK
	binary.BigEndian.PutUint16(tcp[14:16], 502)
	copy(tcp[20:], s.payload)
	var pseudo uint32
	for i := 12; i < 20; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	pseudo += ProtoTCP + uint32(20+n)
	binary.BigEndian.PutUint16(tcp[16:18], checksum(tcp[:20+n], pseudo))
	s.open.frame, s.open.wire = frame, len(frame)
}
