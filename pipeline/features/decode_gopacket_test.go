package features

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/homemole/homemole/schemas"
)

// gopacketDecoder is the decoder as it stood before headers.go replaced
// gopacket's layers (commit 6ea8082): the reference that
// TestDecodeMatchesGopacket and FuzzDecode hold the Decoder to, record for
// record. Only the IP and transport headers differ between the two; the
// link layer is ParseLink in both.
type gopacketDecoder struct {
	home HomeConfig

	ip4 layers.IPv4
	ip6 layers.IPv6
	ext layers.IPv6ExtensionSkipper
	tcp layers.TCP
	udp layers.UDP

	clock   streamClock
	retries retransmits
	mirror  mirrorRest
	// jumbo says the last frame was an IPv6 jumbogram, which this decoder
	// reads wrong (gopacket leaves the hop-by-hop header in the payload
	// and it is counted twice) and the comparison leaves out.
	jumbo bool
}

func newGopacketDecoder(home HomeConfig) *gopacketDecoder {
	return &gopacketDecoder{home: home.clone()}
}

func (d *gopacketDecoder) decode(linkType LinkType, data []byte, ci gopacket.CaptureInfo, offset uint64, p *schemas.Packet) error {
	startRecord(p, data, ci, offset)
	l, frag, err := parseLinkMirrored(linkType, data)
	if err != nil {
		return fmt.Errorf("decode packet %d (%s): %w", offset, linkType, err)
	}
	if err := d.mirror.take(&l, frag, data); err != nil {
		return fmt.Errorf("decode packet %d (%s): %w", offset, linkType, err)
	}
	if err := d.retries.take(&l, p); err != nil {
		return fmt.Errorf("decode packet %d (%s): %w", offset, linkType, err)
	}
	payload := data[l.Offset:]
	switch l.EtherType {
	case EtherTypeIPv4:
		err = d.ipv4(payload, p)
	case EtherTypeIPv6:
		err = d.ipv6(payload, p)
	default:
		p.ProtoBits = schemas.ProtoOther
		// gopacket 1.1.19 sums an ARP's length and offsets in a byte,
		// which wraps for long hardware addresses and then slices past
		// the message or at the wrong place (FuzzDecode found the panic):
		// a message of 256 bytes or more is read here by hand.
		if l.EtherType == EtherTypeARP && len(payload) >= 8 {
			n := 8 + 2*int(payload[4]) + 2*int(payload[5])
			var arp layers.ARP
			switch {
			case len(payload) < n || binary.BigEndian.Uint16(payload[2:4]) != uint16(layers.EthernetTypeIPv4) || payload[5] != 4:
			case n > 255:
				p.ARPSender = [4]byte(payload[8+int(payload[4]):])
			case arp.DecodeFromBytes(payload, gopacket.NilDecodeFeedback) == nil:
				p.ARPSender = [4]byte(arp.SourceProtAddress)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("decode packet %d (%s): %w", offset, linkType, err)
	}
	d.clock.tick(p)
	return nil
}

func (d *gopacketDecoder) ipv4(b []byte, p *schemas.Packet) error {
	// gopacket does not check the version, and a v6 header read as v4 would
	// decode into nonsense instead of failing.
	if len(b) > 0 && b[0]>>4 != 4 {
		return fmt.Errorf("%w: IPv4 header carries IP version %d", ErrMalformed, b[0]>>4)
	}
	ip := &d.ip4
	if err := ip.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
		return malformed("IPv4 header", err)
	}
	p.ProtoBits = schemas.ProtoIP
	p.TTL = ip.TTL
	p.IPLen = ip.Length
	p.Transport = uint8(ip.Protocol)
	src, dst := addr4(ip.SrcIP), addr4(ip.DstIP)
	p.Direction = d.home.direction(src, dst, p.SrcMAC, p.DstMAC)
	p.IPID, p.SrcIP, p.DstIP = ip.Id, src, dst

	wire := int(ip.Length) - int(ip.IHL)*4
	if ip.FragOffset != 0 {
		// A later fragment has no transport header: no port, and no
		// application bit because nothing in it can be classified.
		p.ProtoBits |= transportBit(uint8(ip.Protocol))
		p.PayloadLen = uint32(wire)
		return nil
	}
	next, payload := ip.Protocol, ip.Payload
	for n := 0; next == layers.IPProtocolAH; n++ {
		if n == maxIPv6ExtHeaders {
			return fmt.Errorf("%w: more than %d authentication headers", ErrMalformed, maxIPv6ExtHeaders)
		}
		ah, err := gopacketAH(payload)
		if err != nil {
			return malformed("IPv4 authentication header", err)
		}
		next, payload, wire = ah.NextHeader, ah.Payload, wire-len(ah.Contents)
	}
	if wire < 0 {
		return fmt.Errorf("%w: authentication headers longer than the IPv4 payload", ErrMalformed)
	}
	p.Transport = uint8(next)
	return d.transport(next, payload, wire, p)
}

// gopacketAH reads an IPsec authentication header as gopacket's layer
// does, which has no DecodeFromBytes: through a packet of its own, whose
// decoder turns a panic (a header length below 12 bytes slices its
// authentication data backwards) into a missing layer.
func gopacketAH(b []byte) (*layers.IPSecAH, error) {
	pkt := gopacket.NewPacket(b, layers.LayerTypeIPSecAH, gopacket.DecodeOptions{NoCopy: true})
	if ah, ok := pkt.Layer(layers.LayerTypeIPSecAH).(*layers.IPSecAH); ok {
		return ah, nil
	}
	if e := pkt.ErrorLayer(); e != nil {
		return nil, e.Error()
	}
	return nil, errors.New("no authentication header")
}

func (d *gopacketDecoder) ipv6(b []byte, p *schemas.Packet) error {
	if len(b) > 0 && b[0]>>4 != 6 {
		return fmt.Errorf("%w: IPv6 header carries IP version %d", ErrMalformed, b[0]>>4)
	}
	ip := &d.ip6
	if err := ip.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
		return malformed("IPv6 header", err)
	}
	p.ProtoBits = schemas.ProtoIP
	p.TTL = ip.HopLimit
	length := int(ip.Length)
	if length == 0 {
		d.jumbo = true
		length = len(ip.Payload)
		if ip.HopByHop != nil {
			length += ip.HopByHop.ActualLength
		}
	}
	p.IPLen = uint16(min(length+40, 0xffff))
	p.SrcIP, p.DstIP = addr16(ip.SrcIP), addr16(ip.DstIP)
	p.Direction = d.home.direction(p.SrcIP, p.DstIP, p.SrcMAC, p.DstMAC)

	next, payload, extLen := ip.NextHeader, ip.Payload, 0
	if ip.HopByHop != nil {
		next, extLen = ip.HopByHop.NextHeader, ip.HopByHop.ActualLength
	}
	for n := 0; ; n++ {
		if n == maxIPv6ExtHeaders {
			return fmt.Errorf("%w: more than %d IPv6 extension headers", ErrMalformed, maxIPv6ExtHeaders)
		}
		switch next {
		case layers.IPProtocolIPv6HopByHop, layers.IPProtocolIPv6Routing, layers.IPProtocolIPv6Destination,
			135, 139, 140: // mobility, HIP, shim6: same length encoding
			if err := d.ext.DecodeFromBytes(payload, gopacket.NilDecodeFeedback); err != nil {
				return malformed("IPv6 extension header", err)
			}
			next, payload, extLen = d.ext.NextHeader, d.ext.Payload, extLen+len(d.ext.Contents)
			continue
		case layers.IPProtocolAH:
			ah, err := gopacketAH(payload)
			if err != nil {
				return malformed("IPv6 authentication header", err)
			}
			next, payload, extLen = ah.NextHeader, ah.Payload, extLen+len(ah.Contents)
			continue
		case layers.IPProtocolIPv6Fragment:
			const fragLen = 8
			if len(payload) < fragLen {
				return fmt.Errorf("%w: IPv6 fragment header needs %d bytes, %d left", ErrMalformed, fragLen, len(payload))
			}
			next = layers.IPProtocol(payload[0])
			later := binary.BigEndian.Uint16(payload[2:4])>>3 != 0
			payload, extLen = payload[fragLen:], extLen+fragLen
			if later {
				p.Transport = uint8(next)
				p.ProtoBits |= transportBit(uint8(next))
				p.PayloadLen = uint32(max(length-extLen, 0))
				return nil
			}
			continue
		}
		break
	}
	p.Transport = uint8(next)
	wire := length - extLen
	if wire < 0 {
		return fmt.Errorf("%w: IPv6 extension headers (%d bytes) longer than the payload length %d", ErrMalformed, extLen, length)
	}
	return d.transport(next, payload, wire, p)
}

// transport reads the transport header. b is the captured IP payload, wire
// the IP payload length the IP header states; PayloadLen comes from wire so
// that it stays right when the snap length cut the payload short.
func (d *gopacketDecoder) transport(proto layers.IPProtocol, b []byte, wire int, p *schemas.Packet) error {
	switch proto {
	case layers.IPProtocolTCP:
		p.ProtoBits |= schemas.ProtoTCP
		t := &d.tcp
		if err := t.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
			return malformed("TCP header", err)
		}
		hdr := int(t.DataOffset) * 4
		n := wire - hdr
		if n < 0 {
			return fmt.Errorf("%w: TCP header (%d bytes) longer than the IP payload (%d bytes)", ErrMalformed, hdr, wire)
		}
		p.DPort, p.SrcPort = int32(t.DstPort), int32(t.SrcPort)
		p.TCPSeq, p.TCPAck = t.Seq, t.Ack
		// Nine flag bits, FIN in bit 0 up to NS (the low bit of byte 12) in bit 8.
		p.TCPFlags = uint16(b[13]) | uint16(b[12]&1)<<8
		p.TCPWindow = t.Window
		p.TCPOptionsLen = uint8(hdr - 20)
		p.PayloadLen = uint32(n)
		if n > 0 {
			p.ProtoBits |= appBit(true, uint16(t.SrcPort), uint16(t.DstPort), clip(t.Payload, n))
		}
	case layers.IPProtocolUDP:
		p.ProtoBits |= schemas.ProtoUDP
		u := &d.udp
		if err := u.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
			return malformed("UDP header", err)
		}
		n := wire - 8
		if n < 0 {
			return fmt.Errorf("%w: UDP header longer than the IP payload (%d bytes)", ErrMalformed, wire)
		}
		p.DPort, p.SrcPort = int32(u.DstPort), int32(u.SrcPort)
		p.PayloadLen = uint32(n)
		if n > 0 {
			p.ProtoBits |= appBit(false, uint16(u.SrcPort), uint16(u.DstPort), clip(u.Payload, n))
		}
		switch {
		case u.SrcPort == 68 && u.DstPort == 67:
			p.DHCP = gopacketDHCP(clip(u.Payload, n))
		case u.SrcPort == 546 && u.DstPort == 547:
			p.DHCP = gopacketDHCP6(clip(u.Payload, n))
		}
	default:
		p.PayloadLen = uint32(wire)
		if wire > 0 {
			p.ProtoBits |= schemas.ProtoOther
		}
	}
	return nil
}

// clip drops bytes beyond the stated payload (link-layer padding that a

// compareWithGopacket decodes one frame with both decoders and says how
// they differ, "" when they agree: both refuse it as malformed (or of an
// unsupported link type), or both give the same record.
func compareWithGopacket(d *Decoder, ref *gopacketDecoder, link LinkType, data []byte, ci gopacket.CaptureInfo, i uint64) string {
	var got, want schemas.Packet
	err := d.Decode(link, data, ci, i, &got)
	ref.jumbo = false
	wantErr := ref.decode(link, data, ci, i, &want)
	switch {
	case ref.jumbo:
		return ""
	case (err == nil) != (wantErr == nil):
		return fmt.Sprintf("headers.go: %v; gopacket: %v", err, wantErr)
	case err != nil:
		if errors.Is(err, ErrMalformed) != errors.Is(wantErr, ErrMalformed) {
			return fmt.Sprintf("errors of different kinds: headers.go: %v; gopacket: %v", err, wantErr)
		}
		return ""
	case !reflect.DeepEqual(got, want):
		return fmt.Sprintf("records differ:\nheaders.go %+v\ngopacket   %+v", got, want)
	}
	return ""
}

// TestDecodeMatchesGopacket: on every frame of the IoT Sentinel captures,
// the decoder gives the record gopacket's layers gave.
func TestDecodeMatchesGopacket(t *testing.T) {
	frames, kinds := 0, map[string]int{}
	for device, files := range sentinelFiles(t) {
		for _, f := range files {
			link, fr := readPcap(t, f)
			d, ref := NewDecoder(sentinelHome), newGopacketDecoder(sentinelHome)
			for i, x := range fr {
				if msg := compareWithGopacket(d, ref, link, x.data, x.ci, uint64(i)); msg != "" {
					t.Fatalf("%s %s frame %d: %s", device, filepath.Base(f), i, msg)
				}
				var p schemas.Packet
				if d.Decode(link, x.data, x.ci, uint64(i), &p) == nil && p.SrcIP.IsValid() {
					v := 4
					if p.SrcIP.Is6() {
						v = 6
					}
					kinds[fmt.Sprintf("IPv%d proto %d", v, p.Transport)]++
				}
				frames++
			}
		}
	}
	t.Logf("%d frames agree; decoded by IP version/transport: %v", frames, kinds)
}

// TestDecodeMatchesGopacketOnDamage: the fuzz seeds cut at every length,
// and with each byte set to 0, 0xff and its own value with the low or
// high bit flipped, decode as gopacket's layers decoded them: the
// malformed and truncated headers the fuzz target would reach, in every
// go test.
func TestDecodeMatchesGopacketOnDamage(t *testing.T) {
	cases := 0
	for si, s := range decodeSeeds(t) {
		d, ref := NewDecoder(withGW), newGopacketDecoder(withGW)
		ci := func(data []byte) gopacket.CaptureInfo {
			return gopacket.CaptureInfo{Timestamp: time.Unix(int64(cases), 0), CaptureLength: len(data), Length: len(data)}
		}
		check := func(what string, data []byte) {
			cases++
			if msg := compareWithGopacket(d, ref, s.link, data, ci(data), 0); msg != "" {
				t.Fatalf("seed %d (%s), %s: %s\nframe % x", si, s.link, what, msg, data)
			}
		}
		for n := range len(s.data) + 1 {
			check(fmt.Sprintf("cut to %d bytes", n), s.data[:n])
		}
		for i := range s.data {
			orig := s.data[i]
			for _, v := range []byte{0, 0xff, orig ^ 1, orig ^ 0x80, orig ^ 0x10} {
				b := slices.Clone(s.data)
				b[i] = v
				check(fmt.Sprintf("byte %d set to %#x", i, v), b)
			}
		}
	}
	t.Logf("%d damaged frames agree", cases)
}

// gopacketDHCP is the DHCP client fingerprint as gopacket's DHCPv4 layer
// reads the message: the options' bytes concatenated per code, hashed.
func gopacketDHCP(b []byte) schemas.DHCPClient {
	// gopacket slices the client's hardware address by the length the
	// message states, past the header when that is over 16; the
	// fingerprint does not read it.
	b = append([]byte(nil), b...)
	if len(b) > 2 {
		b[2] = 0
	}
	var m layers.DHCPv4
	if m.DecodeFromBytes(b, gopacket.NilDecodeFeedback) != nil || m.Operation != layers.DHCPOpRequest {
		return schemas.DHCPClient{}
	}
	var values [3][]byte
	var seen [3]bool
	for _, o := range m.Options {
		for i, code := range []layers.DHCPOpt{layers.DHCPOptParamsRequest, layers.DHCPOptClassID, layers.DHCPOptHostname} {
			if o.Type == code {
				values[i], seen[i] = append(values[i], o.Data...), true
			}
		}
	}
	hash := func(v []byte) uint32 {
		h := fnv.New32a()
		h.Write(v)
		return max(h.Sum32(), 1)
	}
	var d schemas.DHCPClient
	if seen[0] {
		d.Params = hash(values[0])
	}
	if seen[1] {
		d.Vendor = hash(values[1])
	}
	if name := NormalizeHostName(string(values[2][:min(len(values[2]), 255)])); name != "" {
		d.Name = hash([]byte(name))
	}
	for _, o := range m.Options {
		if o.Type == layers.DHCPOptRequestIP && len(o.Data) == 4 {
			d.Requested = [4]byte(o.Data)
			break
		}
	}
	if ci := m.ClientIP.To4(); d.Requested == [4]byte{} && len(ci) == 4 {
		d.Requested = [4]byte(ci)
	}
	return d
}

// gopacketDHCP6 is the DHCPv6 client fingerprint as gopacket's DHCPv6
// layer reads the message: the option request option, the vendor class
// and the client FQDN's first label.
func gopacketDHCP6(b []byte) schemas.DHCPClient {
	var m layers.DHCPv6
	if m.DecodeFromBytes(b, gopacket.NilDecodeFeedback) != nil {
		return schemas.DHCPClient{}
	}
	switch m.MsgType {
	case layers.DHCPv6MsgTypeSolicit, layers.DHCPv6MsgTypeRequest, layers.DHCPv6MsgTypeConfirm, layers.DHCPv6MsgTypeRenew,
		layers.DHCPv6MsgTypeRebind, layers.DHCPv6MsgTypeRelease, layers.DHCPv6MsgTypeDecline, layers.DHCPv6MsgTypeInformationRequest:
	default:
		return schemas.DHCPClient{}
	}
	hash := func(v []byte) uint32 {
		h := fnv.New32a()
		h.Write(v)
		return max(h.Sum32(), 1)
	}
	var d schemas.DHCPClient
	var oro, vendor []byte
	var name string
	named := false
	for _, o := range m.Options {
		switch o.Code {
		case layers.DHCPv6OptOro:
			oro = append(oro, o.Data...)
			d.Params = hash(oro)
		case layers.DHCPv6OptVendorClass:
			vendor = append(vendor, o.Data...)
			d.Vendor = hash(vendor)
		case layers.DHCPv6OptClientFQDN:
			if !named && len(o.Data) >= 2 && int(o.Data[1]) > 0 && 2+int(o.Data[1]) <= len(o.Data) {
				name, named = NormalizeHostName(string(o.Data[2:2+int(o.Data[1])])), true
			}
		}
	}
	if name != "" {
		d.Name = hash([]byte(name))
	}
	return d
}
