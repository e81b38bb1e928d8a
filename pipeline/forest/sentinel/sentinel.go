// Package sentinel cuts per-device traffic windows straight from the IoT
// Sentinel captures (one folder per device, its MAC in _iotdevice-mac.txt),
// without the bus and store a dataset build needs, so that model tests and
// benchmarks can run on real traffic.
package sentinel

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
)

// home is the captures' network: 10.10.10.0/24 behind a gateway at
// 10.10.10.1.
var home = features.HomeConfig{
	LANNets:    []netip.Prefix{netip.MustParsePrefix("10.10.10.0/24")},
	GatewayMAC: schemas.MAC{0x00, 0xb5, 0x6d, 0x06, 0x08, 0xba},
}

// Data is the windows of every capture, with the device names their labels
// index.
type Data struct {
	Devices []string
	// Sessions holds each capture's windows; a capture is the unit a split
	// keeps on one side.
	Sessions []Session
}

// Session is one capture's windows.
type Session struct {
	Device  string
	File    string
	Windows []*schemas.Window
}

// Load reads every capture of every device folder under dir (see
// campaign.DeviceDirs) and cuts each device's own packets (sent or
// received by its MAC) into windows of size packets.
// maxFiles > 0 keeps only the first captures of each device.
func Load(ctx context.Context, dir string, size, maxFiles int) (*Data, error) {
	devs, err := campaign.DeviceDirs(dir)
	if err != nil {
		return nil, fmt.Errorf("sentinel: %w", err)
	}
	d := &Data{}
	for _, dev := range devs {
		d.Devices = append(d.Devices, dev.Device)
	}
	spec := window.Spec{Kind: schemas.KindInd, Size: size, Labels: d.Devices}
	for label, dev := range devs {
		mac, files := dev.MAC, dev.Files
		if maxFiles > 0 && len(files) > maxFiles {
			files = files[:maxFiles]
		}
		for _, f := range files {
			var pkts []schemas.Packet
			var labels []int16
			_, err := capture.ReadFile(ctx, f, home, func(p *schemas.Packet) error {
				if p.SrcMAC == mac || p.DstMAC == mac {
					pkts = append(pkts, *p)
					labels = append(labels, int16(label))
				}
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("sentinel: %s: %w", f, err)
			}
			sess := strings.TrimSuffix(filepath.Base(f), ".pcap")
			ws := window.Cut(spec, dev.Device, "lan", sess, pkts, labels)
			d.Sessions = append(d.Sessions, Session{Device: dev.Device, File: f, Windows: ws})
		}
	}
	if len(d.Sessions) == 0 {
		return nil, fmt.Errorf("sentinel: no captures under %s", dir)
	}
	return d, nil
}

// Split puts every fifth capture of each device (the seed's 8:2) into
// test and the rest into train.
func (d *Data) Split() (train, test []*schemas.Window) {
	nth := map[string]int{}
	for _, s := range d.Sessions {
		if nth[s.Device]%5 == 4 {
			test = append(test, s.Windows...)
		} else {
			train = append(train, s.Windows...)
		}
		nth[s.Device]++
	}
	return train, test
}
