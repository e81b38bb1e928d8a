package campaign

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/homemole/homemole/schemas"
)

// MACFile is the file in a device folder that holds the device's MAC, as in
// the IoT Sentinel captures.
const MACFile = "_iotdevice-mac.txt"

// DeviceDir is one device folder of the IoT Sentinel layout.
type DeviceDir struct {
	Device string // the folder's name, which names the device
	Path   string
	MAC    schemas.MAC
	// Files are its captures (.pcap, .pcapng, compressed too), in name order.
	Files []string
}

// DeviceDirs reads a folder laid out like the IoT Sentinel captures: one
// folder per device (a link to one counts), its MAC in MACFile and its
// captures beside it. It is the one reader of that layout: campaigns
// (FromDeviceDirs), sequence profiles and the forest's benchmark all list
// devices through it. A device folder without its MAC, with an unreadable
// MAC or without captures is an error naming it; plain files beside the
// folders are ignored. Folders come in name order.
func DeviceDirs(dir string) ([]DeviceDir, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read device folders: %w (want one folder per device with %s and its captures)", err, MACFile)
	}
	var out []DeviceDir
	for _, e := range entries {
		sub := filepath.Join(dir, e.Name())
		if st, err := os.Stat(sub); err != nil || !st.IsDir() {
			continue
		}
		macData, err := os.ReadFile(filepath.Join(sub, MACFile))
		if err != nil {
			return nil, fmt.Errorf("device folder %s: %w (each device folder holds its MAC in %s)", sub, err, MACFile)
		}
		mac, err := schemas.ParseMAC(strings.ToLower(strings.TrimSpace(string(macData))))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(sub, MACFile), err)
		}
		files, err := captureFiles(sub)
		if err != nil {
			return nil, err
		}
		if len(files) == 0 {
			return nil, fmt.Errorf("device folder %s holds no .pcap or .pcapng captures", sub)
		}
		out = append(out, DeviceDir{Device: e.Name(), Path: sub, MAC: mac, Files: files})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no device folders (want one folder per device with %s and captures)", dir, MACFile)
	}
	return out, nil
}

// captureFiles are the capture files of a device folder, in name order.
func captureFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("device folder %s: %w", dir, err)
	}
	var files []string
	for _, e := range entries {
		if _, ok := CaptureBase(e.Name()); !ok {
			continue
		}
		if st, err := os.Stat(filepath.Join(dir, e.Name())); err == nil && !st.IsDir() {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	return files, nil
}

// LinkTimeSplit lays the device folders of dir out again under dst as two
// folders of symbolic links, dst/early and dst/late: each device's earlier
// captures and its later half (SplitByTime, dated by at: the split of cv
// --mode time --folds 2), its MAC file in both. A device with one capture
// is in early only. Nothing is copied.
func LinkTimeSplit(dir, dst string, at CaptureTime) (early, late string, err error) {
	devs, err := DeviceDirs(dir)
	if err != nil {
		return "", "", err
	}
	early, late = filepath.Join(dst, "early"), filepath.Join(dst, "late")
	for _, d := range devs {
		e, l := SplitByTime(d.Files, at)
		for side, files := range map[string][]string{early: e, late: l} {
			if len(files) == 0 {
				continue
			}
			to := filepath.Join(side, d.Device)
			if err := os.MkdirAll(to, 0o755); err != nil {
				return "", "", fmt.Errorf("time split of %s: %w", dir, err)
			}
			for _, f := range append([]string{filepath.Join(d.Path, MACFile)}, files...) {
				abs, err := filepath.Abs(f)
				if err != nil {
					return "", "", fmt.Errorf("time split of %s: %w", dir, err)
				}
				if err := os.Symlink(abs, filepath.Join(to, filepath.Base(f))); err != nil {
					return "", "", fmt.Errorf("time split of %s: %w", dir, err)
				}
			}
		}
	}
	return early, late, nil
}
