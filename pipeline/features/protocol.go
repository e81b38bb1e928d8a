package features

import "github.com/homemole/homemole/schemas"

// The protocol bits follow one rule, applied in this order.
//
// IP is set for every IPv4 or IPv6 packet, TCP or UDP when that is the
// transport (a later fragment keeps the bit of the protocol it belongs to).
//
// At most one application bit follows, and only for a TCP segment or UDP
// datagram that carries payload, so a bare SYN or ACK is 1100000. The first
// that matches wins:
//
//   - DNS when either port is 53 or 5353 (mDNS), over TCP or UDP.
//   - TLS when a TCP payload starts with a TLS record header: content type
//     20..24, version 3.0..3.4, record length at most 2^14+2048. Only the
//     record header is checked: a segment that continues a record begun in
//     an earlier segment is not recognised and gets "other".
//   - HTTP when the payload starts with an HTTP/1 request method or
//     "HTTP/1.", over TCP or UDP. SSDP and other HTTP-over-UDP messages
//     (M-SEARCH, NOTIFY, their replies) therefore count as HTTP: the bit
//     names the message syntax, and the port tells SSDP apart.
//   - other for any remaining payload: NTP, DHCP, QUIC, MQTT in the clear,
//     proprietary binary protocols, TLS continuation segments.
//
// An IP packet of any other protocol (ICMP, IGMP, ESP, tunnels) is IP +
// other when it has payload. A frame that is not IP at all (ARP, EAPOL,
// LLC) is other alone: 0000001.
//
// So a UDP DNS query is 1010010, NTP 1010001, a TLS record 1101000, an HTTP
// request over TCP 1100100, an SSDP NOTIFY 1010100.
func appBit(tcp bool, sport, dport uint16, payload []byte) uint8 {
	switch {
	case isDNSPort(sport) || isDNSPort(dport):
		return schemas.ProtoDNS
	case tcp && isTLSRecord(payload):
		return schemas.ProtoTLS
	case isHTTP(payload):
		return schemas.ProtoHTTP
	}
	return schemas.ProtoOther
}

func isDNSPort(p uint16) bool { return p == 53 || p == 5353 }

// maxTLSRecord is the largest record length a TLS 1.0-1.3 peer may send
// (2^14 plaintext plus 2048 of expansion); a longer one is not a record header.
const maxTLSRecord = 1<<14 + 2048

func isTLSRecord(b []byte) bool {
	if len(b) < 5 {
		return false
	}
	contentType, major, minor := b[0], b[1], b[2]
	n := int(b[3])<<8 | int(b[4])
	return contentType >= 20 && contentType <= 24 && major == 3 && minor <= 4 && n <= maxTLSRecord
}

var httpPrefixes = [...]string{
	"GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE ",
	"NOTIFY ", "M-SEARCH ", "SUBSCRIBE ", "UNSUBSCRIBE ",
	"HTTP/1.",
}

func isHTTP(b []byte) bool {
	// Every prefix starts with an upper-case letter; most payloads are
	// rejected on the first byte.
	if len(b) < 4 || b[0] < 'C' || b[0] > 'U' {
		return false
	}
	for _, m := range httpPrefixes {
		if len(b) >= len(m) && string(b[:len(m)]) == m {
			return true
		}
	}
	return false
}
