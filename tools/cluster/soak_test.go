package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/homemole/homemole/pipeline/agent"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/tools/internal/servers"
)

// envSoak is the packets of the cluster soak; without it the soak is
// skipped (`go tool task soak` runs it with 20,000,000).
const envSoak = "HOMEMOLE_SOAK_PACKETS"

// TestClusterSoak runs the live soak through the 3-node cluster: two
// homes, each a synthetic live tap (homegen.LiveSource) read as fast as it
// goes on a 1 s rotation by a capture agent logged in as its home, publish
// HOMEMOLE_SOAK_PACKETS packets in all to the R3 streams; two labeler and
// two windower processes (writing as they go, under a session budget) take
// them. Every packet must be in PACKETS once and in LABELED once, the
// windowed dataset must count all of them, and each worker process's peak
// RSS (VmHWM, read before it stops) must stay under 512 MiB.
func TestClusterSoak(t *testing.T) {
	v := os.Getenv(envSoak)
	if v == "" {
		t.Skipf("the cluster soak runs when %s is set (go tool task soak runs 20,000,000 packets)", envSoak)
	}
	packets, err := strconv.ParseInt(v, 10, 64)
	if err != nil || packets < 2 {
		t.Fatalf("%s=%q: want a number of packets, at least 2", envSoak, v)
	}
	b := testBins(t)
	ctx, cancel := context.WithTimeout(context.Background(), 110*time.Minute)
	defer cancel()
	dir := t.TempDir()

	const homes, replicas = 2, 2
	c := &campaign.Campaign{Name: "soak"}
	var files [][]string
	for i := range homes {
		name := fmt.Sprintf("home-%02d", i+1)
		g, err := homegen.Generate(homegen.Config{Seed: uint64(300 + i), Sessions: 2, SessionDuration: 2 * time.Minute}, filepath.Join(dir, "campaign", name))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, g.Files)
		c.Homes = append(c.Homes, &campaign.Home{
			Name: name, Gateway: campaign.Gateway{Mode: "napt", MAC: g.GatewayMAC, LANNets: []string{g.LANNet}},
			Taps: []campaign.Tap{{Name: "lan", Interface: "syn0"}}, Inventory: g.Inventory,
			Live: campaign.Live{Rotation: time.Second},
		})
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	data, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	w := &workload{c: c, file: filepath.Join(dir, "campaign", "campaign.yaml"),
		windowArgs: append(append([]string(nil), windowArgs...), "--flush-windows", "256", "--session-budget", "32MiB")}
	if err := os.WriteFile(w.file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	spec, err := specOfArgs(c, w.windowArgs)
	if err != nil {
		t.Fatal(err)
	}

	k, err := startCluster(ctx, filepath.Join(dir, "cluster"), b, w, replicas, testLog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	st, err := k.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	var mu sync.Mutex
	var read int
	errs := make(chan error, homes)
	var wg sync.WaitGroup
	for i, h := range c.Homes {
		share := packets / homes
		if i == 0 {
			share += packets % homes
		}
		wg.Go(func() {
			errs <- func() error {
				user := "capture-" + h.Name
				auth := k.Auth(user)
				conn, err := bus.Connect(ctx, bus.Config{URL: k.NATS.URL, Name: user, Replicas: 3, Auth: auth, IDKey: auth.IDKey()}, testLog)
				if err != nil {
					return fmt.Errorf("%s: %w", h.Name, err)
				}
				defer conn.Close()
				// Stats names only the last sessions; the home's one tap
				// hands each to OnSession, and Run has returned before they
				// are read.
				var sessions []string
				ag, err := agent.New(agent.Config{Campaign: c.Name, Home: h, Log: testLog,
					OnSession: func(s string) { sessions = append(sessions, s) }})
				if err != nil {
					return err
				}
				src := homegen.NewLiveSource(files[i], share)
				if err := ag.Run(ctx, conn, []agent.Input{{Tap: "lan", Name: "syn0", Live: true, Open: func() (capture.Source, error) { return src, nil }}}); err != nil {
					return fmt.Errorf("agent of %s: %w", h.Name, err)
				}
				ast := ag.Stats()
				mu.Lock()
				defer mu.Unlock()
				read += ast.Packets
				for _, s := range sessions {
					w.sessions = append(w.sessions, h.Name+"/"+s)
				}
				return nil
			}()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	published := time.Since(start)
	if _, err := k.WaitWindowed(ctx, st, spec, 30*time.Minute); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)

	// Peak RSS of every worker, read while it still runs.
	var rss []string
	var over []string
	k.mu.Lock()
	procs := append(append([]*servers.Proc(nil), k.Labelers...), k.Windowers...)
	k.mu.Unlock()
	for _, p := range procs {
		mib, err := p.PeakRSS()
		if err != nil {
			t.Fatal(err)
		}
		rss = append(rss, fmt.Sprintf("%s %.0f MiB", p.Name, mib))
		if mib >= 512 {
			over = append(over, p.Name)
		}
	}

	conn, err := k.Admin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pub, err := countStream(ctx, conn.JS, schemas.StreamPackets)
	if err != nil {
		t.Fatal(err)
	}
	lab, err := countStream(ctx, conn.JS, schemas.StreamLabeled)
	if err != nil {
		t.Fatal(err)
	}
	m, err := dataset.Assemble(ctx, st, spec)
	if err != nil {
		t.Fatalf("assemble the manifest: %v", err)
	}
	fmt.Printf("soak (cluster): %d packets read, %d published (%d duplicated, %d missing), %d labeled (%d duplicated, %d missing), %d windowed in %d sessions of a 1 s rotation; published in %s, windowed in %s (%.0f packets/s); peak RSS %s\n",
		read, pub.Unique, pub.Dups, pub.Holes, lab.Unique, lab.Dups, lab.Holes, m.Packets, len(w.sessions),
		published.Round(time.Second), elapsed.Round(time.Second), float64(read)/elapsed.Seconds(), strings.Join(rss, ", "))
	if int64(read) != packets || int64(pub.Unique) != packets || int64(lab.Unique) != packets || int64(m.Packets) != packets {
		t.Errorf("%d packets read, %d published, %d labeled, %d windowed: want %d each", read, pub.Unique, lab.Unique, m.Packets, packets)
	}
	if pub.Dups+pub.Holes+lab.Dups+lab.Holes != 0 {
		t.Errorf("published %s; labeled %s: want no packet duplicated or missing", pub, lab)
	}
	if len(over) > 0 {
		t.Errorf("peak RSS of %s at or over 512 MiB", strings.Join(over, ", "))
	}
}
