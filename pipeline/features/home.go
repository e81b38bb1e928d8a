package features

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/schemas"
)

// HomeConfig is what the decoder needs to know about a home to tell a
// packet's direction. Nothing is guessed: a packet the configuration cannot
// place is DirLocal.
type HomeConfig struct {
	// LANNets are the home's own prefixes.
	LANNets []netip.Prefix
	// GatewayMAC is the gateway's LAN-side MAC; zero when unknown.
	GatewayMAC schemas.MAC
}

// HomeFromCampaign takes the direction settings of a campaign home.
func HomeFromCampaign(h *campaign.Home) (HomeConfig, error) {
	nets, err := h.LANPrefixes()
	if err != nil {
		return HomeConfig{}, fmt.Errorf("home %s: %w", h.Name, err)
	}
	return HomeConfig{LANNets: nets, GatewayMAC: h.GatewayMAC()}, nil
}

// PrivateHome is the home of a capture taken where nothing is known of the
// network: the private ranges (campaign.DefaultLANNets) are the LAN, so a
// device's own capture decodes with every public address beyond it.
func PrivateHome() HomeConfig {
	var h HomeConfig
	for _, s := range campaign.DefaultLANNets {
		h.LANNets = append(h.LANNets, netip.MustParsePrefix(s))
	}
	return h
}

func (h HomeConfig) clone() HomeConfig {
	h.LANNets = slices.Clone(h.LANNets)
	return h
}

// Direction decides the direction of an IP packet, in this order:
//
//  1. A packet to a multicast or broadcast address (IP or MAC) is DirLocal:
//     the gateway does not forward group traffic out of the home, so an
//     SSDP NOTIFY or mDNS query from a LAN host stays local.
//  2. With a gateway MAC configured, a frame sent to it is DirOutbound and a
//     frame from it DirInbound (this includes the gateway's own unicast
//     services such as its DNS resolver).
//  3. By the LAN prefixes: source inside and destination outside is
//     DirOutbound, the reverse DirInbound.
//  4. Everything else (LAN to LAN, outside to outside, no configuration) is
//     DirLocal.
//
// Frames that are not IP never reach this: the decoder marks them DirLocal.
func (h HomeConfig) Direction(src, dst netip.Addr, srcMAC, dstMAC schemas.MAC) int8 {
	return h.direction(src, dst, srcMAC, dstMAC)
}

func (h *HomeConfig) direction(src, dst netip.Addr, srcMAC, dstMAC schemas.MAC) int8 {
	if dstMAC[0]&1 != 0 || dst.IsMulticast() || dst == limitedBroadcast {
		return schemas.DirLocal
	}
	if !h.GatewayMAC.IsZero() {
		switch h.GatewayMAC {
		case dstMAC:
			return schemas.DirOutbound
		case srcMAC:
			return schemas.DirInbound
		}
	}
	srcIn, dstIn := h.inLAN(src), h.inLAN(dst)
	switch {
	case srcIn && !dstIn:
		return schemas.DirOutbound
	case dstIn && !srcIn:
		return schemas.DirInbound
	}
	return schemas.DirLocal
}

var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

func (h *HomeConfig) inLAN(a netip.Addr) bool {
	for _, p := range h.LANNets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func addr4(b []byte) netip.Addr { return netip.AddrFrom4([4]byte(b)) }

func addr16(b []byte) netip.Addr { return netip.AddrFrom16([16]byte(b)) }
