package capture

import (
	"encoding/binary"
	"fmt"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// nflogView gives the records of a Linux NFLOG log (tcpdump -i nflog:N, or
// the live group) as the frames they logged. The record's attributes (the
// rule's prefix, interface numbers) vary with the rule and were never on a
// wire, so they are no part of the frame:
//
//   - A packet logged as it came in on an Ethernet or Wi-Fi interface
//     (PREROUTING, INPUT) has its link header in the record: it is that
//     Ethernet frame, byte for byte but for a wire's padding, which the
//     kernel has taken off.
//   - A packet logged going out (POSTROUTING, OUTPUT, FORWARD) is the frame
//     it leaves by: it gets the MACs the frames that came in showed, its
//     destination's (the MAC its address came in from, or the group MAC of a
//     multicast address) and the gateway's on the interface it leaves by
//     (the MAC frames coming in by that interface were sent to). The link
//     header a forwarded packet's record keeps is the other interface's. A
//     destination not yet seen keeps a zero MAC.
//   - A packet going out of an interface no Ethernet frame has come in by (a
//     PPP or tun interface, or before any) is the raw IP packet, as a tun
//     capture holds it.
//
// So a log of the LAN interface's two hooks (iptables -t mangle PREROUTING
// -i br-lan and POSTROUTING -o br-lan) reads as a capture of that interface,
// and the inventory's MACs label it.
//
// A record that holds no IP packet (a prefix alone, a bridge hook's ARP) or
// that is malformed is left as it is, for the decoder to count or refuse with
// the record's own error.
type nflogView struct {
	macOf neighTable             // each host's MAC, as its packets came in
	gwOn  map[uint32]schemas.MAC // the gateway's MAC on each interface, as packets came in by it
	buf   []byte
	stats NFLOGStats
}

// NFLOGStats says how an NFLOG log's records were read (NFLOGStatsOf).
type NFLOGStats struct {
	// Records is how many records held an IP packet; Ethernet of them
	// became Ethernet frames, RawIP raw IP packets (going out before a
	// frame came in by their interface, or by a PPP or tun interface).
	Records, Ethernet, RawIP uint64
	// NoDestination is how many Ethernet frames went out to an address no
	// frame had come in from: their destination MAC is zero.
	NoDestination uint64
	// Forward is how many records the FORWARD hook logged: a packet to
	// the internet logged there is the frame it leaves the WAN by, with
	// the WAN's MACs, not the device's.
	Forward uint64
}

// Summary is the stats in a line a person reads, with the fix for what
// went wrong.
func (s NFLOGStats) Summary() string {
	line := fmt.Sprintf("NFLOG log: %d packets read as Ethernet frames, %d as raw IP (going out before a frame came in by their interface, or by a PPP or tun interface), %d of the frames with no destination MAC (an address not yet seen)",
		s.Ethernet, s.RawIP, s.NoDestination)
	if s.Forward > 0 {
		line += fmt.Sprintf("; %d logged by FORWARD rules, whose packets to the internet carry the WAN's MACs, not the devices': log the LAN interface instead (-t mangle PREROUTING -i LAN and POSTROUTING -o LAN)", s.Forward)
	}
	return line
}

// NFLOGStatsOf returns how src read an NFLOG log, if it read one (a Source
// from OpenFile, NewReader or OpenLive("nflog:N")).
func NFLOGStatsOf(src Source) (NFLOGStats, bool) {
	var st NFLOGStats
	switch s := src.(type) {
	case *pcapReader:
		st = s.nflog.stats
	case *cookedView:
		if r, ok := s.src.(*ngReader); ok {
			st = r.nflog.stats
		}
	default:
		st = liveNFLOGStats(src)
	}
	return st, st.Records > 0
}

// nfForward is the FORWARD hook's number (NF_INET_FORWARD).
const nfForward = 2

// nflogMaxInterfaces bounds the interfaces a log's records may name: a
// gateway has a handful, and a crafted log cannot grow the table.
const nflogMaxInterfaces = 1024

// unwrap rewrites f, a frame of any link type, in place. For an NFLOG
// record that parses it returns the record's header, read once here for
// the live source's time stamps and record numbers too.
func (v *nflogView) unwrap(f *Frame) (features.NFLOG, bool) {
	if f.LinkType != features.LinkTypeNFLOG {
		return features.NFLOG{}, false
	}
	h, err := features.ParseNFLOG(f.Data)
	if err != nil {
		return h, false
	}
	if h.EtherType != features.EtherTypeIPv4 && h.EtherType != features.EtherTypeIPv6 {
		return h, true
	}
	ip := f.Data[h.At : h.At+h.Len]
	v4 := h.EtherType == features.EtherTypeIPv4
	v.stats.Records++
	if h.Hook == nfForward {
		v.stats.Forward++
	}
	src, dst, wire, ok := ipAddrs(v4, ip)
	if v.gwOn == nil {
		v.macOf, v.gwOn = newNeighTable(), map[uint32]schemas.MAC{}
	}
	var hdr [14]byte
	cameIn := h.HwType == arphrdEther && h.HwLen == len(hdr) && h.InDev != 0
	if cameIn {
		// The frame as it came in by InDev, whichever hook logged it:
		// its source's MAC, and the gateway's on that interface.
		copy(hdr[:], f.Data[h.HwAt:])
		from, to := schemas.MAC(hdr[6:12]), schemas.MAC(hdr[0:6])
		if ok && !unspecified(src) && from[0]&1 == 0 {
			v.macOf.put(src, from)
		}
		if _, seen := v.gwOn[h.InDev]; to[0]&1 == 0 && (seen || len(v.gwOn) < nflogMaxInterfaces) {
			v.gwOn[h.InDev] = to
		}
	}
	// A packet going out is the frame it leaves by OutDev as, though the
	// record keeps the link header it came in with (a forwarded packet
	// logged at POSTROUTING).
	switch gw, known := v.gwOn[h.OutDev]; {
	case h.OutDev == 0 && cameIn:
	case h.OutDev != 0 && known:
		to := v.destination(dst, v4)
		if !ok || to.IsZero() {
			v.stats.NoDestination++
		}
		copy(hdr[0:6], to[:])
		copy(hdr[6:12], gw[:])
	default:
		f.LinkType = features.LinkTypeIPv4
		if !v4 {
			f.LinkType = features.LinkTypeIPv6
		}
		f.Data, f.CI.CaptureLength, f.CI.Length = ip, len(ip), max(len(ip), wire)
		v.stats.RawIP++
		return h, true
	}
	v.stats.Ethernet++
	binary.BigEndian.PutUint16(hdr[12:], h.EtherType)
	v.buf = append(append(v.buf[:0], hdr[:]...), ip...)
	// The packet's own length says how long it was where a snap length
	// (tcpdump -s, --nflog-size) cut the copy short.
	f.LinkType, f.Data = features.LinkTypeEthernet, v.buf
	f.CI.CaptureLength, f.CI.Length = len(v.buf), len(hdr)+max(len(ip), wire)
	return h, true
}

// destination is the MAC a packet going out to dst is sent to: a group's,
// the broadcast's, or the MAC dst came in from; zero where none came.
func (v *nflogView) destination(dst [16]byte, v4 bool) schemas.MAC {
	if m, ok := groupDestination(dst, v4); ok {
		return m
	}
	m, _ := v.macOf.get(dst)
	return m
}

// ipAddrs reads an IP packet's addresses (IPv4 ones mapped into IPv6, as
// the cooked view keeps them) and total length, where it holds them.
func ipAddrs(v4 bool, ip []byte) (src, dst [16]byte, wire int, ok bool) {
	switch {
	case v4 && len(ip) >= 20:
		src[10], src[11], dst[10], dst[11] = 0xff, 0xff, 0xff, 0xff
		copy(src[12:], ip[12:16])
		copy(dst[12:], ip[16:20])
		return src, dst, int(binary.BigEndian.Uint16(ip[2:4])), true
	case !v4 && len(ip) >= 40:
		return [16]byte(ip[8:24]), [16]byte(ip[24:40]), 40 + int(binary.BigEndian.Uint16(ip[4:6])), true
	}
	return src, dst, 0, false
}
