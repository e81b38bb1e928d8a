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
	"os"
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

// ByTime orders a device's captures earlier to later by IoT Sentinel's
// sequence number and splits them in halves (campaign.SplitByTime).
func ByTime(files []string) (early, late []string) { return campaign.SplitByTime(files) }

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
// in campaign.MACFile), in name order; folders without that file hold no
// device and are skipped.
func LoadDevices(dir string) ([]Device, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read device folders: %w", err)
	}
	var out []Device
	for _, e := range entries {
		sub := filepath.Join(dir, e.Name())
		if st, err := os.Stat(sub); err != nil || !st.IsDir() {
			continue
		}
		text, err := os.ReadFile(filepath.Join(sub, campaign.MACFile))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("device folder %s: %w", sub, err)
		}
		mac, err := schemas.ParseMAC(strings.TrimSpace(string(text)))
		if err != nil {
			return nil, fmt.Errorf("device folder %s: %s: %w", sub, campaign.MACFile, err)
		}
		var files []string
		for _, pat := range []string{"*.pcap", "*.pcapng", "*.pcap.gz", "*.pcapng.gz"} {
			m, _ := filepath.Glob(filepath.Join(sub, pat))
			files = append(files, m...)
		}
		if len(files) == 0 {
			continue
		}
		slices.Sort(files)
		out = append(out, Device{Name: e.Name(), MAC: mac, Files: files})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no device folders (want one folder per device with its captures and its MAC in %s)", dir, campaign.MACFile)
	}
	return out, nil
}
