// Package identify names the devices in a capture with a trained model:
// the library call behind `homemole predict`, and what an online detector
// runs on a live stream's packets.
package identify

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/homecount"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
)

// Host is one sender on the home side of the capture and the device the
// model takes it for.
type Host struct {
	// Host is the home-side MAC of a LAN capture's host, or "wan" for the
	// whole of a capture beyond the gateway (NAPT, VPN), where addresses no
	// longer tell devices apart. A device behind a MAC-NAT Wi-Fi repeater
	// (Repeater) is "ADDR@MAC", its LAN IPv4 address (Addr) at the
	// repeater's MAC, or in an IPv6-only home the MAC its IPv6 address
	// names (see Packets).
	Host    string `json:"host"`
	Packets int    `json:"packets"`
	// Repeater is the MAC of the MAC-NAT repeater the host is behind, and
	// Addr the LAN IPv4 address that tells it from the repeater's other
	// devices (absent in an IPv6-only home, where Host is the MAC its
	// address names); both absent for a host of its own MAC.
	Repeater string `json:"repeater,omitempty"`
	Addr     string `json:"addr,omitempty"`
	// Device is the majority of its packets' labels, or train.Unknown
	// when the model's open-set rule finds the host unlike every trained
	// device; Likeliest is then the trained device it is nearest to.
	Device    string `json:"device"`
	Likeliest string `json:"likeliest,omitempty"`
	// Confidence is the host's score under the model's open-set rule
	// (train.Tally.Decide); Score says which.
	Confidence float64 `json:"confidence"`
	Score      string  `json:"score"`
	// Familiarity is the share of its packets of a kind (direction,
	// transport, frame length) the likeliest device's training windows
	// hold: the open-set rule's second test. Absent for a model saved
	// without that test.
	Familiarity *float64       `json:"familiarity,omitempty"`
	Share       float64        `json:"share"` // of its packets, the share labeled as the likeliest device
	Votes       map[string]int `json:"votes"`
	// Family is the named device's vendor family, when the model's
	// families (train.Meta.Families) hold it: the devices it cannot tell
	// apart. FamilyShare is the share of the host's packets labeled as one
	// of its members: how sure the model is of the family when it is
	// torn between the members.
	Family      string  `json:"family,omitempty"`
	FamilyShare float64 `json:"family_share,omitempty"`
}

// Result is what a capture held.
type Result struct {
	Packets int `json:"packets"`
	// Gateway is the home gateway's LAN-side MAC (given or inferred); its
	// packets are never a host of their own, since the gateway is no
	// device to name. GatewayPackets counts the ones left out so.
	Gateway        string `json:"gateway,omitempty"`
	GatewayPackets int    `json:"gateway_packets,omitempty"`
	// Repeaters are the MACs of the MAC-NAT Wi-Fi repeaters whose devices
	// are hosts of their own (Host.Repeater). A repeater is no host:
	// RepeaterPackets counts its packets that name no device behind it,
	// left out.
	Repeaters       []string `json:"repeaters,omitempty"`
	RepeaterPackets int      `json:"repeater_packets,omitempty"`
	// Threshold is the open-set threshold a host's confidence must reach
	// to be named; absent for a model saved without one.
	Threshold *float64 `json:"unknown_threshold,omitempty"`
	// FamiliarityThreshold is the familiarity a host must reach to be
	// named; absent for a model saved without that test.
	FamiliarityThreshold *float64 `json:"familiarity_threshold,omitempty"`
	Hosts                []Host   `json:"hosts"`
	// Labels are the predicted labels of every packet, in capture order.
	Labels []string `json:"-"`
}

// Packets labels packets (one capture session, in order) and sums up per
// host. With byHost, packets are grouped by their home-side MAC first, as
// the ind windows the model was trained on hold one device's packets;
// otherwise the stream is labeled as one, as noise windows are. Packets
// whose home side is gateway (when not zero) are left out.
//
// Behind a MAC-NAT Wi-Fi repeater every device's frames carry the
// repeater's MAC. Where the host counter finds a MAC to be a repeater's
// (homecount.ReadRelayed: it sends from addresses of one /24 in turn), a
// host is a device behind it: what it sent, by the LAN IPv4 address it
// names itself by (its source, an ARP's sender, a DHCP request's wish),
// and what came in to it, by its destination. The repeater's own packets,
// those that name no device behind it, are left out (RepeaterPackets), as
// the gateway's are: the repeater is no device to name, and what is left
// under its MAC mixes its own frames with its devices' that no address
// tells apart, so no one device's. That includes IPv6: a dual-stack
// device behind a repeater is its IPv4 address's host, and its IPv6
// packets are the repeater's, left out. In an IPv6-only home, a device
// behind one whose address names its MAC (modified EUI-64) is that MAC's
// host; a repeater none of whose devices can be told apart stays one host
// row of its MAC, as before it was found.
func Packets(m train.Model, meta train.Meta, pkts []schemas.Packet, byHost bool, gateway schemas.MAC) (*Result, error) {
	res := &Result{Packets: len(pkts)}
	if gateway != (schemas.MAC{}) {
		res.Gateway = gateway.String()
	}
	var fam *train.Familiarity
	if meta.Unknown != nil {
		res.Threshold = &meta.Unknown.Threshold
		if fam = meta.Unknown.Familiarity; fam != nil {
			res.FamiliarityThreshold = &fam.Threshold
		}
	}
	var hosts []string
	idx := map[string]int16{}
	behind := map[string]Host{} // the hosts behind a repeater, by host
	var relayed *homecount.Relayed
	if byHost {
		relayed = homecount.ReadRelayed(pkts)
	}
	kept := pkts[:0:0]
	var hostOf []int16
	for i := range pkts {
		h := "wan"
		if byHost {
			h = homeSide(&pkts[i])
			if h == res.Gateway {
				res.GatewayPackets++
				continue
			}
			if b, ok := relayedHost(relayed, pkts, i); !ok {
				res.RepeaterPackets++
				continue
			} else if b.Host != "" {
				h = b.Host
				behind[h] = b
			}
		}
		k, ok := idx[h]
		if !ok {
			k = int16(len(hosts))
			idx[h] = k
			hosts = append(hosts, h)
		}
		kept = append(kept, pkts[i])
		hostOf = append(hostOf, k)
	}
	// Cut reuses the windower's code, so windows (and their intervals)
	// are exactly what training saw; the host index stands in for the
	// label to group by.
	spec := window.Spec{Kind: schemas.KindInd, Size: meta.Window, Labels: hosts}
	ws := window.Cut(spec, "predict", "predict", "predict", kept, hostOf)
	preds, lp, err := train.Label(m, ws)
	if err != nil {
		return nil, fmt.Errorf("label the capture's windows: %w", err)
	}
	family := evaluate.FamilyOf(meta.Families)
	tallies := map[string]*train.Tally{}
	for i, w := range ws {
		host := hosts[w.Label[0]]
		t := tallies[host]
		if t == nil {
			t = &train.Tally{}
			tallies[host] = t
		}
		for k := range w.Len {
			p := int(preds[i][k])
			if p < 0 || p >= len(meta.Labels) {
				return nil, fmt.Errorf("the model predicted class %d, its vocabulary has %d devices", p, len(meta.Labels))
			}
			t.Add(p, train.Row(lp, ws, i, k), train.PacketKind(w, k))
		}
	}
	for host, t := range tallies {
		best, share, conf, score := t.Decide()
		if meta.Unknown != nil && meta.Unknown.Score != score {
			return nil, fmt.Errorf("the model's unknown-device threshold is a %s, but the model gives a %s: train it again", meta.Unknown.Score, score)
		}
		b := behind[host]
		h := Host{Host: host, Repeater: b.Repeater, Addr: b.Addr, Packets: t.Packets, Device: meta.Labels[best], Confidence: conf, Score: score, Share: share, Votes: map[string]int{}}
		for c, n := range t.Votes {
			h.Votes[meta.Labels[c]] = n
		}
		familiar := t.Familiarity(fam, best)
		if fam != nil {
			h.Familiarity = &familiar
		}
		if meta.Unknown.IsUnknown(conf, familiar) {
			h.Device, h.Likeliest = train.Unknown, meta.Labels[best]
		} else if _, ok := family[h.Device]; ok {
			// Scored as experiment scores a test capture's family.
			v := evaluate.SessionVote{Predicted: h.Device, Packets: h.Packets, Votes: h.Votes}
			h.Family, h.FamilyShare = v.Family(family)
		}
		res.Hosts = append(res.Hosts, h)
	}
	for _, h := range res.Hosts {
		if h.Repeater != "" && !slices.Contains(res.Repeaters, h.Repeater) {
			res.Repeaters = append(res.Repeaters, h.Repeater)
		}
	}
	slices.Sort(res.Repeaters)
	sort.Slice(res.Hosts, func(i, j int) bool {
		if res.Hosts[i].Packets != res.Hosts[j].Packets {
			return res.Hosts[i].Packets > res.Hosts[j].Packets
		}
		return res.Hosts[i].Host < res.Hosts[j].Host
	})
	return res, nil
}

// homeSide is the MAC of the packet's end inside the home: the sender of
// outbound and local packets, the receiver of inbound ones.
func homeSide(p *schemas.Packet) string {
	if p.Direction == 0 {
		return p.DstMAC.String()
	}
	return p.SrcMAC.String()
}

// relayedHost is the host behind a repeater pkts[i] is of, when its home
// side is a repeater's MAC (Host.Host, Repeater and Addr set), and false
// when it is the repeater's own; the zero Host for a packet of no
// repeater.
func relayedHost(r *homecount.Relayed, pkts []schemas.Packet, i int) (Host, bool) {
	p := &pkts[i]
	rep, dev := p.SrcMAC, r.Hosts[i]
	if p.Direction == schemas.DirInbound {
		rep = p.DstMAC
		if !r.IsRelay(rep) {
			return Host{}, true
		}
		var ok bool
		if dev, ok = r.Receiver(p); !ok {
			return Host{}, false
		}
	} else if !r.IsRelay(rep) {
		return Host{}, true
	} else if dev == rep {
		return Host{}, false
	}
	h := Host{Host: dev.String(), Repeater: rep.String()}
	if a, ok := homecount.RelayAddr(dev); ok {
		h.Addr = a.String()
		h.Host = h.Addr + "@" + h.Repeater
	}
	return h, true
}

// File reads a capture and labels it (see Packets).
func File(ctx context.Context, m train.Model, meta train.Meta, path string, home features.HomeConfig, byHost bool) (*Result, error) {
	pkts, err := capture.ReadAll(ctx, path, home)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(pkts) == 0 {
		return nil, fmt.Errorf("%s holds no packet the decoder can read", path)
	}
	return Packets(m, meta, pkts, byHost, home.GatewayMAC)
}
