// Package realhome assembles a home from real per-device captures: the
// devices' own packets from captures taken one device at a time (the IoT
// Sentinel layout), each unit moved onto an address and MAC of its own in
// one home LAN and shifted in time, merged into one capture with the truth
// of which unit sent or received every packet. Generated homes
// (pipeline/homegen) test what the model learns from simulated devices;
// assembled homes test it on real device traffic, several units of one type
// included, which is what counting has to handle.
package realhome

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/schemas"
)

// Split selects which of a device's captures a home may draw on.
type Split string

const (
	// AllSessions draws on every capture.
	AllSessions Split = "all"
	// EarlySessions is the earlier half of each device's captures by their
	// sequence number: what a model may be trained on.
	EarlySessions Split = "early"
	// LateSessions is the later half: held out from a model trained on the
	// early half, as captures from later days are.
	LateSessions Split = "late"
)

// ParseSplit accepts all, early or late.
func ParseSplit(s string) (Split, error) {
	switch v := Split(s); v {
	case AllSessions, EarlySessions, LateSessions:
		return v, nil
	}
	return "", fmt.Errorf("sessions %q: want %s, %s (earlier half by sequence number) or %s (later half, held out)", s, AllSessions, EarlySessions, LateSessions)
}

// ByTime orders a device's captures by IoT Sentinel's sequence number and
// splits them in halves (campaign.SplitByTime without dates). The halves
// are disjoint, which is what an assembled home's held-out sessions need;
// they are not the earlier and later captures in time (see
// campaign.SplitLater): the sessions a figure's homes were assembled from
// stay the ones it named.
func ByTime(files []string) (early, late []string) { return campaign.SplitByTime(files, nil) }

// Pick is the captures of the split.
func (sp Split) Pick(files []string) []string {
	early, late := ByTime(files)
	switch sp {
	case EarlySessions:
		return early
	case LateSessions:
		return late
	}
	return slices.Concat(early, late)
}

// Device is one device folder: its MAC and its captures.
type Device struct {
	Name  string
	MAC   schemas.MAC
	Files []string
}

// LoadDevices reads the device folders under dir (one per device, its MAC
// in campaign.MACFile) as campaign.FromDeviceDirs does, in name order.
func LoadDevices(dir string) ([]Device, error) {
	c, err := campaign.FromDeviceDirs(dir, "realhome")
	if err != nil {
		return nil, err
	}
	return DevicesOf(c, dir)
}

// DevicesOf is LoadDevices of a campaign campaign.FromDeviceDirs made of
// dir, in name order.
func DevicesOf(c *campaign.Campaign, dir string) ([]Device, error) {
	var out []Device
	for _, h := range c.Homes {
		d := h.Inventory[0]
		mac, err := schemas.ParseMAC(d.MAC)
		if err != nil {
			return nil, fmt.Errorf("device folder %s: %s: %w", filepath.Join(dir, d.Name), campaign.MACFile, err)
		}
		out = append(out, Device{Name: d.Name, MAC: mac, Files: slices.Clone(h.Taps[0].Files)})
	}
	slices.SortFunc(out, func(a, b Device) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
