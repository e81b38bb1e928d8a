// Package defense applies traffic-analysis defences to a home's WAN view as
// the gateway emulator produced it: padding, constant-rate shaping and
// cover traffic, composed. The ground truth survives: every WAN packet
// still names its LAN packet, and what a defence adds names none (a dummy).
// Each defence is costed the way the home pays for it: extra bytes, extra
// packets, and how long each real packet waits.
package defense

import (
	"fmt"
	"strconv"
	"strings"
)

// MTU is the largest IP packet on the WAN link; pad:mtu pads to it.
const MTU = 1500

// Spec is a composition of defences, as parsed from "pad:mtu+cbr:20".
// Whatever order the spec names them in, they run in one order: cover
// traffic is added first (so it is shaped and padded like real traffic),
// then shaping decides when packets leave, then padding sets their sizes.
type Spec struct {
	// Pad rounds every IP packet's length up to a multiple of Pad bytes
	// (MTU: to the MTU); 0 pads nothing. Packets never grow past the MTU.
	Pad int
	// VPNPad pads what the tunnel carries to the MTU, so that every tunnel
	// packet has a full one's size; it needs the VPN view.
	VPNPad bool
	// CBR is the constant rate, packets per second per home, half of it
	// each way (see shape); 0 shapes nothing.
	CBR float64
	// STP is the rate of stochastic cover bursts, per minute per home,
	// each a replay of one of the home's own bursts at a random time.
	STP float64
	// Mimic names the device type whose bursts are added as cover.
	Mimic string
	text  string
}

// String is the spec as it was written, or "none".
func (s Spec) String() string {
	if s.text == "" {
		return "none"
	}
	return s.text
}

// IsZero reports whether the spec defends nothing.
func (s Spec) IsZero() bool {
	return s.Pad == 0 && !s.VPNPad && s.CBR == 0 && s.STP == 0 && s.Mimic == ""
}

// maxRate bounds cbr and stp: beyond it the dummy traffic of an hour-long
// capture would not fit in memory, and no home link carries it.
const maxRate = 100000

// ParseSpec parses defences joined by "+": pad:N (N bytes, 1..1500) or
// pad:mtu, cbr:RATE (packets/s), stp:RATE (cover bursts per minute),
// mimic:DEVICE, vpn-pad; "none" or "" is no defence. Each kind may appear
// once.
func ParseSpec(text string) (Spec, error) {
	s := Spec{text: strings.TrimSpace(text)}
	if s.text == "" || s.text == "none" {
		return Spec{}, nil
	}
	seen := map[string]bool{}
	for _, part := range strings.Split(s.text, "+") {
		part = strings.TrimSpace(part)
		kind, arg, hasArg := strings.Cut(part, ":")
		if seen[kind] {
			return Spec{}, fmt.Errorf("defence %q: %s appears twice", text, kind)
		}
		seen[kind] = true
		bad := func(want string) error {
			return fmt.Errorf("defence %q: %q: want %s", text, part, want)
		}
		switch kind {
		case "pad":
			if arg == "mtu" {
				s.Pad = MTU
				continue
			}
			n, err := strconv.Atoi(arg)
			if err != nil || n < 1 || n > MTU {
				return Spec{}, bad("pad:mtu or pad:N with N bytes from 1 to 1500")
			}
			s.Pad = n
		case "cbr", "stp":
			r, err := strconv.ParseFloat(arg, 64)
			if err != nil || !(r > 0) || r > maxRate {
				return Spec{}, bad(kind + ":RATE with RATE above 0 and at most 100000")
			}
			if kind == "cbr" {
				s.CBR = r
			} else {
				s.STP = r
			}
		case "mimic":
			if arg == "" || strings.ContainsAny(arg, "/\\") || arg == "." || arg == ".." {
				return Spec{}, bad("mimic:DEVICE, a device type such as mimic:Aria")
			}
			s.Mimic = arg
		case "vpn-pad":
			if hasArg {
				return Spec{}, bad("vpn-pad without a parameter")
			}
			s.VPNPad = true
		default:
			return Spec{}, bad("pad:N, pad:mtu, cbr:RATE, stp:RATE, mimic:DEVICE or vpn-pad, joined by +")
		}
	}
	return s, nil
}
