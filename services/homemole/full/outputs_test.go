package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/pipeline/homegen"
)

// noOutputs fails t when dir holds anything but the names in keep: an
// output, empty or whole, or a temporary one.
func noOutputs(t *testing.T, dir string, keep ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.Contains(strings.Join(keep, "\n"), e.Name()) {
			t.Errorf("%s left behind in %s", e.Name(), dir)
		}
	}
}

// TestFailedCommandsLeaveNoOutputs: gateway, defend and home assemble
// whose --truth folder does not exist fail naming it before writing
// anything, and leave no --out behind (they left an empty WAN capture, or
// home assemble a whole one); a run that succeeds writes both.
func TestFailedCommandsLeaveNoOutputs(t *testing.T) {
	gen := t.TempDir()
	h, err := homegen.Generate(homegen.Config{Seed: 2, Sessions: 1, SessionDuration: 30 * time.Second}, gen)
	if err != nil {
		t.Fatal(err)
	}
	home := []string{"--in", h.Files[0], "--lan-net", h.LANNet, "--gateway-mac", h.GatewayMAC}
	missing := filepath.Join(t.TempDir(), "no-such-folder", "truth.csv")
	for _, c := range []struct {
		name string
		run  runFunc
		args []string
	}{
		{"gateway", runGateway, []string{"--mode", "napt"}},
		{"defend", runDefend, []string{"--defense", "pad:mtu"}},
	} {
		dir := t.TempDir()
		out := filepath.Join(dir, "w.pcap")
		args := append(append(append([]string{}, home...), c.args...), "--out", out, "--truth", missing)
		err := c.run(context.Background(), quiet(), io.Discard, args)
		if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "folder exist") {
			t.Errorf("%s with --truth in a missing folder: %v, want an error naming %s and its folder", c.name, err, missing)
		}
		noOutputs(t, dir)
		args = append(append(append([]string{}, home...), c.args...), "--out", out, "--truth", filepath.Join(dir, "t.csv"))
		if err := c.run(context.Background(), quiet(), io.Discard, args); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		noOutputs(t, dir, "w.pcap", "t.csv")
		if st, err := os.Stat(out); err != nil || st.Size() == 0 || st.Mode().Perm() != 0o644 {
			t.Errorf("%s: %s: %v, want a whole capture, mode 0644", c.name, out, err)
		}
	}

	data := sentineldata.Need(t)
	dir := t.TempDir()
	err = runHome(context.Background(), quiet(), io.Discard, []string{"assemble", "--from-dir", data, "--devices", "2", "--duration", "1m",
		"--out", filepath.Join(dir, "ha.pcap"), "--truth", missing})
	if err == nil || !strings.Contains(err.Error(), "--truth") || !strings.Contains(err.Error(), missing) {
		t.Errorf("home assemble with --truth in a missing folder: %v, want an error naming --truth %s", err, missing)
	}
	noOutputs(t, dir)
}
