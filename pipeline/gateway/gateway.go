// Package gateway emulates a home gateway: it turns a LAN capture into what
// an observer on the WAN link would capture, under NAPT or with all traffic
// in an OpenVPN tunnel, and writes which LAN packet every WAN packet came
// from. Labels exist only on the LAN side; the ground truth is what the
// pairing (pipeline/pair) is measured against.
//
// Only packets that cross the gateway appear on the WAN: IP packets the
// home's configuration places outbound or inbound whose far end is outside
// the LAN prefixes. ARP, multicast, LAN-local traffic and the gateway's own
// LAN services (its resolver, its web UI) stay home.
package gateway

import (
	"bufio"
	"bytes"
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// Mode is how the gateway connects the home to the internet.
type Mode string

const (
	// NAPT: address and port translation onto the gateway's WAN address.
	NAPT Mode = "napt"
	// VPN: every crossing packet is tunnelled in one OpenVPN UDP flow.
	VPN Mode = "vpn"
)

// ParseMode accepts "napt" or "vpn".
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case NAPT, VPN:
		return m, nil
	}
	return "", fmt.Errorf("mode %q: want %s or %s", s, NAPT, VPN)
}

// Config describes the gateway. Zero fields take DefaultConfig's values
// except Seed, where zero is a seed like any other.
type Config struct {
	Mode Mode
	// Cipher is the VPN data-channel cipher; it sets the outer sizes.
	Cipher Cipher
	Seed   uint64

	// WANAddr is the gateway's public address; WANMAC its WAN interface
	// and ISPMAC the next hop's, which frame every WAN packet.
	WANAddr        netip.Addr
	WANMAC, ISPMAC net.HardwareAddr

	// ForwardMin/Max bound the NAPT forwarding delay, drawn per packet.
	ForwardMin, ForwardMax time.Duration
	// PortMin/PortMax is the range NAPT allocates external ports from.
	PortMin, PortMax uint16
	// KeepPorts keeps a flow's LAN source port on the WAN when it is free,
	// as Linux does; by default ports are drawn at random so that the
	// pairing has to learn the mapping.
	KeepPorts bool
	// Mapping timeouts, refreshed by every packet of the flow.
	UDPTimeout, TCPTimeout, TCPClosedTimeout, ICMPTimeout, OtherTimeout time.Duration

	// VPNServer is the OpenVPN server; VPNPort the gateway's UDP port
	// (0: drawn from the Linux ephemeral range by the seed).
	VPNServer netip.AddrPort
	VPNPort   uint16
	// VPN delay: a per-direction base that wanders within
	// [VPNDelayMin, VPNDelayMax] plus per-packet jitter up to VPNJitter.
	// A single OpenVPN process encrypts in FIFO order, so the base moves
	// slowly (load, scheduling), and a packet leaves no earlier than the
	// one before it in its direction.
	VPNDelayMin, VPNDelayMax, VPNJitter time.Duration
	// Reorder lets the VPN's per-packet jitter reorder packets of one
	// direction (as a multi-threaded tunnel or a lossy path would): then
	// packets closer together than the jitter may swap.
	Reorder bool
	// VPNPing is OpenVPN's keepalive (--ping): after that long without a
	// packet in a direction, the tunnel sends a ping of its own, a WAN
	// packet without a LAN packet. Zero sends none.
	VPNPing time.Duration
	// Loss is the share of outbound crossing packets the gateway loses
	// (queue overflow): seen on the LAN, never on the WAN.
	Loss float64
	// VPNTCP runs the OpenVPN tunnel over TCP (proto tcp-client): one
	// connection to the server's port, each tunnelled packet a record
	// behind a 2-byte length, records coalesced into and split across
	// segments (see tcptunnel.go). OpenVPN ciphers only.
	VPNTCP bool
}

// DefaultConfig is a NAPT gateway on documentation addresses.
func DefaultConfig() Config {
	return Config{
		Mode:             NAPT,
		Cipher:           AES256GCM,
		WANAddr:          netip.MustParseAddr("203.0.113.2"),
		WANMAC:           net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x53, 0x02},
		ISPMAC:           net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x53, 0x01},
		ForwardMin:       50 * time.Microsecond,
		ForwardMax:       500 * time.Microsecond,
		PortMin:          1024,
		PortMax:          65535,
		UDPTimeout:       30 * time.Second,
		TCPTimeout:       2 * time.Hour,
		TCPClosedTimeout: 10 * time.Second,
		ICMPTimeout:      30 * time.Second,
		OtherTimeout:     10 * time.Minute,
		VPNServer:        netip.MustParseAddrPort("198.51.100.10:1194"),
		VPNDelayMin:      500 * time.Microsecond,
		VPNDelayMax:      20 * time.Millisecond,
		VPNJitter:        time.Millisecond,
	}
}

func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig()
	if c.Mode == "" {
		c.Mode = d.Mode
	}
	if _, err := ParseMode(string(c.Mode)); err != nil {
		return c, err
	}
	if c.Cipher == "" {
		c.Cipher = d.Cipher
	}
	if _, err := ParseCipher(string(c.Cipher)); err != nil {
		return c, err
	}
	if !c.WANAddr.IsValid() {
		c.WANAddr = d.WANAddr
	}
	if !c.WANAddr.Is4() {
		return c, fmt.Errorf("WAN address %s: want an IPv4 address", c.WANAddr)
	}
	if len(c.WANMAC) != 6 {
		c.WANMAC = d.WANMAC
	}
	if len(c.ISPMAC) != 6 {
		c.ISPMAC = d.ISPMAC
	}
	if c.ForwardMax <= 0 {
		c.ForwardMin, c.ForwardMax = d.ForwardMin, d.ForwardMax
	}
	if c.PortMin == 0 || c.PortMax < c.PortMin {
		c.PortMin, c.PortMax = d.PortMin, d.PortMax
	}
	for _, p := range []struct {
		v *time.Duration
		d time.Duration
	}{
		{&c.UDPTimeout, d.UDPTimeout}, {&c.TCPTimeout, d.TCPTimeout}, {&c.TCPClosedTimeout, d.TCPClosedTimeout},
		{&c.ICMPTimeout, d.ICMPTimeout}, {&c.OtherTimeout, d.OtherTimeout},
	} {
		if *p.v <= 0 {
			*p.v = p.d
		}
	}
	if !c.VPNServer.IsValid() {
		c.VPNServer = d.VPNServer
		if c.Cipher == WireGuard {
			c.VPNServer = netip.AddrPortFrom(d.VPNServer.Addr(), WireGuardPort)
		}
	}
	if !c.VPNServer.Addr().Is4() {
		return c, fmt.Errorf("VPN server %s: want an IPv4 address", c.VPNServer)
	}
	if c.VPNDelayMax <= 0 {
		c.VPNDelayMin, c.VPNDelayMax = d.VPNDelayMin, d.VPNDelayMax
	}
	if c.VPNDelayMin > c.VPNDelayMax {
		return c, fmt.Errorf("VPN delay: minimum %s above maximum %s", c.VPNDelayMin, c.VPNDelayMax)
	}
	if c.Loss < 0 || c.Loss >= 1 {
		return c, fmt.Errorf("loss %g: want a share from 0 up to, not including, 1", c.Loss)
	}
	if c.VPNTCP && (c.Cipher == WireGuard || c.Reorder) {
		return c, fmt.Errorf("VPN over TCP: WireGuard has no TCP mode, and TCP delivers in order (no reordering)")
	}
	if c.VPNPing < 0 {
		return c, fmt.Errorf("VPN ping interval %s: want 0 (none) or more", c.VPNPing)
	}
	if c.VPNJitter < 0 || c.VPNJitter > c.VPNDelayMax-c.VPNDelayMin {
		c.VPNJitter = min(d.VPNJitter, c.VPNDelayMax-c.VPNDelayMin)
	}
	return c, nil
}

// Stats counts what Emulate did with the LAN packets.
type Stats struct {
	LANPackets int
	// Crossing packets went to the WAN; Local ones stayed home.
	Crossing, Local int
	// Undecodable packets could not be read and were left out;
	// FirstError is the first such error.
	Undecodable int
	FirstError  error
	// NotPackets are frames of the link's own (features.ErrNotPacket: a
	// Wi-Fi capture's beacons and retransmissions), not among LANPackets:
	// no host sent them, and nothing crosses the gateway.
	NotPackets int
	// OtherViews are the frames of a cooked LAN capture (tcpdump -i any
	// on the gateway) beyond its LAN side, not among LANPackets either
	// (capture.Stats.OtherViews).
	OtherViews int
	// Dropped packets crossing with a TTL of 1 expire at the gateway.
	Dropped int
	// Lost packets were dropped by Config.Loss.
	Lost int
	// Pings are VPN keepalives: WAN packets without a LAN packet.
	Pings int
	// Mappings is how many NAPT translations were created; Reused how many
	// of their ports had belonged to an expired mapping before.
	Mappings, Reused int
	WANPackets       int
}

// Emulate reads a LAN capture and writes the WAN capture (Ethernet pcap,
// nanosecond timestamps, in WAN time order) to wan and the ground truth
// ("wan_index,lan_index" rows, 0-based packet ordinals) to truth. The same
// input, home and configuration give byte-identical outputs.
func Emulate(ctx context.Context, src capture.Source, home features.HomeConfig, cfg Config, wan, truth io.Writer) (Stats, error) {
	var st Stats
	cfg, err := cfg.withDefaults()
	if err != nil {
		return st, fmt.Errorf("gateway configuration: %w", err)
	}
	e := newEmulator(cfg, home)
	bw := bufio.NewWriterSize(wan, 1<<16)
	pw := pcapgo.NewWriterNanos(bw)
	if err := pw.WriteFileHeader(262144, layers.LinkTypeEthernet); err != nil {
		return st, fmt.Errorf("write WAN capture header: %w", err)
	}
	tw := bufio.NewWriter(truth)
	if _, err := tw.WriteString(TruthHeader + "\n"); err != nil {
		return st, fmt.Errorf("write ground truth: %w", err)
	}
	var line []byte
	emit := func(it *item) error {
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(0, it.ts).UTC(), CaptureLength: len(it.frame), Length: it.wire}
		if err := pw.WritePacket(ci, it.frame); err != nil {
			return fmt.Errorf("write WAN capture: %w", err)
		}
		it.sent = true
		line = strconv.AppendInt(line[:0], int64(st.WANPackets), 10)
		line = append(line, ',')
		if !it.noLAN {
			line = strconv.AppendUint(line, it.lan, 10)
		}
		line = append(line, '\n')
		if _, err := tw.Write(line); err != nil {
			return fmt.Errorf("write ground truth: %w", err)
		}
		st.WANPackets++
		return nil
	}

	dec := features.NewDecoder(home)
	var p schemas.Packet
	var maxTs int64
	for frames := 0; ; frames++ {
		if frames&1023 == 0 {
			if err := ctx.Err(); err != nil {
				return st, err
			}
		}
		fr, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, fmt.Errorf("read LAN capture: %w", err)
		}
		err = dec.Decode(fr.LinkType, fr.Data, fr.CI, fr.Offset, &p)
		if errors.Is(err, features.ErrNotPacket) {
			st.NotPackets++
			continue
		}
		st.LANPackets++
		if err != nil {
			st.Undecodable++
			if st.FirstError == nil {
				st.FirstError = err
			}
			continue
		}
		ts := fr.CI.Timestamp.UnixNano()
		maxTs = max(maxTs, ts)
		if p.Direction == schemas.DirLocal {
			st.Local++
			continue
		}
		h, err := ParseHeader(fr.LinkType, fr.Data)
		if err == nil && (h.Len < h.HdrLen || h.HasPorts && !h.Later && h.Len < h.L4+8) {
			// Forwarding cuts the packet at its IP length (link padding),
			// and translation rewrites its header and ports: a length
			// shorter than those (0 from a segmentation offload, or a
			// damaged packet) leaves nothing to forward.
			err = fmt.Errorf("IP length %d is shorter than its headers", h.Len)
		}
		if err != nil {
			st.Undecodable++
			if st.FirstError == nil {
				st.FirstError = fmt.Errorf("packet %d: %w", fr.Offset, err)
			}
			continue
		}
		out := p.Direction == schemas.DirOutbound
		remote := h.Dst
		if !out {
			remote = h.Src
		}
		if e.inLAN(remote) {
			st.Local++
			continue
		}
		ip := fr.Data[h.IPStart:]
		// Link-layer padding after the IP packet is not forwarded.
		if len(ip) > h.Len {
			ip = ip[:h.Len]
		}
		st.Crossing++
		heap.Push(&e.pending, &item{ts: ts, lan: fr.Offset, frame: bytes.Clone(ip), h: h, out: out, seq: fr.Offset})
		// Captures are not always in time order (the IP IDs of a burst
		// can show the true order against the timestamps). The gateway
		// forwards in the order packets happened, so packets wait here
		// until nothing earlier can still be read.
		for e.pending.Len() > 0 && e.pending[0].ts < maxTs-inputDisorder {
			e.forward(&st, heap.Pop(&e.pending).(*item))
		}
		for d := range 2 {
			e.pingsUntil(&st, d, maxTs-inputDisorder)
		}
		// Nothing read later can come out before its own LAN time minus
		// the largest backward shift, so everything earlier is final.
		for e.queue.Len() > 0 && e.queue[0].ts < maxTs-inputDisorder-e.maxShift {
			if err := emit(heap.Pop(&e.queue).(*item)); err != nil {
				return st, err
			}
		}
	}
	for e.pending.Len() > 0 {
		e.forward(&st, heap.Pop(&e.pending).(*item))
	}
	for d := range 2 {
		e.pingsUntil(&st, d, maxTs)
	}
	for e.queue.Len() > 0 {
		if err := emit(heap.Pop(&e.queue).(*item)); err != nil {
			return st, err
		}
	}
	st.Mappings, st.Reused = e.mappings, e.reused
	if err := bw.Flush(); err != nil {
		return st, fmt.Errorf("write WAN capture: %w", err)
	}
	if err := tw.Flush(); err != nil {
		return st, fmt.Errorf("write ground truth: %w", err)
	}
	st.OtherViews = int(capture.LeftOut(src))
	return st, nil
}

// inputDisorder is how far back in time a capture's packets may jump and
// still be forwarded in time order.
const inputDisorder = int64(time.Second)

// item is a packet waiting for its turn in time order: a crossing LAN
// packet (frame is its IP packet, h and out describe it) before the gateway
// forwards it, or a WAN packet before it is written.
type item struct {
	ts    int64
	lan   uint64
	frame []byte
	wire  int
	h     Header
	out   bool
	// seq breaks ties in time: the order packets were read, or forwarded.
	seq uint64
	// noLAN marks a WAN packet the gateway made itself (a VPN ping).
	noLAN bool
	// sent: written to the WAN capture; a TCP segment takes no more
	// records then.
	sent bool
}

type queue []*item

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].ts != q[j].ts {
		return q[i].ts < q[j].ts
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*item)) }
func (q *queue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

type emulator struct {
	cfg       Config
	home      features.HomeConfig
	rng       *rand.Rand
	payload   *rand.ChaCha8
	pending   queue // crossing LAN packets, in LAN time order
	queue     queue // WAN packets, in WAN time order
	forwarded uint64
	maxShift  int64

	nat      map[flowKey]*mapping
	ports    map[portKey]*mapping
	everUsed map[portKey]bool // ports any mapping ever had, to count reuse
	mappings int
	reused   int
	vpnPort  uint16
	// Outer IP IDs: a connected UDP socket on Linux numbers its
	// datagrams with a per-socket counter.
	outID, inID   uint16
	outPID, inPID uint32 // OpenVPN packet ids, per direction
	peerID        [3]byte
	// WireGuard: each side's receiver index, and the counters per direction.
	outIndex, inIndex uint32
	outCtr, inCtr     uint64
	// OpenVPN over TCP: the stream of each direction, [0] inbound.
	tcp             [2]tcpStream
	baseOut, baseIn int64
	lastOut, lastIn int64 // WAN time of the last packet each way
	// LAN time of the last tunnelled packet, [0] inbound, [1] outbound.
	lastSent [2]int64
	sent     [2]bool
}

func newEmulator(cfg Config, home features.HomeConfig) *emulator {
	e := &emulator{
		cfg:      cfg,
		home:     home,
		rng:      rand.New(rand.NewPCG(cfg.Seed, 0x6761746577617931)),
		nat:      map[flowKey]*mapping{},
		ports:    map[portKey]*mapping{},
		everUsed: map[portKey]bool{},
	}
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], cfg.Seed)
	copy(key[8:], "homemole vpn payload")
	e.payload = rand.NewChaCha8(key)
	e.maxShift = int64(cfg.ForwardMax)
	if cfg.Mode == VPN {
		e.maxShift = int64(cfg.VPNDelayMax)
		e.vpnPort = cfg.VPNPort
		if e.vpnPort == 0 {
			e.vpnPort = uint16(32768 + e.rng.IntN(60999-32768+1))
		}
		e.outID, e.inID = uint16(e.rng.Uint32()), uint16(e.rng.Uint32())
		e.peerID = [3]byte{0, 0, byte(1 + e.rng.IntN(254))}
		if cfg.Cipher == WireGuard {
			e.outIndex, e.inIndex = e.rng.Uint32(), e.rng.Uint32()
		}
		if cfg.VPNTCP {
			e.tcp[0].seq, e.tcp[1].seq = e.rng.Uint32(), e.rng.Uint32()
		}
		span := int64(cfg.VPNDelayMax - cfg.VPNDelayMin - cfg.VPNJitter)
		e.baseOut = int64(cfg.VPNDelayMin) + e.rng.Int64N(span+1)
		e.baseIn = int64(cfg.VPNDelayMin) + e.rng.Int64N(span+1)
	}
	return e
}

func (e *emulator) inLAN(a netip.Addr) bool {
	for _, p := range e.home.LANNets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forward queues the WAN packet of a crossing LAN packet.
func (e *emulator) forward(st *Stats, in *item) {
	if in.out && in.h.TTL <= 1 {
		st.Dropped++
		st.Crossing--
		return
	}
	if e.cfg.Loss > 0 && in.out && e.rng.Float64() < e.cfg.Loss {
		st.Lost++
		st.Crossing--
		return
	}
	if e.cfg.Mode == VPN {
		e.pings(st, in.out, in.ts)
		e.sendTunnel(in.h, in.out, in.ts, in.lan, false)
		return
	}
	e.push(e.cross(st, in.frame, in.h, in.out, in.ts, in.lan))
}

// sendTunnel puts a packet (or a ping of the tunnel's own, noLAN) into the
// tunnel: one UDP datagram, or a record of the TCP stream.
func (e *emulator) sendTunnel(h Header, out bool, ts int64, lan uint64, noLAN bool) {
	if e.cfg.VPNTCP {
		e.tcpRecord(h, out, ts, lan, noLAN)
		return
	}
	it := e.tunnel(h, out, ts, lan)
	it.noLAN = noLAN
	e.push(it)
}

func (e *emulator) push(it *item) {
	it.seq = e.forwarded
	e.forwarded++
	heap.Push(&e.queue, it)
}

// pingLen is the plaintext of an OpenVPN ping: a 16-byte magic string.
const pingLen = 16

// pings sends the keepalives a direction owes before a packet at ts, and
// counts that packet as sent.
func (e *emulator) pings(st *Stats, out bool, ts int64) {
	d := 0
	if out {
		d = 1
	}
	e.pingsUntil(st, d, ts)
	e.lastSent[d], e.sent[d] = ts, true
}

// pingsUntil sends direction d's keepalives due before upTo: one after
// every VPNPing of silence, a ping counting as a packet sent. Emulate calls
// it as time advances, not only when the direction's next packet comes, so
// that a long silence does not produce pings after later packets were
// already written.
func (e *emulator) pingsUntil(st *Stats, d int, upTo int64) {
	if e.cfg.Mode != VPN || e.cfg.VPNPing <= 0 || !e.sent[d] {
		return
	}
	ping := pingLen
	if e.cfg.Cipher == WireGuard {
		// A WireGuard keepalive is a data message of an empty packet.
		ping = 0
	}
	for t := e.lastSent[d] + int64(e.cfg.VPNPing); t < upTo; t += int64(e.cfg.VPNPing) {
		e.sendTunnel(Header{Len: ping}, d == 1, t, 0, true)
		st.Pings++
		e.lastSent[d] = t
	}
}

// cross builds the NAPT WAN packet of a crossing LAN packet.
func (e *emulator) cross(st *Stats, ip []byte, h Header, out bool, ts int64, lan uint64) *item {
	frame := make([]byte, 14+len(ip), max(60, 14+len(ip)))
	e.ether(frame, out, h.V6)
	copy(frame[14:], ip)
	e.translate(st, frame[14:], h, out, ts)
	// The observer's NIC sees frames padded to Ethernet's minimum.
	for len(frame) < 60 {
		frame = append(frame, 0)
	}
	d := int64(e.cfg.ForwardMin) + e.rng.Int64N(int64(e.cfg.ForwardMax-e.cfg.ForwardMin)+1)
	if !out {
		// The LAN tap sees a reply only after the gateway forwarded it.
		d = -d
	}
	return &item{ts: e.fifo(out, ts+d), lan: lan, frame: frame, wire: max(60, 14+h.Len)}
}

// fifo keeps a direction in order: a forwarding path is a queue, and a
// packet cannot overtake one that entered it before, however different
// their delays would be on their own. With Reorder set (VPN only) the
// delays alone decide.
func (e *emulator) fifo(out bool, wan int64) int64 {
	if e.cfg.Reorder && e.cfg.Mode == VPN {
		return wan
	}
	last := &e.lastIn
	if out {
		last = &e.lastOut
	}
	// Equal times stay in forwarding order: the queue breaks ties by it.
	wan = max(wan, *last)
	*last = wan
	return wan
}

func (e *emulator) ether(frame []byte, out, v6 bool) {
	if out {
		copy(frame[0:6], e.cfg.ISPMAC)
		copy(frame[6:12], e.cfg.WANMAC)
	} else {
		copy(frame[0:6], e.cfg.WANMAC)
		copy(frame[6:12], e.cfg.ISPMAC)
	}
	et := uint16(0x0800)
	if v6 {
		et = 0x86dd
	}
	binary.BigEndian.PutUint16(frame[12:14], et)
}

// tunnel wraps a crossing packet into the OpenVPN flow.
func (e *emulator) tunnel(h Header, out bool, ts int64, lan uint64) *item {
	n := PayloadSize(e.cfg.Cipher, h.Len)
	frame := make([]byte, 14+OuterUDPOverhead+n)
	e.ether(frame, out, false)
	ip := frame[14:]
	ip[0], ip[1] = 0x45, 0
	binary.BigEndian.PutUint16(ip[2:4], uint16(OuterUDPOverhead+n))
	binary.BigEndian.PutUint16(ip[6:8], 0x4000) // DF: OpenVPN sets it with --mtu-disc
	ip[9] = ProtoUDP
	gw, srv := e.cfg.WANAddr.As4(), e.cfg.VPNServer.Addr().As4()
	udp := ip[20:]
	var d int64
	if out {
		binary.BigEndian.PutUint16(ip[4:6], e.outID)
		e.outID++
		ip[8] = 64
		copy(ip[12:16], gw[:])
		copy(ip[16:20], srv[:])
		binary.BigEndian.PutUint16(udp[0:2], e.vpnPort)
		binary.BigEndian.PutUint16(udp[2:4], e.cfg.VPNServer.Port())
		d = e.vpnDelay(&e.baseOut)
	} else {
		binary.BigEndian.PutUint16(ip[4:6], e.inID)
		e.inID++
		ip[8] = 52 // a Linux server twelve hops away
		copy(ip[12:16], srv[:])
		copy(ip[16:20], gw[:])
		binary.BigEndian.PutUint16(udp[0:2], e.cfg.VPNServer.Port())
		binary.BigEndian.PutUint16(udp[2:4], e.vpnPort)
		d = -e.vpnDelay(&e.baseIn)
	}
	binary.BigEndian.PutUint16(ip[10:12], checksum(ip[:20], 0))
	binary.BigEndian.PutUint16(udp[4:6], uint16(8+n))
	payload := udp[8:]
	e.payload.Read(payload)
	if e.cfg.Cipher == WireGuard {
		// In the clear: type, reserved zeros, the receiving side's
		// index, the sender's counter.
		index, ctr := e.inIndex, &e.outCtr
		if !out {
			index, ctr = e.outIndex, &e.inCtr
		}
		payload[0], payload[1], payload[2], payload[3] = WireGuardData, 0, 0, 0
		binary.LittleEndian.PutUint32(payload[4:8], index)
		binary.LittleEndian.PutUint64(payload[8:16], *ctr)
		*ctr++
		e.udpChecksum(ip, udp, n)
		return &item{ts: e.fifo(out, ts+d), lan: lan, frame: frame, wire: len(frame)}
	}
	e.openvpnHeader(payload, out)
	e.udpChecksum(ip, udp, n)
	return &item{ts: e.fifo(out, ts+d), lan: lan, frame: frame, wire: len(frame)}
}

// openvpnHeader writes what an OpenVPN data packet shows in the clear: the
// opcode and key id, P_DATA_V2 (9) with key id 0, and the peer id. Under
// AEAD the packet id follows unencrypted, as it is part of the nonce; under
// CBC it is inside the ciphertext.
func (e *emulator) openvpnHeader(payload []byte, out bool) {
	payload[0] = 9 << 3
	copy(payload[1:4], e.peerID[:])
	pid := &e.inPID
	if out {
		pid = &e.outPID
	}
	*pid++
	if e.cfg.Cipher == AES256GCM {
		binary.BigEndian.PutUint32(payload[4:8], *pid)
	}
}

// udpChecksum fills the UDP checksum of a tunnel packet with n bytes of
// payload.
func (e *emulator) udpChecksum(ip, udp []byte, n int) {
	var pseudo uint32
	for i := 12; i < 20; i += 2 {
		pseudo += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	pseudo += ProtoUDP + uint32(8+n)
	binary.BigEndian.PutUint16(udp[6:8], 0)
	c := checksum(udp[:8+n], pseudo)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:8], c)
}

// vpnDelay draws one packet's tunnel delay: the direction's base takes a
// small random step (bounded so base plus jitter stays within the
// configured range), then jitter is added.
func (e *emulator) vpnDelay(base *int64) int64 {
	lo := int64(e.cfg.VPNDelayMin)
	hi := int64(e.cfg.VPNDelayMax - e.cfg.VPNJitter)
	step := int64(e.cfg.VPNDelayMax-e.cfg.VPNDelayMin) / 50
	if step > 0 {
		*base += e.rng.Int64N(2*step+1) - step
	}
	*base = min(max(*base, lo), hi)
	j := int64(0)
	if e.cfg.VPNJitter > 0 {
		j = e.rng.Int64N(int64(e.cfg.VPNJitter) + 1)
	}
	return *base + j
}
