package capture

import (
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
//     it sends its own packets from, before the packet or after it: a
//     LAN vote for a packet to an address the gateway then sends from is
//     taken back), for the other side when it comes at less. An
//     interface is on the LAN side while most votes say so.
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
	// lanVotes are the LAN votes by the address the packet went to, to be
	// taken back should it show as one of ownAddrs.
	lanVotes voteTable
	// SLL only, for want of interfaces: the gateway's MAC that sends to
	// a LAN host, by the host's MAC (macKey); the one that sent to a LAN
	// host last; the last MAC the capturing host sent IP from, and other
	// frames from; the last router that packets from beyond came from.
	gatewayOf                        neighTable
	lastGateway, lastOwn, lastRouter schemas.MAC
	lastOwnL2                        schemas.MAC
	// lastUplink is, for SLL, the gateway's MAC that sent beyond the LAN
	// last (its WAN side's).
	lastUplink schemas.MAC
	// l2Peer is, by EtherType, the last host that sent the gateway a
	// frame that is neither IP nor ARP (EAPOL, say): whom the gateway's
	// own frames of that protocol go to.
	l2Peer map[uint16]schemas.MAC
	seen   map[uint64]seenAt // frames emitted in the last cookedDupWindow
	seenQ  []seenEntry
	seed   maphash.Seed

	// ng is the pcapng file read, nil for other sources: a section of it
	// with several interfaces is read as the gateway's interfaces
	// (cookedng.go). fwd remembers its packets for the match of a
	// forwarded packet's two copies, fwdQ in the order they came.
	ng   *ngReader
	fwd  map[uint64]forwardSeen
	fwdQ []forwardEntry

	// sides are the gateway's sides the view passes on: the LAN side (a
	// LAN tap), the other (a WAN tap), or both (one capture feeding both
	// taps, OpenLiveSides).
	sides Side
	// passed is how many frames the view has passed on, per side: it
	// numbers them (Frame.Offset) as a capture of its side alone would,
	// so that a LAN view and a LAN interface's own capture agree frame
	// for frame.
	passed [2]uint64

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
	// cookedMaxPending bounds the addresses whose LAN votes are
	// remembered to be taken back (voteTable).
	cookedMaxPending = 1 << 12
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
	arphrdPPP      = 512
	arphrdLoopback = 772
	arphrdNone     = 65534 // tun, WireGuard
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
	case arphrdPPP:
		return "PPP"
	case arphrdNone:
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
	name               string    // a PKTAP interface's name
}

// lanSide says whether the key is on the gateway's LAN side by its votes.
func (c *cookedIface) lanSide() bool {
	return c.hatype == arphrdEther && !c.pppoe && c.lan > c.wan
}

// heldFrame is a frame held back with its own copy of the bytes; judged
// says it is a frame the view judges (not one passed on as it is).
type heldFrame struct {
	f      Frame
	h      cookedHdr
	key    *cookedIface
	k      cookedKey
	judged bool
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
const OtherViewKinds = "frames of a gateway's capture on every interface (tcpdump -i any, -i pktap) or on several (dumpcap -i A -i B) beyond the side read: the other side's, tunnel and loopback copies, and a bridge's second copies"

// CookedStats says what a cooked capture's view did with its frames.
type CookedStats struct {
	// Frames is the number of cooked frames read.
	Frames uint64
	// LAN is the number passed on as Ethernet frames of the LAN side.
	LAN uint64
	// WAN is the number passed on as the other side's Ethernet frames, in
	// a view opened with OpenWANSide.
	WAN uint64
	// Whole and AsIs are the frames of a capture with no LAN side found
	// (one host's interfaces, a cooked capture of a PPP link, one
	// interface cut out of a gateway's): Whole those passed on as
	// Ethernet frames, AsIs those passed on as they were.
	Whole, AsIs uint64
	// OtherSide is the number left out as copies on the gateway's
	// interfaces of the side not read (in a LAN view the WAN's, tunnels,
	// PPP; in a WAN view the LAN's and tunnels; in a view of both the
	// tunnels and PPP); Loopback those on loopback;
	// Duplicates the second copies of a frame on another LAN-side
	// interface (a bridge and its ports).
	OtherSide, Loopback, Duplicates uint64
	// NoDestination is the number of LAN frames passed on with a zero
	// destination MAC: the capture never showed whose it was.
	NoDestination uint64
	// Interfaces are the interfaces (for SLL, the source MACs) seen, and
	// which side each was judged to be on at the end.
	Interfaces []CookedInterface
	// Pcapng says the frames were those of a pcapng file's several
	// interfaces (dumpcap -i A -i B), judged by the packets forwarded
	// between them, not a capture on every interface.
	Pcapng bool
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
	var lan, other, uplinks []string
	for _, i := range s.Interfaces {
		switch i.Side {
		case "LAN":
			lan = append(lan, i.Name)
		case "other":
			other = append(other, i.Name)
			if i.Hardware == hardwareName(arphrdEther) {
				uplinks = append(uplinks, i.Name)
			}
		}
	}
	var b strings.Builder
	if s.Pcapng {
		fmt.Fprintf(&b, "capture on several interfaces (dumpcap -i A -i B), %d frames", s.Frames)
	} else {
		fmt.Fprintf(&b, "capture on every interface (tcpdump -i any, -i pktap), %d frames", s.Frames)
	}
	if s.LAN > 0 {
		fmt.Fprintf(&b, ": %d read as the LAN side's Ethernet frames (%s)", s.LAN, abbreviate(lan))
	}
	if s.WAN > 0 {
		fmt.Fprintf(&b, "; %d read as the WAN side's Ethernet frames (%s)", s.WAN, abbreviate(uplinks))
	}
	if s.LeftOut() > 0 {
		switch {
		case s.LAN == 0 && s.WAN > 0:
			fmt.Fprintf(&b, "; left out %d on the LAN side (%s) and tunnels", s.OtherSide, abbreviate(lan))
		case s.WAN == 0 && len(other) > 0:
			fmt.Fprintf(&b, "; left out %d copies on the gateway's other interfaces (%s)", s.OtherSide, abbreviate(other))
		default:
			fmt.Fprintf(&b, "; left out %d copies on the gateway's other interfaces", s.OtherSide)
		}
		fmt.Fprintf(&b, ", %d on loopback, %d second copies (a bridge's ports, a trunk's VLANs)", s.Loopback, s.Duplicates)
	}
	if s.Whole+s.AsIs > 0 {
		fmt.Fprintf(&b, "; no LAN side found for %d frames, read whole (%d as Ethernet frames)", s.Whole+s.AsIs, s.Whole)
		if s.Pcapng {
			// The sides are told by the packets forwarded between them:
			// a VPN gateway forwards its LAN's into the tunnel only.
			b.WriteString(": no packet was forwarded between its interfaces (no gateway's, or a VPN gateway's without its tunnel interface: capture that too, dumpcap -i tun0)")
		}
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
	var st CookedStats
	if o, ok := src.(*sideSource); ok {
		st = o.cookedStats()
	} else if c := viewOf(src); c != nil {
		st = c.Stats()
	}
	return st, st.Frames > 0
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
	ifaces := c.Stats().Interfaces
	var other []string
	for _, i := range ifaces {
		// Linux numbers interfaces (SLL2), which tcpdump's ifindex
		// filter takes; a PKTAP capture names them.
		if f := strings.Fields(i.Name); i.Side == "other" && f[0] == "interface" && strings.Trim(f[1], "0123456789") == "" {
			other = append(other, f[1])
		}
	}
	other = slices.Compact(other) // one interface's VLANs are one cut
	cut := "capture the WAN interface on its own"
	switch {
	case c.stats.Pcapng:
		var uplinks []string
		for _, i := range ifaces {
			if i.Side != "other" || i.Hardware != hardwareName(arphrdEther) {
				continue
			}
			n := strings.TrimPrefix(i.Name, "interface ")
			if id, ok := strings.CutPrefix(n, "#"); ok { // unnamed in the file
				uplinks = append(uplinks, "frame.interface_id == "+id)
			} else {
				uplinks = append(uplinks, fmt.Sprintf("frame.interface_name == %q", n))
			}
		}
		if len(uplinks) > 0 {
			cut = fmt.Sprintf("cut its WAN interface out first: tshark -r %s -w wan.pcapng -Y '%s'", name, strings.Join(slices.Compact(uplinks), " or "))
		}
	case len(other) > 0:
		cut = fmt.Sprintf("cut its WAN interface out first: tcpdump -r %s -w wan.pcap ifindex N, N one of its other interfaces: %s", name, strings.Join(other, ", "))
	}
	what := "capture on every interface (tcpdump -i any)"
	if c.stats.Pcapng {
		what = "capture on several interfaces (dumpcap -i A -i B)"
	}
	return fmt.Errorf("%w: %s is a gateway's %s, read as its LAN side, not its WAN: open it as its WAN side (capture.OpenFileSide with SideWAN), or %s", ErrNotWAN, name, what, cut)
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

// Side is a side of a gateway, as a capture on every interface of it
// (tcpdump -i any) is read: its LAN side, the other (WAN) side, or both.
type Side uint8

const (
	// SideLAN is the LAN side's Ethernet frames: what a capture on the LAN
	// interface shows. The zero Side reads as SideLAN.
	SideLAN Side = 1 << iota
	// SideWAN is the other side's: the frames of the gateway's Ethernet
	// interfaces that are not the LAN's (the WAN, a PPPoE access link, a
	// trunk's WAN VLAN), as a capture on the WAN interface shows them.
	SideWAN
)

func (s Side) String() string {
	switch s {
	case SideLAN:
		return "LAN"
	case SideWAN:
		return "WAN"
	case SideLAN | SideWAN:
		return "LAN and WAN"
	}
	return fmt.Sprintf("Side(%d)", uint8(s))
}

// index is the side's slot in per-side counts: 0 LAN, 1 WAN.
func (s Side) index() int {
	if s == SideWAN {
		return 1
	}
	return 0
}

func newCookedView(src Source, sides Side) *cookedView {
	if sides == 0 {
		sides = SideLAN
	}
	c := &cookedView{src: src, sides: sides, keys: map[cookedKey]*cookedIface{}, foreign: newMACSet(), neigh: newNeighTable(), ownAddrs: newNeighTable(), lanVotes: newVoteTable(), gatewayOf: newNeighTable(), l2Peer: map[uint16]schemas.MAC{},
		seen: map[uint64]seenAt{}, seed: maphash.MakeSeed(), fwd: map[uint64]forwardSeen{}}
	c.ng, _ = src.(*ngReader)
	return c
}

// primary is the side a frame goes to that is no side's in particular: a
// frame that is not cooked, or one of a capture with no LAN side, read
// whole. A view of both sides gives it to the LAN.
func (c *cookedView) primary() Side {
	if c.sides&SideLAN != 0 {
		return SideLAN
	}
	return SideWAN
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
		name := k.String()
		if i.name != "" {
			name = "interface " + i.name
			if k.vlan > 0 {
				name += fmt.Sprintf(" VLAN %d", k.vlan-1)
			}
		}
		s.Interfaces = append(s.Interfaces, CookedInterface{Name: name, Hardware: hardwareName(i.hatype), Side: side,
			Frames: i.frames, LANVotes: i.lan, OtherVotes: i.wan})
	}
	slices.SortFunc(s.Interfaces, func(a, b CookedInterface) int { return strings.Compare(a.Name, b.Name) })
	return s
}

func (c *cookedView) Close() error { return c.src.Close() }

// isCooked: the link type is a capture on every interface, read through
// the view: Linux's cooked captures, and Apple's PKTAP, which keeps each
// interface's own frames but is every interface's all the same.
func isCooked(lt features.LinkType) bool {
	return lt == features.LinkTypeLinuxSLL || lt == features.LinkTypeLinuxSLL2 || lt == features.LinkTypePKTAP
}

func (c *cookedView) Next() (Frame, error) {
	f, _, err := c.next()
	return f, err
}

// next returns the next frame the view passes on and the side it is of
// (one of c.sides).
func (c *cookedView) next() (Frame, Side, error) {
	for {
		if len(c.held) > 0 {
			h := c.held[0]
			side, ok := c.judge(&h.f, h.h, h.key, h.k, h.judged, c.expired(&h))
			if ok {
				c.heldBytes -= len(h.f.Data)
				c.held[0] = heldFrame{}
				c.held = c.held[1:]
				if len(c.held) == 0 {
					c.held = nil
				}
				if side != 0 {
					return c.pass(h.f, side), side, nil
				}
				continue
			}
		}
		if c.eof {
			if c.err != nil {
				return Frame{}, 0, c.err
			}
			return Frame{}, 0, io.EOF
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
		ng := c.byForwards(f)
		if !ng && !isCooked(f.LinkType) {
			if len(c.held) == 0 {
				return c.pass(f, c.primary()), c.primary(), nil
			}
			c.hold(f, cookedHdr{}, nil, cookedKey{}, false)
			continue
		}
		if f.CI.Timestamp.After(c.last) {
			c.last = f.CI.Timestamp
		}
		if c.stats.Frames == 0 {
			c.first = f.CI.Timestamp
		}
		c.stats.Frames++
		c.stats.Pcapng = c.stats.Pcapng || ng
		var h cookedHdr
		var ok bool
		if ng {
			h, ok = c.parseNgHdr(f)
		} else {
			h, ok = parseCookedHdr(f.LinkType, f.Data)
		}
		var i *cookedIface
		var k cookedKey
		if ok {
			k = c.key(h)
			i = c.iface(k, h.hatype)
			switch {
			case i.name != "":
			case ng:
				i.name = c.ngIfaceName(f.CI.InterfaceIndex)
			case h.ifname != nil:
				i.name = string(h.ifname)
			}
			h.ifname = nil // a slice of a buffer the source reuses
			if h.arpOp == 1 && h.pkttype == pktOutgoing && h.ether() {
				// Linux asks a neighbour it has a MAC for by unicast (a
				// probe of a stale entry), and broadcasts otherwise: which
				// one is told by what was known when the request went
				// out, not when a held frame is judged. Another host's
				// request that the bridge forwards is broadcast: its
				// unicast probes go to the gateway, not through it.
				if m, known := c.neigh.get(h.arpTPA); known && !c.foreign.has(h.addr) {
					h.arpTo = m
				}
			}
			i.frames++
			c.learn(h, i)
			if ng {
				c.forwards(f, h, i)
			}
		}
		if len(c.held) == 0 {
			if side, ok := c.judge(&f, h, i, k, true, false); ok {
				if side != 0 {
					return c.pass(f, side), side, nil
				}
				continue
			}
		}
		c.hold(f, h, i, k, true)
	}
}

// pass numbers a frame the view passes on, among its side's.
func (c *cookedView) pass(f Frame, side Side) Frame {
	n := &c.passed[side.index()]
	f.Offset = *n
	*n++
	return f
}

func (c *cookedView) hold(f Frame, h cookedHdr, i *cookedIface, k cookedKey, judged bool) {
	f.Data = append([]byte(nil), f.Data...)
	c.held = append(c.held, heldFrame{f: f, h: h, key: i, k: k, judged: judged})
	c.heldBytes += len(f.Data)
}

// expired: the held frame has waited as long as anything may.
func (c *cookedView) expired(h *heldFrame) bool {
	return c.eof || c.heldBytes > cookedHoldBytes || len(c.held) > cookedHoldFrames ||
		c.last.Sub(h.f.CI.Timestamp) > cookedNoLAN
}

// judge decides a frame: ok false holds it back (only when !expired);
// otherwise side is the side it is passed on as (0: left out), rewritten
// in place as that side's Ethernet frame where it is one. A frame that is
// not judged (!judged) is passed on as it is.
func (c *cookedView) judge(f *Frame, h cookedHdr, i *cookedIface, k cookedKey, judged, expired bool) (side Side, ok bool) {
	switch {
	case !judged:
		return c.primary(), true
	case i == nil: // too short for its header: the decoder says so
		c.stats.AsIs++
		return c.primary(), true
	case i.hatype == arphrdLoopback:
		c.stats.Loopback++
		return 0, true
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
		if known && dst[0]&1 == 0 && (n == nil || n.lan+n.wan == 0) && !expired && c.last.Sub(f.CI.Timestamp) <= cookedHold {
			// A host with no votes yet (the gateway's DHCP offer to a
			// newcomer): its side shows in the frames after it.
			return 0, false
		}
		lan = known && n != nil && n.lanSide()
	}
	switch {
	case lan && c.sides&SideLAN == 0:
		c.stats.OtherSide++
		return 0, true
	case lan:
		if !resolved {
			dst, known = c.destination(h, i)
		}
		return c.passEthernet(f, h, k, dst, known, SideLAN, expired)
	case !expired && i.lan+i.wan == 0 && c.last.Sub(i.first) <= cookedHold:
		// A key with no votes yet: its first frames are judged with the
		// votes of those after them.
		return 0, false
	case c.lanKeys > 0 && c.sides&SideWAN != 0 && i.hatype == arphrdEther && h.ether():
		// The other side's Ethernet interfaces: the WAN, a PPPoE access
		// link (its PPP device's copies are left out below), a trunk's
		// WAN VLAN.
		if !resolved {
			dst, known = c.destination(h, i)
		}
		return c.passEthernet(f, h, k, dst, known, SideWAN, expired)
	case c.lanKeys > 0:
		c.stats.OtherSide++
		return 0, true
	case !expired && c.last.Sub(c.first) <= cookedNoLAN:
		return 0, false // no LAN side yet
	case h.ether():
		// No LAN side found: a capture of one host's interfaces, or of a
		// gateway's WAN interface cut out of its capture, not a gateway's
		// every interface. Its Ethernet frames are still read as Ethernet.
		dst, known := c.destination(h, i)
		c.toEthernet(f, h, dst, known)
		c.stats.Whole++
		return c.primary(), true
	}
	c.stats.AsIs++
	return c.primary(), true
}

// passEthernet passes a frame on as the Ethernet frame it was on side,
// unless it is a second copy of one passed on just before; it holds it
// back (ok false) while its destination MAC has not shown, for at most
// cookedHold.
func (c *cookedView) passEthernet(f *Frame, h cookedHdr, k cookedKey, dst schemas.MAC, known bool, side Side, expired bool) (Side, bool) {
	if !known && !expired && c.last.Sub(f.CI.Timestamp) <= cookedHold {
		return 0, false // the MAC may show in the frames after it
	}
	if c.duplicate(f, h, k) {
		c.stats.Duplicates++
		return 0, true
	}
	c.toEthernet(f, h, dst, known)
	if side == SideWAN {
		c.stats.WAN++
	} else {
		c.stats.LAN++
	}
	return side, true
}

// OpenWANSide opens a gateway's capture on every interface (tcpdump -i
// any) as its other side, as OpenFileSide(path, SideWAN) does, and
// refuses any other capture: it reads the capture once first, to say
// whether it is a gateway's, with a LAN side and an Ethernet interface
// beside it. Its frames are numbered as in a capture of that side alone
// (what tcpdump -r FILE -w wan.pcap ifindex N writes), not as in the whole
// capture. Pairing a gateway's LAN with its WAN from one capture reads it
// with OpenFile and with this.
func OpenWANSide(path string) (Source, error) {
	first, err := OpenFile(path)
	if err != nil {
		return nil, err
	}
	defer first.Close()
	lan := viewOf(first)
	if lan == nil {
		return nil, fmt.Errorf("%w: %s is no capture on every interface (tcpdump -i any): give its WAN capture as it is", ErrNotWAN, path)
	}
	for {
		_, err := lan.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read %s for its sides: %w", path, err)
		}
	}
	others := 0
	for _, i := range lan.keys {
		if i.hatype == arphrdEther && !i.lanSide() {
			others++
		}
	}
	switch {
	case lan.lanKeys == 0:
		return nil, fmt.Errorf("%w: %s shows no LAN side (it is one host's capture, not a gateway's): give the WAN capture as it is", ErrNotWAN, path)
	case others == 0:
		return nil, fmt.Errorf("%w: %s has no Ethernet interface beside its LAN side (a tunnel or PPP uplink only): capture the uplink on its own", ErrNotWAN, path)
	}
	return OpenFileSide(path, SideWAN)
}

// toEthernet rewrites a LAN-side cooked frame in place into the Ethernet
// frame it was on the wire: the SLL header's last 14 bytes become the
// Ethernet header. A VLAN tag goes: the tag is the trunk's, and the LAN
// view is the frames of the VLAN, as on its own interface (eth0.1).
func (c *cookedView) toEthernet(f *Frame, h cookedHdr, dst schemas.MAC, known bool) {
	if !known && dst == (schemas.MAC{}) { // not a guess (gateway) either
		c.stats.NoDestination++
	}
	d := f.Data
	src := h.srcAt
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
	// A pcapng of several interfaces is written by one thread per
	// interface, each frame as its thread gets it: a copy may come a
	// second after frames far later than it (forwardWindow), so frames
	// are remembered that much longer than the copies' window.
	keep := cookedDupWindow
	if c.stats.Pcapng {
		keep += forwardWindow
	}
	for len(c.seenQ) > 0 && (absDur(now.Sub(c.seenQ[0].ts)) > keep || len(c.seenQ) >= cookedMaxSeen) {
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
