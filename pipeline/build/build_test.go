package build

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/pipeline/agent"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
)

const sentinel = "../../../shared/data/iot-sentinel-dev"

// sentinelHome makes a home of one IoT Sentinel device folder: its captures
// are the LAN tap's sessions, its MAC file the inventory.
func sentinelHome(t *testing.T, device string) *campaign.Home {
	t.Helper()
	sentineldata.Need(t)
	dir := filepath.Join(sentinel, device)
	mac, err := os.ReadFile(filepath.Join(dir, "_iotdevice-mac.txt"))
	if err != nil {
		t.Fatalf("the IoT Sentinel captures must sit beside the project (%s): %v", sentinel, err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.pcap"))
	sort.Strings(files)
	if len(files) > 4 {
		files = files[:4]
	}
	return &campaign.Home{
		Name:      strings.ToLower(device),
		Taps:      []campaign.Tap{{Name: "lan", Files: files}},
		Inventory: []campaign.Device{{MAC: strings.ToLower(strings.TrimSpace(string(mac))), Name: device, Category: "iot"}},
	}
}

type harness struct {
	bus   *bus.Conn
	store store.Store
	log   *slog.Logger
}

func start(t *testing.T) *harness {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	_, conn, st := embeddedtest.Start(ctx, t, log)
	return &harness{bus: conn, store: st, log: log}
}

func (h *harness) build(t *testing.T, c *campaign.Campaign, version string) (*Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	spec := window.Spec{Dataset: "sentinel", Version: version, Kind: schemas.KindInd, Size: 20, Labels: LabelsOf(c)}
	return (&Build{Campaign: c, Spec: spec, Bus: h.bus, Store: h.store, Log: h.log, Timeout: 2 * time.Minute}).Run(ctx)
}

// countPackets reads captures directly, without the bus, as the reference.
func countPackets(t *testing.T, home *campaign.Home) (total int, perDevice map[string]int) {
	t.Helper()
	hc, err := features.HomeFromCampaign(home)
	if err != nil {
		t.Fatal(err)
	}
	idx, _ := home.MACIndex()
	perDevice = map[string]int{}
	for _, f := range home.Taps[0].Files {
		_, err := capture.ReadFile(context.Background(), f, hc, func(p *schemas.Packet) error {
			total++
			if d, ok := idx[p.SrcMAC]; ok {
				perDevice[d.Name]++
			} else if d, ok := idx[p.DstMAC]; ok {
				perDevice[d.Name]++
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	return total, perDevice
}

func TestBuildRealCaptures(t *testing.T) {
	h := start(t)
	c := &campaign.Campaign{Name: "sentinel", Homes: []*campaign.Home{
		sentinelHome(t, "Aria"), sentinelHome(t, "HueBridge"), sentinelHome(t, "EdimaxPlug1101W"),
	}}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	res, err := h.build(t, c, "v1")
	if err != nil {
		t.Fatal(err)
	}
	m := res.Manifest

	// Nothing lost or duplicated between the captures and the manifest.
	wantTotal, wantLabeled := 0, 0
	for _, home := range c.Homes {
		n, per := countPackets(t, home)
		wantTotal += n
		for _, v := range per {
			wantLabeled += v
		}
		if got := res.Agents[home.Name].Packets; got != n {
			t.Errorf("home %s: agent published %d packets, the captures hold %d", home.Name, got, n)
		}
		if m.WindowsPerDevice[home.Inventory[0].Name] == 0 {
			t.Errorf("device %s has no windows", home.Inventory[0].Name)
		}
	}
	if m.Packets != wantTotal {
		t.Errorf("manifest counts %d packets, captures hold %d", m.Packets, wantTotal)
	}
	if m.Packets-m.UnlabeledPackets != wantLabeled || m.BackgroundPackets != 0 {
		t.Errorf("manifest labels %d packets (%d background), inventory MACs match %d", m.Packets-m.UnlabeledPackets, m.BackgroundPackets, wantLabeled)
	}
	if err := dataset.Verify(context.Background(), h.store, m); err != nil {
		t.Fatal(err)
	}

	// Windows carry one device each (kind ind) and every labeled packet once.
	ws, err := dataset.Windows(context.Background(), h.store, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	slots := 0
	for _, w := range ws {
		for i := 0; i < w.Len; i++ {
			if w.Label[i] != w.Label[0] || w.Label[i] < 0 {
				t.Fatalf("window %s mixes labels or holds unlabeled packets: %v", w.ID, w.Label[:w.Len])
			}
		}
		for i := w.Len; i < len(w.Label); i++ {
			if w.Label[i] != -1 {
				t.Fatalf("window %s: padding slot %d labeled", w.ID, i)
			}
		}
		if strings.HasSuffix(w.ID, "/0") && w.Interval[0] != 0 {
			t.Errorf("window %s: the first interval of a device stream is 0, got %v", w.ID, w.Interval[0])
		}
		slots += w.Len
	}
	if slots != wantLabeled {
		t.Errorf("windows hold %d packets, %d labeled packets were captured", slots, wantLabeled)
	}

	// A dataset version is built once.
	if _, err := h.build(t, c, "v1"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("rebuilding v1: %v", err)
	}

	// A second version replays the streams (the republished packets are
	// deduplicated by message id) and yields byte-identical objects.
	res2, err := h.build(t, c, "v2")
	if err != nil {
		t.Fatal(err)
	}
	if res2.Manifest.Packets != m.Packets || len(res2.Manifest.Parts) != len(m.Parts) {
		t.Fatalf("v2 holds %d packets in %d sessions, v1 %d in %d", res2.Manifest.Packets, len(res2.Manifest.Parts), m.Packets, len(m.Parts))
	}
	info, err := h.bus.JS.Stream(context.Background(), schemas.StreamPackets)
	if err != nil {
		t.Fatal(err)
	}
	batches := 0
	for _, st := range res.Agents {
		batches += st.Batches
	}
	if got := info.CachedInfo().State.Msgs; got != uint64(batches) {
		t.Errorf("PACKETS holds %d messages after publishing every capture twice, want %d: duplicates were stored", got, batches)
	}
	for i := range m.Parts {
		a, b := m.Parts[i], res2.Manifest.Parts[i]
		for k := range a.Objects {
			if a.Objects[k].SHA256 != b.Objects[k].SHA256 {
				t.Errorf("session %s object %d differs between v1 and v2", a.Session, k)
			}
		}
	}

	// A build interrupted after its sessions were windowed, before the
	// manifest was written, completes on a rerun with the same manifest.
	manifestKey := dataset.Key("sentinel", "v2")
	before, err := h.store.Get(context.Background(), manifestKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.store.Delete(context.Background(), manifestKey); err != nil {
		t.Fatal(err)
	}
	if _, err := h.build(t, c, "v2"); err != nil {
		t.Fatalf("rerun of an interrupted build: %v", err)
	}
	after, err := h.store.Get(context.Background(), manifestKey)
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("the rerun's manifest differs from the first one (%v)", err)
	}

	// Verification notices an object that changed after the manifest was written.
	victim := m.Parts[0].Objects[0].Key
	if _, err := h.store.Put(context.Background(), victim, []byte("tampered"), ""); err != nil {
		t.Fatal(err)
	}
	if err := dataset.Verify(context.Background(), h.store, m); err == nil || !strings.Contains(err.Error(), victim) {
		t.Errorf("verify after tampering with %s: %v", victim, err)
	}
}

// TestBuildRefusesUnreadCaptures: a build over a good capture, a truncated
// one, one that is no capture and one that is missing fails before its
// manifest, naming the two it could not read and why; the truncated one
// is read up to its cut. Run again with the two taken out of the campaign,
// the same version builds, the truncated capture's packets before the cut
// kept. Before, the build wrote its immutable manifest without the two,
// and exited 0.
func TestBuildRefusesUnreadCaptures(t *testing.T) {
	h := start(t)
	home := sentinelHome(t, "EdimaxPlug1101W")
	home.Taps[0].Files = home.Taps[0].Files[:1]
	good := home.Taps[0].Files[0]
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cut := filepath.Join(dir, "truncated.pcap")
	if err := os.WriteFile(cut, data[:len(data)*2/3], 0o644); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(dir, "junk.pcap")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not a capture "), 100), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pcap")
	home.Taps[0].Files = append(home.Taps[0].Files, cut, junk, missing)
	c := &campaign.Campaign{Name: "corrupt", Homes: []*campaign.Home{home}}
	c.Defaults()
	_, err = h.build(t, c, "v1")
	var unread agent.UnreadCaptures
	if !errors.As(err, &unread) {
		t.Fatalf("build over unreadable captures returned %v, want the captures it could not read", err)
	}
	t.Logf("build: %v", err)
	if len(unread) != 2 || !strings.Contains(err.Error(), junk) || !strings.Contains(err.Error(), missing) || strings.Contains(err.Error(), cut) {
		t.Errorf("build error %q: want %s and %s named, not the truncated %s", err, junk, missing, cut)
	}
	if _, err := h.store.Get(context.Background(), dataset.Key("sentinel", "v1")); err == nil {
		t.Fatal("a manifest was written although two captures were not read")
	}

	home.Taps[0].Files = []string{good, cut}
	res, err := h.build(t, c, "v1")
	if err != nil {
		t.Fatalf("the same version, the unreadable captures taken out: %v", err)
	}
	st := res.Agents[home.Name]
	if st.ReadErrors != 1 {
		t.Errorf("want 1 read error (the truncated capture), got %d", st.ReadErrors)
	}
	if len(res.Manifest.Parts) != 2 {
		t.Fatalf("want the good and the truncated capture as sessions, got %d", len(res.Manifest.Parts))
	}
	full, trunc := res.Manifest.Parts[0], res.Manifest.Parts[1]
	if !strings.Contains(trunc.Session, "truncated") {
		full, trunc = trunc, full
	}
	if trunc.Packets == 0 || trunc.Packets >= full.Packets {
		t.Errorf("truncated capture gave %d packets, the whole one %d: the packets before the cut should be kept", trunc.Packets, full.Packets)
	}
}

// TestBuildRefusedStoresNoSpec: a build refused for its spec or its
// campaign (a window of 0 packets, an unknown kind, a negative cap, a home
// without inventory) stores nothing, so the corrected build of the same
// version runs. Before, each stored its spec first, and the corrected
// build was refused as "started with another spec".
func TestBuildRefusedStoresNoSpec(t *testing.T) {
	h := start(t)
	home := sentinelHome(t, "EdimaxPlug1101W")
	home.Taps[0].Files = home.Taps[0].Files[:1]
	c := &campaign.Campaign{Name: "refused", Homes: []*campaign.Home{home}}
	c.Defaults()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	good := window.Spec{Dataset: "refused", Version: "v1", Kind: schemas.KindInd, Size: 20, Labels: LabelsOf(c)}
	noInventory := &campaign.Campaign{Name: "refused", Homes: []*campaign.Home{{Name: home.Name, Gateway: home.Gateway, Taps: home.Taps}}}
	for _, bad := range []struct {
		name string
		c    *campaign.Campaign
		edit func(*window.Spec)
		want string
	}{
		{"window 0", c, func(s *window.Spec) { s.Size = 0 }, "window size 0"},
		{"kind foo", c, func(s *window.Spec) { s.Kind = "foo" }, `window kind "foo"`},
		{"cap -1", c, func(s *window.Spec) { s.Cap = -1 }, "cap of -1"},
		{"no inventory", noInventory, func(s *window.Spec) { s.Labels = nil }, "home " + home.Name + " has no inventory"},
	} {
		spec := good
		bad.edit(&spec)
		_, err := (&Build{Campaign: bad.c, Spec: spec, Bus: h.bus, Store: h.store, Log: h.log}).Run(ctx)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: build returned %v, want %q", bad.name, err, bad.want)
		}
		if _, err := h.store.Get(ctx, spec.SpecKey()); err == nil {
			t.Fatalf("%s: the refused build stored its spec", bad.name)
		}
	}
	res, err := (&Build{Campaign: c, Spec: good, Bus: h.bus, Store: h.store, Log: h.log, Timeout: 2 * time.Minute}).Run(ctx)
	if err != nil {
		t.Fatalf("the corrected build: %v", err)
	}
	if res.Manifest.Windows == 0 {
		t.Error("the corrected build wrote no window")
	}
}
