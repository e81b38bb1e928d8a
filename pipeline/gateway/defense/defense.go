package defense

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
)

// Packet is one WAN packet: its Ethernet frame as the observer captures it,
// its WAN time, and the LAN packet it carries (LAN < 0: a dummy the
// defence made).
type Packet struct {
	TS    int64 // Unix nanoseconds
	Frame []byte
	Wire  int
	LAN   int64
	// sent is when the packet left without the defence.
	sent int64
	// inner is the flow of the LAN packet a tunnel packet carries (set by
	// WANView under the VPN): shaping keeps a reply behind its request in
	// that flow, which the tunnel's own addresses cannot tell.
	inner    flowKey
	hasInner bool
}

// Dummy reports whether the defence made the packet.
func (p Packet) Dummy() bool { return p.LAN < 0 }

// Options are what a defence needs beyond its spec.
type Options struct {
	// Mode is the view the packets are in; vpn-pad needs VPN.
	Mode gateway.Mode
	// WANAddr is the gateway's WAN address, which tells a packet's
	// direction (zero: gateway.DefaultConfig's).
	WANAddr netip.Addr
	// Cipher is the VPN's (zero: AES-256-GCM); vpn-pad pads to its size
	// of a full-MTU packet.
	Cipher gateway.Cipher
	Seed   uint64
	// Mimic holds WAN views (one per capture, each in time order) of the
	// device mimic:DEVICE imitates, through the same gateway; their bursts
	// become cover traffic.
	Mimic [][]Packet
	// Span, when longer than the capture, is how long a home with an
	// always-on defence (cbr, stp, mimic) is defended from its first WAN
	// packet; padding alone sends nothing of its own and ignores it. A
	// shaper or a cover source is always on at a real gateway: it goes on
	// sending after the device falls silent, so where a capture ends does
	// not show. Cut at the capture's last packet instead (Span 0), a
	// defended capture's length is left to tell its device, and under
	// pad:mtu+cbr nothing else is.
	Span time.Duration
}

// Cost is what a defence costs the home. Bytes are wire bytes.
type Cost struct {
	// Real: the WAN packets before the defence; Packets, Bytes after it.
	RealPackets, RealBytes int64
	Packets, Bytes         int64
	Dummies                int64
	// Seconds is the span defended: the undefended WAN capture's, or
	// Options.Span when that is longer.
	Seconds float64
	// Latency each real packet waits, beyond the undefended WAN time.
	LatencyMean, LatencyP99 time.Duration
}

// add counts a packet that left with the defence and reports whether it is
// a real one, whose wait the caller then measures: Apply and Tally cost a
// defence by this one definition.
func (c *Cost) add(p Packet) bool {
	c.Packets++
	c.Bytes += int64(p.Wire)
	if p.Dummy() {
		c.Dummies++
		return false
	}
	return true
}

// ByteOverhead is the share of bytes the defence adds: 0.5 is 50 % more.
func (c Cost) ByteOverhead() float64 {
	return float64(c.Bytes-c.RealBytes) / math.Max(float64(c.RealBytes), 1)
}

// PacketOverhead is the share of packets the defence adds.
func (c Cost) PacketOverhead() float64 {
	return float64(c.Packets-c.RealPackets) / math.Max(float64(c.RealPackets), 1)
}

// KBps is the added traffic in kilobytes (1000 bytes) per second for the
// home, the unit Apthorpe et al. quote shaping costs in.
func (c Cost) KBps() float64 {
	if c.Seconds <= 0 {
		return 0
	}
	return float64(c.Bytes-c.RealBytes) / c.Seconds / 1000
}

func (c Cost) String() string {
	return fmt.Sprintf("byte overhead %.1f %% (%.3f KB/s), packet overhead %.1f %% (%d dummies), added latency mean %s p99 %s",
		100*c.ByteOverhead(), c.KBps(), 100*c.PacketOverhead(), c.Dummies, c.LatencyMean, c.LatencyP99)
}

// maxPackets bounds what a defence may make: beyond it the defended view
// of a capture would not fit in memory.
const maxPackets = 20_000_000

// burstGap ends a burst: a flow silent this long starts a new one.
const burstGap = int64(time.Second)

// Apply defends the WAN packets (in WAN time order, all real) with spec and
// returns the defended packets in WAN time order and their cost.
func Apply(in []Packet, spec Spec, opt Options) ([]Packet, Cost, error) {
	var c Cost
	if spec.VPNPad && opt.Mode != gateway.VPN {
		return nil, c, fmt.Errorf("defence %s: vpn-pad pads the VPN tunnel; use the vpn view (--mode vpn)", spec)
	}
	if !opt.WANAddr.IsValid() {
		opt.WANAddr = gateway.DefaultConfig().WANAddr
	}
	d := &defender{opt: opt, rng: rand.New(rand.NewPCG(opt.Seed, 0x646566656e6365))}
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], opt.Seed)
	copy(key[8:], "homemole defence padding")
	d.fill = rand.NewChaCha8(key)
	for i, p := range in {
		if p.Dummy() {
			return nil, c, fmt.Errorf("defence %s: input packet %d is already a dummy: defend the undefended WAN view", spec, i)
		}
		if i > 0 && p.TS < in[i-1].TS {
			return nil, c, fmt.Errorf("defence %s: input packet %d is earlier than the one before: the WAN view must be in time order", spec, i)
		}
		c.RealPackets++
		c.RealBytes += int64(p.Wire)
	}
	if len(in) == 0 {
		return nil, c, nil
	}
	first, last := in[0].TS, in[len(in)-1].TS
	if opt.Span > 0 && (spec.CBR > 0 || spec.STP > 0 || spec.Mimic != "") {
		last = max(last, first+int64(opt.Span))
	}
	c.Seconds = float64(last-first) / 1e9
	pkts := slices.Clone(in)
	for i := range pkts {
		pkts[i].sent = pkts[i].TS
	}
	if spec.STP > 0 {
		pkts = d.cover(pkts, bursts(in), spec.STP/60, first, last)
	}
	if spec.Mimic != "" {
		// Imitate the device at its own burst rate, per second.
		var mb [][]Packet
		var span float64
		for _, v := range opt.Mimic {
			if len(v) > 0 {
				mb = append(mb, bursts(v)...)
				span += float64(v[len(v)-1].TS-v[0].TS) / 1e9
			}
		}
		if len(mb) == 0 {
			return nil, c, fmt.Errorf("defence %s: no WAN traffic of %s to imitate: give captures of it that cross the gateway", spec, spec.Mimic)
		}
		rate := float64(len(mb)) / math.Max(span, 1)
		if opt.Mode == gateway.VPN {
			mb = d.intoTunnel(mb, in)
		}
		pkts = d.cover(pkts, mb, rate, first, last)
	}
	if len(pkts) > maxPackets {
		return nil, c, fmt.Errorf("defence %s: cover traffic makes %d packets, more than %d: lower its rate", spec, len(pkts), maxPackets)
	}
	if spec.CBR > 0 {
		var err error
		if pkts, err = d.shape(pkts, spec.CBR, last); err != nil {
			return nil, c, fmt.Errorf("defence %s: %w", spec, err)
		}
	}
	switch {
	case spec.VPNPad:
		// The tunnel pads what it carries to the MTU, so every tunnel
		// packet has the size of a full one.
		cipher := opt.Cipher
		if cipher == "" {
			cipher = gateway.AES256GCM
		}
		full := gateway.OuterUDPOverhead + gateway.PayloadSize(cipher, MTU)
		for i := range pkts {
			pkts[i] = d.resize(pkts[i], max(full, ipLen(pkts[i].Frame)))
		}
	case spec.Pad > 0:
		for i := range pkts {
			pkts[i] = d.resize(pkts[i], roundUp(ipLen(pkts[i].Frame), spec.Pad))
		}
	}

	var lat []int64
	for _, p := range pkts {
		if c.add(p) {
			lat = append(lat, max(0, p.TS-p.sent))
		}
	}
	c.LatencyMean, c.LatencyP99 = meanP99(lat)
	return pkts, c, nil
}

type defender struct {
	opt  Options
	rng  *rand.Rand
	fill *rand.ChaCha8
}

// meanP99 is the mean and the 99th percentile (nearest rank) of waits.
func meanP99(lat []int64) (time.Duration, time.Duration) {
	if len(lat) == 0 {
		return 0, 0
	}
	var sum float64
	for _, l := range lat {
		sum += float64(l)
	}
	slices.Sort(lat)
	rank := int(math.Ceil(0.99*float64(len(lat)))) - 1
	return time.Duration(math.Round(sum / float64(len(lat)))), time.Duration(lat[max(rank, 0)])
}

func roundUp(n, to int) int {
	if n >= MTU {
		return n
	}
	return min((n+to-1)/to*to, MTU)
}

// ipLen is the IP length a frame's header declares (0: not an IP frame).
func ipLen(frame []byte) int {
	h, err := gateway.ParseHeader(features.LinkTypeEthernet, frame)
	if err != nil {
		return 0
	}
	return h.Len
}

// outbound reports whether the gateway sent the frame towards the internet.
func (d *defender) outbound(frame []byte) bool { return Outbound(frame, d.opt.WANAddr) }

// Outbound reports whether a WAN frame left the gateway whose WAN address
// is wan (its source), rather than came in.
func Outbound(frame []byte, wan netip.Addr) bool {
	h, err := gateway.ParseHeader(features.LinkTypeEthernet, frame)
	return err == nil && h.Src == wan
}

// flowKey is a packet's flow, the same for both directions.
type flowKey struct {
	proto      uint8
	a, b       netip.Addr
	aPort, bPt uint16
}

func keyOf(frame []byte) flowKey { return keyOfLink(features.LinkTypeEthernet, frame) }

func keyOfLink(lt features.LinkType, frame []byte) flowKey {
	h, err := gateway.ParseHeader(lt, frame)
	if err != nil {
		return flowKey{}
	}
	k := flowKey{proto: h.Proto, a: h.Src, b: h.Dst, aPort: h.SrcPort, bPt: h.DstPort}
	if k.b.Less(k.a) || k.a == k.b && k.bPt < k.aPort {
		k.a, k.b, k.aPort, k.bPt = k.b, k.a, k.bPt, k.aPort
	}
	return k
}

// flowOf is the flow whose order shaping keeps: the carried LAN packet's
// under the VPN, the WAN packet's own otherwise (a tunnel's cover traffic
// is one flow).
func flowOf(p Packet) flowKey {
	if p.hasInner {
		return p.inner
	}
	return keyOf(p.Frame)
}

// bursts splits packets into their flows' bursts: runs of a flow's
// packets less than burstGap apart. A device's activity (a camera's
// stream, a plug's switching) shows as bursts on its flows.
func bursts(pkts []Packet) [][]Packet {
	open := map[flowKey]int{}
	var out [][]Packet
	for _, p := range pkts {
		k := keyOf(p.Frame)
		i, ok := open[k]
		if ok && p.TS-out[i][len(out[i])-1].TS < burstGap {
			out[i] = append(out[i], p)
			continue
		}
		open[k] = len(out)
		out = append(out, []Packet{p})
	}
	return out
}

// cover adds replays of bursts as dummies, starting at the times of a
// Poisson process of rate (bursts per second) over [first, last], merged
// into pkts in time order (a real packet before a dummy at the same time).
func (d *defender) cover(pkts []Packet, from [][]Packet, rate float64, first, last int64) []Packet {
	if len(from) == 0 || rate <= 0 {
		return pkts
	}
	var extra []Packet
	for t := float64(first) + d.rng.ExpFloat64()/rate*1e9; t <= float64(last); t += d.rng.ExpFloat64() / rate * 1e9 {
		b := from[d.rng.IntN(len(from))]
		shift := int64(t) - b[0].TS
		for _, p := range b {
			extra = append(extra, Packet{TS: p.TS + shift, Frame: p.Frame, Wire: p.Wire, LAN: -1})
		}
		if len(pkts)+len(extra) > maxPackets {
			break
		}
	}
	slices.SortStableFunc(extra, func(a, b Packet) int { return cmpTS(a.TS, b.TS) })
	merged := make([]Packet, 0, len(pkts)+len(extra))
	i, j := 0, 0
	for i < len(pkts) || j < len(extra) {
		if j == len(extra) || i < len(pkts) && pkts[i].TS <= extra[j].TS {
			merged = append(merged, pkts[i])
			i++
		} else {
			merged = append(merged, extra[j])
			j++
		}
	}
	return merged
}

func cmpTS(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// intoTunnel recasts another device's bursts into the home's tunnel: each
// packet becomes one of the home's tunnel packets of its direction, resized
// to the same IP length, since under the VPN an observer sees only those.
func (d *defender) intoTunnel(from [][]Packet, home []Packet) [][]Packet {
	var tmpl [2]*Packet
	for i := range home {
		dir := 0
		if d.outbound(home[i].Frame) {
			dir = 1
		}
		if tmpl[dir] == nil {
			tmpl[dir] = &home[i]
		}
	}
	var out [][]Packet
	for _, b := range from {
		var nb []Packet
		for _, p := range b {
			dir := 0
			if d.outbound(p.Frame) {
				dir = 1
			}
			t := tmpl[dir]
			if t == nil {
				t = tmpl[1-dir]
			}
			q := d.resize(Packet{TS: p.TS, Frame: t.Frame, Wire: t.Wire, LAN: -1}, ipLen(p.Frame))
			nb = append(nb, q)
		}
		out = append(out, nb)
	}
	return out
}

// shape sends packets at a constant rate, half of it each way: a slot
// every 1/rate seconds from the first packet on, the slots taking turns
// between upstream and downstream (a shaper on each side of the link, the
// gateway's and the far end's, each at rate/2). A slot takes the oldest
// packet waiting in its direction, or sends a dummy of its direction when
// none may leave, until every packet has left and the slots reach end. A
// packet may leave only after the packet before it in its flow, so a
// reply never leaves before its request. The observer so sees the same
// directions, one after the other, whatever the home sends: one queue for
// both directions, whose real packets took any slot and whose dummies
// alternated, let a run of one direction show where real packets were.
func (d *defender) shape(pkts []Packet, rate float64, end int64) ([]Packet, error) {
	first, last := pkts[0].TS, max(end, pkts[len(pkts)-1].TS)
	if slots := float64(last-first) / 1e9 * rate; slots > maxPackets {
		return nil, fmt.Errorf("cbr:%g over %.0f s makes %.0f packets, more than %d: lower the rate or shorten the capture", rate, float64(last-first)/1e9, slots, maxPackets)
	}
	iv := 1e9 / rate
	// queue[dir] holds the indices of dir's packets in order (1 is
	// upstream); after[i] is the packet before i in its flow (flowOf), or
	// -1.
	var queue [2][]int
	after := make([]int, len(pkts))
	lastOf := map[flowKey]int{}
	// A direction's dummy copies the last packet sent that way, or the
	// first of that way before any was sent.
	var tmpl [2]*Packet
	for i := range pkts {
		dir := d.dir(pkts[i].Frame)
		queue[dir] = append(queue[dir], i)
		if tmpl[dir] == nil {
			tmpl[dir] = &pkts[i]
		}
		k := flowOf(pkts[i])
		if j, ok := lastOf[k]; ok {
			after[i] = j
		} else {
			after[i] = -1
		}
		lastOf[k] = i
	}
	sentAt := make([]int64, len(pkts))
	for i := range sentAt {
		sentAt[i] = -1
	}
	out := make([]Packet, 0, len(pkts))
	for k, left := 0, len(pkts); ; k++ {
		t := first + int64(float64(k)*iv)
		if left == 0 && t > last {
			break
		}
		dir := 1 - k%2 // upstream first
		if q := queue[dir]; len(q) > 0 {
			i := q[0]
			if pkts[i].TS <= t && (after[i] < 0 || sentAt[after[i]] >= 0 && sentAt[after[i]] < t) {
				p := pkts[i]
				p.TS = t
				out = append(out, p)
				sentAt[i], tmpl[dir] = t, &pkts[i]
				queue[dir] = q[1:]
				left--
				continue
			}
		}
		tm := tmpl[dir]
		if tm == nil {
			tm = tmpl[1-dir] // nothing ever goes this way: the other way's shape
		}
		out = append(out, Packet{TS: t, Frame: tm.Frame, Wire: tm.Wire, LAN: -1})
		if len(out) > maxPackets {
			return nil, fmt.Errorf("cbr:%g makes more than %d packets: lower the rate", rate, maxPackets)
		}
	}
	return out, nil
}

// dir is 1 for a packet the gateway sends out, 0 for one it receives.
func (d *defender) dir(frame []byte) int {
	if d.outbound(frame) {
		return 1
	}
	return 0
}

// resize gives a packet's frame the IP length n, truncating or padding with
// random bytes (what encrypted padding looks like), and fixes the IP
// length, the IPv4 header checksum, and a UDP length and checksum. A TCP
// segment's padding counts as payload and its checksum is recomputed.
func (d *defender) resize(p Packet, n int) Packet {
	h, err := gateway.ParseHeader(features.LinkTypeEthernet, p.Frame)
	if err != nil || n == h.Len || n < h.HdrLen || !h.Later && h.HasPorts && n < h.L4+8 ||
		h.IPStart+min(h.Len, n) > len(p.Frame) {
		return p
	}
	if h.Proto == gateway.ProtoTCP && !h.Later && n < h.L4+20 {
		return p
	}
	f := make([]byte, h.IPStart+n, max(60, h.IPStart+n))
	copy(f, p.Frame[:h.IPStart+min(h.Len, n)])
	if n > h.Len {
		d.fill.Read(f[h.IPStart+h.Len:])
	}
	ip := f[h.IPStart:]
	if h.V6 {
		binary.BigEndian.PutUint16(ip[4:6], uint16(n-40))
	} else {
		binary.BigEndian.PutUint16(ip[2:4], uint16(n))
		binary.BigEndian.PutUint16(ip[10:12], 0)
		binary.BigEndian.PutUint16(ip[10:12], gateway.Checksum(ip[:h.HdrLen], 0))
	}
	if !h.Later && (h.Proto == gateway.ProtoUDP || h.Proto == gateway.ProtoTCP) && h.L4 == h.HdrLen {
		l4 := ip[h.L4:]
		at := 16 // TCP checksum
		if h.Proto == gateway.ProtoUDP {
			binary.BigEndian.PutUint16(l4[4:6], uint16(len(l4)))
			at = 6
		}
		binary.BigEndian.PutUint16(l4[at:at+2], 0)
		var pseudo uint32
		addrs := ip[12:20]
		if h.V6 {
			addrs = ip[8:40]
		}
		for i := 0; i < len(addrs); i += 2 {
			pseudo += uint32(binary.BigEndian.Uint16(addrs[i:]))
		}
		pseudo += uint32(h.Proto) + uint32(len(l4))
		c := gateway.Checksum(l4, pseudo)
		if c == 0 && h.Proto == gateway.ProtoUDP {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[at:at+2], c)
	}
	for len(f) < 60 {
		f = append(f, 0)
	}
	p.Frame, p.Wire = f, max(60, h.IPStart+n)
	return p
}
