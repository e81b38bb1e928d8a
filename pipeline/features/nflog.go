package features

import (
	"encoding/binary"
	"fmt"
	"time"
)

// NFLOG is where a Linux NFLOG record (the log of an iptables or nftables
// rule, as `tcpdump -i nflog:N` writes it) holds the packet it logged.
type NFLOG struct {
	// At and Len place the logged packet: data[At:At+Len]. It is the
	// network packet without a link header, as the hook saw it.
	At, Len int
	// EtherType names the packet: IPv4 or IPv6 for the IP families'
	// hooks, the packet header's hardware protocol for a bridge's.
	EtherType uint16
	// Group is the NFLOG group the rule logged to (--nflog-group).
	Group uint16
	// Stamp is when the packet arrived, where the kernel stamped it
	// (NFULA_TIMESTAMP: a packet that came in); zero otherwise.
	Stamp time.Time
	// Seq is the record's number in its group, where the listener asked
	// for numbers (NFULA_SEQ): a gap is records the kernel could not
	// deliver. HasSeq says whether it did.
	Seq    uint32
	HasSeq bool
	// InDev and OutDev are the interfaces (ifindex) the packet came in by
	// and goes out by, 0 for none: a packet the hook saw come in has an
	// InDev, one going out an OutDev, a forwarded one both.
	InDev, OutDev uint32
	// PhysInDev and PhysOutDev are the bridge ports a frame came in and
	// goes out by, where br_netfilter passed it to an IP hook (InDev and
	// OutDev are then the bridge), or, in a bridge-family record, the
	// ports; 0 where the record names none. An IP-family record with a
	// PhysOutDev is of a frame the bridge forwards.
	PhysInDev, PhysOutDev uint32
	// Family is the record's address family: 2 (IPv4) and 10 (IPv6) for
	// the IP hooks, 7 for a bridge's (nftables' bridge family).
	Family uint8
	// HwAt and HwLen place the link header of a packet that came in
	// (NFULA_HWHEADER), HwLen 0 where the record has none; HwType is that
	// interface's ARPHRD type (1 for Ethernet and Wi-Fi).
	HwAt, HwLen int
	HwType      uint16
	// L2At and L2Len place a bridge-family record's link header
	// (NFULA_L2HDR, kernel 4.17 and later): the frame's own Ethernet
	// header at every hook, the bridge's own frames going out included; 0
	// where the record has none.
	L2At, L2Len int
	// Hook is the netfilter hook that logged it (NFULA_PACKET_HDR; for the
	// IP families 0 PREROUTING, 1 INPUT, 2 FORWARD, 3 OUTPUT, 4
	// POSTROUTING), NFLOGNoHook where the record does not say.
	Hook uint8
}

// NFLOGNoHook is NFLOG.Hook for a record without a packet header.
const NFLOGNoHook = 0xff

// NFLOG record layout: address family(1) version(1) group(2, big-endian),
// then attributes of length(2) type(2), each padded to 4 bytes, in the
// byte order of the host that logged them: libpcap copies the netlink
// attributes as the kernel wrote them.
const (
	nflogHdrLen = 4
	nflogTLVLen = 4
	// nflogTypeMask takes netlink's nested and byte-order flags off a type.
	nflogTypeMask = 0x3fff
	// nflogMaxType bounds the attribute types a record may hold: the
	// kernel defines about twenty (NFULA_*); a type above the bound is
	// what the other byte order's bytes read as.
	nflogMaxType = 63

	nflogPacketHdr = 1  // NFULA_PACKET_HDR: hardware protocol(2, big-endian) hook(1) pad(1)
	nflogTimestamp = 3  // NFULA_TIMESTAMP: seconds(8) microseconds(8), big-endian
	nflogInDev     = 4  // NFULA_IFINDEX_INDEV (4, big-endian)
	nflogOutDev    = 5  // NFULA_IFINDEX_OUTDEV (4, big-endian)
	nflogPhysIn    = 6  // NFULA_IFINDEX_PHYSINDEV (4, big-endian)
	nflogPhysOut   = 7  // NFULA_IFINDEX_PHYSOUTDEV (4, big-endian)
	nflogPayload   = 9  // NFULA_PAYLOAD: the packet
	nflogSeq       = 12 // NFULA_SEQ: the record's number in its group (4, big-endian)
	nflogHwType    = 15 // NFULA_HWTYPE: ARPHRD type (2, big-endian)
	nflogHwHeader  = 16 // NFULA_HWHEADER: the link header as it came in
	nflogL2Header  = 21 // NFULA_L2HDR: a bridge-family record's link header, at every hook

	afInet  = 2
	afInet6 = 10
	// NFLOGFamilyBridge is a bridge-family record's address family
	// (NFPROTO_BRIDGE).
	NFLOGFamilyBridge = 7
)

// ParseNFLOG reads an NFLOG record's header and attributes. A record that
// holds no packet (a rule that logs only its prefix, --nflog-size 0) is
// ErrNotPacket; one whose attributes read in neither byte order, or whose
// packet is not what its family says, is ErrMalformed. A packet cut short
// by the capture's snap length is kept, cut.
func ParseNFLOG(data []byte) (NFLOG, error) {
	if err := needHeader(LinkTypeNFLOG, nflogHdrLen, data); err != nil {
		return NFLOG{}, err
	}
	if data[1] != 0 {
		return NFLOG{}, fmt.Errorf("%w: NFLOG version %d; only version 0 exists", ErrMalformed, data[1])
	}
	// Almost every logging host is little-endian; a big-endian router's
	// log reads in no other order, since an attribute type's bytes
	// swapped are above nflogMaxType.
	h, err := walkNFLOG(data, binary.LittleEndian)
	// walkNFLOG returns its errors unwrapped: asserted, not errors.As,
	// which would cost an allocation per record.
	if order, ok := err.(nflogOrderError); ok {
		hBE, errBE := walkNFLOG(data, binary.BigEndian)
		if _, ok := errBE.(nflogOrderError); !ok {
			return hBE, errBE
		}
		return h, order.error
	}
	return h, err
}

// nflogOrderError is an error of attributes that do not read in the byte
// order tried, which the other order may read.
type nflogOrderError struct{ error }

// walkNFLOG reads the record's attributes in byte order o.
func walkNFLOG(data []byte, o binary.ByteOrder) (NFLOG, error) {
	h := NFLOG{Group: binary.BigEndian.Uint16(data[2:4]), Hook: NFLOGNoHook, Family: data[0]}
	var hwProto uint16
	found := false
	for off := nflogHdrLen; off < len(data); {
		if len(data)-off < nflogTLVLen {
			return h, nflogOrderError{fmt.Errorf("%w: NFLOG attribute header cut short at byte %d of %d", ErrMalformed, off, len(data))}
		}
		n, typ := int(o.Uint16(data[off:])), o.Uint16(data[off+2:])&nflogTypeMask
		switch {
		case typ == 0 || typ > nflogMaxType:
			return h, nflogOrderError{fmt.Errorf("%w: NFLOG attribute of type %d at byte %d", ErrMalformed, typ, off)}
		case n < nflogTLVLen:
			return h, nflogOrderError{fmt.Errorf("%w: NFLOG attribute of length %d at byte %d", ErrMalformed, n, off)}
		case n > len(data)-off && typ != nflogPayload:
			return h, nflogOrderError{fmt.Errorf("%w: NFLOG attribute of %d bytes at byte %d of %d", ErrMalformed, n, off, len(data))}
		}
		switch typ {
		case nflogPacketHdr:
			if n >= nflogTLVLen+2 {
				hwProto = binary.BigEndian.Uint16(data[off+nflogTLVLen:])
			}
			if n >= nflogTLVLen+3 {
				h.Hook = data[off+nflogTLVLen+2]
			}
		case nflogTimestamp:
			if n >= nflogTLVLen+16 {
				v := data[off+nflogTLVLen:]
				h.Stamp = time.Unix(int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:])%1e6)*1e3)
			}
		case nflogSeq:
			if n >= nflogTLVLen+4 {
				h.Seq, h.HasSeq = binary.BigEndian.Uint32(data[off+nflogTLVLen:]), true
			}
		case nflogInDev, nflogOutDev, nflogPhysIn, nflogPhysOut:
			if n >= nflogTLVLen+4 {
				dev := binary.BigEndian.Uint32(data[off+nflogTLVLen:])
				switch typ {
				case nflogInDev:
					h.InDev = dev
				case nflogOutDev:
					h.OutDev = dev
				case nflogPhysIn:
					h.PhysInDev = dev
				default:
					h.PhysOutDev = dev
				}
			}
		case nflogHwType:
			if n >= nflogTLVLen+2 {
				h.HwType = binary.BigEndian.Uint16(data[off+nflogTLVLen:])
			}
		case nflogHwHeader:
			h.HwAt, h.HwLen = off+nflogTLVLen, n-nflogTLVLen
		case nflogL2Header:
			h.L2At, h.L2Len = off+nflogTLVLen, n-nflogTLVLen
		case nflogPayload:
			// The snap length may end the capture inside the packet.
			h.At, h.Len, found = off+nflogTLVLen, min(n, len(data)-off)-nflogTLVLen, true
		}
		off += (n + 3) &^ 3
	}
	if !found {
		return h, fmt.Errorf("%w: NFLOG record of group %d without the packet (a rule that logs its prefix only, or --nflog-size 0)", ErrNotPacket, h.Group)
	}
	pkt := data[h.At : h.At+h.Len]
	version := byte(0)
	if len(pkt) > 0 {
		version = pkt[0] >> 4
	}
	switch fam := data[0]; {
	case fam == afInet && version == 4, fam == afInet6 && version == 6:
		h.EtherType = EtherTypeIPv4
		if version == 6 {
			h.EtherType = EtherTypeIPv6
		}
	case fam == afInet || fam == afInet6:
		return h, fmt.Errorf("%w: NFLOG record of address family %d holds a packet of IP version %d", ErrMalformed, fam, version)
	case hwProto != 0:
		// A bridge's or an ARP hook's record: the packet is what the
		// frame's EtherType named.
		h.EtherType = hwProto
	case version == 4:
		h.EtherType = EtherTypeIPv4
	case version == 6:
		h.EtherType = EtherTypeIPv6
	default:
		h.EtherType = EtherTypeNotIP
	}
	return h, nil
}
