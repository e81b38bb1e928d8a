package capture

import (
	"bytes"
	"encoding/binary"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// What a cooked frame shows the view (cookedView): its SLL header and the
// packet's addresses and hop limit, the votes and MACs learned from them,
// and the destination MAC put back.

// cookedHdr is what the view reads of a cooked frame: its SLL header and
// the addresses and hop limit of the packet it carries.
type cookedHdr struct {
	// hdrLen is where the payload of the EtherType proto starts: 16 (SLL),
	// 20 (SLL2), past the Ethernet header behind a PKTAP header.
	hdrLen   int
	ifindex  uint32
	hasIndex bool
	hatype   uint16
	pkttype  uint16
	halen    int
	addr     schemas.MAC // the source MAC, where halen is 6
	srcAt    int         // where addr stands in the frame
	// dstMAC is the destination MAC where the frame has one (an Ethernet
	// frame behind a PKTAP header), known says so: no guessing then.
	dstMAC schemas.MAC
	known  bool
	// ifname is a PKTAP interface's name, a slice of the frame: read only
	// while the frame is parsed.
	ifname []byte
	// byForwards: a frame of one of a pcapng's interfaces, whose
	// interface is judged by the packets the gateway forwards (forwards),
	// not by SLL's direction.
	byForwards bool
	proto      uint16
	vlan       uint16 // outer VLAN ID + 1; 0 untagged
	et         uint16 // the EtherType after the VLAN tags
	pppoe      bool

	l3       int // offset of the network packet; hdrLen where unread
	ip       bool
	v4       bool
	ttl      uint8
	src, dst [16]byte
	// ARP: the opcode, sender and target.
	arpOp          uint16
	arpSHA, arpTHA schemas.MAC
	arpSPA, arpTPA [16]byte
	// arpTo is where an ARP request the gateway sends goes by unicast: the
	// target's MAC, where it was known when the request was sent (a probe
	// of a stale entry); zero for a broadcast request.
	arpTo schemas.MAC
	// A DHCP (BOOTP) reply's client MAC.
	dhcpClient schemas.MAC
	isDHCPRep  bool
}

func (h cookedHdr) ether() bool { return h.hatype == arphrdEther && h.halen == 6 }

// parsePKTAPHdr reads an Apple PKTAP frame (macOS tcpdump -i pktap: every
// interface, each frame in its interface's own link type) into the terms
// of SLL2: the interface (named, not numbered: its key is a hash of the
// name), the direction, and for an Ethernet frame its addresses, the
// destination included, which SLL has to guess. lo* interfaces are
// loopback; other interfaces without Ethernet (utun, gif, ppp) are
// tunnels, never a gateway's LAN side. It returns the frame's own link
// type and where the frame starts behind the header.
func parsePKTAPHdr(data []byte, h *cookedHdr) (features.LinkType, int, bool) {
	p, err := features.ParsePKTAP(data)
	if err != nil {
		return 0, 0, false
	}
	h.hasIndex, h.ifname = true, p.IfName
	// FNV-1a of the name, inline: hash/fnv's hasher would be allocated
	// for every frame.
	h.ifindex = 2166136261
	for _, b := range p.IfName {
		h.ifindex = (h.ifindex ^ uint32(b)) * 16777619
	}
	switch {
	case p.LinkType == features.LinkTypeEthernet:
		if !h.wholeEthernet(data, p.Len) {
			return 0, 0, false
		}
	case bytes.HasPrefix(p.IfName, []byte("lo")):
		h.hatype, h.hdrLen = arphrdLoopback, p.Len
	case p.LinkType == features.LinkTypePPP:
		h.hatype, h.hdrLen = arphrdPPP, p.Len
	default:
		h.hatype, h.hdrLen = arphrdNone, p.Len
	}
	if p.Out {
		h.pkttype = pktOutgoing
	}
	return p.LinkType, p.Len, true
}

// wholeEthernet reads the Ethernet header of a frame that keeps it (behind
// a PKTAP header, or a pcapng interface's own), at data[at:]: its
// addresses, the destination included, which SLL has to guess, and the
// packet type the destination says (pktHost for one host: for the
// capturing host or, on a bridge's member port, for another, which the
// view tells apart by the destination it has). False if the frame is too
// short for it.
func (h *cookedHdr) wholeEthernet(data []byte, at int) bool {
	if len(data) < at+14 {
		return false
	}
	e := data[at:]
	h.hatype, h.halen, h.known = arphrdEther, 6, true
	h.dstMAC, h.addr = schemas.MAC(e[0:6]), schemas.MAC(e[6:12])
	h.srcAt, h.hdrLen = at+6, at+14
	h.proto = binary.BigEndian.Uint16(e[12:14])
	switch {
	case h.dstMAC == bcastMAC:
		h.pkttype = pktBroadcast
	case h.dstMAC[0]&1 == 1:
		h.pkttype = pktMulticast
	default:
		h.pkttype = pktHost
	}
	return true
}

func parseCookedHdr(lt features.LinkType, data []byte) (cookedHdr, bool) {
	var h cookedHdr
	// The link the network packet is found behind: the frame's own, or
	// the one a PKTAP header wraps, from at.
	link, at := lt, 0
	switch lt {
	case features.LinkTypePKTAP:
		var ok bool
		if link, at, ok = parsePKTAPHdr(data, &h); !ok {
			return h, false
		}
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
		h.srcAt = 12
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
		h.srcAt = 6
	}
	if h.halen != 6 {
		h.addr = schemas.MAC{}
	}
	h.l3 = h.hdrLen
	if h.hatype == arphrdEther {
		h.readPacket(link, data, at)
	}
	return h, true
}

// readPacket reads the packet behind the link header (of link, from at):
// an Ethernet frame's VLAN tag and EtherType, and the addresses and hop
// limit of the IP packet, or the ARP message, it carries. A tag is
// 802.1Q's (0x8100), 802.1ad's (0x88a8) or the QinQ outer tag before
// 802.1ad (0x9100), as the decoder walks them.
func (h *cookedHdr) readPacket(link features.LinkType, data []byte, at int) {
	et := h.proto
	if h.hatype == arphrdEther && (et == 0x8100 || et == 0x88a8 || et == 0x9100) && len(data) >= h.hdrLen+4 {
		h.vlan = binary.BigEndian.Uint16(data[h.hdrLen:])&0x0fff + 1
		et = binary.BigEndian.Uint16(data[h.hdrLen+2:])
	}
	h.et = et
	h.pppoe = et == 0x8863 || et == 0x8864
	l, err := features.ParseLink(link, data[at:])
	if err != nil {
		return
	}
	h.l3 = at + l.Offset
	p := data[h.l3:]
	switch l.EtherType {
	case features.EtherTypeIPv4:
		if len(p) < 20 || p[0]>>4 != 4 {
			return
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
			return
		}
		h.ip, h.ttl = true, p[7]
		copy(h.src[:], p[8:24])
		copy(h.dst[:], p[24:40])
	case features.EtherTypeARP:
		// Ethernet and IPv4 only: hardware 1, protocol 0x0800, lengths 6 and 4.
		if len(p) < 28 || binary.BigEndian.Uint16(p[0:2]) != 1 || binary.BigEndian.Uint16(p[2:4]) != 0x0800 || p[4] != 6 || p[5] != 4 {
			return
		}
		h.arpOp = binary.BigEndian.Uint16(p[6:8])
		copy(h.arpSHA[:], p[8:14])
		copy(h.arpSPA[12:], p[14:18])
		copy(h.arpTHA[:], p[18:24])
		copy(h.arpTPA[12:], p[24:28])
		h.arpSPA[10], h.arpSPA[11], h.arpTPA[10], h.arpTPA[11] = 0xff, 0xff, 0xff, 0xff
	}
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
	if h.byForwards {
		// Frames of a pcapng's interfaces say neither which way they went
		// nor, where their destination MAC is there, need any learned:
		// their interfaces are voted for by the packets the gateway
		// forwards (forwards).
		return
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
			c.ownAddr(h.arpSPA)
		}
	}
	if !h.ip {
		return
	}
	if !incoming && startingHop(h.ttl) && !unspecified(h.src) {
		// The gateway's own packet, not one it forwards.
		c.ownAddr(h.src)
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
			// From a neighbour that sends through the gateway, as far
			// as the gateway's addresses are known yet.
			i.lan++
			c.lanVotes.add(h.dst, i)
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
			// The gateway's MAC that sends beyond the LAN, by the router
			// (or WAN neighbour) it sends to: the destination of what
			// comes in from there, on the WAN side.
			if !ok {
				m = c.lastRouter
			}
			if m != (schemas.MAC{}) && !c.foreign.has(h.addr) {
				c.gatewayOf.put(macKey(m), h.addr)
				c.lastUplink = h.addr
			}
		}
	}
	c.settle(i)
}

// ownAddr takes a as one of the gateway's addresses. The LAN votes of the
// packets that came to it before it showed as the gateway's are taken
// back: they were packets to the gateway, not through it. One host's
// capture on every interface (tcpdump -i any) whose first frame is a LAN
// peer's packet to it (a phone opening the host's web UI) would otherwise
// show that peer as a LAN side that nothing outvotes where SLL judges
// each source MAC apart, and leave out all the rest as the other side.
func (c *cookedView) ownAddr(a [16]byte) {
	if _, known := c.ownAddrs.get(a); !known {
		for _, v := range c.lanVotes.take(a) {
			if v.key != nil {
				v.key.lan -= min(v.key.lan, uint64(v.n))
				c.settle(v.key)
			}
		}
	}
	c.ownAddrs.put(a, schemas.MAC{})
}

// settle counts the key among the LAN side's, or not, by its votes now.
func (c *cookedView) settle(i *cookedIface) {
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
	if h.known {
		return h.dstMAC, true
	}
	switch h.pkttype {
	case pktBroadcast:
		return bcastMAC, true
	case pktMulticast:
		if !h.ip {
			return schemas.MAC{}, false
		}
		return groupMAC(h.dst, h.v4)
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
		if h.arpTo != (schemas.MAC{}) {
			return h.arpTo, true
		}
		return bcastMAC, true
	case !h.ip:
		m := c.l2Peer[h.et]
		return m, m != schemas.MAC{}
	}
	if m, ok := groupDestination(h.dst, h.v4); ok {
		return m, true
	}
	if h.isDHCPRep {
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
// the MAC the gateway last sent to this host from, or else to any host on
// the sender's side. Failing those, the MAC it last sent any IP from is
// only a guess (known false): a host's first packet through the gateway
// is often the capture's first frame, and the gateway's next is that
// packet leaving by the WAN, so the frame is held until the gateway's
// answer shows its MAC on the host's side, and takes the guess only when
// the hold runs out.
func (c *cookedView) gateway(h cookedHdr, i *cookedIface) (schemas.MAC, bool) {
	if h.hasIndex {
		return i.own, i.own != schemas.MAC{}
	}
	if m, ok := c.gatewayOf.get(macKey(h.addr)); ok {
		return m, true
	}
	last := c.lastGateway
	if i.wan > i.lan { // a host beyond the LAN: the WAN's router
		last = c.lastUplink
	}
	if last != (schemas.MAC{}) {
		return last, true
	}
	return c.lastOwn, false
}

// bcastMAC is the Ethernet broadcast address.
var bcastMAC = schemas.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// groupMAC is the Ethernet group address of an IP multicast destination.
func groupMAC(dst [16]byte, v4 bool) (schemas.MAC, bool) {
	switch {
	case !multicast(dst, v4):
		return schemas.MAC{}, false
	case v4:
		return schemas.MAC{0x01, 0x00, 0x5e, dst[13] & 0x7f, dst[14], dst[15]}, true
	}
	return schemas.MAC{0x33, 0x33, dst[12], dst[13], dst[14], dst[15]}, true
}

// groupDestination is the MAC a packet sent to an IP multicast group or
// to the limited broadcast goes to, which its address alone says (the
// cooked view's and the NFLOG view's frames going out).
func groupDestination(dst [16]byte, v4 bool) (schemas.MAC, bool) {
	if v4 && dst == broadcast4 {
		return bcastMAC, true
	}
	return groupMAC(dst, v4)
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

// voteTable remembers, by destination address, the LAN votes of the
// packets sent to it (up to voteKeys keys an address): the votes to take
// back should the address show as the gateway's. At most
// cookedMaxPending addresses, in two generations as a neighTable: those
// of one host's capture are its own few, which stay; a gateway's LAN
// sends to the whole internet, whose older addresses are dropped (their
// votes, as the votes of packets to addresses that never show as the
// gateway's, are kept).
type voteTable struct {
	cur, old map[[16]byte]*[voteKeys]pendingVote
}

const voteKeys = 4

type pendingVote struct {
	key *cookedIface
	n   uint32
}

func newVoteTable() voteTable { return voteTable{cur: map[[16]byte]*[voteKeys]pendingVote{}} }

func (t *voteTable) add(a [16]byte, key *cookedIface) {
	v, ok := t.cur[a]
	if !ok {
		if v, ok = t.old[a]; ok {
			delete(t.old, a)
		} else {
			v = new([voteKeys]pendingVote)
		}
		if len(t.cur) >= cookedMaxPending/2 {
			t.old, t.cur = t.cur, map[[16]byte]*[voteKeys]pendingVote{}
		}
		t.cur[a] = v
	}
	for j := range v {
		switch {
		case v[j].key == key:
			if v[j].n < 1<<32-1 {
				v[j].n++
			}
			return
		case v[j].key == nil:
			v[j] = pendingVote{key: key, n: 1}
			return
		}
	}
}

// take returns the votes of the packets to a, and forgets them.
func (t *voteTable) take(a [16]byte) []pendingVote {
	v, ok := t.cur[a]
	if ok {
		delete(t.cur, a)
	} else if v, ok = t.old[a]; ok {
		delete(t.old, a)
	} else {
		return nil
	}
	return v[:]
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
