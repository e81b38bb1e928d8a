package realhome

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/schemas"
)

// Config says what home to assemble.
type Config struct {
	// Devices is how many device folders (types) the home holds, those
	// named in Units included; zero means exactly the Units' types.
	Devices int
	// Units asks for several units of a device: each unit is a capture of
	// its own of that device, so no two units share a session.
	Units map[string]int
	// Duration is the home's length: each session starts at a random time
	// in it, and what a session holds past its end is cut.
	Duration time.Duration
	// Sessions is the captures units may come from.
	Sessions Split
	Seed     uint64
	// Start is the home's first instant (default 2024-01-01 UTC).
	Start time.Time
	// LAN is the home's prefix, at most a /24's worth of hosts are used
	// (default 192.168.1.0/24); the gateway has its first host address.
	LAN netip.Prefix
	// IPv6 assembles an IPv6-only home from the IPv4 captures (to6): the
	// same segments over IPv6, the hosts in homegen.LANPrefix6.
	IPv6 bool
	// SLAAC gives the hosts of an IPv6-only home the addresses stateless
	// autoconfiguration forms from their MACs (RFC 4862, with modified
	// EUI-64 identifiers: RFC 4291 appendix A), as many embedded stacks
	// do, where without it each keeps its IPv4 address's last byte (::N,
	// as a DHCPv6 server might hand out). The gateway keeps ::1.
	SLAAC bool
	// IDOffsets shifts each unit's IPv4 IDs by a random offset of its own.
	// A setup capture starts when its device boots, so every unit's ID
	// counter starts near the same small number; in a home its devices
	// have been up for hours, each counter wherever its traffic took it.
	IDOffsets bool
	// Relay puts every unit behind one Wi-Fi repeater that translates MAC
	// addresses (MAC-NAT, what most consumer range extenders do for the
	// clients they relay): the gateway's LAN tap sees each unit's frames
	// from the repeater's MAC (Home.Relay), ARP's too, and sends the
	// units' frames to it. Each unit keeps its IPv4 address. The units'
	// EAPOL, their Wi-Fi handshakes with the repeater, is left out.
	Relay bool
	// NoDHCP leaves every unit's DHCP out, as a tap started on a home
	// whose devices joined hours before sees none until their leases
	// renew: no DHCP names, no requests.
	NoDHCP bool
}

// Unit is one device unit in the assembled home.
type Unit struct {
	// Name is Device#k, k counting the device's units from 1.
	Name    string
	Device  string
	Session string
	// MAC keeps the vendor's OUI of the original, so that features that
	// read it see a real vendor; the rest is drawn.
	MAC schemas.MAC
	IP  netip.Addr
	// Offset is where the session's first packet lands after Start.
	Offset  time.Duration
	Packets int
}

// Home is an assembled home and its packets, in time order.
type Home struct {
	Start      time.Time
	Duration   time.Duration
	LAN        netip.Prefix
	GatewayMAC schemas.MAC
	GatewayIP  netip.Addr
	Units      []Unit
	Packets    []Packet
	// Cut counts the packets past Duration, left out.
	Cut int
	// Relay is the MAC every unit's frames carry when the units are
	// behind a MAC-NAT repeater (Config.Relay), zero when not.
	Relay schemas.MAC
	// IPv6 says the home is IPv6-only (Config.IPv6); Left6 counts the
	// frames that have no IPv6 twin, left out (ARP, DHCP, IGMP, ...).
	IPv6  bool
	Left6 int
	// SLAAC says the hosts' IPv6 addresses name their MACs (Config.SLAAC).
	SLAAC bool
	// NoDHCP says the units' DHCP was left out (Config.NoDHCP); LeftDHCP
	// counts those frames.
	NoDHCP   bool
	LeftDHCP int
	// LeftEAPOL counts the units' EAPOL frames a repeater kept from the
	// gateway (Config.Relay).
	LeftEAPOL int
	// idOffsets draws each unit's IPv4 ID offset (Config.IDOffsets), apart
	// from the draws that place the units: the home is otherwise the one
	// of the same seed without.
	idOffsets *rand.Rand
}

// Packet is one Ethernet frame of the home and the unit whose traffic it is.
type Packet struct {
	TsNs int64
	Data []byte
	Unit int
}

// HomeConfig is the home side for decoding the assembled capture and for
// the gateway emulator.
func (h *Home) HomeConfig() features.HomeConfig {
	nets := []netip.Prefix{h.LAN}
	if h.IPv6 {
		nets = append(nets, homegen.LANPrefix6)
	}
	return features.HomeConfig{LANNets: nets, GatewayMAC: h.GatewayMAC}
}

func (c Config) withDefaults() Config {
	if c.Sessions == "" {
		c.Sessions = AllSessions
	}
	if c.Start.IsZero() {
		c.Start = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if !c.LAN.IsValid() {
		c.LAN = netip.MustParsePrefix("192.168.1.0/24")
	}
	return c
}

// Assemble builds a home from the device folders devs. The same devs,
// config and seed give the same home.
func Assemble(ctx context.Context, devs []Device, cfg Config) (*Home, error) {
	cfg = cfg.withDefaults()
	if cfg.Duration <= 0 {
		return nil, fmt.Errorf("assemble a home: duration %s: want a positive length such as 10m", cfg.Duration)
	}
	if !cfg.LAN.Addr().Is4() || cfg.LAN.Bits() > 24 {
		return nil, fmt.Errorf("assemble a home: LAN %s: want an IPv4 prefix of /24 or wider", cfg.LAN)
	}
	byName := map[string]Device{}
	for _, d := range devs {
		byName[d.Name] = d
	}
	var chosen []string
	for name, k := range cfg.Units {
		if _, ok := byName[name]; !ok {
			return nil, fmt.Errorf("assemble a home: units of %q: no such device folder (have %s)", name, names(devs))
		}
		if k < 1 {
			return nil, fmt.Errorf("assemble a home: units of %s: %d, want 1 or more", name, k)
		}
		chosen = append(chosen, name)
	}
	sort.Strings(chosen)
	want := cfg.Devices
	if want == 0 {
		want = len(chosen)
	}
	if want < len(chosen) {
		return nil, fmt.Errorf("assemble a home: %d devices asked, but units name %d device folders: ask for at least %d", want, len(chosen), len(chosen))
	}
	if want > len(devs) {
		return nil, fmt.Errorf("assemble a home: %d devices asked, the folder holds %d", want, len(devs))
	}
	if want == 0 {
		return nil, errors.New("assemble a home: no devices asked: give a device count or units")
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x7265616c686f6d65))
	var rest []string
	for _, d := range devs {
		if _, ok := cfg.Units[d.Name]; !ok {
			rest = append(rest, d.Name)
		}
	}
	rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	chosen = append(chosen, rest[:want-len(chosen)]...)
	sort.Strings(chosen)

	h := &Home{Start: cfg.Start, Duration: cfg.Duration, LAN: cfg.LAN, IPv6: cfg.IPv6, SLAAC: cfg.IPv6 && cfg.SLAAC, NoDHCP: cfg.NoDHCP}
	if cfg.IDOffsets {
		h.idOffsets = rand.New(rand.NewPCG(cfg.Seed, 0x69702d6964))
	}
	al := newAllocator(cfg.LAN, rng)
	h.GatewayIP = al.next()
	h.GatewayMAC = schemas.MAC{0x02, 0x00, 0x5e, 0x00, 0x00, 0x01}
	for _, name := range chosen {
		d := byName[name]
		k := max(cfg.Units[name], 1)
		files := cfg.Sessions.Pick(d.Files)
		rng.Shuffle(len(files), func(i, j int) { files[i], files[j] = files[j], files[i] })
		got := 0
		for _, f := range files {
			if got == k {
				break
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			frames, err := deviceFrames(f, d.MAC)
			if err != nil {
				return nil, fmt.Errorf("assemble a home: device %s: %w", name, err)
			}
			if len(frames) == 0 {
				continue // a capture without the device's packets makes no unit
			}
			got++
			u := Unit{Name: fmt.Sprintf("%s#%d", name, got), Device: name, Session: f}
			if err := h.place(&u, d.MAC, frames, al, rng); err != nil {
				return nil, fmt.Errorf("assemble a home: unit %s from %s: %w", u.Name, f, err)
			}
			h.Units = append(h.Units, u)
		}
		if got < k {
			return nil, fmt.Errorf("assemble a home: device %s: %d units asked, but only %d of its %s captures hold its packets: every unit needs a capture of its own (ask fewer units, or use all sessions)", name, k, got, cfg.Sessions)
		}
	}
	slices.SortStableFunc(h.Packets, func(a, b Packet) int { return cmp.Compare(a.TsNs, b.TsNs) })
	if cfg.Relay {
		h.behindRelay(al.peer())
	}
	if h.IPv6 {
		// The frames were moved with the IPv4 addresses; the home says
		// the IPv6 ones.
		h.GatewayIP = h.addr6(h.GatewayIP, h.GatewayMAC)
		for i := range h.Units {
			h.Units[i].IP = h.addr6(h.Units[i].IP, h.Units[i].MAC)
		}
	}
	return h, nil
}

// behindRelay rewrites every unit's MAC to the repeater's in the frames'
// Ethernet headers, ARP's hardware addresses and neighbour discovery's
// link-layer address options, as a MAC-NAT repeater does between the
// units and the gateway, and leaves out the units' EAPOL
// (Home.LeftEAPOL): a unit's Wi-Fi handshake is with the repeater it
// associates with, and never crosses to the gateway (no bridge forwards
// 802.1X frames either). Only neighbour discovery's checksum covers a
// MAC, and it is adjusted.
func (h *Home) behindRelay(relay schemas.MAC) {
	h.Relay = relay
	units := map[schemas.MAC]bool{}
	for _, u := range h.Units {
		units[u.MAC] = true
	}
	swap := func(b []byte) {
		if units[schemas.MAC(b)] {
			copy(b, relay[:])
		}
	}
	kept := h.Packets[:0]
	for _, p := range h.Packets {
		b := p.Data
		if len(b) < 14 {
			kept = append(kept, p)
			continue
		}
		off, et := etherType(b)
		if et == etherTypeEAPOL && (units[schemas.MAC(b[0:6])] || units[schemas.MAC(b[6:12])]) {
			h.LeftEAPOL++
			if p.Unit >= 0 && p.Unit < len(h.Units) {
				h.Units[p.Unit].Packets--
			}
			continue
		}
		swap(b[0:6])
		swap(b[6:12])
		switch {
		case et == 0x0806 && len(b) >= off+28:
			swap(b[off+8 : off+14])
			swap(b[off+18 : off+24])
		case et == 0x86dd && len(b) >= off+40:
			// Neighbour discovery's link-layer options name the
			// repeater too; the addresses keep the unit's EUI-64.
			if next, l4, at := upperLayer(b[off:]); next == 58 && at >= 0 {
				sum := neighbourDiscovery(l4, binary.BigEndian.Uint16(l4[at:]), nil, func(m schemas.MAC) schemas.MAC {
					if units[m] {
						return relay
					}
					return m
				})
				binary.BigEndian.PutUint16(l4[at:], sum)
			}
		}
		kept = append(kept, p)
	}
	clear(h.Packets[len(kept):])
	h.Packets = kept
}

// etherTypeEAPOL is 802.1X's EtherType, the Wi-Fi handshake's frames.
const etherTypeEAPOL = 0x888e

// FrameMAC is the source MAC a unit's frames carry on the LAN: its own,
// or the repeater's it is behind (Config.Relay).
func (h *Home) FrameMAC(unit int) schemas.MAC {
	if !h.Relay.IsZero() {
		return h.Relay
	}
	return h.Units[unit].MAC
}

func names(devs []Device) string {
	s := ""
	for i, d := range devs {
		if i > 0 {
			s += ", "
		}
		s += d.Name
	}
	return s
}

// frame is one captured frame of a device session.
type frame struct {
	ts   int64
	data []byte
}

// deviceFrames reads the Ethernet frames of path that the device's MAC sent
// or received: the rest (the phone setting it up, other hosts) is not the
// device's and would be unlabeled noise of one lab, not of a home.
func deviceFrames(path string, mac schemas.MAC) ([]frame, error) {
	src, err := capture.OpenFile(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	var out []frame
	for {
		f, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if f.LinkType != features.LinkTypeEthernet {
			return nil, fmt.Errorf("%s: packet %d has link type %v: home assembly needs Ethernet captures, whose MACs say which device a frame is", path, f.Offset, f.LinkType)
		}
		if len(f.Data) < 14 {
			continue
		}
		var dst, srcMAC schemas.MAC
		copy(dst[:], f.Data[0:6])
		copy(srcMAC[:], f.Data[6:12])
		if dst != mac && srcMAC != mac {
			continue
		}
		out = append(out, frame{ts: f.CI.Timestamp.UnixNano(), data: slices.Clone(f.Data)})
	}
	return out, nil
}

// place moves a session into the home: new MAC and addresses, shifted to a
// random start, and appends its packets.
func (h *Home) place(u *Unit, devMAC schemas.MAC, frames []frame, al *allocator, rng *rand.Rand) error {
	rw, err := newRewriter(devMAC, frames, h, al)
	if err != nil {
		return err
	}
	u.MAC, u.IP = rw.unitMAC, rw.unitIP
	if h.idOffsets != nil {
		rw.idOffset = uint16(h.idOffsets.Uint32())
	}
	first, last := frames[0].ts, frames[0].ts
	for _, f := range frames {
		first, last = min(first, f.ts), max(last, f.ts)
	}
	span := time.Duration(last - first)
	if span < h.Duration {
		u.Offset = time.Duration(rng.Int64N(int64(h.Duration - span)))
	}
	base := h.Start.UnixNano() + int64(u.Offset) - first
	end := h.Start.UnixNano() + int64(h.Duration)
	unit := len(h.Units)
	for _, f := range frames {
		ts := f.ts + base
		if ts >= end {
			h.Cut++
			continue
		}
		// Rewritten first, left out after: the home's addresses and MACs
		// are handed out as in the home with its DHCP.
		rw.rewrite(f.data)
		if h.NoDHCP && isDHCP(f.data) {
			h.LeftDHCP++
			continue
		}
		data := f.data
		if h.IPv6 {
			var ok bool
			if data, ok = to6(data, h.addr6); !ok {
				h.Left6++
				continue
			}
		}
		h.Packets = append(h.Packets, Packet{TsNs: ts, Data: data, Unit: unit})
		u.Packets++
	}
	return nil
}

// allocator hands out the home's LAN addresses and local MACs.
type allocator struct {
	lan     netip.Prefix
	addr    netip.Addr
	macs    map[schemas.MAC]bool
	rng     *rand.Rand
	peerMAC uint32
}

func newAllocator(lan netip.Prefix, rng *rand.Rand) *allocator {
	return &allocator{lan: lan.Masked(), addr: lan.Masked().Addr(), macs: map[schemas.MAC]bool{}, rng: rng}
}

// next is the next free host address, the zero Addr when the LAN is full.
func (a *allocator) next() netip.Addr {
	n := a.addr.Next()
	if !a.lan.Contains(n) || n == a.broadcast() || !a.lan.Contains(n.Next()) {
		return netip.Addr{}
	}
	a.addr = n
	return n
}

func (a *allocator) broadcast() netip.Addr {
	b := a.lan.Addr().As4()
	host := uint32(1)<<(32-a.lan.Bits()) - 1
	v := binary.BigEndian.Uint32(b[:]) | host
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// unitMAC keeps the OUI of orig and draws the rest, unique in the home.
func (a *allocator) unitMAC(orig schemas.MAC) schemas.MAC {
	for {
		m := orig
		v := a.rng.Uint32()
		m[3], m[4], m[5] = byte(v>>16), byte(v>>8), byte(v)
		if m != orig && !a.macs[m] {
			a.macs[m] = true
			return m
		}
	}
}

// peer is a locally administered MAC for a host other than the device
// (the phone that set it up), one per unit and original MAC.
func (a *allocator) peer() schemas.MAC {
	a.peerMAC++
	return schemas.MAC{0x06, 0x00, 0x00, byte(a.peerMAC >> 16), byte(a.peerMAC >> 8), byte(a.peerMAC)}
}

// rewriter maps one session's MACs and IPv4 addresses into the home.
type rewriter struct {
	macs    map[schemas.MAC]schemas.MAC
	addrs   map[netip.Addr]netip.Addr
	devNet  netip.Prefix
	unitMAC schemas.MAC
	unitIP  netip.Addr
	home    *Home
	al      *allocator
	// idOffset is added to the unit's IPv4 IDs (Config.IDOffsets).
	idOffset uint16
}

func isLocal(a netip.Addr) bool { return a.IsPrivate() || a.IsLinkLocalUnicast() }

func newRewriter(devMAC schemas.MAC, frames []frame, h *Home, al *allocator) (*rewriter, error) {
	rw := &rewriter{macs: map[schemas.MAC]schemas.MAC{}, addrs: map[netip.Addr]netip.Addr{}, home: h, al: al}
	rw.unitMAC = al.unitMAC(devMAC)
	rw.macs[devMAC] = rw.unitMAC
	rw.unitIP = al.next()
	if !rw.unitIP.IsValid() {
		return nil, fmt.Errorf("the home's LAN %s has no address left", h.LAN)
	}
	// The router is where the device's internet traffic goes; its MAC and
	// LAN addresses become the home gateway's.
	routers := map[schemas.MAC]int{}
	for _, f := range frames {
		src, dst, srcMAC, dstMAC, ok := ipv4Of(f.data)
		if !ok {
			continue
		}
		if srcMAC == devMAC && !isLocal(dst) && !dst.IsMulticast() && dst != netip.IPv4Unspecified() && dstMAC[0]&1 == 0 {
			routers[dstMAC]++
		}
		if dstMAC == devMAC && !isLocal(src) && src != netip.IPv4Unspecified() {
			routers[srcMAC]++
		}
	}
	var router schemas.MAC
	best := 0
	for m, n := range routers {
		if n > best || n == best && slices.Compare(m[:], router[:]) < 0 {
			router, best = m, n
		}
	}
	if best > 0 {
		rw.macs[router] = h.GatewayMAC
	}
	for _, f := range frames {
		src, dst, srcMAC, dstMAC, ok := ipv4Of(f.data)
		if !ok {
			continue
		}
		if srcMAC == devMAC && isLocal(src) {
			rw.addrs[src] = rw.unitIP
			if !rw.devNet.IsValid() {
				rw.devNet, _ = src.Prefix(24)
			}
		}
		if best > 0 && srcMAC == router && isLocal(src) {
			rw.addrs[src] = h.GatewayIP
		}
		if best > 0 && dstMAC == router && isLocal(dst) {
			rw.addrs[dst] = h.GatewayIP
		}
	}
	return rw, nil
}

// ipv4Of reads the MACs and IPv4 addresses of an Ethernet frame.
func ipv4Of(b []byte) (src, dst netip.Addr, srcMAC, dstMAC schemas.MAC, ok bool) {
	off, et := etherType(b)
	if off == 0 {
		return src, dst, srcMAC, dstMAC, false
	}
	copy(dstMAC[:], b[0:6])
	copy(srcMAC[:], b[6:12])
	if et != 0x0800 || len(b) < off+20 {
		return src, dst, srcMAC, dstMAC, false
	}
	src = netip.AddrFrom4([4]byte(b[off+12 : off+16]))
	dst = netip.AddrFrom4([4]byte(b[off+16 : off+20]))
	return src, dst, srcMAC, dstMAC, true
}

// isDHCP says an Ethernet frame is a DHCPv4 or DHCPv6 message (UDP from
// or to a DHCP port).
func isDHCP(b []byte) bool {
	off, et := etherType(b)
	if off == 0 {
		return false
	}
	ip := b[off:]
	var l4 []byte
	switch {
	case et == 0x0800 && len(ip) >= 20 && ip[0]>>4 == 4 && ip[9] == 17 && binary.BigEndian.Uint16(ip[6:8])&0x1fff == 0:
		if ihl := int(ip[0]&0x0f) * 4; ihl >= 20 && ihl <= len(ip) {
			l4 = ip[ihl:]
		}
	case et == 0x86dd && len(ip) >= 40 && ip[6] == 17:
		l4 = ip[40:]
	}
	if len(l4) < 4 {
		return false
	}
	src, dst := binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
	for _, port := range []uint16{src, dst} {
		if port == 67 || port == 68 || port == 546 || port == 547 {
			return true
		}
	}
	return false
}

// etherType is the offset of the network header and its type, past one
// VLAN tag; 0 when the frame is too short.
func etherType(b []byte) (int, uint16) {
	if len(b) < 14 {
		return 0, 0
	}
	off, et := 14, binary.BigEndian.Uint16(b[12:14])
	if et == 0x8100 && len(b) >= 18 {
		off, et = 18, binary.BigEndian.Uint16(b[16:18])
	}
	return off, et
}

func (rw *rewriter) mac(m schemas.MAC) schemas.MAC {
	if m[0]&1 != 0 {
		return m // group addresses stay
	}
	if n, ok := rw.macs[m]; ok {
		return n
	}
	n := rw.al.peer()
	rw.macs[m] = n
	return n
}

func (rw *rewriter) addr(a netip.Addr) netip.Addr {
	if n, ok := rw.addrs[a]; ok {
		return n
	}
	if !isLocal(a) {
		return a
	}
	if rw.devNet.IsValid() && rw.devNet.Contains(a) && a.As4()[3] == 255 {
		return rw.al.broadcast()
	}
	n := rw.al.next()
	if !n.IsValid() {
		return a // a full LAN keeps the peer's address rather than lose the packet
	}
	rw.addrs[a] = n
	return n
}

// rewrite maps the frame in place: MACs, ARP's addresses, IPv4 addresses
// with the IP and transport checksums updated.
func (rw *rewriter) rewrite(b []byte) {
	if len(b) < 14 {
		return
	}
	for _, at := range []int{0, 6} {
		m := rw.mac(schemas.MAC(b[at : at+6]))
		copy(b[at:at+6], m[:])
	}
	off, et := etherType(b)
	switch et {
	case 0x0806:
		a := b[off:]
		if len(a) < 28 || a[4] != 6 || a[5] != 4 {
			return
		}
		for _, at := range []int{8, 18} {
			if m := schemas.MAC(a[at : at+6]); !m.IsZero() {
				n := rw.mac(m)
				copy(a[at:at+6], n[:])
			}
			if ip := netip.AddrFrom4([4]byte(a[at+6 : at+10])); ip != netip.IPv4Unspecified() {
				n := rw.addr(ip).As4()
				copy(a[at+6:at+10], n[:])
			}
		}
	case 0x0800:
		ip := b[off:]
		if len(ip) < 20 || ip[0]>>4 != 4 {
			return
		}
		ihl := int(ip[0]&0x0f) * 4
		if id := binary.BigEndian.Uint16(ip[4:6]); rw.idOffset != 0 && id != 0 && schemas.MAC(b[6:12]) == rw.unitMAC {
			var was [2]byte
			copy(was[:], ip[4:6])
			binary.BigEndian.PutUint16(ip[4:6], id+rw.idOffset)
			binary.BigEndian.PutUint16(ip[10:12], gateway.AdjustChecksum(binary.BigEndian.Uint16(ip[10:12]), was[:], ip[4:6]))
		}
		old := slices.Clone(ip[12:20])
		src := rw.addr(netip.AddrFrom4([4]byte(ip[12:16]))).As4()
		dst := rw.addr(netip.AddrFrom4([4]byte(ip[16:20]))).As4()
		copy(ip[12:16], src[:])
		copy(ip[16:20], dst[:])
		sum := gateway.AdjustChecksum(binary.BigEndian.Uint16(ip[10:12]), old, ip[12:20])
		binary.BigEndian.PutUint16(ip[10:12], sum)
		if ihl < 20 || len(ip) < ihl || binary.BigEndian.Uint16(ip[6:8])&0x1fff != 0 {
			return // later fragments carry no transport header
		}
		l4 := ip[ihl:]
		at := -1
		switch ip[9] {
		case 6:
			at = 16
		case 17:
			at = 6
		}
		if at < 0 || len(l4) < at+2 {
			return
		}
		old16 := binary.BigEndian.Uint16(l4[at:])
		dhcp := false
		if ip[9] == 17 && len(l4) >= 8 {
			ports := [2]uint16{binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])}
			dhcp = ports == [2]uint16{68, 67} || ports == [2]uint16{67, 68}
		}
		if ip[9] == 17 && old16 == 0 {
			if dhcp {
				rw.rewriteDHCP(l4, 0, false)
			}
			return // UDP without a checksum
		}
		s := gateway.AdjustChecksum(old16, old, ip[12:20])
		if dhcp {
			s = rw.rewriteDHCP(l4, s, true)
		}
		if ip[9] == 17 && s == 0 {
			s = 0xffff
		}
		binary.BigEndian.PutUint16(l4[at:], s)
	case 0x86dd:
		rw.rewrite6(b[off:])
	}
}

// rewriteDHCP maps the addresses a DHCPv4 message (l4, its UDP header
// first) carries into the home, as the IP header's were: the client's,
// the one it is given, the server's and relay's, and options 50
// (requested address), 54 (server) and 3 (routers); sum is the UDP
// checksum (when checked: a message may go without), returned updated.
// An address the session held nowhere else (a lease a device asks back)
// is taken for the device's own: no new address is drawn, so the home's
// others stay where they were. The options are read as the decoder reads
// them (features.DHCPv4Options).
func (rw *rewriter) rewriteDHCP(l4 []byte, sum uint16, checked bool) uint16 {
	move := func(at int) {
		a := netip.AddrFrom4([4]byte(l4[at : at+4]))
		if a.IsUnspecified() || !isLocal(a) {
			return
		}
		n, ok := rw.addrs[a]
		if !ok {
			n = rw.unitIP
		}
		if !n.Is4() {
			return
		}
		// The checksum is over 16-bit words: update the aligned ones
		// the address lies in.
		lo, hi := at&^1, min((at+5)&^1, len(l4))
		old := slices.Clone(l4[lo:hi])
		b := n.As4()
		copy(l4[at:at+4], b[:])
		if checked {
			sum = gateway.AdjustChecksum(sum, old, l4[lo:hi])
		}
	}
	const udpHeader = 8
	dhcp, _ := features.DHCPv4Options(l4[udpHeader:], func(code byte, at, n int) {
		if (code == 50 || code == 54 || code == 3) && n%4 == 0 {
			for a := at; a < at+n; a += 4 {
				move(udpHeader + a)
			}
		}
	})
	if dhcp {
		// The client's, the one it is given, the server's and relay's.
		for _, at := range []int{12, 16, 20, 24} {
			move(udpHeader + at)
		}
	}
	return sum
}
