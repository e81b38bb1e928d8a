package scene

import (
	"bytes"
	"context"
	"fmt"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/seqprofile"
	"github.com/homemole/homemole/schemas"
)

// HomeSession is one capture session of a generated home as an observer
// beyond its NAPT gateway sees it, split by the LAN device each WAN packet
// came from (the gateway emulator's ground truth).
type HomeSession struct {
	File string
	// ByDevice holds each IoT device's WAN packets; Rest the non-IoT
	// devices' (the phone) and the gateway's own.
	ByDevice map[string][]seqprofile.Stamped
	Rest     []seqprofile.Stamped
}

// LoadHomeNAPT runs every LAN capture of a home (a generated one:
// homegen.Home's Files, Inventory and HomeConfig) through the NAPT gateway
// emulator and labels each WAN packet with the IoT device that sent or
// received its LAN original.
func LoadHomeNAPT(ctx context.Context, files []string, inventory []campaign.Device, hc features.HomeConfig) ([]HomeSession, error) {
	names := map[schemas.MAC]string{}
	for _, d := range inventory {
		if d.Category != campaign.CategoryIoT {
			continue
		}
		mac, err := schemas.ParseMAC(d.MAC)
		if err != nil {
			return nil, fmt.Errorf("generated home inventory: %w", err)
		}
		names[mac] = d.Name
	}
	var out []HomeSession
	for _, f := range files {
		var lanDev []string
		if _, err := capture.ReadFile(ctx, f, hc, func(p *schemas.Packet) error {
			name := names[p.SrcMAC]
			if name == "" {
				name = names[p.DstMAC]
			}
			for uint64(len(lanDev)) < p.Offset {
				lanDev = append(lanDev, "")
			}
			lanDev = append(lanDev, name)
			return nil
		}); err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		src, err := capture.OpenFile(f)
		if err != nil {
			return nil, err
		}
		var wan, truth bytes.Buffer
		_, err = gateway.Emulate(ctx, src, hc, gateway.DefaultConfig(), &wan, &truth)
		src.Close()
		if err != nil {
			return nil, fmt.Errorf("emulate NAPT for %s: %w", f, err)
		}
		lanOf, err := gateway.ReadTruth(&truth, f+" (ground truth)")
		if err != nil {
			return nil, fmt.Errorf("ground truth of %s: %w", f, err)
		}
		wsrc, err := capture.NewReader(bytes.NewReader(wan.Bytes()), f+" (WAN)")
		if err != nil {
			return nil, err
		}
		hs := HomeSession{File: f, ByDevice: map[string][]seqprofile.Stamped{}}
		_, err = capture.Read(ctx, wsrc, features.HomeConfig{}, func(p *schemas.Packet) error {
			st := seqprofile.Stamped{TsNs: p.TsNs, V: seqprofile.VectorOf(p)}
			name := ""
			if i := p.Offset; i < uint64(len(lanOf)) && lanOf[i] >= 0 && lanOf[i] < int64(len(lanDev)) {
				name = lanDev[lanOf[i]]
			}
			if name == "" {
				hs.Rest = append(hs.Rest, st)
			} else {
				hs.ByDevice[name] = append(hs.ByDevice[name], st)
			}
			return nil
		})
		wsrc.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, hs)
	}
	return out, nil
}

// HomeCorpus is the training corpus of some sessions of a home: each IoT
// device a type, the rest background.
func HomeCorpus(sessions []HomeSession) *Corpus {
	c := &Corpus{}
	idx := map[string]int{}
	for _, s := range sessions {
		for _, name := range sortedKeys(s.ByDevice) {
			i, ok := idx[name]
			if !ok {
				i = len(c.Devices)
				idx[name] = i
				c.Devices = append(c.Devices, seqprofile.DeviceTraffic{Device: name})
			}
			c.Devices[i].Sessions = append(c.Devices[i].Sessions, seqprofile.Session{File: s.File, Device: s.ByDevice[name]})
		}
		c.Background = append(c.Background, s.Rest)
	}
	return c
}

// Corpus is what a model is trained from.
type Corpus struct {
	// Devices are the device types' training captures: each session's
	// Device packets are the type's traffic, its Background packets join
	// the background.
	Devices []seqprofile.DeviceTraffic
	// Background is further traffic without any of the device types.
	Background [][]seqprofile.Stamped
}
