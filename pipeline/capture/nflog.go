package capture

import (
	"encoding/binary"

	"github.com/homemole/homemole/pipeline/features"
)

// unwrapNFLOG gives a Linux NFLOG record (tcpdump -i nflog:N) as the raw IP
// packet it logged, as a tun device's capture would hold it: the record's
// netlink attributes (its prefix, interface indexes, the incoming frame's
// link header) are no part of the packet, and their length varies with the
// rule, so a frame length that counted them would say more about the rule
// than about the device. The link header NFLOG keeps for a packet that came
// in is not made into an Ethernet frame: a packet sent out has none, and
// half of a conversation with MACs would name hosts by two keys.
//
// A record that holds no IP packet (a prefix alone, a bridge hook's ARP) or
// that is malformed is left as it is, for the decoder to count or refuse
// with the record's own error.
func unwrapNFLOG(f *Frame) {
	if f.LinkType != features.LinkTypeNFLOG {
		return
	}
	h, err := features.ParseNFLOG(f.Data)
	if err != nil {
		return
	}
	ip := f.Data[h.At : h.At+h.Len]
	var wire int
	switch h.EtherType {
	case features.EtherTypeIPv4:
		f.LinkType = features.LinkTypeIPv4
		if len(ip) >= 4 {
			wire = int(binary.BigEndian.Uint16(ip[2:4]))
		}
	case features.EtherTypeIPv6:
		f.LinkType = features.LinkTypeIPv6
		if len(ip) >= 6 {
			wire = 40 + int(binary.BigEndian.Uint16(ip[4:6]))
		}
	default:
		return
	}
	// The packet's own length says how long it was where a snap length
	// (tcpdump -s, --nflog-size) cut the copy short.
	f.Data, f.CI.CaptureLength, f.CI.Length = ip, len(ip), max(len(ip), wire)
}
