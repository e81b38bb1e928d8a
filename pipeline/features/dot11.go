package features

import (
	"encoding/binary"
	"fmt"

	"github.com/homemole/homemole/schemas"
)

// A Wi-Fi capture (a monitor-mode interface on an open network, or a
// capture decrypted with its 802.11 headers kept, airdecap-ng -l) holds
// 802.11 frames. Its data frames carry the packets
// the home's hosts send, each an MSDU whose LLC/SNAP header names its
// EtherType: the payload an access point bridges onto Ethernet, with the
// source and destination addresses the frame's DS bits place. The rest is
// the link's own (beacons, probes, acknowledgements, power-save null
// frames, retransmissions) and is counted apart (ErrNotPacket).
//
// A record of a data frame is the record of the Ethernet frame the access
// point bridges it to, FrameLen included: 802.11's header, its QoS and HT
// fields, the LLC/SNAP header and the radio header are not on that wire, so
// a model learned from a gateway's Ethernet tap reads a Wi-Fi capture of
// the same devices. Of an A-MSDU (several MSDUs aggregated in one frame)
// the decoder reads the first; the capture readers give each subframe as a
// frame of its own (ParseAMSDU), so every MSDU is read.

// wifiFrame is what an 802.11 data frame says that an Ethernet frame does
// not.
type wifiFrame struct {
	// data says the frame is an 802.11 data frame; the rest is then set.
	data bool
	// retry is the Retry bit: the transmitter sends the frame again.
	retry bool
	// ta and seq are the transmitter and the sequence control field, which
	// a retransmission repeats.
	ta  schemas.MAC
	seq uint16
	// extra is how many more bytes the frame takes than the Ethernet frame
	// it is bridged to (its headers, its FCS); ethLen, when not zero, is the
	// length of the Ethernet frame of an A-MSDU's first MSDU, which the
	// rest of the aggregate follows. int32s, in the padding after seq: a
	// Link is copied per packet.
	extra, ethLen int32
	// amsdu places an A-MSDU's parts; its Subframes is 0 for a frame of
	// one MSDU.
	amsdu AMSDU
}

// AMSDU places the parts of an 802.11 A-MSDU in a captured frame: the
// 802.11 frame starts at Frame, the first subframe (destination, source,
// length, MSDU, each subframe padded to 4 bytes) at Subframes, and FCS
// bytes end the capture. Everything before Subframes is the frame's
// headers, radio header included.
type AMSDU struct {
	Frame, Subframes, FCS int
}

// A-MSDU subframes: destination(6) source(6) MSDU length(2), the MSDU.
const amsduSubHdrLen = 14

// ParseAMSDU says where the subframes of an A-MSDU lie in a frame of link
// type lt, appending each one's [start, end) to subs: from its subframe
// header to its MSDU's end, the last cut where the capture ends. ok is false
// for any frame that is not a readable A-MSDU data frame; the decoder then
// says what it is.
func ParseAMSDU(lt LinkType, data []byte, subs [][2]int) (a AMSDU, out [][2]int, ok bool) {
	l, err := ParseLink(lt, data)
	if err != nil || l.wifi.amsdu.Subframes == 0 {
		return AMSDU{}, subs, false
	}
	a = l.wifi.amsdu
	end := len(data) - a.FCS
	for at := a.Subframes; at+amsduSubHdrLen <= end; {
		n := amsduSubHdrLen + int(binary.BigEndian.Uint16(data[at+12:]))
		subs = append(subs, [2]int{at, min(at+n, end)})
		at += (n + 3) &^ 3 // each subframe but the last padded to 4 bytes
	}
	return a, subs, len(subs) > 0
}

// 802.11 frame control (IEEE 802.11-2020 9.2.4.1): the type in bits 2-3 of
// the first byte, the subtype in bits 4-7, the flags in the second byte.
const (
	dot11TypeData     = 2
	dot11SubtypeNull  = 0x4 // no body: CF-Ack/Poll only, or (QoS) Null
	dot11SubtypeQoS   = 0x8
	dot11ToDS         = 0x01
	dot11FromDS       = 0x02
	dot11Retry        = 0x08
	dot11Protected    = 0x40
	dot11Order        = 0x80 // with QoS: an HT or VHT control field follows
	dot11AMSDUPresent = 0x80 // QoS control's first byte

	dot11HeaderLen = 24
)

// radiotap flags (the Flags field, radiotap.org): the frame ends with its
// FCS; the header is padded to 32 bits before the body; the FCS is wrong.
const (
	radiotapFCS     = 0x10
	radiotapDataPad = 0x20
	radiotapBadFCS  = 0x40
)

// Bounds on what a crafted radio header can make the walk read.
const (
	maxRadiotapPresent = 8  // presence bitmaps chained by their bit 31
	maxPPIFields       = 16 // PPI fields before the 802.11-common one
)

// radiotap reads a radiotap header (version 0, its length, then presence
// bitmaps and fields) for the Flags field, the only one that changes where
// the 802.11 frame's bytes are, and then the frame.
func radiotap(data []byte, base int) (Link, error) {
	const minLen = 8
	if err := needHeader(LinkTypeRadiotap, minLen, data); err != nil {
		return Link{Offset: base}, err
	}
	n := int(binary.LittleEndian.Uint16(data[2:4]))
	switch {
	case data[0] != 0:
		return Link{Offset: base}, fmt.Errorf("%w: radiotap version %d, want 0", ErrMalformed, data[0])
	case n < minLen || n > len(data):
		return Link{Offset: base}, fmt.Errorf("%w: radiotap header of %d bytes in a frame of %d", ErrMalformed, n, len(data))
	}
	flags, err := radiotapFlags(data[:n])
	if err != nil {
		return Link{Offset: base}, err
	}
	if flags&radiotapBadFCS != 0 {
		return Link{Offset: base}, fmt.Errorf("%w: 802.11 frame whose FCS the receiver found wrong (radiotap flags %#02x)", ErrMalformed, flags)
	}
	fcs := 0
	if flags&radiotapFCS != 0 {
		fcs = 4
	}
	return dot11(data[n:], base+n, n+fcs, fcs, flags&radiotapDataPad != 0)
}

// radiotapFlags is the Flags field of a radiotap header h, 0 when absent.
// Fields are aligned to their size from the header's start; only TSFT (8
// bytes) can stand before Flags.
func radiotapFlags(h []byte) (byte, error) {
	const (
		presentTSFT  = 1 << 0
		presentFlags = 1 << 1
		presentExt   = 1 << 31
	)
	present := binary.LittleEndian.Uint32(h[4:8])
	off := 8
	for w := present; w&presentExt != 0; off += 4 {
		if off/4-1 == maxRadiotapPresent || off+4 > len(h) {
			return 0, fmt.Errorf("%w: radiotap presence bitmaps run past the %d-byte header", ErrMalformed, len(h))
		}
		w = binary.LittleEndian.Uint32(h[off : off+4])
	}
	if present&presentFlags == 0 {
		return 0, nil
	}
	if present&presentTSFT != 0 {
		off = (off+7)&^7 + 8
	}
	if off >= len(h) {
		return 0, fmt.Errorf("%w: radiotap Flags field past the %d-byte header", ErrMalformed, len(h))
	}
	return h[off], nil
}

// monitorHeader reads the monitoring header of older Wi-Fi drivers in
// front of an 802.11 frame: Prism's (a message code, its length in the
// writer's byte order, 144) or AVS's (a big-endian version 0x8021100N,
// then its length), which drivers also write under Prism's link type.
// Neither says whether an FCS ends the frame; none is taken.
func monitorHeader(lt LinkType, data []byte, base int) (Link, error) {
	if err := needHeader(lt, 8, data); err != nil {
		return Link{Offset: base}, err
	}
	avs := binary.BigEndian.Uint32(data[0:4])&^0xf == 0x80211000
	var n uint32
	switch {
	case avs:
		n = binary.BigEndian.Uint32(data[4:8])
	case lt == LinkTypeAVS:
		return Link{Offset: base}, fmt.Errorf("%w: AVS header version %#08x, want 0x8021100N", ErrMalformed, binary.BigEndian.Uint32(data[0:4]))
	default:
		if n = binary.LittleEndian.Uint32(data[4:8]); n < 8 || n > uint32(len(data)) {
			n = binary.BigEndian.Uint32(data[4:8])
		}
	}
	if n < 8 || n > uint32(len(data)) {
		return Link{Offset: base}, fmt.Errorf("%w: %s header of %d bytes in a frame of %d", ErrMalformed, lt, n, len(data))
	}
	return dot11(data[n:], base+int(n), int(n), 0, false)
}

// ppiFCS is how many FCS bytes end an 802.11 frame behind PPI fields f: 4
// when its 802.11-common field (type 2: TSFT, then flags) says so.
func ppiFCS(f []byte) (int, error) {
	const (
		fieldCommon = 2
		commonFCS   = 0x0001
		commonBad   = 0x0004
	)
	for i := 0; len(f) > 0; i++ {
		if i == maxPPIFields || len(f) < 4 {
			return 0, nil
		}
		typ, n := binary.LittleEndian.Uint16(f[0:2]), int(binary.LittleEndian.Uint16(f[2:4]))
		if n > len(f)-4 {
			return 0, fmt.Errorf("%w: PPI field of %d bytes past the header", ErrMalformed, n)
		}
		if typ == fieldCommon && n >= 10 {
			flags := binary.LittleEndian.Uint16(f[4+8 : 4+10])
			if flags&commonBad != 0 {
				return 0, fmt.Errorf("%w: 802.11 frame whose FCS the receiver found wrong (PPI flags %#04x)", ErrMalformed, flags)
			}
			if flags&commonFCS != 0 {
				return 4, nil
			}
			return 0, nil
		}
		f = f[4+n:]
	}
	return 0, nil
}

// dot11 reads an 802.11 frame (IEEE 802.11-2020 9.3.2.1) that starts at
// base in the capture: a data frame's addresses and its MSDU's EtherType.
// outside is how many bytes of the captured frame are not the 802.11
// frame's (a radio header, an FCS), fcs how many of those end it; pad says
// the header is padded to 32 bits (radiotap's DataPad flag).
func dot11(data []byte, base, outside, fcs int, pad bool) (Link, error) {
	l := Link{Offset: base}
	if err := needHeader(LinkTypeIEEE80211, 2, data); err != nil {
		return l, err
	}
	fc, flags := data[0], data[1]
	typ, sub := fc>>2&3, fc>>4
	switch {
	case fc&3 != 0:
		return l, fmt.Errorf("%w: 802.11 protocol version %d, want 0", ErrMalformed, fc&3)
	case typ != dot11TypeData:
		return l, fmt.Errorf("%w: 802.11 %s frame", ErrNotPacket, [4]string{"management", "control", "data", "extension"}[typ])
	case sub&dot11SubtypeNull != 0:
		return l, fmt.Errorf("%w: 802.11 null data frame (subtype %d)", ErrNotPacket, sub)
	}
	n := dot11HeaderLen
	fourAddr := flags&(dot11ToDS|dot11FromDS) == dot11ToDS|dot11FromDS
	if fourAddr {
		n += 6
	}
	qos := n
	if sub&dot11SubtypeQoS != 0 {
		n += 2
		if flags&dot11Order != 0 {
			n += 4
		}
	}
	if err := needHeader(LinkTypeIEEE80211, n, data); err != nil {
		return l, err
	}
	a1, a2, a3 := schemas.MAC(data[4:10]), schemas.MAC(data[10:16]), schemas.MAC(data[16:22])
	switch flags & (dot11ToDS | dot11FromDS) {
	case 0: // between stations of an ad hoc network
		l.DstMAC, l.SrcMAC = a1, a2
	case dot11ToDS: // a station to its access point: A1 is the BSSID
		l.DstMAC, l.SrcMAC = a3, a2
	case dot11FromDS: // the access point to a station: A2 is the BSSID
		l.DstMAC, l.SrcMAC = a1, a3
	default: // between access points (WDS, mesh): A1, A2 are the radios
		l.DstMAC, l.SrcMAC = a3, schemas.MAC(data[24:30])
	}
	l.wifi = wifiFrame{data: true, retry: flags&dot11Retry != 0, ta: a2, seq: binary.LittleEndian.Uint16(data[22:24])}
	if flags&dot11Protected != 0 {
		return l, fmt.Errorf("%w: a protected 802.11 data frame (WEP or WPA): its packet is encrypted; decrypt the capture first with the network's key (airdecap-ng -e SSID -p PASSPHRASE CAPTURE writes CAPTURE-dec with the packets as Ethernet frames; Wireshark decrypts for display only) or capture on the wired side of the access point", ErrUnsupportedLinkType)
	}
	if pad {
		n = (n + 3) &^ 3
	}
	if sub&dot11SubtypeQoS != 0 && data[qos]&dot11AMSDUPresent != 0 {
		// An A-MSDU subframe: destination, source, MSDU length, the MSDU.
		if len(data) < n+14 {
			return l, fmt.Errorf("%w: A-MSDU subframe header cut short at byte %d of %d", ErrMalformed, n, len(data))
		}
		l.DstMAC, l.SrcMAC = schemas.MAC(data[n:n+6]), schemas.MAC(data[n+6:n+12])
		l.wifi.ethLen = int32(binary.BigEndian.Uint16(data[n+12:n+14])) + 6
		l.wifi.amsdu = AMSDU{Frame: base, Subframes: base + n, FCS: fcs}
		n += 14
	}
	return l.llc(data, n, outside)
}

// llc reads the LLC header of an MSDU at data[n:]: SNAP with an
// encapsulation OUI (RFC 1042, or 802.1H's bridge tunnel) names an
// EtherType, which the access point puts on Ethernet in place of the
// eight bytes; any other LLC payload is bridged as an 802.3 frame, its
// length in the type field, and carries no IP.
func (l Link) llc(data []byte, n, outside int) (Link, error) {
	const snapLen = 8
	if len(data) < n+3 {
		return l, fmt.Errorf("%w: 802.11 frame body of %d bytes holds no LLC header", ErrMalformed, len(data)-n)
	}
	snap := len(data) >= n+snapLen && data[n] == 0xaa && data[n+1] == 0xaa && data[n+2] == 0x03 &&
		data[n+3] == 0 && data[n+4] == 0 && (data[n+5] == 0 || data[n+5] == 0xf8)
	if !snap {
		l.wifi.extra = int32(outside + n - 14)
		if l.wifi.ethLen != 0 {
			// Bridged as 802.3: the MSDU whole behind a 14-byte header,
			// where Ethernet II drops SNAP's 8 bytes for its 14.
			l.wifi.ethLen += 8
		}
		l.EtherType, l.Offset = EtherTypeNotIP, l.Offset+n
		return l, nil
	}
	l.wifi.extra = int32(outside + n + snapLen - 14)
	return l.ether(binary.BigEndian.Uint16(data[n+6:n+8]), data, n+snapLen)
}

// retransmits remembers the last data frame of the transmitters a
// stream's Wi-Fi frames came from, so that a frame sent again (the Retry
// bit, the same sequence control) after the first was captured is read
// once. A fixed table indexed by the transmitter's last bytes: a
// retransmission follows its frame within milliseconds, two radios that
// share a slot cost at most a duplicate, and the decoder does not
// allocate.
type retransmits struct {
	last [64]struct {
		ta  schemas.MAC
		seq uint16
	}
}

// take fills p's link fields from l, or says the frame is a retransmission
// of one already read (ErrNotPacket).
func (r *retransmits) take(l *Link, p *schemas.Packet) error {
	p.SrcMAC, p.DstMAC = l.SrcMAC, l.DstMAC
	switch {
	case l.wire > 0:
		p.FrameLen = uint32(l.wire)
	case l.unwired > 0 && p.FrameLen > uint32(l.unwired):
		p.FrameLen -= uint32(l.unwired)
	}
	w := &l.wifi
	if !w.data {
		return nil
	}
	e := &r.last[(int(w.ta[4])<<3^int(w.ta[5]))%len(r.last)]
	// A frame sent again repeats its sequence number and fragment number.
	// The fragments of one MSDU, and the subframes of an A-MSDU the capture
	// readers give one by one (numbered as fragments), come in rising
	// order: one numbered as high as the last read, or lower, was read.
	if w.retry && e.ta == w.ta && e.seq>>4 == w.seq>>4 && w.seq&0xf <= e.seq&0xf {
		return fmt.Errorf("%w: 802.11 retransmission (sequence %d from %s) of a frame already read", ErrNotPacket, w.seq>>4, w.ta)
	}
	e.ta, e.seq = w.ta, w.seq
	if int64(p.FrameLen) > int64(w.extra) {
		p.FrameLen -= uint32(w.extra)
		if w.ethLen != 0 {
			// An MSDU no longer than what follows its subframe header: a
			// length field that says more is the frame's lie.
			p.FrameLen = min(p.FrameLen, uint32(w.ethLen))
		}
	}
	return nil
}
