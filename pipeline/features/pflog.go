package features

import "fmt"

// PFLOG is what a pf log header (struct pfloghdr) says of the packet
// behind it. A BSD gateway (OpenBSD, FreeBSD, pfSense, OPNsense, macOS)
// logs the packets its pf rules mark "log" to pflog0, and tcpdump -i
// pflog0 writes them under link type 117: the network packet without its
// link header, behind this header.
type PFLOG struct {
	// Len is the header's length: the packet starts at data[Len:].
	Len int
	// Family is the packet's address family (AF_INET 2; AF_INET6 24 on
	// OpenBSD, 28 on FreeBSD, 30 on macOS).
	Family uint8
	// IfName is the interface the rule saw the packet on (em0, igb1,
	// vtnet0), a slice of the header.
	IfName []byte
	// Out says the packet was logged leaving by IfName (pf's PF_OUT);
	// otherwise coming in, or the rule did not say.
	Out bool
}

// pfloghdr layout, the same on every BSD up to the direction: length(1)
// af(1) action(1) reason(1) ifname(16) ruleset(16) rulenr(4) subrulenr(4)
// uid(4) pid(4) rule_uid(4) rule_pid(4) dir(1), then padding (FreeBSD)
// or the rewritten addresses (OpenBSD). The length byte is the header
// without its final padding; the packet starts at the length rounded up
// to 4 bytes (BPF_WORDALIGN), as libpcap and tcpdump read it.
const (
	// pflogMinLen is libpcap's smallest header: the oldest pf wrote no
	// uid, pid or direction.
	pflogMinLen = 45
	pflogIfName = 4
	pflogDir    = 60
	pflogOut    = 2 // PF_OUT
)

// ParsePFLOG reads a pf log header. A header shorter than the oldest pf
// wrote, or longer than the frame, is ErrMalformed.
func ParsePFLOG(data []byte) (PFLOG, error) {
	var h PFLOG
	if err := needHeader(LinkTypePFLOG, pflogMinLen, data); err != nil {
		return h, err
	}
	n := int(data[0])
	at := (n + 3) &^ 3
	if n < pflogMinLen || at > len(data) {
		return h, fmt.Errorf("%w: pflog header length %d with %d bytes captured", ErrMalformed, n, len(data))
	}
	name := data[pflogIfName : pflogIfName+16]
	for i, b := range name {
		if b == 0 {
			name = name[:i]
			break
		}
	}
	h.Len, h.Family, h.IfName = at, data[1], name
	h.Out = n > pflogDir && data[pflogDir] == pflogOut
	return h, nil
}
