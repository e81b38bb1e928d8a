package campaign

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
)

// loadTestdata loads the campaign file name under testdata, failing the
// test when it does not load.
func loadTestdata(t *testing.T, name string) *Campaign {
	t.Helper()
	c, err := Load(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return c
}

func TestLoadGood(t *testing.T) {
	c := loadTestdata(t, "good.yaml")
	h1, h2 := c.Homes[0], c.Homes[1]
	if want, _ := filepath.Abs("testdata/a.pcap"); mustAbs(t, h1.Taps[0].Files[0]) != want {
		t.Errorf("tap file not resolved against the campaign file: %s", h1.Taps[0].Files[0])
	}
	if h2.Gateway.Mode != "napt" || len(h2.Gateway.LANNets) != len(DefaultLANNets) {
		t.Errorf("defaults not applied: %+v", h2.Gateway)
	}
	if len(h2.Inventory) != 1 || h2.Inventory[0].Category != CategoryIoT {
		t.Errorf("inventory file not read with its default category: %+v", h2.Inventory)
	}
	idx, err := h1.MACIndex()
	if err != nil || len(idx) != 2 {
		t.Fatalf("MAC index: %v %v", idx, err)
	}
	if h1.GatewayMAC().String() != "02:00:00:00:00:01" {
		t.Errorf("gateway MAC %s", h1.GatewayMAC())
	}
}

// TestLoadAuto: `gateway: auto` and `mac: auto` leave the home side to be
// inferred from the captures, with the private ranges until then.
func TestLoadAuto(t *testing.T) {
	c := loadTestdata(t, "auto.yaml")
	for i, mode := range []string{"napt", "vpn"} {
		h := c.Homes[i]
		if !h.Gateway.Auto() || h.Gateway.Mode != mode || !h.GatewayMAC().IsZero() || len(h.Gateway.LANNets) != 0 {
			t.Errorf("home %s: gateway %+v, want inferred in mode %s", h.Name, h.Gateway, mode)
		}
		nets, err := h.LANPrefixes()
		if err != nil || len(nets) != len(DefaultLANNets) {
			t.Errorf("home %s: prefixes %v %v, want the private ranges", h.Name, nets, err)
		}
	}
}

// TestLoadGatewayAny: a LAN and a WAN tap may both be interface any, the
// gateway's two sides of one capture on every interface.
func TestLoadGatewayAny(t *testing.T) {
	c := loadTestdata(t, "gateway-any.yaml")
	taps := c.Homes[0].Taps
	if len(taps) != 2 || taps[0].Interface != "any" || taps[1].Interface != "any" || taps[1].Name != "wan" {
		t.Errorf("taps %+v", taps)
	}
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestLoadBad(t *testing.T) {
	want := map[string]string{
		"unknown-field":      "field colour not found",
		"bad-name":           "not allowed",
		"no-homes":           "no homes",
		"bad-mode":           "want napt or vpn",
		"bad-prefix":         "CIDR",
		"dup-mac":            "already belongs to a",
		"bad-mac":            "6 hex bytes",
		"tap-without-source": "give one of files, interface and watch",
		"two-sources":        "give one of files, interface and watch",
		"bad-category":       "want iot or non-iot",
		"dup-home":           "appears twice",
		"broken":             "decode YAML",
		"dup-session":        "would both be session lan-x",
		"long-session":       "at most 200 are allowed",
		"empty-home":         "homes[1] is empty",
		"auto-with-nets":     "infers the LAN prefixes too",
		"gateway-word":       `want "auto" or a mapping`,
		"gateway-field":      "field macc not found",
		"bad-rotation":       "divides a day",
		"bad-retention":      "retention.max_bytes",
		// Before, these two were "decode YAML: EOF" and accepted.
		"empty":   "the file is empty",
		"no-taps": "home h: no taps: add one under taps",
	}
	files, _ := filepath.Glob("testdata/*.bad.yaml")
	if len(files) != len(want) {
		t.Fatalf("%d bad files, %d expectations", len(files), len(want))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".bad.yaml")
		_, err := Load(f)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.Contains(err.Error(), want[name]) || !strings.Contains(err.Error(), f) {
			t.Errorf("%s: error %q should name the file and say %q", name, err, want[name])
		}
	}
}

// TestInventoriesWanted: a campaign whose home has no inventory loads (a
// detector's needs none), but ValidateInventories, which a dataset build
// and a windower call, refuses it naming the file, the home and what to
// add. Before, a build over it failed with "label vocabulary of 0
// devices: want 1..32767", naming neither.
func TestInventoriesWanted(t *testing.T) {
	c := loadTestdata(t, "no-inventory.yaml")
	err := c.ValidateInventories()
	if err == nil || !strings.Contains(err.Error(), filepath.Join("testdata", "no-inventory.yaml")) || !strings.Contains(err.Error(), "home h has no inventory") || !strings.Contains(err.Error(), "inventory_file") {
		t.Errorf("got %v, want the file, the home and what to add", err)
	}
	for _, name := range []string{"good.yaml", "auto.yaml"} {
		if err := loadTestdata(t, name).ValidateInventories(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := (&Campaign{Name: "x", Homes: []*Home{{Name: "h"}}}).ValidateInventories(); err == nil || !strings.Contains(err.Error(), "campaign x: home h") {
		t.Errorf("a campaign not read from a file: %v, want it named", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load("testdata/nope.yaml"); err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("got %v", err)
	}
}

func TestFromDeviceDirs(t *testing.T) {
	c, err := FromDeviceDirs(sentineldata.Need(t), "sentinel")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Homes) != 31 {
		t.Errorf("%d homes, want one per device folder (31)", len(c.Homes))
	}
	files := 0
	for _, h := range c.Homes {
		files += len(h.Taps[0].Files)
		if len(h.Inventory) != 1 || h.Inventory[0].Category != CategoryIoT {
			t.Errorf("home %s inventory %+v", h.Name, h.Inventory)
		}
		// No folder names its gateway: each capture's home side is
		// inferred, as predict infers it.
		if !h.Gateway.Auto() || len(h.Gateway.LANNets) != 0 {
			t.Errorf("home %s gateway %+v, want %s", h.Name, h.Gateway, GatewayAuto)
		}
	}
	if err := c.ValidateInventories(); err != nil {
		t.Errorf("device folders give every home its inventory: %v", err)
	}
	if files != 277 {
		t.Errorf("%d captures, want 277", files)
	}
	if _, err := FromDeviceDirs(t.TempDir(), "x"); err == nil {
		t.Error("an empty folder was accepted")
	}
}
