package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/homemole/homemole/pipeline/build"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/label"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/services/internal/workertest"
)

// TestWindowerWritesEverySession runs the windower's main in-process
// against embedded JetStream and S3, feeds it a generated home through a
// real capture agent and labeler, and checks what it stored: a part per
// capture session, windows of the asked size, and a manifest that assembles
// over all of them.
func TestWindowerWritesEverySession(t *testing.T) {
	ctx, r := workertest.New(t, 2*time.Minute, 2, 2*time.Minute)
	lab, err := label.New(r.Campaign)
	if err != nil {
		t.Fatal(err)
	}
	lctx, stopLabeler := context.WithCancel(ctx)
	defer stopLabeler()
	go func() { _ = lab.Run(lctx, r.Conn, "labeler-wt", r.Log) }()
	stop := workertest.Start(ctx, t, run, r.Log, "--campaign", r.CampaignFile, "--dataset", "wt", "--window", "20",
		"--nats", r.Servers.NATSURL, "--s3", r.Servers.S3Endpoint)
	published := r.Publish(ctx, t)

	spec := window.Spec{Dataset: "wt", Version: "v1"}
	parts := func() int {
		objs, err := r.Store.List(ctx, spec.Prefix()+"/")
		if err != nil {
			return 0
		}
		n := 0
		for _, o := range objs {
			if strings.HasSuffix(o.Key, window.PartSuffix) {
				n++
			}
		}
		return n
	}
	workertest.Eventually(ctx, t, time.Minute, "the windower did not write a part for each of the 2 sessions", func() bool { return parts() == 2 })
	if err := stop(); err != nil {
		t.Fatalf("windower: %v", err)
	}
	saved, err := window.LoadSpec(ctx, r.Store, "wt", "v1")
	if err != nil {
		t.Fatalf("the windower recorded no spec: %v", err)
	}
	if want := build.LabelsOf(r.Campaign); strings.Join(saved.Labels, ",") != strings.Join(want, ",") || saved.Size != 20 {
		t.Errorf("recorded spec: labels %v, window %d; want the campaign's %v, 20", saved.Labels, saved.Size, want)
	}
	m, err := dataset.Assemble(ctx, r.Store, saved)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Groups) != 2 || m.Windows == 0 || m.WindowSize != 20 {
		t.Errorf("manifest: %d sessions, %d windows of %d; want 2 sessions, windows of 20", len(m.Groups), m.Windows, m.WindowSize)
	}
	t.Logf("%d packets published, %d windows of %d in %d sessions", published, m.Windows, m.WindowSize, len(m.Groups))
}

// TestWindowerRefusesBadFlags: usage mistakes end the worker at once.
func TestWindowerRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{{}, {"--campaign", "c.yaml", "--dataset", "d"}, {"--campaign", "c.yaml", "--dataset", "d", "--nats", "nats://h:1", "--s3", "h:2", "--partitions", "0"}} {
		if err := run(context.Background(), args, workertest.Env(t)); err == nil {
			t.Errorf("%q: ran", args)
		} else {
			t.Logf("%q: %v", args, err)
		}
	}
}

// TestWindowerRefusedStoresNoSpec: a windower refused for its flags (a
// window of 0 packets, an unknown kind, a negative cap) or its campaign (a
// home without inventory) stores no spec, so the corrected command for the
// same dataset runs. Before, the spec was stored first, and the corrected
// windower was refused as "started with another spec".
func TestWindowerRefusedStoresNoSpec(t *testing.T) {
	ctx, r := workertest.New(t, 2*time.Minute, 1, time.Minute)
	c := *r.Campaign
	h := *c.Homes[0]
	h.Inventory = nil
	c.Homes = []*campaign.Home{&h}
	data, err := yaml.Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	noInventory := filepath.Join(t.TempDir(), "noinv.yaml")
	if err := os.WriteFile(noInventory, data, 0o644); err != nil {
		t.Fatal(err)
	}
	servers := []string{"--nats", r.Servers.NATSURL, "--s3", r.Servers.S3Endpoint}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--campaign", r.CampaignFile, "--window", "0"}, "window size 0"},
		{[]string{"--campaign", r.CampaignFile, "--window", "40", "--kind", "foo"}, `window kind "foo"`},
		{[]string{"--campaign", r.CampaignFile, "--window", "40", "--cap", "-1"}, "cap of -1"},
		{[]string{"--campaign", noInventory, "--window", "40"}, noInventory + ": home " + h.Name + " has no inventory"},
	} {
		args := append(append([]string{"--dataset", "wz"}, bad.args...), servers...)
		if err := run(ctx, args, workertest.Env(t)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: %v, want %q", bad.args, err, bad.want)
		}
		if _, err := r.Store.Get(ctx, (&window.Spec{Dataset: "wz", Version: "v1"}).SpecKey()); err == nil {
			t.Fatalf("%q: the refused windower stored its spec", bad.args)
		}
	}
	stop := workertest.Start(ctx, t, run, r.Log, append([]string{"--dataset", "wz", "--campaign", r.CampaignFile, "--window", "40"}, servers...)...)
	workertest.Eventually(ctx, t, time.Minute, "the corrected windower stored no spec", func() bool {
		s, err := window.LoadSpec(ctx, r.Store, "wz", "v1")
		return err == nil && s.Size == 40
	})
	if err := stop(); err != nil {
		t.Fatalf("the corrected windower: %v", err)
	}
}
