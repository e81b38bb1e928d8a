package schemas

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
)

// Batch kinds. A packet batch comes from a capture agent; a labeled batch from
// a labeler. They share one layout so one decoder serves both, and the kind
// byte keeps a labeler from reading its own output as input.
const (
	KindPackets byte = 'P'
	KindLabeled byte = 'L'
)

// BatchVersion is the wire version this code writes and the newest it reads.
// Version 2 added the pairing fields to packet records; version 1 batches
// still decode, with those fields zero (SrcPort NoPort). Version 3 added the
// tunnel records (Packet.Tunnel); version 2 batches decode without them.
// Version 4 added the DHCP client fingerprint (Packet.DHCP); version 3
// batches decode without it. Version 5 added ARP's sender address
// (Packet.ARPSender); version 4 batches decode without it.
const BatchVersion = 5

var batchMagic = [3]byte{'H', 'M', 'B'}

// ErrUnknownVersion is returned for a batch newer than this worker: the
// message should be left for a newer worker, not terminated.
var ErrUnknownVersion = errors.New("batch version newer than this worker understands")

// Batch is the unit a message carries: many records of one source, in order.
type Batch struct {
	Kind     byte
	Campaign string
	Home     string
	Tap      string // packet batches: "lan", "wan", ...
	View     string // labeled batches: "lan", "napt", "vpn"
	// Source names the capture input (a file's base name and hash, or an
	// interface and start time); Session names the capture session the
	// packets belong to. Windows never cross sessions.
	Source  string
	Session string
	// FirstOffset is the Offset of Packets[0]; (Source, FirstOffset) is the
	// message id that JetStream deduplicates retried publishes by.
	FirstOffset uint64
	// Final marks the last batch of a session: downstream flushes then.
	Final bool
	// Devices is the label vocabulary of a labeled batch; Labels[i] indexes it
	// for Packets[i], or is Unlabeled.
	Devices []Device
	Labels  []int32
	Packets []Packet
}

// Device is an inventory entry as it travels with labeled batches.
type Device struct {
	Name     string
	Category string // "iot" or "non-iot"
}

// Unlabeled marks a packet no inventory entry claims (router, unknown host),
// or a WAN packet that could not be paired with its LAN packet.
const Unlabeled int32 = -1

// MsgID is the deterministic JetStream message id of the batch.
func (b *Batch) MsgID() string {
	return fmt.Sprintf("%c:%s:%s:%d", b.Kind, b.Source, b.Session, b.FirstOffset)
}

// AppendBinary encodes the batch after dst. Timestamps are delta-coded and
// integers varint-coded: a typical packet costs about 20 bytes.
func (b *Batch) AppendBinary(dst []byte) ([]byte, error) {
	if b.Kind == KindLabeled && len(b.Labels) != len(b.Packets) {
		return nil, fmt.Errorf("encode batch: %d labels for %d packets", len(b.Labels), len(b.Packets))
	}
	dst, err := b.AppendHeader(dst, len(b.Packets))
	if err != nil {
		return nil, err
	}
	e := NewRecordEncoder(b.FirstOffset)
	for i := range b.Packets {
		p := &b.Packets[i]
		if b.Kind == KindPackets {
			dst = e.AppendPacket(dst, p)
		} else {
			dst = e.appendCommon(dst, p)
			dst = binary.AppendVarint(dst, int64(b.Labels[i]))
		}
	}
	return dst, nil
}

// AppendHeader encodes what AppendBinary writes before the records, for a
// batch that will carry n of them. With a RecordEncoder it lets a producer
// encode packets as they arrive and cut a batch at a byte size, instead of
// collecting Packets and encoding them in a second pass.
func (b *Batch) AppendHeader(dst []byte, n int) ([]byte, error) {
	if b.Kind != KindPackets && b.Kind != KindLabeled {
		return nil, fmt.Errorf("encode batch: unknown kind %q", b.Kind)
	}
	dst = append(dst, batchMagic[:]...)
	dst = append(dst, BatchVersion, b.Kind)
	var flags byte
	if b.Final {
		flags |= 1
	}
	dst = append(dst, flags)
	for _, s := range [...]string{b.Campaign, b.Home, b.Tap, b.View, b.Source, b.Session} {
		dst = appendString(dst, s)
	}
	dst = binary.AppendUvarint(dst, b.FirstOffset)
	dst = binary.AppendUvarint(dst, uint64(len(b.Devices)))
	for _, d := range b.Devices {
		dst = appendString(dst, d.Name)
		dst = appendString(dst, d.Category)
	}
	return binary.AppendUvarint(dst, uint64(n)), nil
}

// MaxPacketRecordLen bounds the encoded length of one record of a packet
// batch (every varint at its widest), so a producer can tell before encoding
// a packet whether it still fits under a byte limit.
const MaxPacketRecordLen = 10 + 10 + 5 + 2 + 5 + 10 + 3 + 3 + 3 + 3 + 5 + 12 + pairingLen + tunnelLen + dhcpLen + arpLen

// pairingLen is the widest encoding of the version 2 pairing fields.
const pairingLen = 5 + 3 + 5 + 5 + 2*17

// tunnelLen is the widest encoding of the version 3 tunnel records: a flags
// byte, starts, the count of ends and each end (size<<1 | data).
const tunnelLen = 1 + 3 + 2 + MaxRecordEnds*3

// dhcpLen is the widest encoding of the version 4 DHCP fingerprint: a
// flags byte, three 4-byte hashes and an IPv4 address.
const dhcpLen = 1 + 3*4 + 4

// arpLen is the widest encoding of the version 5 ARP sender address: a
// flags byte and an IPv4 address.
const arpLen = 1 + 4

// RecordEncoder encodes the records of one batch in order: each record is
// delta-coded against the previous one, so the encoder carries that state.
type RecordEncoder struct {
	prevTs  int64
	prevOff uint64
}

// NewRecordEncoder starts the records of a batch whose FirstOffset is first.
func NewRecordEncoder(first uint64) RecordEncoder { return RecordEncoder{prevOff: first} }

// AppendPacket appends p as the next record of a packet batch (kind P).
func (e *RecordEncoder) AppendPacket(dst []byte, p *Packet) []byte {
	dst = e.appendCommon(dst, p)
	dst = append(dst, p.SrcMAC[:]...)
	dst = append(dst, p.DstMAC[:]...)
	dst = binary.AppendVarint(dst, int64(p.SrcPort))
	dst = binary.AppendUvarint(dst, uint64(p.IPID))
	dst = binary.AppendUvarint(dst, uint64(p.TCPSeq))
	dst = binary.AppendUvarint(dst, uint64(p.TCPAck))
	dst = appendAddr(dst, p.SrcIP)
	dst = appendAddr(dst, p.DstIP)
	dst = appendTunnel(dst, &p.Tunnel)
	dst = appendDHCP(dst, p.DHCP)
	if p.ARPSender == [4]byte{} {
		return append(dst, 0)
	}
	dst = append(dst, 1)
	return append(dst, p.ARPSender[:]...)
}

// appendDHCP writes a packet's DHCP fingerprint: a flags byte (bit 0
// params, bit 1 vendor, bit 2 name, bit 3 requested address), each hash
// present, big-endian, then the address.
func appendDHCP(dst []byte, d DHCPClient) []byte {
	i := len(dst)
	dst = append(dst, 0)
	for bit, h := range [3]uint32{d.Params, d.Vendor, d.Name} {
		if h != 0 {
			dst[i] |= 1 << bit
			dst = binary.BigEndian.AppendUint32(dst, h)
		}
	}
	if d.Requested != [4]byte{} {
		dst[i] |= 8
		dst = append(dst, d.Requested[:]...)
	}
	return dst
}

// appendTunnel writes a packet's tunnel records: a flags byte (1 known,
// 2 continues) and, when known, starts, the count of ends and each end.
// Ends past MaxRecordEnds are not written: such a segment reads back as
// not known.
func appendTunnel(dst []byte, t *TunnelRecords) []byte {
	if !t.Known || len(t.Ends) > MaxRecordEnds {
		return append(dst, 0)
	}
	flags := byte(1)
	if t.Continues {
		flags |= 2
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(t.Starts))
	dst = binary.AppendUvarint(dst, uint64(len(t.Ends)))
	for _, e := range t.Ends {
		v := uint64(e.Size) << 1
		if e.Data {
			v |= 1
		}
		dst = binary.AppendUvarint(dst, v)
	}
	return dst
}

// appendAddr writes an address as its length (0, 4 or 16) and its bytes.
func appendAddr(dst []byte, a netip.Addr) []byte {
	switch {
	case a.Is4():
		b := a.As4()
		return append(append(dst, 4), b[:]...)
	case a.IsValid():
		b := a.As16()
		return append(append(dst, 16), b[:]...)
	}
	return append(dst, 0)
}

// appendCommon appends the fields both kinds of record share. It is the
// capture agent's per-packet cost, hence written into room grown once
// (enough for the MACs too) rather than field by field through append.
func (e *RecordEncoder) appendCommon(dst []byte, p *Packet) []byte {
	dst = slices.Grow(dst, MaxPacketRecordLen)
	n := len(dst)
	b := dst[n : n+MaxPacketRecordLen]
	i := putVarint(b, 0, p.TsNs-e.prevTs)
	i = putVarint(b, i, int64(p.Offset-e.prevOff))
	i = putVarint(b, i, int64(p.DPort))
	b[i], b[i+1] = p.ProtoBits, byte(p.Direction)
	i = putUvarint(b, i+2, uint64(p.FrameLen))
	i = putUvarint(b, i, uint64(p.IntervalNs))
	b[i], b[i+1], b[i+2] = p.TTL, p.Transport, p.TCPOptionsLen
	i = putUvarint(b, i+3, uint64(p.IPLen))
	i = putUvarint(b, i, uint64(p.TCPFlags))
	i = putUvarint(b, i, uint64(p.TCPWindow))
	i = putUvarint(b, i, uint64(p.PayloadLen))
	e.prevTs, e.prevOff = p.TsNs, p.Offset
	return dst[:n+i]
}

// putUvarint writes v at b[i:] as binary.AppendUvarint would and returns
// the index after it.
func putUvarint(b []byte, i int, v uint64) int {
	for v >= 0x80 {
		b[i] = byte(v) | 0x80
		v >>= 7
		i++
	}
	b[i] = byte(v)
	return i + 1
}

// putVarint writes v zig-zag coded, as binary.AppendVarint would.
func putVarint(b []byte, i int, v int64) int {
	return putUvarint(b, i, uint64(v<<1)^uint64(v>>63))
}

// DecodeBatch parses one encoded batch. It never panics on malformed input;
// the error says what was wrong and where.
func DecodeBatch(data []byte) (*Batch, error) {
	r := reader{buf: data}
	if len(data) < 6 || data[0] != batchMagic[0] || data[1] != batchMagic[1] || data[2] != batchMagic[2] {
		return nil, errors.New("decode batch: not a HomeMole batch (bad magic)")
	}
	if data[3] > BatchVersion {
		return nil, fmt.Errorf("decode batch: version %d: %w (this worker reads up to %d; upgrade it)", data[3], ErrUnknownVersion, BatchVersion)
	}
	if data[3] == 0 {
		return nil, errors.New("decode batch: version 0 does not exist")
	}
	b := &Batch{Kind: data[4]}
	if b.Kind != KindPackets && b.Kind != KindLabeled {
		return nil, fmt.Errorf("decode batch: unknown kind %q", b.Kind)
	}
	b.Final = data[5]&1 != 0
	r.pos = 6
	for _, s := range []*string{&b.Campaign, &b.Home, &b.Tap, &b.View, &b.Source, &b.Session} {
		*s = r.string()
	}
	b.FirstOffset = r.uvarint()
	nDev := r.count(2)
	if nDev > 0 {
		b.Devices = make([]Device, nDev)
		for i := range b.Devices {
			b.Devices[i].Name = r.string()
			b.Devices[i].Category = r.string()
		}
	}
	// The smallest packet encoding is 14 bytes plus MACs or a label.
	n := r.count(15)
	if r.err != nil {
		return nil, fmt.Errorf("decode batch header: %w", r.err)
	}
	b.Packets = make([]Packet, n)
	if b.Kind == KindLabeled {
		b.Labels = make([]int32, n)
	}
	version := data[3]
	prevTs, prevOff := int64(0), b.FirstOffset
	for i := 0; i < n && r.err == nil; i++ {
		p := &b.Packets[i]
		prevTs += r.varint()
		p.TsNs = prevTs
		// Offsets rise from the batch's first offset: consumers chain a
		// session's batches by them (each the offset after the one
		// before's last packet), and a hostile batch whose offsets ran
		// back or wrapped would send that walk round in a circle.
		if d := r.varint(); d < 0 || d == 0 && i > 0 || prevOff+uint64(d) < prevOff || prevOff+uint64(d) == math.MaxUint64 {
			r.fail(fmt.Errorf("offset delta %d after offset %d: offsets must rise from the first offset", d, prevOff))
		} else {
			prevOff += uint64(d)
		}
		p.Offset = prevOff
		p.DPort = r.int32()
		p.ProtoBits = r.byte()
		p.Direction = int8(r.byte())
		p.FrameLen = r.uint32()
		p.IntervalNs = int64(r.uvarint())
		p.TTL, p.Transport, p.TCPOptionsLen = r.byte(), r.byte(), r.byte()
		p.IPLen = r.uint16()
		p.TCPFlags = r.uint16()
		p.TCPWindow = r.uint16()
		p.PayloadLen = r.uint32()
		if b.Kind == KindPackets {
			copy(p.SrcMAC[:], r.bytes(6))
			copy(p.DstMAC[:], r.bytes(6))
			p.SrcPort = NoPort
			if version >= 2 {
				p.SrcPort = r.int32()
				p.IPID = r.uint16()
				p.TCPSeq = r.uint32()
				p.TCPAck = r.uint32()
				p.SrcIP = r.addr()
				p.DstIP = r.addr()
			}
			if version >= 3 {
				r.tunnel(&p.Tunnel)
			}
			if version >= 4 {
				r.dhcp(&p.DHCP)
			}
			if version >= 5 {
				r.arpSender(&p.ARPSender)
			}
		} else {
			l := r.int32()
			if l < Unlabeled || int(l) >= len(b.Devices) {
				r.fail(fmt.Errorf("label %d outside a vocabulary of %d devices", l, len(b.Devices)))
			}
			b.Labels[i] = l
		}
		if p.Direction < DirLocal || p.Direction > DirOutbound {
			r.fail(fmt.Errorf("direction %d", p.Direction))
		}
		if r.err != nil {
			return nil, fmt.Errorf("decode batch: packet %d of %d: %w", i, n, r.err)
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("decode batch: %w", r.err)
	}
	if r.pos != len(data) {
		return nil, fmt.Errorf("decode batch: %d trailing bytes", len(data)-r.pos)
	}
	return b, nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// reader is a sticky-error cursor: after the first error every read returns
// zero, so decoders check once per record instead of once per field.
type reader struct {
	buf []byte
	pos int
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = fmt.Errorf("at byte %d: %w", r.pos, err)
	}
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.pos >= len(r.buf) {
		r.fail(errors.New("truncated"))
		return 0
	}
	c := r.buf[r.pos]
	r.pos++
	return c
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.buf)-r.pos < n {
		r.fail(errors.New("truncated"))
		return nil
	}
	s := r.buf[r.pos : r.pos+n]
	r.pos += n
	return s
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.buf[r.pos:])
	if n <= 0 {
		r.fail(errors.New("bad or truncated varint"))
		return 0
	}
	r.pos += n
	return v
}

// varint reads a zig-zag encoded uvarint, as binary.PutVarint writes it.
func (r *reader) varint() int64 {
	ux := r.uvarint()
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

func (r *reader) bounded(v uint64, max uint64, what string) uint64 {
	if v > max {
		r.fail(fmt.Errorf("%s %d out of range", what, v))
		return 0
	}
	return v
}

func (r *reader) uint32() uint32 { return uint32(r.bounded(r.uvarint(), math.MaxUint32, "value")) }
func (r *reader) uint16() uint16 { return uint16(r.bounded(r.uvarint(), math.MaxUint16, "value")) }

func (r *reader) int32() int32 {
	v := r.varint()
	if v < math.MinInt32 || v > math.MaxInt32 {
		r.fail(fmt.Errorf("value %d out of int32 range", v))
		return 0
	}
	return int32(v)
}

// count reads a length and refuses one the remaining bytes cannot hold, so a
// corrupt length never makes the decoder allocate gigabytes.
func (r *reader) count(minSize int) int {
	v := r.uvarint()
	if r.err == nil && v > uint64((len(r.buf)-r.pos)/minSize) {
		r.fail(fmt.Errorf("count %d exceeds what %d remaining bytes can hold", v, len(r.buf)-r.pos))
		return 0
	}
	return int(v)
}

// addr reads what appendAddr wrote.
func (r *reader) addr() netip.Addr {
	switch n := r.byte(); n {
	case 0:
		return netip.Addr{}
	case 4:
		if b := r.bytes(4); b != nil {
			return netip.AddrFrom4([4]byte(b))
		}
	case 16:
		if b := r.bytes(16); b != nil {
			return netip.AddrFrom16([16]byte(b))
		}
	default:
		r.fail(fmt.Errorf("address length %d", n))
	}
	return netip.Addr{}
}

func (r *reader) string() string {
	n := r.count(1)
	return string(r.bytes(n))
}

// dhcp reads what appendDHCP wrote.
func (r *reader) dhcp(d *DHCPClient) {
	flags := r.byte()
	if flags&^15 != 0 {
		r.fail(fmt.Errorf("DHCP fingerprint flags %#x", flags))
		return
	}
	for bit, h := range [3]*uint32{&d.Params, &d.Vendor, &d.Name} {
		if flags&(1<<bit) != 0 {
			if b := r.bytes(4); len(b) == 4 {
				if *h = binary.BigEndian.Uint32(b); *h == 0 {
					r.fail(errors.New("DHCP fingerprint: a hash of 0 flagged present"))
				}
			}
		}
	}
	if flags&8 != 0 {
		if b := r.bytes(4); len(b) == 4 {
			if d.Requested = [4]byte(b); d.Requested == [4]byte{} {
				r.fail(errors.New("DHCP fingerprint: a requested address of 0.0.0.0 flagged present"))
			}
		}
	}
}

// arpSender reads what AppendPacket wrote of ARP's sender address: a
// flags byte (0 none, 1 present) and the address.
func (r *reader) arpSender(a *[4]byte) {
	switch flags := r.byte(); flags {
	case 0:
	case 1:
		if b := r.bytes(4); len(b) == 4 {
			if *a = [4]byte(b); *a == [4]byte{} {
				r.fail(errors.New("ARP sender: 0.0.0.0 flagged present"))
			}
		}
	default:
		r.fail(fmt.Errorf("ARP sender flags %#x", flags))
	}
}

// tunnel reads what appendTunnel wrote.
func (r *reader) tunnel(t *TunnelRecords) {
	*t = TunnelRecords{}
	switch flags := r.byte(); {
	case flags == 0:
		return
	case flags&^3 != 0 || flags&1 == 0:
		r.fail(fmt.Errorf("tunnel records flags %#x", flags))
		return
	default:
		t.Known, t.Continues = true, flags&2 != 0
	}
	t.Starts = r.uint16()
	n := r.count(1)
	if n > MaxRecordEnds {
		r.fail(fmt.Errorf("%d tunnel records end in one segment, at most %d may", n, MaxRecordEnds))
		return
	}
	if n > 0 {
		t.Ends = make([]RecordEnd, n)
	}
	for i := range t.Ends {
		v := r.bounded(r.uvarint(), math.MaxUint16<<1|1, "tunnel record")
		t.Ends[i] = RecordEnd{Size: uint16(v >> 1), Data: v&1 != 0}
	}
}
