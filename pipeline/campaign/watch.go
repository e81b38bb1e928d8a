package campaign

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// WatchedFile is a capture file in a watched folder (Tap.Watch).
type WatchedFile struct {
	Path    string
	ModTime time.Time
}

// WatchedFiles lists the capture files of a watch tap's folder in the
// order they were written: by modification time, then by name. Two files
// that would make one session (lan.pcap.gz beside lan.pcap) are an error
// naming both, as in a tap's file list.
func WatchedFiles(tap, dir string) ([]WatchedFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("watched folder of tap %s: %w", tap, err)
	}
	var out []WatchedFile
	sessions := sessionFiles{}
	for _, e := range entries {
		if _, ok := CaptureBase(e.Name()); !ok || e.IsDir() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed since the listing
		}
		p := filepath.Join(dir, e.Name())
		if err := sessions.claim(tap, p); err != nil {
			return nil, fmt.Errorf("watched folder: %w", err)
		}
		out = append(out, WatchedFile{Path: p, ModTime: info.ModTime()})
	}
	slices.SortFunc(out, func(a, b WatchedFile) int {
		return cmp.Or(a.ModTime.Compare(b.ModTime), cmp.Compare(a.Path, b.Path))
	})
	return out, nil
}

// SnapshotWatched turns every watch tap of the campaign into a file tap of
// the capture files its folder holds now: what a one-off build reads, and
// waits for, as it waits for a file tap's.
func (c *Campaign) SnapshotWatched() error {
	for _, h := range c.Homes {
		for i := range h.Taps {
			t := &h.Taps[i]
			if t.Watch == "" {
				continue
			}
			files, err := WatchedFiles(t.Name, t.Watch)
			if err != nil {
				return fmt.Errorf("home %s: %w", h.Name, err)
			}
			if len(files) == 0 {
				return fmt.Errorf("home %s: tap %s watches %s, which holds no capture file (.pcap or .pcapng, compressed too)", h.Name, t.Name, t.Watch)
			}
			for _, f := range files {
				t.Files = append(t.Files, f.Path)
			}
			t.Watch = ""
		}
	}
	return nil
}
