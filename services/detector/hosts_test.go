package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/homecount"
	"github.com/homemole/homemole/pipeline/metrics"
	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/pipeline/realhome/realhometest"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/worker"
)

// hostsHome is a home assembled from the IoT Sentinel captures (two
// Arias, two EdimaxCams and six other devices, a quarter of an hour) as
// its LAN tap decodes it, and the path of a host model learned from every
// capture but those the home drew on, as `homemole hosts learn` writes it.
func hostsHome(ctx context.Context, t *testing.T) (*homecount.HostModel, *realhome.Home, []schemas.Packet, string) {
	t.Helper()
	devs := realhometest.Devices(t)
	hc, err := homecount.NewHostCounter(ctx, devs)
	if err != nil {
		t.Fatal(err)
	}
	h, hm, modelPath := heldOutHome(ctx, t, hc, devs, realhome.Config{Devices: 8, Units: map[string]int{"Aria": 2, "EdimaxCam1": 2},
		Duration: 15 * time.Minute, Sessions: realhome.AllSessions, Seed: 3})
	lanPath := filepath.Join(filepath.Dir(modelPath), "lan.pcap")
	f, err := os.Create(lanPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.WritePcap(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return hm, h, capturetest.Packets(t, lanPath, h.HomeConfig()), modelPath
}

// heldOutHome assembles a home of cfg and writes the host model of hc
// learned from every capture but those the home drew on, as `homemole hosts
// learn` writes it; it returns the home, the model as the detector reads
// it, and its path.
func heldOutHome(ctx context.Context, t *testing.T, hc *homecount.HostCounter, devs []realhome.Device, cfg realhome.Config) (*realhome.Home, *homecount.HostModel, string) {
	t.Helper()
	h, err := realhome.Assemble(ctx, devs, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var used []string
	for _, u := range h.Units {
		used = append(used, u.Session)
	}
	modelPath := filepath.Join(t.TempDir(), "hosts.json")
	if err := hc.Model(used).SaveFile(modelPath); err != nil {
		t.Fatal(err)
	}
	hm, err := homecount.LoadHostModel(modelPath) // the detector reads what hosts learn wrote
	if err != nil {
		t.Fatal(err)
	}
	return h, hm, modelPath
}

// publishTap publishes a session's packets as the capture agent of tap
// of campaign c's home would: in batches of batch packets, the last one
// final.
func publishTap(ctx context.Context, t *testing.T, conn *bus.Conn, c, home, tap string, pkts []schemas.Packet, batch int) {
	t.Helper()
	for lo := 0; lo < len(pkts); lo += batch {
		hi := min(lo+batch, len(pkts))
		b := &schemas.Batch{Kind: schemas.KindPackets, Campaign: c, Home: home, Tap: tap, Source: c + "/" + home + "/" + tap + "/" + tap + ".pcap",
			Session: "session-01", FirstOffset: uint64(lo), Final: hi == len(pkts), Packets: pkts[lo:hi]}
		if err := conn.Publish(ctx, schemas.PacketSubject(c, home, tap), b); err != nil {
			t.Fatal(err)
		}
	}
}

// liveWindows are the windows one LiveHome, its gateway gw, judges of
// pkts: what the detector must publish.
func liveWindows(t *testing.T, hm *homecount.HostModel, gw schemas.MAC, pkts []schemas.Packet) []schemas.SeenWindow {
	t.Helper()
	cfg := homecount.DefaultLiveConfig()
	cfg.Gateway = gw
	lh, err := homecount.NewLiveHome(hm, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out []schemas.SeenWindow
	for i := range pkts {
		out = append(out, lh.Add(&pkts[i])...)
	}
	return append(out, lh.Flush()...)
}

// seenOf is every window of campaign c's home in the SEEN stream, in
// stream order, each checked to name its campaign and home.
func seenOf(ctx context.Context, t *testing.T, conn *bus.Conn, c, home string) []schemas.SeenWindow {
	t.Helper()
	var out []schemas.SeenWindow
	for i, w := range readSeenOf(ctx, t, conn, c, home) {
		if w.Campaign != c || w.Home != home {
			t.Errorf("SEEN window %d of %s/%s: campaign %q, home %q", i, c, home, w.Campaign, w.Home)
		}
		out = append(out, w.SeenWindow)
	}
	return out
}

// TestHostsDetectorCountsLANHosts publishes a held-out home's LAN batches
// (50 packets each) into embedded JetStream, under a campaign of two homes
// whose second names one of the home's EdimaxCams its gateway, the first's
// batches after one without source MACs, and runs the detector as its
// main does with --hosts and no --tap (lan by default): the batch without
// source MACs must be dead-lettered with the fix, and the SEEN stream
// must hold, per home, exactly the windows one LiveHome fed the LAN
// packets with the campaign's gateway judges, each of method hosts, and
// the home's units counted in them. Then the same
// batches under another campaign go to a detector stopped twice
// mid-stream and started afresh on a new connection: SEEN must hold the
// same windows, each once and in order, with the same counts.
func TestHostsDetectorCountsLANHosts(t *testing.T) {
	ctx, log := embeddedtest.Context(t, 3*time.Minute), embeddedtest.Log()
	hm, h, pkts, modelPath := hostsHome(ctx, t)
	cam := slices.IndexFunc(h.Units, func(u realhome.Unit) bool { return u.Device == "EdimaxCam1" })
	want1 := liveWindows(t, hm, schemas.MAC{}, pkts)
	want2 := liveWindows(t, hm, h.Units[cam].MAC, pkts)
	if len(want1) < 50 || reflect.DeepEqual(want1, want2) {
		t.Fatalf("%d windows, the same whether an EdimaxCam is the gateway or not (%v): the test wants a longer home that holds the cams", len(want1), reflect.DeepEqual(want1, want2))
	}

	srv, conn, _ := embeddedtest.Start(ctx, t, log)
	// Before whole/home-1's batches, one of packets without source MACs
	// (a WAN tap's, on the lan subject), an hour later: the detector sets
	// it aside, and the home counts as if it never came.
	stray := &schemas.Batch{Kind: schemas.KindPackets, Campaign: "whole", Home: "home-1", Tap: "lan", Source: "whole/home-1/lan/wan.pcap",
		Session: "session-00", Packets: slices.Clone(pkts[:50])}
	for i := range stray.Packets {
		stray.Packets[i].StripAddresses()
		stray.Packets[i].TsNs += int64(time.Hour)
	}
	if err := conn.Publish(ctx, schemas.PacketSubject("whole", "home-1", "lan"), stray); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"whole", "cut"} {
		for _, home := range []string{"home-1", "home-2"} {
			publishTap(ctx, t, conn, c, home, "lan", pkts, 50)
		}
	}
	seen, err := conn.JS.Stream(ctx, bus.StreamSeen)
	if err != nil {
		t.Fatalf("no SEEN stream: %v", err)
	}
	// stored is how many windows of campaign c's home the SEEN stream holds.
	stored := func(c, home string) int {
		subject := schemas.SeenSubject(c, home)
		info, err := seen.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			t.Fatal(err)
		}
		return int(info.State.Subjects[subject])
	}
	// caughtUp says the durable consumer has acked every batch: the
	// detector stored every window it will (a detector that lost some
	// stops short of the count awaited, and the test says which).
	caughtUp := func(durable string) bool {
		cons, err := conn.JS.Consumer(ctx, schemas.StreamPackets, durable)
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
	}
	campaignFile := filepath.Join(t.TempDir(), "whole.yaml")
	yaml := fmt.Sprintf("name: whole\nhomes:\n  - name: home-1\n    gateway: auto\n    taps:\n      - name: lan\n        interface: eth0\n"+
		"  - name: home-2\n    gateway:\n      mac: %q\n    taps:\n      - name: lan\n        interface: eth0\n", h.Units[cam].MAC.String())
	if err := os.WriteFile(campaignFile, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	runDetector(ctx, t, log, []string{"--hosts", modelPath, "--campaign", campaignFile, "--nats", srv.NATSURL, "--metrics-addr", ""}, func() (bool, string) {
		n1, n2 := stored("whole", "home-1"), stored("whole", "home-2")
		return caughtUp("hostcounter-whole-all-lan"), fmt.Sprintf("SEEN holds %d and %d windows of %d and %d", n1, n2, len(want1), len(want2))
	})
	t.Logf("%d packets in %d batches a home: the detector stored %d and %d windows in %v", len(pkts), (len(pkts)+49)/50, len(want1), len(want2), time.Since(start).Round(time.Millisecond))
	dead, err := conn.DeadLetters(ctx, schemas.PacketSubject("whole", "home-1", "lan"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || !strings.Contains(dead[0].Reason, "--tap lan") || dead[0].Consumer != "hostcounter-whole-all-lan" {
		t.Errorf("dead letters of whole/home-1: %+v; want the batch without source MACs, set aside by hostcounter-whole-all-lan saying it needs --tap lan", dead)
	}
	for home, want := range map[string][]schemas.SeenWindow{"home-1": want1, "home-2": want2} {
		got := seenOf(ctx, t, conn, "whole", home)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: SEEN holds %d windows, a LiveHome judged %d; they differ", home, len(got), len(want))
			for i := range min(len(got), len(want)) {
				if !reflect.DeepEqual(got[i], want[i]) {
					t.Errorf("%s, first difference, window %d:\nSEEN     %+v\nLiveHome %+v", home, i, got[i], want[i])
					break
				}
			}
		}
		most := map[string]int{}
		for _, w := range got {
			if w.Method != homecount.MethodHosts {
				t.Errorf("%s, window %d: method %q, want %q", home, w.StartNs, w.Method, homecount.MethodHosts)
			}
			for _, d := range w.Detections {
				most[d.Device] = max(most[d.Device], d.Count)
			}
		}
		cams := 2 // the EdimaxCam named home-2's gateway is never counted
		if home == "home-2" {
			cams = 1
		}
		if most["Aria"] < 1 || most["EdimaxCam"] != cams {
			t.Errorf("%s: most units counted in a window: %v, want an Aria and %d EdimaxCams", home, most, cams)
		}
	}

	// The restarted detector: cfg is what run makes of the flags.
	cfg := Config{Campaign: "cut", Home: "*", Homes: []string{"home-1", "home-2"}, Tap: "lan", AckWait: 2 * time.Second,
		Method: homecount.MethodHosts, Live: homecount.DefaultLiveConfig(), Gateways: map[string]schemas.MAC{"home-2": h.Units[cam].MAC}}
	total := len(want1) + len(want2)
	storedCut := func() int { return stored("cut", "home-1") + stored("cut", "home-2") }
	// runCut runs a detector on its own connection until stop says so.
	// Past limit windows its publishes wait, and once the test stops it
	// they fail: a fast detector would otherwise store the rest between
	// two polls, and no restart would be tested.
	runCut := func(met *metrics.Metrics, limit int) int {
		t.Helper()
		rc, err := bus.Connect(ctx, bus.Config{URL: srv.NATSURL, Name: "test"}, log)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		o, err := newHostsOnline(ctx, rc, hm, cfg)
		if err != nil {
			t.Fatal(err)
		}
		stopped := make(chan struct{})
		publish := o.Publish
		o.Publish = func(ctx context.Context, subject, id string, data []byte) error {
			if storedCut() >= limit {
				select {
				case <-stopped:
				case <-ctx.Done():
				}
				return errors.New("the test stopped the detector")
			}
			return publish(ctx, subject, id, data)
		}
		runCtx, cancelRun := context.WithCancel(ctx)
		defer cancelRun()
		errc := make(chan error, 1)
		go func() { errc <- serve(runCtx, rc, o, cfg, worker.Bare("detector", met, log)) }()
		for storedCut() < min(limit, total) && !(limit > total && caughtUp(cfg.Consumer().Durable)) {
			select {
			case <-ctx.Done():
				t.Fatalf("campaign cut: the detector stored %d windows and did not finish", storedCut())
			case err := <-errc:
				t.Fatalf("detector stopped: %v", err)
			case <-time.After(20 * time.Millisecond):
			}
		}
		close(stopped)
		cancelRun()
		if err := <-errc; err != nil && err != context.Canceled {
			t.Fatalf("detector: %v", err)
		}
		return storedCut()
	}
	met := metrics.New("detector")
	n := runCut(met, total/3)
	// The stop may land between JetStream storing a window and its
	// publish returning: that window is in SEEN but was not counted (its
	// batch fails and is redelivered, and the window republished under its
	// id is stored once). So the metric is SEEN's count or one short.
	if got := counter(t, met, SeenWindows); got != float64(n) && got != float64(n-1) {
		t.Errorf("%s = %v, SEEN holds %d windows: want %d, or %d for a window stored as the detector stopped", SeenWindows, got, n, n, n-1)
	}
	t.Logf("detector stopped with %d of %d windows stored", n, total)
	n = runCut(nil, 2*total/3)
	t.Logf("detector stopped with %d of %d windows stored", n, total)
	if n >= total {
		t.Fatal("the detector finished before it was stopped: no restart was tested")
	}
	runCut(nil, total+1)
	for home, want := range map[string][]schemas.SeenWindow{"home-1": want1, "home-2": want2} {
		got := seenOf(ctx, t, conn, "cut", home)
		if len(got) != len(want) {
			t.Errorf("restarted twice, %s: SEEN holds %d windows, uninterrupted %d", home, len(got), len(want))
		}
		for i := range min(len(got), len(want)) {
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Errorf("restarted twice, %s, window %d:\nSEEN     %+v\nLiveHome %+v", home, i, got[i], want[i])
				break
			}
		}
	}
	tables, err := OpenKVHostTables(ctx, conn.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	if data, ok, err := tables.Load(ctx, "cut", "home-1", "lan"); err != nil || !ok || len(data) > 1<<20 {
		t.Errorf("host table of cut/home-1: %d bytes, found %v, %v; want one under 1 MiB", len(data), ok, err)
	}
}

// TestHostsFlags: --hosts takes the place of a sequence-profile model and
// of --step, and refuses the wan tap; the host counter's flags need it;
// a model file that is not there is named with how to make one. Each
// mistake is found before NATS is reached.
func TestHostsFlags(t *testing.T) {
	t.Setenv("HOMEMOLE_S3_ENDPOINT", "") // --hosts-object then has no store
	dir := t.TempDir()
	campaignFile := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(campaignFile, []byte("name: c\nhomes:\n  - name: home-1\n    taps:\n      - name: lan\n        interface: eth0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"--campaign", campaignFile, "--nats", "nats://127.0.0.1:1", "--metrics-addr", ""}
	missing := filepath.Join(dir, "nosuch.json")
	// Two models of one unit: a LAN one, and one of `hosts learn --wan`.
	lanModel, wanModel := filepath.Join(dir, "lan.json"), filepath.Join(dir, "wan.json")
	for path, chains := range map[string]string{lanModel: "", wanModel: `"chains":{"max_step":64,"max_idle":60000000000,"min_packets":3},`} {
		model := `{"version":3,` + chains + `"units":[{"name":"A","members":["A"],"signature":["17/69/55"],"one_sequence":true}],"captures":[{"unit":0,"keys":["17/69/55"]}]}`
		if err := os.WriteFile(path, []byte(model), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		args  []string
		usage bool
		says  string
	}{
		{[]string{"--hosts", missing, "--model", "m.spm"}, true, "one of --model FILE, --model-object KEY, --hosts FILE or --hosts-object KEY"},
		{[]string{"--hosts", missing, "--hosts-object", "models/hosts.json"}, true, "one of"},
		{[]string{"--hosts-object", "models/hosts.json"}, true, "--hosts-object models/hosts.json: no object store"},
		{[]string{"--hosts", missing, "--model-object", "models/m.spm"}, true, "one of"},
		{[]string{"--hosts", lanModel, "--tap", "wan"}, true, "want --tap lan"},
		{[]string{"--hosts", wanModel, "--tap", "lan"}, true, "want --tap wan"},
		{[]string{"--hosts", missing, "--tap", "wan"}, false, "homemole hosts learn"},
		{[]string{"--hosts", missing, "--step", "2"}, true, "--every"},
		{[]string{"--hosts", missing, "--window", "25s", "--every", "10s"}, true, "whole number"},
		// 360 million steps a window: refused, not walked for hours.
		{[]string{"--hosts", missing, "--window", "1000000h"}, true, "--window 1000000h0m0s"},
		{[]string{"--model", "m.spm", "--window", "30s"}, true, "--window is the host counter's"},
		{[]string{"--model", "m.spm", "--late", "1m"}, true, "--late is the host counter's"},
		{[]string{"--hosts", missing}, false, "homemole hosts learn"},
		{[]string{"--hosts", missing, "--tap", "lan", "--window", "1m", "--every", "20s", "--late", "0s"}, false, "homemole hosts learn"},
	} {
		err := run(t.Context(), append(slices.Clone(base), tc.args...), worker.Env{Log: embeddedtest.Log(), Out: os.Stderr})
		if err == nil || errors.Is(err, cli.ErrUsage) != tc.usage || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("detector %v: %v; want a usage error %v saying %q", tc.args, err, tc.usage, tc.says)
		}
	}
}

// TestHostsDetectorCountsWANSequences: a home beyond a NAPT (three
// Lightifys, two Withings scales and four other devices, five minutes, each
// unit's IP ID counter at an offset of its own) publishes its wan tap's
// batches, and the detector runs with a model of `hosts learn --wan`
// learned without the home's captures, its tap the model's (no --tap):
// SEEN must hold exactly the windows one LiveHome with the model judges of
// the WAN packets, of method ip-id, the Lightifys and scales counted in
// them.
func TestHostsDetectorCountsWANSequences(t *testing.T) {
	ctx, log := embeddedtest.Context(t, 2*time.Minute), embeddedtest.Log()
	devs := realhometest.Devices(t)
	hc, err := homecount.NewWANHostCounter(ctx, devs, homecount.DefaultChains())
	if err != nil {
		t.Fatal(err)
	}
	h, hm, modelPath := heldOutHome(ctx, t, hc, devs, realhome.Config{Devices: 6, Units: map[string]int{"Lightify": 3, "Withings": 2},
		Duration: 5 * time.Minute, Sessions: realhome.AllSessions, Seed: 11, IDOffsets: true})
	dir := filepath.Dir(modelPath)
	wanPath := filepath.Join(dir, "wan.pcap")
	f, err := os.Create(wanPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.View(ctx, gateway.Config{Mode: gateway.NAPT, Seed: 11}, f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	pkts := capturetest.Packets(t, wanPath, homecount.WANHome())
	for i := range pkts {
		pkts[i].SrcMAC, pkts[i].DstMAC = schemas.MAC{}, schemas.MAC{} // a WAN tap's batches carry none
	}
	want := liveWindows(t, hm, schemas.MAC{}, pkts)
	if len(want) < 20 {
		t.Fatalf("%d windows: the test wants a longer home", len(want))
	}

	srv, conn, _ := embeddedtest.Start(ctx, t, log)
	publishTap(ctx, t, conn, "isp", "home-1", "wan", pkts, 100)
	campaignFile := filepath.Join(dir, "isp.yaml")
	if err := os.WriteFile(campaignFile, []byte("name: isp\nhomes:\n  - name: home-1\n    taps:\n      - name: wan\n        interface: eth1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runDetector(ctx, t, log, []string{"--hosts", modelPath, "--campaign", campaignFile, "--nats", srv.NATSURL, "--metrics-addr", ""}, func() (bool, string) {
		cons, err := conn.JS.Consumer(ctx, schemas.StreamPackets, "hostcounter-isp-all-wan")
		if err != nil {
			return false, err.Error()
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0, fmt.Sprintf("consumer %+v", info)
	})
	got := seenOf(ctx, t, conn, "isp", "home-1")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("SEEN holds %d windows, a LiveHome judged %d; they differ", len(got), len(want))
	}
	most := map[string]int{}
	for _, w := range got {
		if w.Method != homecount.MethodIPID {
			t.Fatalf("window %d: method %q, want %q", w.StartNs, w.Method, homecount.MethodIPID)
		}
		for _, d := range w.Detections {
			most[d.Device] = max(most[d.Device], d.Count)
		}
	}
	if most["Lightify"] != 3 || most["Withings"] < 1 || most["Withings"] > 2 {
		t.Errorf("most units counted in a window: %v, want 3 Lightifys and up to 2 scales", most)
	}
}
