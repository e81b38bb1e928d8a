// Package identify names the devices in a capture with a trained model:
// the library call behind `homemole predict`, and what an online detector
// runs on a live stream's packets.
package identify

import (
	"context"
	"fmt"
	"sort"

	"github.com/homemole/homemole/pipeline/capture"
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
	Host    string         `json:"host"`
	Packets int            `json:"packets"`
	Device  string         `json:"device"` // the majority of its packets' labels
	Share   float64        `json:"share"`  // of its packets, the share labeled Device
	Votes   map[string]int `json:"votes"`
}

// Result is what a capture held.
type Result struct {
	Packets int    `json:"packets"`
	Hosts   []Host `json:"hosts"`
	// Labels are the predicted labels of every packet, in capture order.
	Labels []string `json:"-"`
}

// Packets labels packets (one capture session, in order) and sums up per
// host. With byHost, packets are grouped by their home-side MAC first, as
// the ind windows the model was trained on hold one device's packets;
// otherwise the stream is labeled as one, as noise windows are.
func Packets(m train.Model, meta train.Meta, pkts []schemas.Packet, byHost bool) (*Result, error) {
	var hosts []string
	idx := map[string]int16{}
	hostOf := make([]int16, len(pkts))
	for i := range pkts {
		h := "wan"
		if byHost {
			h = homeSide(&pkts[i])
		}
		k, ok := idx[h]
		if !ok {
			k = int16(len(hosts))
			idx[h] = k
			hosts = append(hosts, h)
		}
		hostOf[i] = k
	}
	// Cut reuses the windower's code, so windows (and their intervals)
	// are exactly what training saw; the host index stands in for the
	// label to group by.
	spec := window.Spec{Kind: schemas.KindInd, Size: meta.Window, Labels: hosts}
	ws := window.Cut(spec, "predict", "predict", "predict", pkts, hostOf)
	preds, err := m.Predict(ws)
	if err != nil {
		return nil, fmt.Errorf("label the capture's windows: %w", err)
	}
	res := &Result{Packets: len(pkts)}
	byName := map[string]*Host{}
	for i, w := range ws {
		host := hosts[w.Label[0]]
		h := byName[host]
		if h == nil {
			h = &Host{Host: host, Votes: map[string]int{}}
			byName[host] = h
		}
		for k := range w.Len {
			p := int(preds[i][k])
			if p < 0 || p >= len(meta.Labels) {
				return nil, fmt.Errorf("the model predicted class %d, its vocabulary has %d devices", p, len(meta.Labels))
			}
			h.Votes[meta.Labels[p]]++
			h.Packets++
		}
	}
	for _, h := range byName {
		best, n := "", -1
		for d, c := range h.Votes {
			if c > n || c == n && d < best {
				best, n = d, c
			}
		}
		h.Device, h.Share = best, float64(n)/float64(h.Packets)
		res.Hosts = append(res.Hosts, *h)
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
	var pkts []schemas.Packet
	if _, err := capture.ReadFile(ctx, path, home, func(p *schemas.Packet) error {
		pkts = append(pkts, *p)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(pkts) == 0 {
		return nil, fmt.Errorf("%s holds no packet the decoder can read", path)
	}
	return Packets(m, meta, pkts, byHost)
}
