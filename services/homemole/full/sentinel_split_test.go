package main

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
)

// splitDevices lays out two folders like the IoT Sentinel set, linking
// every other capture of each device into the test folder and the rest
// into the training folder.
func splitDevices(t *testing.T, devices ...string) (train, test string, testFiles []string) {
	sentineldata.Need(t)
	t.Helper()
	root := t.TempDir()
	train, test = filepath.Join(root, "train"), filepath.Join(root, "test")
	for _, d := range devices {
		src, err := filepath.Abs(filepath.Join(sentinelDir, d))
		if err != nil {
			t.Fatal(err)
		}
		caps, err := filepath.Glob(filepath.Join(src, "*.pcap"))
		if err != nil || len(caps) < 4 {
			t.Skipf("%s: need at least 4 captures of %s (%v)", src, d, err)
		}
		sort.Strings(caps)
		for _, side := range []string{train, test} {
			if err := os.MkdirAll(filepath.Join(side, d), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(src, "_iotdevice-mac.txt"), filepath.Join(side, d, "_iotdevice-mac.txt")); err != nil {
				t.Fatal(err)
			}
		}
		for i, c := range caps {
			side := train
			if i%2 == 1 {
				side = test
				testFiles = append(testFiles, filepath.Join(d, filepath.Base(c)))
			}
			if err := os.Symlink(c, filepath.Join(side, d, filepath.Base(c))); err != nil {
				t.Fatal(err)
			}
		}
	}
	sort.Strings(testFiles)
	return train, test, testFiles
}
