package capture

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// A gateway captured with `tcpdump -i any` writes Linux "cooked" frames
// (SLL2 on libpcap 1.10 and later, SLL before): one per interface a packet
// crosses, each without its destination MAC. A packet from a device to the
// internet is there as it came in on the LAN (and again on the bridge, if
// the LAN interface is a bridge port), as it left on the WAN after NAT, and
// on a VPN's tun device too. Read as it is, every packet is counted two to
// four times, the copies beyond the gateway carry the WAN's addresses, and
// nothing names the device, which the LAN view does by its MAC.
//
// cookedView turns such a capture into the view the rest of the pipeline
// reads: the Ethernet frames of the gateway's LAN side, each once, as a
// capture on the LAN interface would have them. Which interfaces are the
// LAN's is not named anywhere in the capture (SLL2 carries an interface
// index, SLL not even that), so it is read off the traffic:
//
//   - A host on the LAN sends its packets with the hop limit its stack
//     starts at (64, 128, 255; 32 and 1 on some stacks), since no router
//     stands between it and the gateway, and sends them through the
//     gateway, to the internet. Packets arriving from the internet have
//     crossed routers and come with less. The neighbours on the WAN side
//     (the ISP's router, a VPN server next door, the ISP's box before a
//     home router) send at a starting hop limit too, but to the gateway
//     itself, never through it. So each unicast packet that comes in on
//     an interface is a vote: for the LAN side when it comes at a starting
//     hop limit and is not for one of the gateway's own addresses (those
//     it sends its own packets from), for the other side when it comes
//     at less. An interface is on the LAN side while most votes say so.
//     Where SLL gives no interface index, the frame's source MAC stands in
//     for the interface: a LAN device's MAC gets its own packets' votes, the
//     upstream router's MAC the internet's, and the gateway's own MAC on
//     each side is judged by where its packets go (to a LAN host or not).
//   - An interface carrying PPPoE is the access link, never the LAN.
//   - Loopback is the gateway talking to itself.
//
// The destination MAC, which cooked frames drop, is put back from what the
// capture shows: broadcast and multicast by the packet type and the
// group address; for a frame the gateway received, its own MAC on that
// interface (the source of the IP it sends there; of the EAPOL it sends,
// for an access point's EAPOL); for a frame it sent, the MAC the
// destination address was last seen sending from, the target of an ARP
// reply, the client of a DHCP reply, the host it exchanges EAPOL with, or
// the router that packets from beyond came from. A frame whose destination
// the capture never shows keeps a zero MAC and is counted.
//
// Frames are judged as they come, so a live stream is not held up. Only
// while an interface has no votes yet (the first packets of a capture), or
// a LAN frame's destination has not shown yet, are frames held back, at
// most cookedHold of capture time, so that they are judged with what the
// frames after them show; and while no LAN side has shown at all, at most
// cookedNoLAN, before the capture is taken for one host's and read whole. Everything
// learned (votes, MACs, addresses) is bounded, so a hostile home that
// sends from millions of addresses costs a fixed amount of memory.
type cookedView struct {
	src     Source
	keys    map[cookedKey]*cookedIface
	lanKeys int // keys judged LAN side now

	foreign macSet     // MACs seen sending into the gateway
	neigh   neighTable // address -> the MAC it was seen sending from
	// ownAddrs are the gateway's addresses: those it sends its own
	// packets (and ARP) from; a set (the MACs are not used).
	ownAddrs neighTable
	// SLL only, for want of interfaces: the gateway's MAC that sends to
	// a LAN host, by the host's MAC (macKey); the one that sent to a LAN
	// host last; the last MAC the capturing host sent IP from, and other
	// frames from; the last router that packets from beyond came from.
	gatewayOf                        neighTable
	lastGateway, lastOwn, lastRouter schemas.MAC
	lastOwnL2                        schemas.MAC
	// l2Peer is, by EtherType, the last host that sent the gateway a
	// frame that is neither IP nor ARP (EAPOL, say): whom the gateway's
	// own frames of that protocol go to.
	l2Peer map[uint16]schemas.MAC
	seen   map[uint64]seenAt // frames emitted in the last cookedDupWindow
	seenQ  []seenEntry
	seed   maphash.Seed

	held        []heldFrame
	heldBytes   int
	first, last time.Time // the first and the newest frame's time stamps
	eof         bool
	err         error // the source's error, returned once the held frames are out
	stats       CookedStats
}

// Bounds of what the view holds back and remembers.
const (
	// cookedHold is how long a frame of an interface that has no votes
	// yet is held back waiting for them (the first seconds of a capture
	// name every active interface's side), and a LAN frame whose
	// destination MAC has not shown.
	cookedHold = 5 * time.Second
	// cookedNoLAN is how long a capture may show no LAN side before it is
	// taken for one host's and read whole: until then the frames of its
	// other interfaces wait, so that a gateway whose LAN is quiet for a
	// while when the capture starts (IoT devices beat every minute or so)
	// does not have its WAN read as a host's.
	cookedNoLAN = time.Minute
	// cookedHoldBytes and cookedHoldFrames bound the frames held back.
	cookedHoldBytes  = 32 << 20
	cookedHoldFrames = 1 << 16
	// cookedDupWindow is how close in time a second copy of a frame on
	// another LAN-side interface must be to be a copy (a bridge and its
	// port see the same frame microseconds apart), not a repeat.
	cookedDupWindow = 50 * time.Millisecond
	// cookedMaxKeys bounds the interfaces (for SLL, the source MACs)
	// judged apart; frames of keys beyond it share one.
	cookedMaxKeys = 4096
	// cookedMaxTable bounds the MACs and addresses remembered.
	cookedMaxTable = 1 << 16
	// cookedMaxSeen bounds the frames remembered for duplicates.
	cookedMaxSeen = 1 << 14
)

// Linux packet types (linux/if_packet.h) and the hardware types the view
// reads (linux/if_arp.h).
const (
	pktHost      = 0
	pktBroadcast = 1
	pktMulticast = 2
	pktOtherHost = 3
	pktOutgoing  = 4

	arphrdEther    = 1
	arphrdLoopback = 772
)

// cookedKey names what the view judges apart: an interface (with its
// outer VLAN: a switch's CPU port carries the LAN and the WAN VLAN on one
// interface) or, for SLL, a source MAC; overflow is the key for all beyond
// cookedMaxKeys.
type cookedKey struct {
	ifindex  uint32
	vlan     uint16 // the outer VLAN ID + 1; 0 untagged
	mac      schemas.MAC
	hatype   uint16
	overflow bool
}

func (k cookedKey) String() string {
	switch {
	case k.overflow:
		return "interfaces beyond the first 4096"
	case k.mac != (schemas.MAC{}):
		return "MAC " + k.mac.String()
	}
	s := fmt.Sprintf("interface %d", k.ifindex)
	if k.ifindex == 0 {
		s = "interfaces of hardware type " + hardwareName(k.hatype)
	}
	if k.vlan > 0 {
		s += fmt.Sprintf(" VLAN %d", k.vlan-1)
	}
	return s
}

func hardwareName(hatype uint16) string {
	switch hatype {
	case arphrdEther:
		return "Ethernet"
	case arphrdLoopback:
		return "loopback"
	case 512:
		return "PPP"
	case 65534:
		return "none (tun, WireGuard)"
	case 776:
		return "IPv6-in-IPv4"
	case 768:
		return "IP-in-IP"
	}
	return fmt.Sprintf("ARPHRD %d", hatype)
}

type cookedIface struct {
	hatype   uint16
	lan, wan uint64 // votes
	pppoe    bool
	// own is the gateway's MAC here, as its IP stack uses it: the source
	// of the IP and ARP it sends; ownL2 the source of the other frames it
	// sends (an access point's EAPOL, from the radio's own MAC); router
	// the MAC that packets from beyond the link come from.
	own, ownL2, router schemas.MAC
	frames             uint64
	first              time.Time // when its first frame came
	isLAN              bool      // as counted in lanKeys
}

// lanSide says whether the key is on the gateway's LAN side by its votes.
func (c *cookedIface) lanSide() bool {
	return c.hatype == arphrdEther && !c.pppoe && c.lan > c.wan
}

// heldFrame is a frame held back with its own copy of the bytes.
type heldFrame struct {
	f   Frame
	h   cookedHdr
	key *cookedIface
	k   cookedKey
}

type seenAt struct {
	ts  time.Time
	key cookedKey
}

type seenEntry struct {
	hash uint64
	ts   time.Time
}

// OtherViewKinds names the frames Stats.OtherViews counts, in the counts
// the commands print.
const OtherViewKinds = "a tcpdump -i any capture's copies on the gateway's WAN, tunnel and loopback interfaces and a bridge's second copies"

// CookedStats says what a cooked capture's view did with its frames.
type CookedStats struct {
	// Frames is the number of cooked frames read.
	Frames uint64
	// LAN is the number passed on as Ethernet frames of the LAN side.
	LAN uint64
	// Whole and AsIs are the frames of a capture with no LAN side found
	// (one host's interfaces, a cooked capture of a PPP link, one
	// interface cut out of a gateway's): Whole those passed on as
	// Ethernet frames, AsIs those passed on as they were.
	Whole, AsIs uint64
	// OtherSide is the number left out as copies on the gateway's other
	// interfaces (WAN, tunnels, PPPoE); Loopback those on loopback;
	// Duplicates the second copies of a frame on another LAN-side
	// interface (a bridge and its ports).
	OtherSide, Loopback, Duplicates uint64
	// NoDestination is the number of LAN frames passed on with a zero
	// destination MAC: the capture never showed whose it was.
	NoDestination uint64
	// Interfaces are the interfaces (for SLL, the source MACs) seen, and
	// which side each was judged to be on at the end.
	Interfaces []CookedInterface
}

// LeftOut is the number of frames the view did not pass on.
func (s CookedStats) LeftOut() uint64 { return s.OtherSide + s.Loopback + s.Duplicates }

// CookedInterface is one interface of a cooked capture.
type CookedInterface struct {
	Name     string // "interface 3", "interface 2 VLAN 10", "MAC ..."
	Hardware string
	Side     string // "LAN", "other" or "loopback"
	Frames   uint64
	// LANVotes are the packets that came in on it at a starting hop
	// limit to be sent on by the gateway; OtherVotes those that came in
	// at a lower one (for SLL, also the gateway's packets to hosts beyond
	// the LAN).
	LANVotes, OtherVotes uint64
}

// Summary is one line for a person: how many frames the LAN view kept
// and left out, and which interfaces were taken for the LAN side.
func (s CookedStats) Summary() string {
	var lan, other []string
	for _, i := range s.Interfaces {
		switch i.Side {
		case "LAN":
			lan = append(lan, i.Name)
		case "other":
			other = append(other, i.Name)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "cooked capture (tcpdump -i any), %d frames", s.Frames)
	if s.LAN > 0 {
		fmt.Fprintf(&b, ": %d read as the LAN side's Ethernet frames (%s)", s.LAN, abbreviate(lan))
	}
	if s.LeftOut() > 0 {
		fmt.Fprintf(&b, "; left out %d copies on the gateway's other interfaces", s.OtherSide)
		if len(other) > 0 {
			fmt.Fprintf(&b, " (%s)", abbreviate(other))
		}
		fmt.Fprintf(&b, ", %d on loopback, %d second copies on a bridge's ports", s.Loopback, s.Duplicates)
	}
	if s.Whole+s.AsIs > 0 {
		fmt.Fprintf(&b, "; no LAN side found for %d frames, read whole (%d as Ethernet frames)", s.Whole+s.AsIs, s.Whole)
	}
	if s.NoDestination > 0 {
		fmt.Fprintf(&b, "; %d with no destination MAC: the capture never showed it", s.NoDestination)
	}
	return b.String()
}

func abbreviate(names []string) string {
	if len(names) > 6 {
		return strings.Join(names[:6], ", ") + fmt.Sprintf(" and %d more", len(names)-6)
	}
	return strings.Join(names, ", ")
}

// CookedStatsOf returns what the view of a cooked capture did, if src
// read one (a Source from OpenFile or NewReader).
func CookedStatsOf(src Source) (CookedStats, bool) {
	c := viewOf(src)
	if c == nil || c.stats.Frames == 0 {
		return CookedStats{}, false
	}
	return c.Stats(), true
}

// LeftOut is the number of frames src read but did not pass on: a cooked
// capture's copies beyond the LAN side (see CookedStats). Zero for every
// other source.
func LeftOut(src Source) uint64 {
	cs, _ := CookedStatsOf(src)
	return cs.LeftOut()
}

// viewOf is the cooked view src reads through, nil for other sources.
func viewOf(src Source) *cookedView {
	switch v := src.(type) {
	case *cookedView:
		return v
	case *liveCooked:
		return v.cookedView
	}
	return nil
}

// WANInput says why src cannot be read as a WAN capture named name: nil,
// unless it is a gateway's capture on every interface, which is read as
// the LAN side (it has passed on LAN frames). The error says how to cut
// the WAN interface out of it.
func WANInput(src Source, name string) error {
	c := viewOf(src)
	if c == nil || c.stats.LAN == 0 {
		return nil
	}
	var other []string
	for _, i := range c.Stats().Interfaces {
		if f := strings.Fields(i.Name); i.Side == "other" && f[0] == "interface" {
			other = append(other, f[1])
		}
	}
	other = slices.Compact(other) // one interface's VLANs are one cut
	cut := "capture the WAN interface on its own"
	if len(other) > 0 {
		cut = fmt.Sprintf("cut its WAN interface out first: tcpdump -r %s -w wan.pcap ifindex N, N one of its other interfaces: %s", name, strings.Join(other, ", "))
	}
	return fmt.Errorf("%w: %s is a gateway's capture on every interface (tcpdump -i any), read as its LAN side, not its WAN: %s", ErrNotWAN, name, cut)
}

// ErrNotWAN is wrapped by WANInput's error.
var ErrNotWAN = errors.New("not a WAN capture")

// liveCooked is the LAN view of a live capture on every interface
// (AnyInterface); Stats and Mechanism are the capture's.
type liveCooked struct {
	*cookedView
	live *LiveSource
}

func (l *liveCooked) Stats() (LiveStats, error) { return l.live.Stats() }
func (l *liveCooked) Mechanism() string         { return l.live.Mechanism() }

func newCookedView(src Source) *cookedView {
	return &cookedView{src: src, keys: map[cookedKey]*cookedIface{}, foreign: newMACSet(), neigh: newNeighTable(), ownAddrs: newNeighTable(), gatewayOf: newNeighTable(), l2Peer: map[uint16]schemas.MAC{},
		seen: map[uint64]seenAt{}, seed: maphash.MakeSeed()}
}

// Stats returns the counts so far and the sides judged now.
func (c *cookedView) Stats() CookedStats {
	s := c.stats
	s.Interfaces = nil
	for k, i := range c.keys {
		side := "other"
		switch {
		case i.hatype == arphrdLoopback:
			side = "loopback"
		case i.lanSide():
			side = "LAN"
		}
		s.Interfaces = append(s.Interfaces, CookedInterface{Name: k.String(), Hardware: hardwareName(i.hatype), Side: side,
			Frames: i.frames, LANVotes: i.lan, OtherVotes: i.wan})
	}
	slices.SortFunc(s.Interfaces, func(a, b CookedInterface) int { return strings.Compare(a.Name, b.Name) })
	return s
}

func (c *cookedView) Close() error { return c.src.Close() }

func isCooked(lt features.LinkType) bool {
	return lt == features.LinkTypeLinuxSLL || lt == features.LinkTypeLinuxSLL2
}

func (c *cookedView) Next() (Frame, error) {
	for {
		if len(c.held) > 0 {
			h := c.held[0]
			emit, ok := c.judge(&h.f, h.h, h.key, h.k, c.expired(&h))
			if ok {
				c.heldBytes -= len(h.f.Data)
				c.held[0] = heldFrame{}
				c.held = c.held[1:]
				if len(c.held) == 0 {
					c.held = nil
				}
				if emit {
					return h.f, nil
				}
				continue
			}
		}
		if c.eof {
			if c.err != nil {
				return Frame{}, c.err
			}
			return Frame{}, io.EOF
		}
		f, err := c.src.Next()
		if err != nil {
			// Frames held back are delivered before the error, as a
			// reader delivers every frame before a fault.
			c.eof = true
			if !errors.Is(err, io.EOF) {
				c.err = err
			}
			continue
		}
		if !isCooked(f.LinkType) {
			if len(c.held) == 0 {
				return f, nil
			}
			c.hold(f, cookedHdr{}, nil, cookedKey{})
			continue
		}
		if f.CI.Timestamp.After(c.last) {
			c.last = f.CI.Timestamp
		}
		if c.stats.Frames == 0 {
			c.first = f.CI.Timestamp
		}
		c.stats.Frames++
		h, ok := parseCookedHdr(f.LinkType, f.Data)
		var i *cookedIface
		var k cookedKey
		if ok {
			k = c.key(h)
			i = c.iface(k, h.hatype)
			i.frames++
			c.learn(h, i)
		}
		if len(c.held) == 0 {
			if emit, ok := c.judge(&f, h, i, k, false); ok {
				if emit {
					return f, nil
				}
				continue
			}
		}
		c.hold(f, h, i, k)
	}
}

func (c *cookedView) hold(f Frame, h cookedHdr, i *cookedIface, k cookedKey) {
	f.Data = append([]byte(nil), f.Data...)
	c.held = append(c.held, heldFrame{f: f, h: h, key: i, k: k})
	c.heldBytes += len(f.Data)
}

// expired: the held frame has waited as long as anything may.
func (c *cookedView) expired(h *heldFrame) bool {
	return c.eof || c.heldBytes > cookedHoldBytes || len(c.held) > cookedHoldFrames ||
		c.last.Sub(h.f.CI.Timestamp) > cookedNoLAN
}

// judge decides a frame: ok false holds it back (only when !expired);
// otherwise emit says whether it is passed on, rewritten in place as the
// LAN side's Ethernet frame where it is one.
func (c *cookedView) judge(f *Frame, h cookedHdr, i *cookedIface, k cookedKey, expired bool) (emit, ok bool) {
	switch {
	case !isCooked(f.LinkType):
		return true, true
	case i == nil: // too short for its header: the decoder says so
		c.stats.AsIs++
		return true, true
	case i.hatype == arphrdLoopback:
		c.stats.Loopback++
		return false, true
	}
	lan := i.lanSide()
	var dst schemas.MAC
	var known, resolved bool
	if !lan && !h.hasIndex && h.ether() && h.pkttype == pktOutgoing {
		// SLL judges source MACs: a frame the gateway sends to a LAN host
		// is on the LAN whatever MAC it is sent from (the gateway's before
		// that has votes, an access point's radio that sends only EAPOL).
		dst, known = c.destination(h, i)
		resolved = true
		n := c.keys[cookedKey{mac: dst, hatype: arphrdEther, vlan: h.vlan}]
		lan = known && n != nil && n.lanSide()
	}
	switch {
	case lan:
		if !resolved {
			dst, known = c.destination(h, i)
		}
		if !known && !expired && c.last.Sub(f.CI.Timestamp) <= cookedHold {
			return false, false // the MAC may show in the frames after it
		}
		if c.duplicate(f, h, k) {
			c.stats.Duplicates++
			return false, true
		}
		c.toEthernet(f, h, dst, known)
		c.stats.LAN++
		return true, true
	case !expired && i.lan+i.wan == 0 && c.last.Sub(i.first) <= cookedHold:
		// A key with no votes yet: its first frames are judged with the
		// votes of those after them.
		return false, false
	case c.lanKeys > 0:
		c.stats.OtherSide++
		return false, true
	case !expired && c.last.Sub(c.first) <= cookedNoLAN:
		return false, false // no LAN side yet
	case h.ether():
		// No LAN side found: a capture of one host's interfaces, not a
		// gateway's. Its Ethernet frames are still read as Ethernet.
		dst, known := c.destination(h, i)
		c.toEthernet(f, h, dst, known)
		c.stats.Whole++
		return true, true
	}
	c.stats.AsIs++
	return true, true
}

// cookedHdr is what the view reads of a cooked frame: its SLL header and
// the addresses and hop limit of the packet it carries.
type cookedHdr struct {
	hdrLen   int // 16 (SLL) or 20 (SLL2)
	ifindex  uint32
	hasIndex bool
	hatype   uint16
	pkttype  uint16
	halen    int
	addr     schemas.MAC // the source MAC, where halen is 6
	proto    uint16
	vlan     uint16 // outer VLAN ID + 1; 0 untagged
	et       uint16 // the EtherType after the VLAN tags
	pppoe    bool

	l3       int // offset of the network packet; hdrLen where unread
	ip       bool
	v4       bool
	ttl      uint8
	src, dst [16]byte
	// ARP: the opcode, sender and target.
	arpOp          uint16
	arpSHA, arpTHA schemas.MAC
	arpSPA, arpTPA [16]byte
	// A DHCP (BOOTP) reply's client MAC.
	dhcpClient schemas.MAC
	isDHCPRep  bool
}

func (h cookedHdr) ether() bool { return h.hatype == arphrdEther && h.halen == 6 }

func parseCookedHdr(lt features.LinkType, data []byte) (cookedHdr, bool) {
	var h cookedHdr
	switch lt {
	case features.LinkTypeLinuxSLL2:
		// protocol(2) reserved(2) ifindex(4) hatype(2) pkttype(1) addrlen(1) addr(8)
		if len(data) < 20 {
			return h, false
		}
		h.hdrLen, h.hasIndex = 20, true
		h.proto = binary.BigEndian.Uint16(data[0:2])
		h.ifindex = binary.BigEndian.Uint32(data[4:8])
		h.hatype = binary.BigEndian.Uint16(data[8:10])
		h.pkttype = uint16(data[10])
		h.halen = int(data[11])
		copy(h.addr[:], data[12:18])
	default:
		// packet type(2) hatype(2) addrlen(2) addr(8) protocol(2)
		if len(data) < 16 {
			return h, false
		}
		h.hdrLen = 16
		h.pkttype = binary.BigEndian.Uint16(data[0:2])
		h.hatype = binary.BigEndian.Uint16(data[2:4])
		h.halen = int(binary.BigEndian.Uint16(data[4:6]))
		copy(h.addr[:], data[6:12])
		h.proto = binary.BigEndian.Uint16(data[14:16])
	}
	if h.halen != 6 {
		h.addr = schemas.MAC{}
	}
	h.l3 = h.hdrLen
	if h.hatype != arphrdEther {
		return h, true
	}
	et := h.proto
	if (et == 0x8100 || et == 0x88a8) && len(data) >= h.hdrLen+4 {
		h.vlan = binary.BigEndian.Uint16(data[h.hdrLen:])&0x0fff + 1
		et = binary.BigEndian.Uint16(data[h.hdrLen+2:])
	}
	h.et = et
	h.pppoe = et == 0x8863 || et == 0x8864
	l, err := features.ParseLink(lt, data)
	if err != nil {
		return h, true
	}
	h.l3 = l.Offset
	p := data[l.Offset:]
	switch l.EtherType {
	case features.EtherTypeIPv4:
		if len(p) < 20 || p[0]>>4 != 4 {
			return h, true
		}
		h.ip, h.v4, h.ttl = true, true, p[8]
		copy(h.src[12:], p[12:16])
		copy(h.dst[12:], p[16:20])
		h.src[10], h.src[11], h.dst[10], h.dst[11] = 0xff, 0xff, 0xff, 0xff
		ihl := int(p[0]&0x0f) * 4
		// A DHCP reply names its client in the BOOTP header: the MAC a
		// server sends an offer to before the client has an address.
		if p[9] == 17 && ihl >= 20 && len(p) >= ihl+8+34 && binary.BigEndian.Uint16(p[ihl:]) == 67 {
			b := p[ihl+8:]
			if b[0] == 2 && b[1] == 1 && b[2] == 6 {
				h.isDHCPRep = true
				copy(h.dhcpClient[:], b[28:34])
			}
		}
	case features.EtherTypeIPv6:
		if len(p) < 40 || p[0]>>4 != 6 {
			return h, true
		}
		h.ip, h.ttl = true, p[7]
		copy(h.src[:], p[8:24])
		copy(h.dst[:], p[24:40])
	case features.EtherTypeARP:
		// Ethernet and IPv4 only: hardware 1, protocol 0x0800, lengths 6 and 4.
		if len(p) < 28 || binary.BigEndian.Uint16(p[0:2]) != 1 || binary.BigEndian.Uint16(p[2:4]) != 0x0800 || p[4] != 6 || p[5] != 4 {
			return h, true
		}
		h.arpOp = binary.BigEndian.Uint16(p[6:8])
		copy(h.arpSHA[:], p[8:14])
		copy(h.arpSPA[12:], p[14:18])
		copy(h.arpTHA[:], p[18:24])
		copy(h.arpTPA[12:], p[24:28])
		h.arpSPA[10], h.arpSPA[11], h.arpTPA[10], h.arpTPA[11] = 0xff, 0xff, 0xff, 0xff
	}
	return h, true
}

// key names what a frame is judged by: its interface and outer VLAN; for
// SLL, which names no interface, its source MAC (or its hardware type,
// where it has no MAC).
func (c *cookedView) key(h cookedHdr) cookedKey {
	switch {
	case h.hasIndex:
		return cookedKey{ifindex: h.ifindex, vlan: h.vlan, hatype: h.hatype}
	case h.ether():
		return cookedKey{mac: h.addr, hatype: h.hatype, vlan: h.vlan}
	}
	return cookedKey{hatype: h.hatype}
}

func (c *cookedView) iface(k cookedKey, hatype uint16) *cookedIface {
	if i, ok := c.keys[k]; ok {
		return i
	}
	if len(c.keys) >= cookedMaxKeys {
		k = cookedKey{overflow: true, hatype: hatype}
		if i, ok := c.keys[k]; ok {
			return i
		}
	}
	i := &cookedIface{hatype: hatype, first: c.last}
	c.keys[k] = i
	return i
}

// startingHop: a hop limit a host's stack starts its packets at, so that
// the packet has crossed no router.
var broadcast4 = [16]byte{10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff}

// macKey files a MAC in a neighTable.
func macKey(m schemas.MAC) [16]byte {
	var k [16]byte
	k[0] = 1 // no IPv4-mapped or IPv6 address of a neighbour starts so
	copy(k[10:], m[:])
	return k
}

func linkLocal(a [16]byte, v4 bool) bool {
	if v4 {
		return a[12] == 169 && a[13] == 254
	}
	return a[0] == 0xfe && a[1]&0xc0 == 0x80
}

func startingHop(ttl uint8) bool {
	switch ttl {
	case 1, 32, 64, 128, 255:
		return true
	}
	return false
}

// learn takes what a frame shows: its key's vote, the MACs of the
// gateway and its neighbours, and which address sends from which MAC.
func (c *cookedView) learn(h cookedHdr, i *cookedIface) {
	if h.pppoe {
		i.pppoe = true
	}
	incoming := h.pkttype != pktOutgoing
	if h.ether() {
		switch {
		case incoming:
			c.foreign.add(h.addr)
			if h.pkttype == pktHost && !h.ip && h.arpOp == 0 && (len(c.l2Peer) < 64 || c.l2Peer[h.et] != schemas.MAC{}) {
				c.l2Peer[h.et] = h.addr
			}
		case c.foreign.has(h.addr):
			// Another host's frame the bridge forwards.
		case h.ip || h.arpOp != 0:
			i.own, c.lastOwn = h.addr, h.addr
		default:
			i.ownL2, c.lastOwnL2 = h.addr, h.addr
		}
	}
	if h.arpOp != 0 && h.ether() && !unspecified(h.arpSPA) {
		c.neigh.put(h.arpSPA, h.arpSHA)
		if !incoming {
			c.ownAddrs.put(h.arpSPA, schemas.MAC{})
		}
	}
	if !h.ip {
		return
	}
	if !incoming && startingHop(h.ttl) && !unspecified(h.src) {
		// The gateway's own packet, not one it forwards.
		c.ownAddrs.put(h.src, schemas.MAC{})
	}
	if incoming && h.ether() && !unspecified(h.src) && !multicast(h.src, h.v4) {
		if startingHop(h.ttl) {
			c.neigh.put(h.src, h.addr)
		} else {
			i.router, c.lastRouter = h.addr, h.addr
		}
	}
	// Only unicast packets between routable addresses vote: every
	// neighbour, the ISP's router too, sends link-scoped packets
	// (neighbour discovery, multicast, DHCP) with a starting hop limit.
	if linkLocal(h.src, h.v4) || linkLocal(h.dst, h.v4) || multicast(h.dst, h.v4) || unspecified(h.src) || h.dst == broadcast4 {
		return
	}
	switch {
	case h.pkttype == pktHost || h.pkttype == pktOtherHost:
		_, toGateway := c.ownAddrs.get(h.dst)
		switch {
		case !startingHop(h.ttl):
			i.wan++ // from beyond a router
		case !toGateway:
			i.lan++ // from a neighbour that sends through the gateway
		}
	case h.pkttype == pktOutgoing && !h.hasIndex && h.ether():
		// SLL: the gateway's own MAC on each side is judged by whom it
		// sends to, a LAN host or a host beyond the LAN; and a LAN host's
		// MAC is remembered with the gateway's MAC that talks to it.
		m, ok := c.neigh.get(h.dst)
		if n := c.keys[cookedKey{mac: m, hatype: arphrdEther, vlan: h.vlan}]; ok && n != nil && n.lanSide() {
			i.lan++
			if !c.foreign.has(h.addr) { // not a frame the bridge forwards
				c.gatewayOf.put(macKey(m), h.addr)
				c.lastGateway = h.addr
			}
		} else {
			i.wan++
		}
	}
	if now := i.lanSide(); now != i.isLAN {
		i.isLAN = now
		if now {
			c.lanKeys++
		} else {
			c.lanKeys--
		}
	}
}

// destination is the frame's destination MAC, as far as the capture shows.
func (c *cookedView) destination(h cookedHdr, i *cookedIface) (schemas.MAC, bool) {
	bcast := schemas.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	switch h.pkttype {
	case pktBroadcast:
		return bcast, true
	case pktMulticast:
		return groupMAC(h)
	case pktHost:
		l2 := i.ownL2
		if !h.hasIndex {
			l2 = c.lastOwnL2
		}
		if !h.ip && h.arpOp == 0 && l2 != (schemas.MAC{}) {
			return l2, true
		}
		return c.gateway(h, i)
	case pktOtherHost:
		// Another host's frame that the bridge forwards.
		switch {
		case h.arpOp == 2:
			return h.arpTHA, true
		case h.arpOp == 1:
			return c.neigh.get(h.arpTPA)
		case !h.ip:
			return schemas.MAC{}, false
		}
		if m, ok := c.neigh.get(h.dst); ok {
			return m, true
		}
		return c.gateway(h, i)
	}
	// Sent by the gateway, or through it by the bridge.
	switch {
	case h.arpOp == 2:
		return h.arpTHA, true
	case h.arpOp == 1:
		// Linux asks a neighbour it has a MAC for by unicast (a probe of
		// a stale entry), and broadcasts otherwise. Another host's request
		// that the bridge forwards is broadcast: its unicast probes go to
		// the gateway, not through it.
		if m, ok := c.neigh.get(h.arpTPA); ok && !c.foreign.has(h.addr) {
			return m, true
		}
		return bcast, true
	case !h.ip:
		m := c.l2Peer[h.et]
		return m, m != schemas.MAC{}
	case multicast(h.dst, h.v4):
		return groupMAC(h)
	case h.v4 && h.dst == broadcast4:
		return bcast, true
	case h.isDHCPRep:
		return h.dhcpClient, true
	}
	if m, ok := c.neigh.get(h.dst); ok {
		return m, true
	}
	// Beyond the link: to the router packets from beyond came from.
	r := i.router
	if !h.hasIndex {
		r = c.lastRouter
	}
	return r, r != schemas.MAC{}
}

// gateway is the gateway's MAC where a frame came in: the source of the IP
// the gateway sends on that interface; for SLL, which names no interface,
// the MAC the gateway last sent to this host from, or else to any LAN
// host, or else any IP at all.
func (c *cookedView) gateway(h cookedHdr, i *cookedIface) (schemas.MAC, bool) {
	m := i.own
	if !h.hasIndex {
		var ok bool
		if m, ok = c.gatewayOf.get(macKey(h.addr)); !ok {
			m = cmp.Or(c.lastGateway, c.lastOwn)
		}
	}
	return m, m != schemas.MAC{}
}

// groupMAC is the Ethernet group address of an IP multicast destination.
func groupMAC(h cookedHdr) (schemas.MAC, bool) {
	switch {
	case !h.ip || !multicast(h.dst, h.v4):
		return schemas.MAC{}, false
	case h.v4:
		return schemas.MAC{0x01, 0x00, 0x5e, h.dst[13] & 0x7f, h.dst[14], h.dst[15]}, true
	}
	return schemas.MAC{0x33, 0x33, h.dst[12], h.dst[13], h.dst[14], h.dst[15]}, true
}

func multicast(a [16]byte, v4 bool) bool {
	if v4 {
		return a[12]&0xf0 == 0xe0
	}
	return a[0] == 0xff
}

func unspecified(a [16]byte) bool {
	return a == [16]byte{} || a == [16]byte{10: 0xff, 11: 0xff}
}

// toEthernet rewrites a LAN-side cooked frame in place into the Ethernet
// frame it was on the wire: the SLL header's last 14 bytes become the
// Ethernet header. A VLAN tag goes: the tag is the trunk's, and the LAN
// view is the frames of the VLAN, as on its own interface (eth0.1).
func (c *cookedView) toEthernet(f *Frame, h cookedHdr, dst schemas.MAC, known bool) {
	if !known {
		c.stats.NoDestination++
	}
	d := f.Data
	src := 12 // where the source MAC stands: SLL2's address field
	if !h.hasIndex {
		src = 6
	}
	end := h.hdrLen // where the EtherType ends in the Ethernet frame
	if h.vlan > 0 {
		end += 4 // the inner EtherType, after the tag, stays
	} else {
		binary.BigEndian.PutUint16(d[end-2:end], h.proto)
	}
	cut := end - 14
	copy(d[cut+6:cut+12], d[src:src+6])
	copy(d[cut:cut+6], dst[:])
	f.Data = d[cut:]
	f.LinkType = features.LinkTypeEthernet
	f.CI.CaptureLength -= cut
	f.CI.Length = max(f.CI.Length-cut, f.CI.CaptureLength)
}

// duplicate says whether the frame is a second copy, on another LAN-side
// interface, of one passed on just before: the same source MAC and the
// same network packet, byte for byte.
func (c *cookedView) duplicate(f *Frame, h cookedHdr, k cookedKey) bool {
	var mh maphash.Hash
	mh.SetSeed(c.seed)
	mh.Write(h.addr[:])
	mh.Write(f.Data[min(h.l3, len(f.Data)):])
	sum := mh.Sum64()
	now := f.CI.Timestamp
	for len(c.seenQ) > 0 && (absDur(now.Sub(c.seenQ[0].ts)) > cookedDupWindow || len(c.seenQ) >= cookedMaxSeen) {
		e := c.seenQ[0]
		if s, ok := c.seen[e.hash]; ok && s.ts.Equal(e.ts) {
			delete(c.seen, e.hash)
		}
		c.seenQ = c.seenQ[1:]
	}
	// SLL names no interface: a copy cannot be told from a repeat by it,
	// and a host repeats a frame byte for byte (IP ID and all) within
	// milliseconds too rarely to matter.
	if s, ok := c.seen[sum]; ok && (s.key != k || !h.hasIndex) && absDur(now.Sub(s.ts)) <= cookedDupWindow {
		return true
	}
	c.seen[sum] = seenAt{ts: now, key: k}
	c.seenQ = append(c.seenQ, seenEntry{hash: sum, ts: now})
	return false
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// macSet and neighTable remember at most cookedMaxTable entries: when the
// newer of two generations is full, the older is dropped, so what is
// still in use stays and a flood of new addresses pushes out only itself.
type macSet struct{ cur, old map[schemas.MAC]struct{} }

func newMACSet() macSet { return macSet{cur: map[schemas.MAC]struct{}{}} }

func (s *macSet) add(m schemas.MAC) {
	if _, ok := s.cur[m]; ok {
		return
	}
	if len(s.cur) >= cookedMaxTable/2 {
		s.old, s.cur = s.cur, map[schemas.MAC]struct{}{}
	}
	s.cur[m] = struct{}{}
}

func (s *macSet) has(m schemas.MAC) bool {
	if _, ok := s.cur[m]; ok {
		return true
	}
	_, ok := s.old[m]
	return ok
}

type neighTable struct{ cur, old map[[16]byte]schemas.MAC }

func newNeighTable() neighTable { return neighTable{cur: map[[16]byte]schemas.MAC{}} }

func (t *neighTable) put(a [16]byte, m schemas.MAC) {
	if _, ok := t.cur[a]; !ok && len(t.cur) >= cookedMaxTable/2 {
		t.old, t.cur = t.cur, map[[16]byte]schemas.MAC{}
	}
	t.cur[a] = m
}

func (t *neighTable) get(a [16]byte) (schemas.MAC, bool) {
	if m, ok := t.cur[a]; ok {
		return m, true
	}
	m, ok := t.old[a]
	return m, ok
}
