// Command cluster runs HomeMole as a cluster on this machine and checks it
// against the embedded mode: a 3-node NATS JetStream cluster (R3 streams,
// TLS, a user per worker and per home's capture agent), a MinIO, N labeler
// and N windower replicas splitting the homes by partition, and one capture
// agent process per home, all on loopback. It runs a campaign of generated
// homes through it, then through the embedded mode, and prints per-stage
// counts (packets published, labeled, windowed, objects), which must match,
// the throughput of both, and fails unless every object is byte-identical.
//
// Run from the repository root:
//
//	go run ./tools/cluster --homes 16 --replicas 2
//	go run ./tools/cluster --install   # only build nats-server, MinIO and the services into .build/bin
//	go run ./tools/cluster --install-nats   # only nats-server (the security tests)
//
// The fault and permission tests (tools/cluster/*_test.go) use the same
// harness; `go tool task cluster-test` runs both.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/homemole/homemole/pipeline/build"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/embedded"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/tools/internal/servers"
)

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("cluster: ")
	homes := flag.Int("homes", 16, "generated homes in the campaign")
	sessions := flag.Int("sessions", 2, "capture sessions per home")
	duration := flag.Duration("duration", 10*time.Minute, "length of each generated session")
	replicas := flag.Int("replicas", 2, "labeler and windower replicas (partitions)")
	parallel := flag.Int("parallel", 8, "capture agents running at once")
	dir := flag.String("dir", "", "working folder (default: a temporary one, removed after)")
	installOnly := flag.Bool("install", false, "only build nats-server, MinIO and the services into "+servers.BinDir)
	natsOnly := flag.Bool("install-nats", false, "only build nats-server into "+servers.BinDir+" (what the security tests need)")
	flag.Parse()
	start := time.Now()
	if *natsOnly {
		bin, err := servers.InstallNATS()
		if err != nil {
			log.Fatal(err)
		}
		log.Printf("nats-server ready in %s: %s", time.Since(start).Round(time.Millisecond), bin)
		return
	}
	b, err := install()
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("binaries ready in %s: %s, %s, services in %s", time.Since(start).Round(time.Millisecond), b.nats, b.minio, b.dir)
	if *installOnly {
		return
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "homemole-cluster-")
		if err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	if err := run(b, *dir, *homes, *sessions, *duration, *replicas, *parallel); err != nil {
		log.Printf("FAIL: %v", err)
		os.Exit(1)
	}
	log.Printf("done in %s", time.Since(start).Round(time.Second))
}

func run(b bins, dir string, homes, sessions int, duration time.Duration, replicas, parallel int) error {
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	t := time.Now()
	w, err := generate(filepath.Join(dir, "campaign"), homes, sessions, duration)
	if err != nil {
		return err
	}
	log.Printf("generated %d homes x %d sessions of %s in %s", homes, sessions, duration, time.Since(t).Round(time.Millisecond))

	emb, err := embeddedBuild(ctx, filepath.Join(dir, "embedded"), w, logger)
	if err != nil {
		return fmt.Errorf("embedded build: %w", err)
	}
	log.Printf("embedded build: %d packets in %s", emb.counts.Published.Unique, emb.elapsed.Round(time.Millisecond))

	k, err := startCluster(ctx, filepath.Join(dir, "cluster"), b, w, replicas, logger)
	if err != nil {
		return err
	}
	defer k.Close()
	log.Printf("cluster up: NATS %s, MinIO %s, %d labelers, %d windowers", k.NATS.URL, k.MinIO.Addr, replicas, replicas)
	cl, err := clusterBuild(ctx, k, parallel, nil)
	if err != nil {
		return err
	}
	printCounts(os.Stdout, replicas, cl, emb)
	return compare(cl, emb)
}

// result is one build's figures and objects.
type result struct {
	counts  Counts
	objects map[string][]byte
	elapsed time.Duration
	// partitions says what each partition's consumers took (cluster only).
	partitions []string
}

// embeddedBuild runs the campaign through the embedded mode, in this
// process, as `homemole build` does.
func embeddedBuild(ctx context.Context, dir string, w *workload, logger *slog.Logger) (*result, error) {
	srv, err := embedded.Start(ctx, dir, logger)
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	conn, err := bus.Connect(ctx, bus.Config{URL: srv.NATSURL, Auth: bus.Auth{InProcess: true}}, logger)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	st, err := store.OpenS3(ctx, store.S3Config{Endpoint: srv.S3Endpoint, AccessKey: srv.S3AccessKey, SecretKey: srv.S3SecretKey, Bucket: "homemole"})
	if err != nil {
		return nil, err
	}
	spec, err := specOf(w.c)
	if err != nil {
		return nil, err
	}
	res, err := (&build.Build{Campaign: w.c, Spec: spec, Bus: conn, Store: st, Log: logger, Timeout: 10 * time.Minute}).Run(ctx)
	if err != nil {
		return nil, err
	}
	return collect(ctx, conn, st, res.Manifest, res.Elapsed)
}

// clusterBuild runs every home's capture agent against the cluster, waits
// until every session is windowed and assembles the manifest. during runs
// beside it (the fault tests' faults).
func clusterBuild(ctx context.Context, k *Cluster, parallel int, during func(ctx context.Context) error) (*result, error) {
	st, err := k.Store(ctx)
	if err != nil {
		return nil, err
	}
	spec, err := specOf(k.w.c)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	fctx, stopFaults := context.WithCancel(ctx)
	defer stopFaults()
	faultErr := make(chan error, 1)
	if during != nil {
		go func() { faultErr <- during(fctx) }()
	} else {
		faultErr <- nil
	}
	if err := k.RunCaptures(ctx, parallel); err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	if _, err := k.WaitWindowed(ctx, st, spec, 5*time.Minute); err != nil {
		return nil, fmt.Errorf("wait for the windowers: %w", err)
	}
	// A fault still waiting for its moment now will never have it.
	stopFaults()
	if err := <-faultErr; err != nil {
		return nil, fmt.Errorf("fault injection: %w", err)
	}
	m, err := dataset.Assemble(ctx, st, spec)
	if err != nil {
		return nil, fmt.Errorf("assemble the manifest: %w", err)
	}
	elapsed := time.Since(start)
	conn, err := k.Admin(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	r, err := collect(ctx, conn, st, m, elapsed)
	if err != nil {
		return nil, fmt.Errorf("count the stages: %w", err)
	}
	// What each partition's durable consumer delivered: the split.
	for _, c := range []struct{ stream, base string }{{"PACKETS", "labeler-" + k.w.c.Name}, {"LABELED", "windower-" + spec.Dataset + "-" + spec.Version}} {
		line := c.base + ":"
		for i := range k.replicas {
			durable := fmt.Sprintf("%s-p%dof%d", c.base, i, k.replicas)
			if k.replicas == 1 {
				durable = c.base
			}
			cons, err := conn.JS.Consumer(ctx, c.stream, durable)
			if err != nil {
				return nil, fmt.Errorf("consumer %s: %w", durable, err)
			}
			info, err := cons.Info(ctx)
			if err != nil {
				return nil, err
			}
			homes := "all homes"
			if k.replicas > 1 {
				homes = fmt.Sprintf("%d homes", max(1, len(info.Config.FilterSubjects)))
			}
			line += fmt.Sprintf("  p%d: %s, %d batches acked (%d deliveries);", i, homes, info.AckFloor.Consumer, info.Delivered.Consumer)
		}
		r.partitions = append(r.partitions, line)
	}
	return r, nil
}

func collect(ctx context.Context, conn *bus.Conn, st store.Store, m *dataset.Manifest, elapsed time.Duration) (*result, error) {
	r := &result{elapsed: elapsed}
	var err error
	if r.counts.Published, err = countStream(ctx, conn.JS, "PACKETS"); err != nil {
		return nil, err
	}
	if r.counts.Labeled, err = countStream(ctx, conn.JS, "LABELED"); err != nil {
		return nil, err
	}
	if r.objects, err = objects(ctx, st, window.Spec{Dataset: m.Dataset, Version: m.Version}); err != nil {
		return nil, err
	}
	if err := dataset.Verify(ctx, st, m); err != nil {
		return nil, err
	}
	r.counts.Windowed, r.counts.Windows, r.counts.Objects = m.Packets, m.Windows, len(r.objects)
	return r, nil
}

func printCounts(out *os.File, replicas int, cl, emb *result) {
	row := func(name string, a, b any) { fmt.Fprintf(out, "%-34s %20v %20v\n", name, a, b) }
	fmt.Fprintf(out, "\n%-34s %20s %20s\n", "stage", fmt.Sprintf("cluster (%d+%d)", replicas, replicas), "embedded")
	row("packets published (PACKETS)", cl.counts.Published.Unique, emb.counts.Published.Unique)
	row("  batches", cl.counts.Published.Messages, emb.counts.Published.Messages)
	row("  duplicated / missing", fmt.Sprintf("%d / %d", cl.counts.Published.Dups, cl.counts.Published.Holes), fmt.Sprintf("%d / %d", emb.counts.Published.Dups, emb.counts.Published.Holes))
	row("packets labeled (LABELED)", cl.counts.Labeled.Unique, emb.counts.Labeled.Unique)
	row("  duplicated / missing", fmt.Sprintf("%d / %d", cl.counts.Labeled.Dups, cl.counts.Labeled.Holes), fmt.Sprintf("%d / %d", emb.counts.Labeled.Dups, emb.counts.Labeled.Holes))
	row("packets windowed (manifest)", cl.counts.Windowed, emb.counts.Windowed)
	row("windows", cl.counts.Windows, emb.counts.Windows)
	row("objects (manifest included)", cl.counts.Objects, emb.counts.Objects)
	row("elapsed", cl.elapsed.Round(time.Millisecond), emb.elapsed.Round(time.Millisecond))
	tp := func(r *result) string {
		return fmt.Sprintf("%.0f", float64(r.counts.Published.Unique)/r.elapsed.Seconds())
	}
	row("throughput (packets/s)", tp(cl), tp(emb))
	fmt.Fprintln(out)
	for _, l := range cl.partitions {
		fmt.Fprintln(out, l)
	}
	fmt.Fprintln(out)
}

// compare fails unless both builds hold the same packets at every stage
// and byte-identical objects.
func compare(cl, emb *result) error {
	var errs []string
	check := func(name string, a, b Stage) {
		if a.Dups != 0 || a.Holes != 0 {
			errs = append(errs, fmt.Sprintf("%s: cluster %s", name, a))
		}
		if a.Unique != b.Unique || a.Digest != b.Digest {
			errs = append(errs, fmt.Sprintf("%s: cluster %s, embedded %s", name, a, b))
		}
	}
	check("published", cl.counts.Published, emb.counts.Published)
	check("labeled", cl.counts.Labeled, emb.counts.Labeled)
	if cl.counts.Windowed != cl.counts.Labeled.Unique {
		errs = append(errs, fmt.Sprintf("the manifest windows %d packets of %d labeled", cl.counts.Windowed, cl.counts.Labeled.Unique))
	}
	var keys []string
	for key := range emb.objects {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		g, ok := cl.objects[key]
		switch {
		case !ok:
			errs = append(errs, key+": missing from the cluster's build")
		case !bytes.Equal(g, emb.objects[key]):
			errs = append(errs, fmt.Sprintf("%s: %d bytes differ from the embedded build's %d", key, len(g), len(emb.objects[key])))
		}
	}
	for key := range cl.objects {
		if _, ok := emb.objects[key]; !ok {
			errs = append(errs, key+": written by the cluster, not by the embedded build")
		}
	}
	if len(errs) > 0 {
		if len(errs) > 20 {
			errs = append(errs[:20], fmt.Sprintf("... and %d more", len(errs)-20))
		}
		return fmt.Errorf("the cluster's build differs from the embedded build:\n  %s", joinLines(errs))
	}
	return nil
}

func joinLines(s []string) string {
	out := ""
	for i, l := range s {
		if i > 0 {
			out += "\n  "
		}
		out += l
	}
	return out
}
