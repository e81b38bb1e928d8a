package seqprofile

import (
	"context"
	"fmt"
	"time"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// Session is one capture, split into the device's own packets and the rest.
type Session struct {
	File string
	// Device is the packets sent or received by the device's MAC;
	// Background everything else in the capture (the phone that set the
	// device up, the gateway, broadcasts).
	Device, Background []Stamped
}

// DeviceTraffic is every capture of one device type.
type DeviceTraffic struct {
	Device   string
	Sessions []Session
}

// LoadDir reads a folder laid out like the IoT Sentinel captures (see
// campaign.DeviceDirs): one folder per device type, each capture split by
// the device's MAC. Captures are read in name order.
func LoadDir(ctx context.Context, dir string) ([]DeviceTraffic, error) {
	return loadDir(ctx, dir, nil)
}

// LoadDirCrossing is LoadDir keeping only the packets that cross a home
// gateway (decoded with the private ranges as the home: a public address at
// one end), with the TTL they have on its WAN side, which is all an observer
// beyond a NAPT sees: profiles learned from them are the ones that can match
// there. A device's LAN-local traffic (DHCP, mDNS, SSDP) never reaches that
// observer.
func LoadDirCrossing(ctx context.Context, dir string) ([]DeviceTraffic, error) {
	home := features.PrivateHome()
	return loadDir(ctx, dir, &home)
}

func loadDir(ctx context.Context, dir string, crossing *features.HomeConfig) ([]DeviceTraffic, error) {
	devs, err := campaign.DeviceDirs(dir)
	if err != nil {
		return nil, fmt.Errorf("sequence profiles: %w", err)
	}
	out := make([]DeviceTraffic, 0, len(devs))
	for _, d := range devs {
		dt := DeviceTraffic{Device: d.Device}
		for _, f := range d.Files {
			s, err := loadSession(ctx, f, d.MAC, crossing)
			if err != nil {
				return nil, err
			}
			dt.Sessions = append(dt.Sessions, s)
		}
		out = append(out, dt)
	}
	return out, nil
}

// LoadSession reads one capture and splits it by the device's MAC.
func LoadSession(ctx context.Context, path string, mac schemas.MAC) (Session, error) {
	return loadSession(ctx, path, mac, nil)
}

// loadSession keeps, with crossing, only the packets that home's gateway
// forwards.
func loadSession(ctx context.Context, path string, mac schemas.MAC, crossing *features.HomeConfig) (Session, error) {
	s := Session{File: path}
	home := features.HomeConfig{}
	if crossing != nil {
		home = *crossing
	}
	_, err := capture.ReadFile(ctx, path, home, func(p *schemas.Packet) error {
		if crossing != nil {
			// Seen from the WAN side, an outbound packet has been forwarded
			// once more and an inbound one not yet: matching compares TTLs
			// exactly, so the profiles take the TTL the observer sees.
			switch p.Direction {
			case schemas.DirLocal:
				return nil
			case schemas.DirOutbound:
				p.TTL = max(p.TTL, 1) - 1
			case schemas.DirInbound:
				p.TTL = min(p.TTL, 254) + 1
			}
		}
		st := Stamped{TsNs: p.TsNs, V: VectorOf(p)}
		if p.SrcMAC == mac || p.DstMAC == mac {
			s.Device = append(s.Device, st)
		} else {
			s.Background = append(s.Background, st)
		}
		return nil
	})
	if err != nil {
		return Session{}, fmt.Errorf("sequence profiles: %s: %w", path, err)
	}
	return s, nil
}

// LoadCapture reads every packet of a capture as one stream.
func LoadCapture(ctx context.Context, path string) ([]Stamped, error) {
	var out []Stamped
	_, err := capture.ReadFile(ctx, path, features.HomeConfig{}, func(p *schemas.Packet) error {
		out = append(out, Stamped{TsNs: p.TsNs, V: VectorOf(p)})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// DeviceSet is the SPs of every device type, in one flat list for a
// Matcher.
type DeviceSet struct {
	Devices []DeviceProfiles
}

// DeviceProfiles is one device type's SPs.
type DeviceProfiles struct {
	Device   string
	Profiles []Profile
	Stats    GenStats
}

// LearnDevice generates one device type's SPs from the bursts of its own
// packets in the given sessions; no burst spans two sessions.
func LearnDevice(name string, sessions []Session, gap time.Duration, cfg GenConfig) (DeviceProfiles, error) {
	var bursts []Burst
	for _, s := range sessions {
		bursts = append(bursts, Bursts(s.Device, gap)...)
	}
	ps, st, err := Generate(bursts, cfg)
	if err != nil {
		return DeviceProfiles{}, fmt.Errorf("device %s: %w", name, err)
	}
	if len(ps) == 0 {
		return DeviceProfiles{}, fmt.Errorf("device %s: no sequence profile from %d bursts: it needs at least two bursts that share a packet (capture it longer)", name, len(bursts))
	}
	return DeviceProfiles{Device: name, Profiles: ps, Stats: st}, nil
}

// Flat lists every SP of every device for a Matcher, and for each device
// the indexes of its SPs in that list (its CNN's input channels).
func (s *DeviceSet) Flat() (sps [][]Vector, channels [][]int) {
	channels = make([][]int, len(s.Devices))
	for d, dp := range s.Devices {
		for _, p := range dp.Profiles {
			channels[d] = append(channels[d], len(sps))
			sps = append(sps, p.Elems)
		}
	}
	return sps, channels
}
