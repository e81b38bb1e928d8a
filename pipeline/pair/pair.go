// Package pair pairs the packets of a WAN capture with the LAN packets they
// came from, so that labels, which exist only on the LAN side, can follow
// traffic through a gateway doing NAPT or tunnelling everything through a
// VPN.
//
// NAPT rewrites the LAN address and port but leaves most of a packet as it
// was: IP length and ID, protocol, the remote end, TCP sequence numbers and
// flags. Those form a signature; among LAN packets with the same signature
// within a small time window the pairing prefers the one whose LAN endpoint
// agrees with the port mapping learned so far, then the nearest in time.
//
// A VPN hides all of that: what remains is the direction, the time and the
// outer size. The HomeMole paper pairs a post-VPN packet at time t with a
// smaller pre-VPN packet in [t-20 ms, t) (outbound) or (t, t+20 ms]
// (inbound); MethodWindow does that. MethodExact does better: the cipher's
// size function (gateway.PayloadSize) predicts the outer size exactly (the
// cipher is detected when not given), each LAN packet is used once, and
// tunnel packets are taken in the order they were sent (OpenVPN's clear
// packet id under AES-GCM, else a counting outer IP ID, else capture
// order), each with the earliest unused LAN packet that fits: a tunnel
// encrypts first come, first served.
package pair

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/schemas"
)

// Method is how VPN packets are paired.
type Method string

const (
	// MethodExact predicts the outer size with the cipher's size function
	// and assigns one-to-one in order.
	MethodExact Method = "exact"
	// MethodWindow is the HomeMole paper's rule: the nearest smaller LAN
	// packet of the same direction within the window, not one-to-one.
	MethodWindow Method = "window"
)

// Config says how to pair.
type Config struct {
	Mode gateway.Mode
	// Home places LAN packets (direction, and which far ends are local).
	Home features.HomeConfig
	// Cipher is the VPN cipher; empty detects it from the captures.
	Cipher gateway.Cipher
	// Method for VPN; empty is MethodExact.
	Method Method
	// Window bounds the time between a WAN packet and its LAN packet:
	// default 5 ms for NAPT and 20 ms for VPN.
	Window time.Duration
	// VPNPort is the VPN server's UDP port, which tells tunnel packets and
	// their direction apart; zero finds it in the WAN capture (see
	// detectVPNPort).
	VPNPort uint16
	// DelayTolerance is how much the tunnel's delay may change from one
	// packet to the next of a direction before an earlier fitting LAN
	// packet is passed over as lost (default 10 ms: the real lab's
	// OpenVPN, a single thread, held one packet 2.3 ms while it decrypted
	// another, and 2 ms then swapped two packets of one size).
	DelayTolerance time.Duration
	// TimeOrder pairs VPN packets in capture order even when the tunnel
	// shows the order they were sent in (see sendOrder), to measure what
	// that order is worth.
	TimeOrder bool
	// WANName names the WAN capture in errors (its file); empty is "the
	// WAN capture".
	WANName string

	windowDefault bool // Window was left zero
}

// Result is one LAN index per WAN packet (-1: unpaired) and counts.
type Result struct {
	Pairs []int64
	// Paired counts WAN packets with a LAN packet.
	Paired int
	// LANCrossing counts LAN packets that cross the gateway; LANUnpaired
	// those of them no WAN packet was paired with.
	LANCrossing, LANUnpaired int
	// WANOther counts WAN packets that are not of the gateway's traffic
	// (not IP, or not the tunnel); they stay unpaired.
	WANOther int
	// Cipher is the cipher used (configured or detected) under VPN.
	Cipher gateway.Cipher
	// WANAddr is the gateway's public address as found under NAPT.
	WANAddr netip.Addr
	// VPNPort is the VPN server's port used under VPN, configured or
	// detected; VPNTCP says the tunnel runs over TCP.
	VPNPort uint16
	VPNTCP  bool
	// Skipped counts frames of either capture that could not be decoded.
	Skipped int
}

// Rate is the share of WAN packets that were paired.
func (r Result) Rate() float64 {
	if len(r.Pairs) == 0 {
		return 0
	}
	return float64(r.Paired) / float64(len(r.Pairs))
}

type lanPkt struct {
	idx int64
	ts  int64
	out bool
	h   gateway.Header
}

type wanPkt struct {
	idx int64
	ts  int64
	h   gateway.Header
	// pid is the UDP payload's bytes 4 to 8: OpenVPN's packet id when
	// the cipher is an AEAD one, which sends it in the clear.
	pid    uint32
	hasPID bool
	// wg says what a WireGuard header would: whether the payload is a
	// transport data message, and its counter.
	wg wgHead
	// tcp is a TCP segment's payload (VPN pairing only), nil when empty
	// or not kept.
	tcp []byte
	// noBytes: the packet is a record without payload bytes (from an
	// agent), not a frame of a capture; plen is then its transport
	// payload's length and tunnel what its agent told of the records of
	// a tunnel over TCP in it.
	noBytes bool
	plen    int
	tunnel  schemas.TunnelRecords
}

// wgHead is what the clear header of a WireGuard message says. known is
// false where the payload bytes were not seen (records from an agent).
type wgHead struct {
	known, data bool
	ctr         uint64
}

// wireGuardHead reads a UDP payload as a WireGuard message.
func wireGuardHead(b []byte) wgHead {
	h := wgHead{known: len(b) >= gateway.WireGuardHeaderLen}
	if h.known && b[0] == gateway.WireGuardData && b[1]|b[2]|b[3] == 0 {
		h.data, h.ctr = true, binary.LittleEndian.Uint64(b[8:16])
	}
	return h
}

// Pair reads both captures whole and pairs them.
func Pair(ctx context.Context, lan, wan capture.Source, cfg Config) (Result, error) {
	var res Result
	cfg, err := cfg.withDefaults()
	if err != nil {
		return res, err
	}
	lans, skipped, err := readLAN(ctx, lan, cfg.Home)
	if err != nil {
		return res, err
	}
	wans, wskipped, nwan, err := readWAN(ctx, wan, cmp.Or(cfg.WANName, "the WAN capture"), cfg.Mode == gateway.VPN)
	if err != nil {
		return res, err
	}
	res.Skipped = skipped + wskipped
	res.LANCrossing = len(lans)
	res.Pairs = make([]int64, nwan)
	for i := range res.Pairs {
		res.Pairs[i] = -1
	}
	if cfg.Mode == gateway.NAPT {
		res.WANAddr = pairNAPT(lans, wans, cfg, &res)
	} else {
		if err := pairVPN(lans, wans, cfg, &res); err != nil {
			return res, err
		}
	}
	used := make(map[int64]bool, len(res.Pairs))
	for _, l := range res.Pairs {
		if l >= 0 {
			res.Paired++
			used[l] = true
		}
	}
	res.LANUnpaired = len(lans) - len(used)
	return res, nil
}

// readLAN keeps the LAN packets that cross the gateway, by the same rule as
// the emulator: placed outbound or inbound by the home's configuration,
// with the far end outside the LAN prefixes.
func readLAN(ctx context.Context, src capture.Source, home features.HomeConfig) ([]lanPkt, int, error) {
	dec := features.NewDecoder(home)
	var p schemas.Packet
	var out []lanPkt
	skipped := 0
	for n := 0; ; n++ {
		if n&1023 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, 0, err
			}
		}
		fr, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("read LAN capture: %w", err)
		}
		if err := dec.Decode(fr.LinkType, fr.Data, fr.CI, fr.Offset, &p); err != nil {
			if !errors.Is(err, features.ErrNotPacket) { // a beacon is no LAN packet to pair
				skipped++
			}
			continue
		}
		if p.Direction == schemas.DirLocal {
			continue
		}
		h, err := gateway.ParseHeader(fr.LinkType, fr.Data)
		if err != nil {
			skipped++
			continue
		}
		isOut := p.Direction == schemas.DirOutbound
		remote := h.Dst
		if !isOut {
			remote = h.Src
		}
		if inNets(home.LANNets, remote) {
			continue
		}
		out = append(out, lanPkt{idx: int64(fr.Offset), ts: fr.CI.Timestamp.UnixNano(), out: isOut, h: h})
	}
	slices.SortStableFunc(out, func(a, b lanPkt) int { return cmp.Compare(a.ts, b.ts) })
	return out, skipped, nil
}

// readWAN reads the WAN capture; with tcpData it keeps the payload of TCP
// segments, where an OpenVPN tunnel over TCP has its records.
func readWAN(ctx context.Context, src capture.Source, name string, tcpData bool) ([]wanPkt, int, int, error) {
	var out []wanPkt
	n, skipped := 0, 0
	for ; ; n++ {
		if n&1023 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, 0, 0, err
			}
		}
		fr, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, 0, fmt.Errorf("read WAN capture: %w", err)
		}
		if err := capture.WANInput(src, name); err != nil {
			return nil, 0, 0, err
		}
		h, err := gateway.ParseHeader(fr.LinkType, fr.Data)
		if err != nil {
			skipped++
			continue
		}
		w := wanPkt{idx: int64(fr.Offset), ts: fr.CI.Timestamp.UnixNano(), h: h}
		if at := h.IPStart + h.L4 + 8; h.Proto == gateway.ProtoUDP && !h.Later && len(fr.Data) >= at+8 {
			w.pid, w.hasPID = binary.BigEndian.Uint32(fr.Data[at+4:at+8]), true
			w.wg = wireGuardHead(fr.Data[at:])
		}
		if tcpData && h.Proto == gateway.ProtoTCP && !h.Later {
			w.tcp = tcpPayload(fr.Data[h.IPStart:], h)
		}
		out = append(out, w)
	}
	slices.SortStableFunc(out, func(a, b wanPkt) int { return cmp.Compare(a.ts, b.ts) })
	return out, skipped, n, nil
}

func inNets(nets []netip.Prefix, a netip.Addr) bool {
	for _, p := range nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Score compares pairs with the ground truth: correct counts WAN packets
// whose LAN index agrees (unpaired where the truth has none counts as
// agreeing), total the WAN packets of the truth.
func Score(pairs, truth []int64) (correct, total int) {
	for i, t := range truth {
		p := int64(-1)
		if i < len(pairs) {
			p = pairs[i]
		}
		if p == t {
			correct++
		}
	}
	return correct, len(truth)
}
