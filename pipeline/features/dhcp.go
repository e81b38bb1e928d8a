package features

import (
	"bytes"

	"github.com/homemole/homemole/schemas"
)

// DHCP client ports and the options a fingerprint is made of.
const (
	dhcpClientPort = 68
	dhcpServerPort = 67

	dhcpOptHostName  = 12
	dhcpOptRequested = 50
	dhcpOptParams    = 55
	dhcpOptVendor    = 60
)

// dhcpMagic opens a DHCP message's options (RFC 2131, after the 236 bytes
// of the BOOTP header).
var dhcpMagic = []byte{99, 130, 83, 99}

const (
	fnvOffset = 2166136261
	fnvPrime  = 16777619
)

// fnv32 continues a 32-bit FNV-1a hash over b: an option split over
// several instances (RFC 3396) hashes as their concatenation.
func fnv32(h uint32, b []byte) uint32 {
	for _, c := range b {
		h ^= uint32(c)
		h *= fnvPrime
	}
	return h
}

// DHCPv4Options calls fn with each option of a DHCPv4 message (a UDP
// payload of port 67 or 68), in order: its code and where its value lies
// in msg, from at, n bytes (an option split over several instances comes
// as each). It says whether msg is a DHCP message (the BOOTP header and
// the DHCP magic), and whether its options came whole: an option that runs
// past the end (a snap length, a corrupt length) ends the walk there.
// Pad options are skipped; End ends the walk.
func DHCPv4Options(msg []byte, fn func(code byte, at, n int)) (dhcp, whole bool) {
	const optionsAt = 240
	if len(msg) < optionsAt || !bytes.Equal(msg[236:optionsAt], dhcpMagic) {
		return false, false
	}
	for i := optionsAt; i < len(msg); {
		code := msg[i]
		if code == 0 {
			i++
			continue
		}
		if code == 255 {
			break
		}
		if i+1 >= len(msg) || i+2+int(msg[i+1]) > len(msg) {
			return true, false
		}
		fn(code, i+2, int(msg[i+1]))
		i += 2 + int(msg[i+1])
	}
	return true, true
}

// dhcpClient reads the fingerprint of a DHCPv4 client message (a UDP
// payload from port 68 to 67): the hashes of options 55, 60 and 12 (the
// host name normalized, NormalizeHostName, of at most 255 bytes). A
// payload that is not a BOOTREQUEST with the DHCP magic, or whose options
// run past its end, gives the zero fingerprint: a message cut short may
// have lost any option.
func dhcpClient(b []byte) schemas.DHCPClient {
	if len(b) == 0 || b[0] != 1 {
		return schemas.DHCPClient{}
	}
	var o dhcpOptions
	dhcp, whole := DHCPv4Options(b, func(code byte, at, n int) {
		v := b[at : at+n]
		switch code {
		case dhcpOptParams:
			o.params.add(v)
		case dhcpOptVendor:
			o.vendor.add(v)
		case dhcpOptHostName:
			o.name = append(o.name, v[:min(len(v), maxHostName-len(o.name))]...)
		case dhcpOptRequested:
			if n == 4 && o.requested == [4]byte{} {
				o.requested = [4]byte(v)
			}
		}
	})
	if !dhcp || !whole {
		return schemas.DHCPClient{}
	}
	d := o.fingerprint()
	// A client renewing its lease names it in ciaddr and asks for none.
	if ciaddr := [4]byte(b[12:16]); d.Requested == [4]byte{} {
		d.Requested = ciaddr
	}
	return d
}

// maxHostName bounds the host name a fingerprint reads (a name split
// over several options included): one option's most.
const maxHostName = 255

// dhcpOptions gathers a fingerprint's options as a message is read.
type dhcpOptions struct {
	params, vendor hashedOption
	name           []byte
	requested      [4]byte // DHCPv4's option 50, its first
}

// hashedOption is an option's bytes hashed as they come: an option split
// over several instances (RFC 3396) hashes as their concatenation.
type hashedOption struct {
	h    uint32
	seen bool
}

func (x *hashedOption) add(v []byte) {
	if !x.seen {
		x.h, x.seen = fnvOffset, true
	}
	x.h = fnv32(x.h, v)
}

func (x hashedOption) value() uint32 {
	if !x.seen {
		return 0
	}
	return nonZero(x.h)
}

func (o *dhcpOptions) fingerprint() schemas.DHCPClient {
	d := schemas.DHCPClient{Params: o.params.value(), Vendor: o.vendor.value(), Requested: o.requested}
	if n := normalizeHostName(o.name); len(n) > 0 {
		d.Name = nonZero(fnv32(fnvOffset, n))
	}
	return d
}

// DHCPv6 client ports, and the options of its fingerprint (RFC 8415; the
// client FQDN, RFC 4704).
const (
	dhcp6ClientPort = 546
	dhcp6ServerPort = 547

	dhcp6OptORO    = 6
	dhcp6OptVendor = 16
	dhcp6OptFQDN   = 39
)

// dhcp6Client reads the fingerprint of a DHCPv6 client message (a UDP
// payload from port 546 to 547: Solicit, Request, Confirm, Renew, Rebind,
// Release, Decline, Information-request; never a relay's or a server's):
// its option request option as Params, its vendor class as Vendor, and the
// first label of its client FQDN, normalized, as Name, so a unit names
// itself alike over IPv4 and IPv6. Options that run past the payload give
// the zero fingerprint, as dhcpClient's.
func dhcp6Client(b []byte) schemas.DHCPClient {
	if len(b) < 4 {
		return schemas.DHCPClient{}
	}
	switch b[0] {
	case 1, 3, 4, 5, 6, 8, 9, 11:
	default:
		return schemas.DHCPClient{}
	}
	var o dhcpOptions
	for i := 4; i < len(b); {
		if i+4 > len(b) {
			return schemas.DHCPClient{}
		}
		code, l := int(b[i])<<8|int(b[i+1]), int(b[i+2])<<8|int(b[i+3])
		if i+4+l > len(b) {
			return schemas.DHCPClient{}
		}
		v := b[i+4 : i+4+l]
		switch code {
		case dhcp6OptORO:
			o.params.add(v)
		case dhcp6OptVendor:
			o.vendor.add(v)
		case dhcp6OptFQDN:
			// A flags byte, then the name in DNS labels: the first is
			// the host's.
			if len(v) >= 2 && len(o.name) == 0 {
				if n := int(v[1]); n > 0 && 2+n <= len(v) {
					o.name = append(o.name, v[2:2+n]...)
				}
			}
		}
		i += 4 + l
	}
	return o.fingerprint()
}

// nonZero keeps 0 free to mean "absent".
func nonZero(h uint32) uint32 { return max(h, 1) }

// NormalizeHostName is the part of a DHCP host name that every unit of a
// model sends: lower case, less a trailing suffix of 4 or more hexadecimal
// digits with a decimal digit among them (what firmware derives from the
// unit's MAC or serial number: "ESP_07AEFB", "Lightify-7B5F6B",
// "GainSpanca9152", "KEQ0817541") and the separators before it. A model
// name ("DCH-S150", "HS110(EU)", "Philips-hue") is kept whole; a name that
// is all suffix leaves nothing, and tells no type.
func NormalizeHostName(name string) string {
	return string(normalizeHostName([]byte(name)))
}

// normalizeHostName is NormalizeHostName in place.
func normalizeHostName(b []byte) []byte {
	i, digits := len(b), 0
	for i > 0 && isHex(b[i-1]) {
		if b[i-1] <= '9' {
			digits++
		}
		i--
	}
	if len(b)-i >= 4 && digits > 0 {
		b = bytes.TrimRight(b[:i], "-_. ")
	}
	for j, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[j] = c + 'a' - 'A'
		}
	}
	return b
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
