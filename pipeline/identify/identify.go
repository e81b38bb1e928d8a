// Package identify names the devices in a capture with a trained model:
// the library call behind `homemole predict`, and what an online detector
// runs on a live stream's packets.
package identify

import (
	"context"
	"fmt"
	"sort"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
)

// Host is one sender on the home side of the capture and the device the
// model takes it for.
type Host struct {
	// Host is the home-side MAC of a LAN capture's host, or "wan" for the
	// whole of a capture beyond the gateway (NAPT, VPN), where addresses no
	// longer tell devices apart.
	Host    string `json:"host"`
	Packets int    `json:"packets"`
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
		h := Host{Host: host, Packets: t.Packets, Device: meta.Labels[best], Confidence: conf, Score: score, Share: share, Votes: map[string]int{}}
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
