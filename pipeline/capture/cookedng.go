package capture

import (
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/features"
)

// A gateway's owner who captures with Wireshark or dumpcap picks the
// interfaces to capture (dumpcap -i br-lan -i eth1 -i wg0) and gets one
// pcapng file, each frame on its own interface: the LAN's Ethernet frames,
// the WAN's, a VPN's tunnel, loopback. Read as one stream it would count
// every forwarded packet twice or more, as `tcpdump -i any` would, and the
// cooked view reads it the same way, each interface a key. What names an
// interface's side differs: the file names interfaces ("br-lan",
// "eth0.2"), and names are the owner's to choose; a frame says which way
// it went only where the capturing program wrote the flag, and dumpcap
// does not. But the frames show what the gateway forwards: a packet that
// came in on one interface goes out on another within moments, the same
// packet less one hop (and, through NAPT, with its IPv4 source and port
// rewritten). The copy with the higher hop limit is the one that came in,
// and its interface gets the vote SLL's direction would have given it: for
// the LAN side where it came at a starting hop limit (from a neighbour
// that sends through the gateway), for the other where it came at less
// (from beyond a router). The gateway's own packets (its DNS forwarder's
// queries on the WAN, its replies on the LAN) are forwarded by nothing and
// cast no vote.

// Bounds of the forwarding matcher.
const (
	// forwardWindow is how far apart in capture time the two copies of a
	// forwarded packet may be written: a capturing program writes each
	// interface's frames as it reads them, by its own thread and buffer,
	// so the file mixes them out of order by up to a buffer's timeout.
	forwardWindow = time.Second
	// forwardMax bounds the packets remembered for the match.
	forwardMax = 1 << 14
	// forwardSumBytes is how much of a packet's payload its match reads:
	// enough to tell packets apart, few enough that two copies cut at
	// different lengths (a PPPoE header takes 8 more bytes of a snap
	// length) still match.
	forwardSumBytes = 64
)

// byForwards says whether a frame of src is judged as one of several
// interfaces of a pcapng file: the file's section has more than one, and
// the frame is one the view reads (Ethernet, or an IP tunnel's, PPP's or
// loopback's packet).
func (c *cookedView) byForwards(f Frame) bool {
	if c.ng == nil || len(c.ng.ifaces) < 2 {
		return false
	}
	switch f.LinkType {
	case features.LinkTypeEthernet, features.LinkTypeRaw, features.LinkTypeRawDLT, features.LinkTypeRawOpenBSD,
		features.LinkTypeIPv4, features.LinkTypeIPv6, features.LinkTypePPP, features.LinkTypeNull, features.LinkTypeLoop:
		return true
	case features.LinkTypeLinuxSLL, features.LinkTypeLinuxSLL2:
		// libpcap captures a Linux PPP device (pppoe-wan, ppp0) cooked:
		// that interface is one of the several. A cooked Ethernet
		// interface is a capture on every interface ticked beside the
		// others, judged as one.
		hatype, ok := cookedHatype(f.LinkType, f.Data)
		return ok && hatype != arphrdEther
	}
	return false
}

// cookedHatype is a cooked frame's hardware type.
func cookedHatype(lt features.LinkType, data []byte) (uint16, bool) {
	switch {
	case lt == features.LinkTypeLinuxSLL && len(data) >= 16:
		return uint16(data[2])<<8 | uint16(data[3]), true
	case lt == features.LinkTypeLinuxSLL2 && len(data) >= 20:
		return uint16(data[8])<<8 | uint16(data[9]), true
	}
	return 0, false
}

// parseNgHdr reads a frame of one of a pcapng's interfaces into the terms
// of SLL2: its interface (numbered within its section), the hardware type
// its link type is, and for an Ethernet frame its addresses, the
// destination included. Its direction is not read: its interface is
// judged by what the gateway forwards (forwards).
func (c *cookedView) parseNgHdr(f Frame) (cookedHdr, bool) {
	h := cookedHdr{hasIndex: true, byForwards: true}
	h.ifindex = c.ng.section<<16 | uint32(f.CI.InterfaceIndex)&0xffff
	data := f.Data
	switch {
	case c.ng.loopback(f.CI.InterfaceIndex):
		// Linux's lo is an Ethernet interface of zero MACs, the BSDs'
		// lo0 a NULL one. A NULL interface of another name is a tunnel
		// (macOS's utun, gif), below.
		h.hatype = arphrdLoopback
		return h, true
	case f.LinkType == features.LinkTypeEthernet:
		if !h.wholeEthernet(data, 0) {
			return h, false
		}
	case f.LinkType == features.LinkTypePPP:
		h.hatype = arphrdPPP
	case isCooked(f.LinkType):
		// A PPP device captured cooked (byForwards): its packets behind
		// the SLL header.
		ch, ok := parseCookedHdr(f.LinkType, data)
		if !ok {
			return h, false
		}
		h.hatype, h.hdrLen, h.proto = ch.hatype, ch.hdrLen, ch.proto
	default:
		h.hatype = arphrdNone
	}
	h.l3 = h.hdrLen
	h.readPacket(f.LinkType, data, 0)
	return h, true
}

// loopbackName: an interface named as a loopback is (lo on Linux, lo0 on
// the BSDs and macOS, Npcap's "Adapter for loopback traffic capture" and
// \Device\NPF_Loopback on Windows).
func loopbackName(name string) bool {
	return name == "lo" || strings.HasPrefix(name, "lo") && len(name) > 2 && strings.Trim(name[2:], "0123456789") == "" ||
		strings.Contains(strings.ToLower(name), "loopback")
}

// ifaceName is the name the file gives the section's interface id, "" if
// none.
func (r *ngReader) ifaceName(id int) string {
	if id < 0 || id >= len(r.ifaces) {
		return ""
	}
	return r.ifaces[id].name
}

// loopback says the section's interface id is named as a loopback is
// (judged once, as its description is read).
func (r *ngReader) loopback(id int) bool {
	return id >= 0 && id < len(r.ifaces) && r.ifaces[id].loopback
}

// ngIfaceName names a pcapng's interface for a person: its name in the
// file, or its number.
func (c *cookedView) ngIfaceName(id int) string {
	if n := c.ng.ifaceName(id); n != "" {
		return n
	}
	return fmt.Sprintf("#%d", id)
}

// forwardSeen is a packet remembered for the match: the hop limit it came
// with, when, and on which interfaces (a bridge and its port show the
// same packet at the same hop limit: both are voted for).
type forwardSeen struct {
	ttl   uint8
	voted bool
	n     int
	ts    time.Time
	ifs   [forwardKeys]*cookedIface
}

// forwardKeys is how many interfaces a packet is remembered on at one hop
// limit: a bridge and its ports.
const forwardKeys = 4

type forwardEntry struct {
	sum uint64
	ts  time.Time
}

// forwards matches a frame's packet with the copies of it seen on other
// interfaces, and votes for the interface of the copy that came in.
func (c *cookedView) forwards(f Frame, h cookedHdr, i *cookedIface) {
	if !h.ip || linkLocal(h.src, h.v4) || linkLocal(h.dst, h.v4) || multicast(h.dst, h.v4) || unspecified(h.src) || h.dst == broadcast4 {
		return
	}
	sum := packetSum(c.seed, f.Data[h.l3:], h.v4)
	now := f.CI.Timestamp
	for len(c.fwdQ) > 0 && (absDur(now.Sub(c.fwdQ[0].ts)) > forwardWindow || len(c.fwdQ) >= forwardMax) {
		e := c.fwdQ[0]
		if s, ok := c.fwd[e.sum]; ok && s.ts.Equal(e.ts) {
			delete(c.fwd, e.sum)
		}
		c.fwdQ = c.fwdQ[1:]
	}
	s, ok := c.fwd[sum]
	if ok && absDur(now.Sub(s.ts)) <= forwardWindow {
		switch {
		case s.ttl == h.ttl:
			// The same hop: a bridge's copy of its port's frame.
			if s.n < len(s.ifs) && !slices.Contains(s.ifs[:s.n], i) {
				s.ifs[s.n] = i
				s.n++
				if s.voted { // written after the copy that went out
					c.forwardVote(i, s.ttl)
				}
				c.fwd[sum] = s
			}
			return
		case s.ttl == h.ttl+1 && s.ifs[0] != i:
			// This is the copy that went out: the remembered came in.
			if !s.voted {
				for j := range s.n {
					c.forwardVote(s.ifs[j], s.ttl)
				}
				s.voted = true
				c.fwd[sum] = s
			}
			return
		case h.ttl == s.ttl+1 && s.ifs[0] != i:
			// Written after the copy that went out.
			c.forwardVote(i, h.ttl)
			c.remember(sum, forwardSeen{ttl: h.ttl, voted: true, n: 1, ts: now, ifs: [forwardKeys]*cookedIface{i}})
			return
		}
	}
	c.remember(sum, forwardSeen{ttl: h.ttl, n: 1, ts: now, ifs: [forwardKeys]*cookedIface{i}})
}

func (c *cookedView) remember(sum uint64, s forwardSeen) {
	c.fwd[sum] = s
	c.fwdQ = append(c.fwdQ, forwardEntry{sum: sum, ts: s.ts})
}

// forwardVote is the vote of a packet the gateway forwarded for the
// interface it came in on, with hop limit ttl.
func (c *cookedView) forwardVote(i *cookedIface, ttl uint8) {
	if startingHop(ttl) {
		i.lan++
	} else {
		i.wan++
	}
	c.settle(i)
}

// packetSum hashes what forwarding leaves of an IP packet as it was: its
// length, IPv4 ID and fragment fields, IPv6 flow label, protocol, TCP
// sequence and acknowledgement numbers, flags and window, and the first
// bytes of its payload. Not its hop limit, addresses, ports and checksums,
// which the gateway (through NAPT) rewrites.
func packetSum(seed maphash.Seed, p []byte, v4 bool) uint64 {
	var mh maphash.Hash
	mh.SetSeed(seed)
	var proto byte
	var l4 []byte
	if v4 {
		ihl := int(p[0]&0x0f) * 4
		mh.Write(p[2:8])
		proto = p[9]
		if ihl < 20 || ihl > len(p) || (p[6]&0x1f != 0 || p[7] != 0) {
			// A later fragment has no transport header.
			l4, proto = p[min(ihl, len(p)):], 0
		} else {
			l4 = p[ihl:]
		}
	} else {
		mh.Write(p[1:7]) // flow label, payload length, next header
		proto, l4 = p[6], p[40:]
	}
	mh.WriteByte(proto)
	switch {
	case proto == 6 && len(l4) >= 20:
		mh.Write(l4[4:16])
		l4 = l4[18:]
	case proto == 17 && len(l4) >= 8:
		mh.Write(l4[4:6])
		l4 = l4[8:]
	case (proto == 1 || proto == 58) && len(l4) >= 8:
		// Past the checksum and an echo's identifier, which NAPT rewrites.
		mh.Write(l4[0:2])
		l4 = l4[8:]
	}
	mh.Write(l4[:min(len(l4), forwardSumBytes)])
	return mh.Sum64()
}
