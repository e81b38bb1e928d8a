package dataset

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/homemole/homemole/schemas"
)

// ToPcap writes the packets of windows as an Ethernet pcap (nanosecond
// timestamps), window after window, padding slots left out.
//
// The capture is a reconstruction from the windows' metadata, not the
// original bytes: datasets keep no addresses, source ports or payload. What
// survives a round trip through pipeline/features is the timestamp, DPort,
// FrameLen, direction, TTL, transport, TCP flags, window and options length,
// payload length, and the protocol bits (payloads start with just enough of
// a TLS record header or an HTTP method for the decoder to pick the same
// application bit, and a DNS reply comes from port 53). Everything else is a
// placeholder:
//
//   - a labeled packet's home end is 10.1.x.y with MAC 02:00:00:01:x:y, x.y
//     being its label index, so a device can be filtered in Wireshark;
//     unlabeled packets use 10.0.0.2;
//   - the remote end is PcapRemote behind PcapGatewayMAC; a local packet goes
//     to the LAN peer 10.0.0.3;
//   - every packet is IPv4 without options, so its IP length is that of the
//     original only for such packets (a v6 packet becomes v4 with the same
//     transport); a later fragment (TCP or UDP without a port) is a
//     fragment at offset 1480; a frame without IP carries EtherType 0x88b5
//     (local experimental).
//
// Decode it with PcapLANNet as the home's LAN (homemole features --lan-net
// 10.0.0.0/8) to get the directions back. When the recorded frame is shorter
// than the reconstructed one (raw-IP captures have no 14-byte Ethernet
// header), the payload is cut as a snap length would cut it and the wire
// length stays FrameLen; only when even the headers do not fit is the
// frame longer.
func ToPcap(ws []*schemas.Window, w io.Writer) error {
	pw, err := NewPcapWriter(w)
	if err != nil {
		return err
	}
	for _, win := range ws {
		if err := pw.WriteWindow(win); err != nil {
			return err
		}
	}
	return nil
}

// PcapWriter writes windows as ToPcap does, one at a time, for callers that
// stream windows rather than hold them.
type PcapWriter struct {
	pw *pcapgo.Writer
	rc reconstructor
	// Packets counts the records written.
	Packets int
}

// NewPcapWriter writes the capture's file header.
func NewPcapWriter(w io.Writer) (*PcapWriter, error) {
	pw := pcapgo.NewWriterNanos(w)
	if err := pw.WriteFileHeader(pcapSnapLen, layers.LinkTypeEthernet); err != nil {
		return nil, fmt.Errorf("write pcap header: %w", err)
	}
	return &PcapWriter{pw: pw}, nil
}

// WriteWindow writes the window's packets, padding left out.
func (p *PcapWriter) WriteWindow(win *schemas.Window) error {
	if err := checkSlots(win); err != nil {
		return err
	}
	for i := 0; i < win.Len; i++ {
		data, wire, err := p.rc.frame(win, i)
		if err != nil {
			return fmt.Errorf("window %s packet %d: %w", win.ID, i, err)
		}
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(0, win.TsNs[i]).UTC(), CaptureLength: len(data), Length: wire}
		if err := p.pw.WritePacket(ci, data); err != nil {
			return fmt.Errorf("write pcap record of window %s packet %d: %w", win.ID, i, err)
		}
		p.Packets++
	}
	return nil
}

// Placeholders of reconstructed captures; see ToPcap.
var (
	PcapLANNet     = netip.MustParsePrefix("10.0.0.0/8")
	PcapRemote     = netip.AddrFrom4([4]byte{192, 0, 2, 1}) // TEST-NET-1: never a real host
	PcapGatewayMAC = schemas.MAC{0x02, 0, 0, 0, 0, 0x01}
)

var (
	pcapUnlabeled = netip.AddrFrom4([4]byte{10, 0, 0, 2})
	pcapLANPeer   = netip.AddrFrom4([4]byte{10, 0, 0, 3})
	pcapPeerMAC   = schemas.MAC{0x02, 0, 0, 0, 0, 0x03}
)

const (
	// 256 KiB like tcpdump's default, so GRO-merged frames keep their bytes.
	pcapSnapLen = 262144
	// The ephemeral port a reconstructed packet comes from; not 53 or 5353,
	// which would make the decoder set the DNS bit.
	pcapSrcPort = 49152
	// IEEE 802 local experimental EtherType: no dissector reads it as anything.
	etherTypeLocal layers.EthernetType = 0x88b5
	// A later fragment's offset, in 8-byte units (1480 bytes, one MTU's worth).
	laterFragOffset = 185
)

func checkSlots(w *schemas.Window) error {
	for _, n := range []int{len(w.TsNs), len(w.DPort), len(w.ProtoBits), len(w.Direction), len(w.FrameLen), len(w.TTL),
		len(w.Transport), len(w.TCPFlags), len(w.TCPWindow), len(w.TCPOptLen), len(w.PayloadLen), len(w.Label)} {
		if n < w.Len {
			return fmt.Errorf("window %s: %d packets but a column of %d slots; the window object is damaged (run `homemole dataset verify`)", w.ID, w.Len, n)
		}
	}
	return nil
}

// reconstructor holds the serialization buffer and IP ID counter across frames.
type reconstructor struct {
	buf  gopacket.SerializeBuffer
	ipID uint16
}

// frame returns one packet's captured bytes and its wire length.
func (rc *reconstructor) frame(w *schemas.Window, i int) (data []byte, wire int, err error) {
	if rc.buf == nil {
		rc.buf = gopacket.NewSerializeBuffer()
	}
	want := int(w.FrameLen[i])
	home, homeMAC := pcapUnlabeled, schemas.MAC{0x02, 0, 0, 0, 0, 0x02}
	if l := w.Label[i]; l >= 0 {
		home = netip.AddrFrom4([4]byte{10, 1, byte(l >> 8), byte(l)})
		homeMAC = schemas.MAC{0x02, 0, 0, 0x01, byte(l >> 8), byte(l)}
	}
	eth := &layers.Ethernet{}
	ip := &layers.IPv4{Version: 4, TTL: w.TTL[i], Protocol: layers.IPProtocol(w.Transport[i]), Id: rc.ipID}
	rc.ipID++
	switch w.Direction[i] {
	case schemas.DirOutbound:
		eth.SrcMAC, eth.DstMAC = hw(homeMAC), hw(PcapGatewayMAC)
		ip.SrcIP, ip.DstIP = home.AsSlice(), PcapRemote.AsSlice()
	case schemas.DirInbound:
		eth.SrcMAC, eth.DstMAC = hw(PcapGatewayMAC), hw(homeMAC)
		ip.SrcIP, ip.DstIP = PcapRemote.AsSlice(), home.AsSlice()
	default:
		eth.SrcMAC, eth.DstMAC = hw(homeMAC), hw(pcapPeerMAC)
		ip.SrcIP, ip.DstIP = home.AsSlice(), pcapLANPeer.AsSlice()
	}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	bits, dport := w.ProtoBits[i], w.DPort[i]
	payloadLen := max(int(w.PayloadLen[i]), 0)
	var ls []gopacket.SerializableLayer
	headers := 14 // Ethernet
	switch {
	case bits&schemas.ProtoIP == 0:
		eth.EthernetType = etherTypeLocal
		ls = []gopacket.SerializableLayer{eth, gopacket.Payload(make([]byte, max(want-14, 0)))}
	case dport == schemas.NoPort || (ip.Protocol != layers.IPProtocolTCP && ip.Protocol != layers.IPProtocolUDP):
		// Not a transport this reconstruction writes a header for, or a
		// later fragment whose header went with the first.
		eth.EthernetType = layers.EthernetTypeIPv4
		if dport == schemas.NoPort && (ip.Protocol == layers.IPProtocolTCP || ip.Protocol == layers.IPProtocolUDP) {
			ip.FragOffset = laterFragOffset
		}
		payloadLen = min(payloadLen, 0xffff-20)
		headers += 20
		ls = []gopacket.SerializableLayer{eth, ip, gopacket.Payload(make([]byte, payloadLen))}
	default:
		eth.EthernetType = layers.EthernetTypeIPv4
		sport := uint16(pcapSrcPort)
		if bits&schemas.ProtoDNS != 0 && dport != 53 && dport != 5353 {
			sport = 53 // a reply: the DNS bit came from the source port
		}
		var tl gopacket.SerializableLayer
		hdr := 8
		if ip.Protocol == layers.IPProtocolTCP {
			t := tcpHeader(w.TCPFlags[i], w.TCPWindow[i], int(w.TCPOptLen[i]))
			t.SrcPort, t.DstPort = layers.TCPPort(sport), layers.TCPPort(dport)
			if err := t.SetNetworkLayerForChecksum(ip); err != nil {
				return nil, 0, err
			}
			tl, hdr = t, 20+int(w.TCPOptLen[i])/4*4
		} else {
			u := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
			if err := u.SetNetworkLayerForChecksum(ip); err != nil {
				return nil, 0, err
			}
			tl = u
		}
		payloadLen = min(payloadLen, 0xffff-20-hdr)
		headers += 20 + hdr
		ls = []gopacket.SerializableLayer{eth, ip, tl, gopacket.Payload(appPayload(bits, payloadLen))}
	}
	if err := gopacket.SerializeLayers(rc.buf, opts, ls...); err != nil {
		return nil, 0, err
	}
	full := rc.buf.Bytes()
	switch {
	case want >= len(full):
		// Link-layer trailer padding up to the recorded frame length; the IP
		// length stays that of the headers and payload.
		data = append(append(make([]byte, 0, min(want, pcapSnapLen)), full...), make([]byte, min(want, pcapSnapLen)-len(full))...)
		return data, want, nil
	case want >= headers:
		return append([]byte(nil), full[:want]...), want, nil
	}
	return append([]byte(nil), full[:headers]...), headers, nil
}

func tcpHeader(flags, win int32, optLen int) *layers.TCP {
	t := &layers.TCP{
		FIN: flags&(1<<0) != 0, SYN: flags&(1<<1) != 0, RST: flags&(1<<2) != 0, PSH: flags&(1<<3) != 0,
		ACK: flags&(1<<4) != 0, URG: flags&(1<<5) != 0, ECE: flags&(1<<6) != 0, CWR: flags&(1<<7) != 0,
		NS: flags&(1<<8) != 0, Window: uint16(win),
	}
	// No-operation options keep the header length without claiming options
	// (MSS, timestamps) whose values are not known.
	for range optLen / 4 * 4 {
		t.Options = append(t.Options, layers.TCPOption{OptionType: layers.TCPOptionKindNop})
	}
	return t
}

// appPayload starts a zero payload with the bytes that make the decoder set
// the application bit bits names; DNS comes from the port, other from the zeros.
func appPayload(bits uint8, n int) []byte {
	p := make([]byte, n)
	switch {
	case bits&schemas.ProtoTLS != 0 && n >= 5:
		// An application-data record header: type 23, TLS 1.2.
		p[0], p[1], p[2] = 23, 3, 3
		binary.BigEndian.PutUint16(p[3:5], uint16(min(n-5, 1<<14)))
	case bits&schemas.ProtoHTTP != 0 && n >= 4:
		copy(p, "GET ")
	}
	return p
}

func hw(m schemas.MAC) net.HardwareAddr { return net.HardwareAddr(m[:]) }
