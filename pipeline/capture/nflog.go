package capture

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"time"

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
//   - A frame the LAN bridge forwards from one device to another, which the
//     IP hooks see too where br_netfilter is loaded (bridge-nf-call-iptables,
//     on by default wherever Docker runs) and every bridge-family hook sees,
//     is its own frame at every hook: its header is kept. Such a frame is
//     addressed to another host, not to the gateway, which is how it is
//     told apart from a packet the gateway routes. A log of the LAN's two
//     hooks logs it twice, coming in and going out: the second record is
//     left out (NFLOGStats.Repeats), as a capture on the bridge's port holds
//     the frame once.
//   - A bridge-family record (an nftables bridge table, ebtables) holds its
//     frame's own header at every hook: it is that frame, whatever its
//     EtherType (bridgeFrame).
//
// So a log of the LAN interface's two hooks (iptables -t mangle PREROUTING
// -i br-lan and POSTROUTING -o br-lan) reads as a capture of that interface,
// and the inventory's MACs label it.
//
// A record that holds no IP packet (a prefix alone, a bridge hook's ARP) or
// that is malformed is left as it is, for the decoder to count or refuse with
// the record's own error.
type nflogView struct {
	macOf neighTable // each host's MAC, as its packets came in
	// gwOn is the gateway's MAC on each interface: the MAC most frames that
	// came in by it were sent to, bridged ones left out.
	gwOn map[uint32]macVote
	// loggedIn are the interfaces whose frames the log holds as they came
	// in (a PREROUTING rule): a bridged frame logged again going out is a
	// repeat.
	loggedIn map[uint32]bool
	// recent are the last bridge-family records given (a ring; seen is
	// how many in all), to find a flooded frame's copies by.
	recent [nflogFloodFrames]nflogSeen
	seen   int
	seed   maphash.Seed
	buf    []byte
	stats  NFLOGStats
}

// macVote is a running majority over the MACs an interface's frames were
// sent to: the gateway's, as long as most frames are to it, so a device's
// frame to a host not yet seen (bridged, but not yet known for that) does
// not move it. The count is capped so that a new MAC (another router put
// in its place) takes over after nflogVoteCap frames.
type macVote struct {
	mac schemas.MAC
	n   int
}

const nflogVoteCap = 8

func (m *macVote) add(mac schemas.MAC) {
	switch {
	case mac == m.mac:
		m.n = min(m.n+1, nflogVoteCap)
	case m.n > 0:
		m.n--
	default:
		m.mac, m.n = mac, 1
	}
}

// NFLOGStats says how an NFLOG log's records were read (NFLOGStatsOf).
type NFLOGStats struct {
	// Records is how many records held an IP packet (any packet, for a
	// bridge-family record, which holds its frame's header); Ethernet of
	// them became Ethernet frames, RawIP raw IP packets (going out before a
	// frame came in by their interface, or by a PPP or tun interface).
	Records, Ethernet, RawIP uint64
	// NoDestination is how many Ethernet frames went out to an address no
	// frame had come in from: their destination MAC is zero.
	NoDestination uint64
	// Forward is how many records the FORWARD hook logged: a packet to
	// the internet logged there is the frame it leaves the WAN by, with
	// the WAN's MACs, not the device's.
	Forward uint64
	// Bridged is how many of the Ethernet frames were a device's to
	// another host on the LAN, forwarded by the bridge (br_netfilter, or a
	// bridge-family log); Repeats how many records were a frame the log
	// held already, left out: a bridged frame logged again going out, a
	// flooded frame's copy for another port.
	Bridged, Repeats uint64
}

// Summary is the stats in a line a person reads, with the fix for what
// went wrong.
func (s NFLOGStats) Summary() string {
	line := fmt.Sprintf("NFLOG log: %d packets read as Ethernet frames, %d as raw IP (going out before a frame came in by their interface, or by a PPP or tun interface), %d of the frames with no destination MAC (an address not yet seen)",
		s.Ethernet, s.RawIP, s.NoDestination)
	if s.Bridged+s.Repeats > 0 {
		line += fmt.Sprintf("; %d frames bridged between LAN hosts, %d second records of a frame (logged again going out, or for another bridge port) left out", s.Bridged, s.Repeats)
	}
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

// Netfilter's hook numbers, the same for the IP and the bridge families.
const (
	nfPrerouting = 0
	nfForward    = 2
)

// nflogMaxInterfaces bounds the interfaces a log's records may name: a
// gateway has a handful, and a crafted log cannot grow the table.
const nflogMaxInterfaces = 1024

// unwrap rewrites f, a frame of any link type, in place. For an NFLOG
// record that parses it returns the record's header, read once here for
// the live source's time stamps and record numbers too; repeat says the
// record is a bridged frame the log already gave, which the reader leaves
// out.
func (v *nflogView) unwrap(f *Frame) (h features.NFLOG, parsed, repeat bool) {
	if f.LinkType != features.LinkTypeNFLOG {
		return features.NFLOG{}, false, false
	}
	h, err := features.ParseNFLOG(f.Data)
	if err != nil {
		return h, false, false
	}
	if h.Family == features.NFLOGFamilyBridge && h.L2Len >= 12 {
		return h, true, v.bridgeFrame(f, h)
	}
	if h.EtherType != features.EtherTypeIPv4 && h.EtherType != features.EtherTypeIPv6 {
		return h, true, false
	}
	ip := f.Data[h.At : h.At+h.Len]
	v4 := h.EtherType == features.EtherTypeIPv4
	src, dst, wire, ok := ipAddrs(v4, ip)
	v.tables()
	var hdr [14]byte
	cameIn := h.HwType == arphrdEther && h.HwLen == len(hdr) && h.InDev != 0
	// bridged: a frame sent to its destination host's own MAC, which the
	// bridge forwards as it is; flooded: one to a group or to everyone.
	bridged, flooded := false, false
	if cameIn {
		// The frame as it came in by InDev, whichever hook logged it:
		// its source's MAC, and, unless it was bridged, the gateway's on
		// that interface.
		copy(hdr[:], f.Data[h.HwAt:])
		from, to := schemas.MAC(hdr[6:12]), schemas.MAC(hdr[0:6])
		m, seen := v.macOf.get(dst)
		switch {
		case to[0]&1 == 1:
			flooded = true
		case !ok:
		case seen && m == to:
			bridged = true
		default:
			bridged = v.vote(h.InDev, to)
		}
		if ok && !unspecified(src) && from[0]&1 == 0 {
			v.macOf.put(src, from)
		}
		if h.Hook == nfPrerouting && (v.loggedIn[h.InDev] || len(v.loggedIn) < nflogMaxInterfaces) {
			v.loggedIn[h.InDev] = true
		}
	}
	asIs := bridged || flooded
	// br_netfilter names the port a bridged frame leaves by. Its record
	// going out (FORWARD, POSTROUTING: the bridge is OutDev) holds no link
	// header at POSTROUTING, where the hook has no InDev.
	bridgedOut := h.Family != features.NFLOGFamilyBridge && h.PhysOutDev != 0
	if h.OutDev != 0 && h.Hook != nfPrerouting && (bridgedOut && v.loggedIn[h.OutDev] || asIs && v.loggedIn[h.InDev]) {
		v.stats.Repeats++
		return h, true, true
	}
	v.stats.Records++
	if h.Hook == nfForward && !asIs && !bridgedOut {
		v.stats.Forward++
	}
	if bridged || bridgedOut && !flooded {
		v.stats.Bridged++
	}
	// A packet going out is the frame it leaves by OutDev as, though the
	// record keeps the link header it came in with (a forwarded packet
	// logged at POSTROUTING), unless the bridge forwards it as it is.
	keep := cameIn && (h.OutDev == 0 || asIs || bridgedOut)
	// from is the source MAC of a frame rebuilt going out: the gateway's
	// on OutDev, or, for a bridged frame logged going out only, its
	// sender's.
	var from schemas.MAC
	rebuilt := false
	switch {
	case keep:
	case bridgedOut:
		from, rebuilt = v.macOf.get(src)
		rebuilt = rebuilt && ok
	case h.OutDev != 0:
		from, rebuilt = v.gateway(h.OutDev)
	}
	switch {
	case keep:
	case rebuilt:
		to := v.destination(dst, v4)
		if !ok || to.IsZero() {
			v.stats.NoDestination++
		}
		copy(hdr[0:6], to[:])
		copy(hdr[6:12], from[:])
	default:
		f.LinkType = features.LinkTypeIPv4
		if !v4 {
			f.LinkType = features.LinkTypeIPv6
		}
		f.Data, f.CI.CaptureLength, f.CI.Length = ip, len(ip), max(len(ip), wire)
		v.stats.RawIP++
		return h, true, false
	}
	v.stats.Ethernet++
	binary.BigEndian.PutUint16(hdr[12:], h.EtherType)
	v.buf = append(append(v.buf[:0], hdr[:]...), ip...)
	// The packet's own length says how long it was where a snap length
	// (tcpdump -s, --nflog-size) cut the copy short.
	f.LinkType, f.Data = features.LinkTypeEthernet, v.buf
	f.CI.CaptureLength, f.CI.Length = len(v.buf), len(hdr)+max(len(ip), wire)
	return h, true, false
}

// bridgeFrame rewrites a bridge-family record (an nftables bridge table's
// log, ebtables --nflog-group) into the frame it logged, and says whether
// it is a repeat. Its link header is the frame's own at every hook, the
// gateway's own frames going out included, so the frame is exact: ARP
// and every other EtherType too, as a capture of the bridge's ports holds
// them. A frame the bridge floods (to a group, or to a host it has not
// learned) is logged once for each port it leaves by, and once more where
// the gateway takes it in; a capture of the ports holds it once. So a
// record equal to one of the last few, logged at another hook or for
// another port within nflogFloodWindow, is a repeat; a frame a host sends
// twice is logged twice for the same port, and kept.
func (v *nflogView) bridgeFrame(f *Frame, h features.NFLOG) (repeat bool) {
	pkt := f.Data[h.At : h.At+h.Len]
	macs := f.Data[h.L2At : h.L2At+12]
	if v.seen == 0 {
		v.seed = maphash.MakeSeed()
	}
	var mh maphash.Hash
	mh.SetSeed(v.seed)
	mh.Write(macs)
	mh.Write(pkt)
	sum := mh.Sum64()
	key := uint64(h.Hook)<<32 | uint64(cmp.Or(h.PhysOutDev, h.OutDev))
	at := f.CI.Timestamp
	for _, r := range v.recent[:min(v.seen, len(v.recent))] {
		if r.sum == sum && r.key != key && at.Sub(r.at).Abs() <= nflogFloodWindow {
			v.stats.Repeats++
			return true
		}
	}
	v.recent[v.seen%len(v.recent)] = nflogSeen{sum: sum, key: key, at: at}
	v.seen++

	v.stats.Records++
	v.stats.Ethernet++
	to, from := schemas.MAC(macs[0:6]), schemas.MAC(macs[6:12])
	v4 := h.EtherType == features.EtherTypeIPv4
	wire := len(pkt)
	if v4 || h.EtherType == features.EtherTypeIPv6 {
		src, _, n, ok := ipAddrs(v4, pkt)
		if ok {
			wire = max(wire, n)
			if h.InDev != 0 && from[0]&1 == 0 && !unspecified(src) {
				v.tables()
				v.macOf.put(src, from)
			}
		}
	}
	if h.Hook == nfForward && to[0]&1 == 0 {
		v.stats.Bridged++
	}
	v.buf = binary.BigEndian.AppendUint16(append(v.buf[:0], macs...), h.EtherType)
	v.buf = append(v.buf, pkt...)
	f.LinkType, f.Data = features.LinkTypeEthernet, v.buf
	f.CI.CaptureLength, f.CI.Length = len(v.buf), 14+wire
	return false
}

// nflogSeen is a bridge-family record the view gave: its frame's hash, the
// hook and port it was logged for, and when.
type nflogSeen struct {
	sum, key uint64
	at       time.Time
}

// How far back a flooded frame's copies are looked for: they are logged
// back to back, within microseconds.
const (
	nflogFloodFrames = 16
	nflogFloodWindow = 5 * time.Millisecond
)

// tables makes what the view learns, on its first record.
func (v *nflogView) tables() {
	if v.gwOn == nil {
		v.macOf, v.gwOn, v.loggedIn = newNeighTable(), map[uint32]macVote{}, map[uint32]bool{}
	}
}

// vote counts a frame that came in by interface dev sent to MAC to, while
// the table has room, and says whether to is not the gateway's MAC there:
// a frame the bridge forwards to another host.
func (v *nflogView) vote(dev uint32, to schemas.MAC) (bridged bool) {
	m, ok := v.gwOn[dev]
	if !ok && len(v.gwOn) >= nflogMaxInterfaces {
		return false
	}
	m.add(to)
	v.gwOn[dev] = m
	return m.mac != to
}

// gateway is the gateway's MAC on interface dev, as frames came in by it.
func (v *nflogView) gateway(dev uint32) (schemas.MAC, bool) {
	if m := v.gwOn[dev]; m.mac != (schemas.MAC{}) {
		return m.mac, true
	}
	return schemas.MAC{}, false
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
