package homegen

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/pipeline/internal/tcpflags"
)

// stack is how a device's network stack shapes its headers; the sequence
// profiles of Ma et al. tell devices apart by exactly these fields.
type stack struct {
	ttl    uint8
	window uint16
	mss    uint16
	// synOpts: "mss" (embedded stacks such as lwIP), "linux" (MSS, SACK,
	// timestamps, window scale), "bsd" (MSS, window scale, SACK, no timestamps).
	synOpts string
	// ephemeral ports are drawn from [portLo, portHi).
	portLo, portHi uint16
}

// wscale is the window scale the stack offers in its SYN.
func (st stack) wscale() uint8 {
	switch st.synOpts {
	case "linux":
		return 7
	case "bsd":
		return 6
	}
	return 0
}

func (st stack) timestamps() bool { return st.synOpts == "linux" }

// host is one end of the home's traffic.
type host struct {
	name     string // DNS name, for servers
	mac      net.HardwareAddr
	ip       netip.Addr
	stack    stack
	rtt      time.Duration // round trip from the LAN tap, for servers
	category string        // inventory category, for devices
	quic     bool          // the server speaks HTTP/3
}

// packet is one generated frame at its offset into the session.
type packet struct {
	at   time.Duration
	seq  int // emission order, to break ties deterministically
	data []byte
}

// sim collects the frames of one capture session. Every generator writes
// into it; frames outside [0, dur) are dropped, so a behaviour may run past
// the end of the session without care.
type sim struct {
	rng     *rand.Rand
	wall    time.Time // the session's start
	dur     time.Duration
	gw      *host
	plan    addrPlan
	pkts    []packet
	buf     gopacket.SerializeBuffer
	noise   []byte // pseudo-random bytes payload bodies are cut from
	err     error
	ipIDs   map[*host]uint16
	nextEph map[*host]uint16
	// interactions are the user-triggered events of the session, the
	// ground truth of interaction detection.
	interactions []Interaction
}

// interaction records that a user action on device d starts at at.
func (s *sim) interaction(at time.Duration, d *device, kind string) {
	if at >= 0 && at < s.dur {
		s.interactions = append(s.interactions, Interaction{Device: d.name, Kind: kind, At: s.wall.Add(at)})
	}
}

func newSim(rng *rand.Rand, wall time.Time, dur time.Duration, gw *host) *sim {
	s := &sim{
		rng:     rng,
		wall:    wall,
		dur:     dur,
		gw:      gw,
		buf:     gopacket.NewSerializeBuffer(),
		noise:   make([]byte, 1<<16),
		ipIDs:   map[*host]uint16{},
		nextEph: map[*host]uint16{},
	}
	for i := 0; i < len(s.noise); i += 8 {
		binary.LittleEndian.PutUint64(s.noise[i:], rng.Uint64())
	}
	return s
}

// bytes returns n pseudo-random bytes (encrypted payload looks like this).
func (s *sim) bytes(n int) []byte {
	out := make([]byte, n)
	for i := 0; i < n; {
		off := s.rng.IntN(len(s.noise))
		i += copy(out[i:], s.noise[off:])
	}
	return out
}

// tagged is n pseudo-random bytes behind a two-byte magic: the header of
// a vendor's UDP protocol in front of its encrypted body.
func (s *sim) tagged(n int, m0, m1 byte) []byte {
	b := s.bytes(n)
	b[0], b[1] = m0, m1
	return b
}

// jitter returns d varied uniformly by up to ±frac of itself.
func (s *sim) jitter(d time.Duration, frac float64) time.Duration {
	return d + time.Duration((s.rng.Float64()*2-1)*frac*float64(d))
}

// uniform returns a duration in [lo, hi).
func (s *sim) uniform(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)))
}

// exp returns an exponentially distributed gap of the given mean: the
// arrival process of human-triggered events.
func (s *sim) exp(mean time.Duration) time.Duration {
	return time.Duration(s.rng.ExpFloat64() * float64(mean))
}

// between returns an int in [lo, hi].
func (s *sim) between(lo, hi int) int { return lo + s.rng.IntN(hi-lo+1) }

func (s *sim) ipID(h *host) uint16 {
	id, ok := s.ipIDs[h]
	if !ok {
		id = uint16(s.rng.Uint32())
	}
	s.ipIDs[h] = id + 1
	return id
}

func (s *sim) ephemeral(h *host) uint16 {
	p, ok := s.nextEph[h]
	if !ok || p < h.stack.portLo || p >= h.stack.portHi {
		p = h.stack.portLo + uint16(s.rng.IntN(int(h.stack.portHi-h.stack.portLo)))
	}
	s.nextEph[h] = p + 1 + uint16(s.rng.IntN(3))
	return p
}

// emit serializes one IP frame (IPv4, or IPv6 where the address plan
// says). from/to are the IP endpoints; the
// Ethernet addresses follow from them: a host outside the LAN is reached
// through the gateway's MAC, and group addresses map to their group MACs.
func (s *sim) emit(at time.Duration, from, to *host, l4 gopacket.SerializableLayer, payload []byte) {
	if at < 0 || at >= s.dur || s.err != nil {
		return
	}
	srcMAC, dstMAC := from.mac, to.mac
	if from.mac == nil {
		srcMAC = s.gw.mac
	}
	if to.mac == nil {
		dstMAC = s.gw.mac
	}
	ttl := from.stack.ttl
	// Multicast protocols fix their own TTL (SSDP 4, mDNS 255); the group
	// host carries it.
	if to.ip.IsMulticast() && to.stack.ttl != 0 {
		ttl = to.stack.ttl
	}
	var proto layers.IPProtocol
	switch l4.(type) {
	case *layers.TCP:
		proto = layers.IPProtocolTCP
	case *layers.UDP:
		proto = layers.IPProtocolUDP
	}
	var network gopacket.SerializableLayer
	etherType := layers.EthernetTypeIPv4
	// Drawn whatever the family, so that every address plan of one seed
	// yields the same packets in the same order.
	id := s.ipID(from)
	if src, dst, v6 := s.plan.v6(from, to); v6 {
		ip := &layers.IPv6{Version: 6, HopLimit: ttl, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		network, etherType = ip, layers.EthernetTypeIPv6
		if dst.IsMulticast() {
			// 33:33 and the group's last four bytes (RFC 2464).
			a := dst.As16()
			dstMAC = net.HardwareAddr{0x33, 0x33, a[12], a[13], a[14], a[15]}
		}
		if l, ok := l4.(interface {
			SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
		}); ok {
			l.SetNetworkLayerForChecksum(ip)
		}
	} else {
		ip := &layers.IPv4{
			Version: 4, IHL: 5, TTL: ttl, Id: id, Protocol: proto,
			SrcIP: s.plan.v4(from).AsSlice(), DstIP: s.plan.v4(to).AsSlice(),
		}
		if proto == layers.IPProtocolTCP {
			ip.Flags = layers.IPv4DontFragment
		}
		network = ip
		if l, ok := l4.(interface {
			SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
		}); ok {
			l.SetNetworkLayerForChecksum(ip)
		}
	}
	s.buf.Clear()
	err := gopacket.SerializeLayers(s.buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: etherType}, network, l4, gopacket.Payload(payload))
	if err != nil {
		s.err = fmt.Errorf("build frame %s -> %s: %w", from.ip, to.ip, err)
		return
	}
	s.pkts = append(s.pkts, packet{at: at, seq: len(s.pkts), data: append([]byte(nil), s.buf.Bytes()...)})
}

func (s *sim) udp(at time.Duration, from, to *host, sport, dport uint16, payload []byte) {
	s.emit(at, from, to, &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}, payload)
}

// udpExchange is a datagram from dev's port to srv's and srv's answer a
// round trip later.
func (s *sim) udpExchange(at time.Duration, dev, srv *host, port, srvPort uint16, req, resp []byte) {
	s.udp(at, dev, srv, port, srvPort, req)
	s.udp(at+srv.rtt, srv, dev, srvPort, port, resp)
}

// beats is a connection's keepalive: the first due at first, the next ones
// every period jittered by frac; send sends one starting at `at` and
// returns when the connection is free again.
type beats struct {
	first, period time.Duration
	frac          float64
	send          func(at time.Duration) time.Duration
}

// beatsAmong runs a connection's keepalives among its other messages in
// time order, one at a time: a message due while another is in flight
// waits until the connection is free (free is when it next is). The first
// other message is due at next; other sends the one due at `due`, starting
// at `at`, and returns when the connection is free again and when its next
// message is due. A keepalive due with another message goes second.
func (s *sim) beatsAmong(free time.Duration, b beats, next time.Duration, other func(due, at time.Duration) (end, next time.Duration)) {
	beat := b.first
	for beat < s.dur || next < s.dur {
		if beat < next {
			free = b.send(max(beat, free))
			beat += s.jitter(b.period, b.frac)
			continue
		}
		free, next = other(next, max(next, free))
	}
}

// conn is a TCP connection between a LAN device and a server, with
// sequence numbers kept right so that a dissector sees a sane stream.
type conn struct {
	s              *sim
	dev, srv       *host
	dport, sport   uint16 // server port, device port
	devSeq, srvSeq uint32
	ts             bool      // both ends use TCP timestamps
	shift          uint8     // window scale both ends agreed on
	lastTS         [2]uint32 // last TSval sent by the server [0] and the device [1]
}

// dial opens a connection at `at` and returns it with the time the device
// can send its first byte (after SYN, SYN-ACK, ACK).
func (s *sim) dial(at time.Duration, dev, srv *host, port uint16) (*conn, time.Duration) {
	c := &conn{s: s, dev: dev, srv: srv, dport: port, sport: s.ephemeral(dev),
		devSeq: s.rng.Uint32(), srvSeq: s.rng.Uint32(), ts: dev.stack.timestamps(), shift: dev.stack.wscale()}
	c.segment(at, true, "S", nil, synOptions(dev.stack, 0))
	c.devSeq++
	at += srv.rtt
	// The server answers in the style the client offered (no timestamps
	// unless asked for) with its own MSS.
	c.segment(at, false, "SA", nil, synOptions(stack{mss: srv.stack.mss, synOpts: dev.stack.synOpts}, dev.stack.mss))
	c.srvSeq++
	at += s.uniform(50*time.Microsecond, 400*time.Microsecond)
	c.segment(at, true, "A", nil, nil)
	return c, at + s.uniform(100*time.Microsecond, time.Millisecond)
}

// synOptions are the options of a SYN (peerMSS 0) or SYN-ACK.
func synOptions(st stack, peerMSS uint16) []layers.TCPOption {
	mss := st.mss
	if peerMSS != 0 {
		mss = min(mss, peerMSS)
	}
	opts := []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: binary.BigEndian.AppendUint16(nil, mss)}}
	switch st.synOpts {
	case "linux":
		opts = append(opts,
			layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
			layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)},
			layers.TCPOption{OptionType: layers.TCPOptionKindNop},
			layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{st.wscale()}})
	case "bsd":
		opts = append(opts,
			layers.TCPOption{OptionType: layers.TCPOptionKindNop},
			layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{st.wscale()}},
			layers.TCPOption{OptionType: layers.TCPOptionKindNop},
			layers.TCPOption{OptionType: layers.TCPOptionKindNop},
			layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2})
	}
	return opts
}

// segment emits one TCP segment. up means device to server.
func (c *conn) segment(at time.Duration, up bool, flags string, payload []byte, opts []layers.TCPOption) {
	from, to := c.srv, c.dev
	t := &layers.TCP{SrcPort: layers.TCPPort(c.dport), DstPort: layers.TCPPort(c.sport), Seq: c.srvSeq, Ack: c.devSeq}
	if up {
		from, to = c.dev, c.srv
		t = &layers.TCP{SrcPort: layers.TCPPort(c.sport), DstPort: layers.TCPPort(c.dport), Seq: c.devSeq, Ack: c.srvSeq}
	}
	// A SYN's window is never scaled; later windows are, once both ends
	// offered a scale.
	t.Window = from.stack.window
	if !strings.Contains(flags, "S") {
		t.Window = from.stack.window >> c.shift
	}
	tcpflags.Set(t, flags)
	if !t.ACK {
		t.Ack = 0
	}
	if opts == nil && c.ts {
		// Each end's clock runs from its own origin; TSecr echoes the peer.
		side := 0
		if up {
			side = 1
		}
		tsval := uint32(at/time.Millisecond) + uint32(side)*0x5a5a5a5
		c.lastTS[side] = tsval
		data := binary.BigEndian.AppendUint32(nil, tsval)
		opts = []layers.TCPOption{
			{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: binary.BigEndian.AppendUint32(data, c.lastTS[1-side])},
		}
	}
	t.Options = opts
	c.s.emit(at, from, to, t, payload)
}

// payloadMSS is how much payload fits in one segment of this connection.
func (c *conn) payloadMSS() int {
	m := int(min(c.dev.stack.mss, c.srv.stack.mss))
	if c.ts {
		m -= 12
	}
	return m
}

// send transfers data in one direction in segments of at most an MSS.
func (c *conn) send(at time.Duration, up bool, data []byte, gap time.Duration) time.Duration {
	mss := c.payloadMSS()
	var chunks [][]byte
	for len(data) > 0 {
		k := min(len(data), mss)
		chunks = append(chunks, data[:k])
		data = data[k:]
	}
	return c.sendChunks(at, up, chunks, gap)
}

// sendChunks sends one segment per chunk, gap apart, the receiver
// acknowledging every second segment and the last. It returns when the
// last acknowledgement is seen at the tap.
func (c *conn) sendChunks(at time.Duration, up bool, chunks [][]byte, gap time.Duration) time.Duration {
	var last time.Duration
	for i, chunk := range chunks {
		flags := "A"
		if i == len(chunks)-1 {
			flags = "PA"
		}
		c.segment(at, up, flags, chunk, nil)
		c.bump(up, uint32(len(chunk)))
		if i%2 == 1 || i == len(chunks)-1 {
			// A device's ACK is seen right away, a server's a round trip later.
			ackAt := at + c.s.uniform(100*time.Microsecond, 2*time.Millisecond)
			if up {
				ackAt = at + c.srv.rtt
			}
			c.segment(ackAt, !up, "A", nil, nil)
			last = max(last, ackAt)
		}
		at += gap
	}
	return last
}

// exchange is a request answered by a response after the server's think time.
func (c *conn) exchange(at time.Duration, req, resp []byte, think time.Duration) time.Duration {
	c.segment(at, true, "PA", req, nil)
	c.devSeq += uint32(len(req))
	at += c.srv.rtt + think
	c.segment(at, false, "PA", resp, nil)
	c.srvSeq += uint32(len(resp))
	// Delayed ACK from the device.
	at += c.s.uniform(5*time.Millisecond, 40*time.Millisecond)
	c.segment(at, true, "A", nil, nil)
	return at
}

// push is a message the server sends unprompted, answered by the device.
func (c *conn) push(at time.Duration, msg, reply []byte) time.Duration {
	c.segment(at, false, "PA", msg, nil)
	c.srvSeq += uint32(len(msg))
	at += c.s.uniform(2*time.Millisecond, 30*time.Millisecond)
	if reply == nil {
		c.segment(at, true, "A", nil, nil)
		return at
	}
	c.segment(at, true, "PA", reply, nil)
	c.devSeq += uint32(len(reply))
	at += c.srv.rtt
	c.segment(at, false, "A", nil, nil)
	return at
}

// close runs the FIN exchange, started by the device or by the server.
func (c *conn) close(at time.Duration, byDevice bool) time.Duration {
	c.segment(at, byDevice, "FA", nil, nil)
	c.bump(byDevice, 1)
	// Whichever end the tap sits next to (the device) answers fast; the
	// server's packets arrive a round trip after what prompted them.
	if byDevice {
		at += c.srv.rtt
	} else {
		at += c.s.uniform(200*time.Microsecond, 5*time.Millisecond)
	}
	c.segment(at, !byDevice, "FA", nil, nil)
	c.bump(!byDevice, 1)
	if byDevice {
		at += c.s.uniform(100*time.Microsecond, time.Millisecond)
	} else {
		at += c.srv.rtt
	}
	c.segment(at, byDevice, "A", nil, nil)
	return at
}

func (c *conn) bump(up bool, n uint32) {
	if up {
		c.devSeq += n
	} else {
		c.srvSeq += n
	}
}

// tlsRecord is a TLS record of content type ct whose whole size on the wire
// (header included) is n bytes.
func (s *sim) tlsRecord(ct byte, n int) []byte {
	n = max(n, 6)
	b := s.bytes(n)
	b[0], b[1], b[2] = ct, 3, 3
	binary.BigEndian.PutUint16(b[3:5], uint16(n-5))
	return b
}

// tlsStream is n bytes of back-to-back application-data records of at most
// 16 KiB each, the way a TLS sender fills a bulk transfer.
func (s *sim) tlsStream(n int) []byte {
	out := make([]byte, 0, n)
	for n > 0 {
		k := min(n, 16384+5+17)
		out = append(out, s.tlsRecord(23, k)...)
		n -= k
	}
	return out
}

// appRecords is between nlo and nhi application-data records of lo to hi
// bytes each: a request a device streams up in chunks as it records it
// (spoken audio, a clip), one record a chunk.
func (s *sim) appRecords(nlo, nhi, lo, hi int) [][]byte {
	out := make([][]byte, s.between(nlo, nhi))
	for i := range out {
		out[i] = s.tlsRecord(23, s.between(lo, hi))
	}
	return out
}

// tlsHandshake runs a TLS 1.2/1.3-style handshake of the given sizes (client
// hello, server flight, client finish) and returns when the device may send.
func (c *conn) tlsHandshake(at time.Duration, hello, serverFlight, finish int) time.Duration {
	s := c.s
	c.segment(at, true, "PA", s.tlsRecord(22, hello), nil)
	c.devSeq += uint32(hello)
	at += c.srv.rtt + s.uniform(time.Millisecond, 8*time.Millisecond)
	flight := append(s.tlsRecord(22, serverFlight-6), s.tlsRecord(20, 6)...)
	at = c.send(at, false, flight, s.uniform(20*time.Microsecond, 200*time.Microsecond))
	at += s.uniform(time.Millisecond, 5*time.Millisecond)
	c.segment(at, true, "PA", append(s.tlsRecord(20, 6), s.tlsRecord(22, finish-6)...), nil)
	c.devSeq += uint32(finish)
	at += c.srv.rtt
	c.segment(at, false, "A", nil, nil)
	return at + s.uniform(100*time.Microsecond, 2*time.Millisecond)
}

// dnsLookup queries resolver for name and answers with addr, returning when
// the answer is in.
func (s *sim) dnsLookup(at time.Duration, dev, resolver *host, name string, addr netip.Addr) time.Duration {
	id := uint16(s.rng.Uint32())
	port := s.ephemeral(dev)
	q := layers.DNSQuestion{Name: []byte(name), Type: layers.DNSTypeA, Class: layers.DNSClassIN}
	s.emit(at, dev, resolver, &layers.UDP{SrcPort: layers.UDPPort(port), DstPort: 53},
		dnsBytes(s, &layers.DNS{ID: id, RD: true, Questions: []layers.DNSQuestion{q}}))
	// A resolver on the gateway answers from cache or after its own upstream query.
	at += resolver.rtt + s.uniform(200*time.Microsecond, 30*time.Millisecond)
	ans := layers.DNSResourceRecord{Name: []byte(name), Type: layers.DNSTypeA, Class: layers.DNSClassIN,
		TTL: uint32(s.between(30, 300)), IP: addr.AsSlice()}
	s.emit(at, resolver, dev, &layers.UDP{SrcPort: 53, DstPort: layers.UDPPort(port)},
		dnsBytes(s, &layers.DNS{ID: id, QR: true, RD: true, RA: true, Questions: []layers.DNSQuestion{q}, Answers: []layers.DNSResourceRecord{ans}}))
	return at + s.uniform(100*time.Microsecond, time.Millisecond)
}

func dnsBytes(s *sim, d *layers.DNS) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := d.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true}); err != nil {
		if s.err == nil {
			s.err = fmt.Errorf("build DNS message: %w", err)
		}
		return nil
	}
	return buf.Bytes()
}

// ntpEpochOffset is the seconds from 1900 (NTP era 0) to 1970.
const ntpEpochOffset = 2_208_988_800

// ntpExchange is one SNTP client request and the server's reply.
func (s *sim) ntpExchange(at time.Duration, dev, srv *host, version byte) {
	wall := s.wall
	req := make([]byte, 48)
	req[0] = version<<3 | 3 // LI 0, client mode
	putNTPTime(req[40:], wall.Add(at))
	port := uint16(123)
	if dev.stack.synOpts != "mss" {
		port = s.ephemeral(dev) // full stacks use an unprivileged source port
	}
	s.udp(at, dev, srv, port, 123, req)
	at += srv.rtt
	resp := make([]byte, 48)
	resp[0] = version<<3 | 4 // server mode
	resp[1] = 2              // stratum
	resp[2], resp[3] = 6, 0xe9
	copy(resp[24:32], req[40:48]) // originate = client's transmit
	putNTPTime(resp[32:], wall.Add(at-time.Millisecond))
	putNTPTime(resp[40:], wall.Add(at-time.Millisecond/2))
	s.udp(at, srv, dev, 123, port, resp)
}

func putNTPTime(b []byte, t time.Time) {
	binary.BigEndian.PutUint32(b[0:4], uint32(t.Unix()+ntpEpochOffset))
	binary.BigEndian.PutUint32(b[4:8], uint32(uint64(t.Nanosecond())<<32/1e9))
}
