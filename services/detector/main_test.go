package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/detect"
	"github.com/homemole/homemole/pipeline/detect/scene"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/homegen/homegentest"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/worker"
)

// TestReplayedHomeIsDetected replays a held-out session of a generated home,
// as its capture agent's wan tap would publish it (NAPT view, batches of
// 4096 packets), into embedded JetStream, runs the detector on it with a
// model trained on the home's other sessions, and reads hm.seen back. Every
// device type must be reported within the paper's slowest response time
// (13 minutes, its Table VI) of the first packet, and no window may name a
// type twice or carry a count below one. The detector runs as its main
// does, in-process: flags, model file, campaign file.
func TestReplayedHomeIsDetected(t *testing.T) {
	ctx, log := embeddedtest.Context(t, 3*time.Minute), embeddedtest.Log()
	model, pkts, modelPath := trainedHome(ctx, t, log)

	srv, conn, _ := embeddedtest.Start(ctx, t, log)

	var mu sync.Mutex
	first := map[string]int64{}
	var lastEnd int64
	onSeen(t, conn, schemas.SeenSubject("spring", "home-1"), &mu, func(s schemas.Seen) {
		lastEnd = max(lastEnd, s.EndNs)
		names := map[string]bool{}
		for _, d := range s.Detections {
			if names[d.Device] || d.Count < 1 || d.Score < 0.5 {
				t.Errorf("window ending %d: bad detection %+v", s.EndNs, d)
			}
			names[d.Device] = true
			if _, ok := first[d.Device]; !ok {
				first[d.Device] = s.EndNs
			}
		}
	})

	publishWAN(ctx, t, conn, "spring", "home-1", "session-04", pkts, 4096)
	campaignFile := filepath.Join(t.TempDir(), "spring.yaml")
	if err := os.WriteFile(campaignFile, []byte("name: spring\nhomes:\n  - name: home-1\n    taps:\n      - name: wan\n        interface: eth1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	end := pkts[len(pkts)-1].TsNs
	runDetector(ctx, t, log, []string{"--model", modelPath, "--campaign", campaignFile, "--home", "home-1", "--tap", "wan", "--step", "1",
		"--nats", srv.NATSURL, "--metrics-addr", ""}, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return lastEnd >= end, fmt.Sprintf("windows published up to %d, the session ends at %d", lastEnd, end)
	})
	_ = conn.NC.Flush()

	mu.Lock()
	defer mu.Unlock()
	start := pkts[0].TsNs
	var names []string
	for _, d := range model.Devices {
		names = append(names, d.Name)
	}
	sort.Strings(names)
	for _, n := range names {
		at, ok := first[n]
		if !ok {
			t.Errorf("%s was never reported", n)
			continue
		}
		resp := time.Duration(at - start)
		fmt.Printf("%-16s first reported %v after the first packet\n", n, resp.Round(time.Second))
		if resp > 13*time.Minute {
			t.Errorf("%s: first reported after %v, the paper's slowest device takes 13 min", n, resp)
		}
	}
}

// onSeen hands every hm.seen message on subject, decoded, to f under mu
// until the test ends; a message that does not decode fails the test.
func onSeen(t *testing.T, conn *bus.Conn, subject string, mu *sync.Mutex, f func(schemas.Seen)) {
	t.Helper()
	sub, err := conn.NC.Subscribe(subject, func(msg *nats.Msg) {
		s, err := schemas.DecodeSeen(msg.Data)
		if err != nil {
			t.Errorf("hm.seen message: %v", err)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		f(s)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
}

// publishWAN publishes a session's packets as the capture agent of the
// wan tap of campaign c's home would: in batches of batch packets, the
// last one final.
func publishWAN(ctx context.Context, t *testing.T, conn *bus.Conn, c, home, session string, pkts []schemas.Packet, batch int) {
	t.Helper()
	for lo := 0; lo < len(pkts); lo += batch {
		hi := min(lo+batch, len(pkts))
		b := &schemas.Batch{Kind: schemas.KindPackets, Campaign: c, Home: home, Tap: "wan", Source: c + "/" + home + "/wan/wan.pcap",
			Session: session, FirstOffset: uint64(lo), Final: hi == len(pkts), Packets: pkts[lo:hi]}
		if err := conn.Publish(ctx, schemas.PacketSubject(c, home, "wan"), b); err != nil {
			t.Fatal(err)
		}
	}
}

// runDetector runs the detector as its main does, with args, until
// finished says it published every window awaited, then stops it. A
// detector that stops by itself, or the test's deadline, fails the test
// with finished's account of how far it got.
func runDetector(ctx context.Context, t *testing.T, log *slog.Logger, args []string, finished func() (bool, string)) {
	t.Helper()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- run(runCtx, args, worker.Env{Log: log, Out: os.Stderr}) }()
	for {
		ok, progress := finished()
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the detector did not finish: %s", progress)
		case err := <-done:
			t.Fatalf("detector stopped: %v (%s)", err, progress)
		case <-time.After(50 * time.Millisecond):
		}
	}
	stop()
	if err := <-done; err != nil && err != context.Canceled {
		t.Fatalf("detector: %v", err)
	}
}

// trainedHome is a generated home's model, trained on three of its
// sessions, and the held-out fourth session as its capture agent's wan tap
// sees it (NAPT view).
func trainedHome(ctx context.Context, t *testing.T, log *slog.Logger) (*detect.Model, []schemas.Packet, string) {
	t.Helper()
	dir := t.TempDir()
	h, sessions := generatedHome(t, dir, homegen.Config{Seed: 3, Sessions: 4, SessionDuration: 20 * time.Minute})
	// A small model (fewer samples and epochs than homemole sp train's
	// defaults) keeps the test short; detection does not need more here.
	cfg := detect.DefaultConfig()
	cfg.DetectorSamples, cfg.CounterSamples, cfg.CNN.Epochs = 600, 120, 12
	m, err := detect.Train(ctx, scene.HomeCorpus(sessions[:3]), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	modelPath := filepath.Join(dir, "home.spm")
	if err := m.SaveFile(modelPath); err != nil {
		t.Fatal(err)
	}
	model, err := detect.LoadFile(modelPath) // the detector reads what sp train wrote
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(model.Close)

	// The held-out session's WAN capture, as the agent's wan tap sees it.
	hc, err := h.HomeConfig()
	if err != nil {
		t.Fatal(err)
	}
	wanPath := filepath.Join(dir, "wan.pcap")
	if _, err := gateway.EmulateFile(ctx, h.Files[3], wanPath, filepath.Join(dir, "truth.csv"), hc, gateway.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	return model, capturetest.Packets(t, wanPath, features.HomeConfig{}), modelPath
}

// generatedHome generates a home under dir and loads its sessions as
// the NAPT gateway's WAN tap sees them.
func generatedHome(t *testing.T, dir string, cfg homegen.Config) (*homegen.Home, []scene.HomeSession) {
	t.Helper()
	h, hc := homegentest.Generate(t, cfg, dir)
	sessions, err := scene.LoadHomeNAPT(context.Background(), h.Files, h.Inventory, hc)
	if err != nil {
		t.Fatalf("sessions of the generated home: %v", err)
	}
	return h, sessions
}
