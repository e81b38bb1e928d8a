package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/homemole/homemole/k8s/natsauth"
	"github.com/homemole/homemole/pipeline/build"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/tools/internal/servers"
)

// logLevel is the workers' log level (HOMEMOLE_CLUSTER_LOG, default warn).
var logLevel = cmp.Or(os.Getenv("HOMEMOLE_CLUSTER_LOG"), "warn")

// bins are the binaries a cluster runs.
type bins struct {
	nats, minio, dir string // dir holds capture, labeler, windower
}

// install builds what is missing: nats-server and MinIO once (stamped with
// their versions), the services every time (go build's cache makes that
// quick when nothing changed).
func install() (bins, error) {
	var b bins
	var err error
	if b.nats, err = servers.InstallNATS(); err != nil {
		return b, err
	}
	if b.minio, err = servers.InstallMinIO(); err != nil {
		return b, err
	}
	if b.dir, err = servers.BuildServices("capture", "labeler", "windower"); err != nil {
		return b, err
	}
	return b, nil
}

// workload is a generated campaign written as a campaign file.
type workload struct {
	c    *campaign.Campaign
	file string
	// sessions are home/session of every capture file.
	sessions []string
	// windowArgs, when set, replace the package's windowArgs for this
	// workload's windowers (the soak writes as it goes, under a budget).
	windowArgs []string
}

// windowerArgs are the windower flags of the workload's build.
func (w *workload) windowerArgs() []string {
	if w.windowArgs != nil {
		return w.windowArgs
	}
	return windowArgs
}

// generate writes homes generated homes of sessions sessions each under dir.
func generate(dir string, homes, sessions int, duration time.Duration) (*workload, error) {
	c := &campaign.Campaign{Name: "cluster"}
	for i := range homes {
		name := fmt.Sprintf("home-%02d", i+1)
		g, err := homegen.Generate(homegen.Config{Seed: uint64(100 + i), Sessions: sessions, SessionDuration: duration}, filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		c.Homes = append(c.Homes, g.CampaignHome(name))
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	data, err := yaml.Marshal(c)
	if err != nil {
		return nil, err
	}
	w := &workload{c: c, file: filepath.Join(dir, "campaign.yaml")}
	if err := os.WriteFile(w.file, data, 0o644); err != nil {
		return nil, err
	}
	for _, h := range c.Homes {
		for _, f := range h.Taps[0].Files {
			w.sessions = append(w.sessions, h.Name+"/"+campaign.SessionName("lan", f))
		}
	}
	return w, nil
}

// windowArgs are the windower flags of every build: the cluster's
// windowers get them, the embedded reference parses its spec from them.
var windowArgs = []string{"--dataset", "cluster", "--version", "v1", "--kind", schemas.KindNoise, "--window", "100", "--cap", "0"}

func specOf(c *campaign.Campaign) (window.Spec, error) { return specOfArgs(c, windowArgs) }

// specOfArgs is the spec windowers given args write.
func specOfArgs(c *campaign.Campaign, args []string) (window.Spec, error) {
	var spec window.Spec
	fs := flag.NewFlagSet("spec", flag.ContinueOnError)
	spec.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return spec, err
	}
	spec.Labels = build.LabelsOf(c)
	return spec, spec.Validate()
}

// Cluster is a running local cluster: a 3-node NATS JetStream cluster with
// TLS and per-worker users, a MinIO, and labeler and windower replicas,
// each partition its own process.
type Cluster struct {
	dir      string
	bins     bins
	w        *workload
	NATS     *servers.NATSCluster
	MinIO    *servers.MinIO
	users    map[string]servers.User
	replicas int
	log      *slog.Logger

	mu        sync.Mutex
	Labelers  []*servers.Proc
	Windowers []*servers.Proc
	// AckWait is how long a killed worker's unacked batches stay out of
	// reach of its replacement.
	AckWait time.Duration
	// Batch is the capture agents' packets per batch.
	Batch int
	// onCapture, when set, sees every capture agent process started.
	onCapture func(home string, p *servers.Proc)
	// captureArgs, when set, adds flags to a home's capture agent.
	captureArgs func(home string) []string
}

// usersFor are the cluster's NATS users, as the Kubernetes manifests get
// them (k8s/natsauth): an admin (this tool), the workers with what their
// work needs, and one capture agent per home that may publish only its own
// home's packets; each may subscribe only under its own inbox prefix.
func usersFor(c *campaign.Campaign) map[string]servers.User {
	u := map[string]servers.User{}
	for _, x := range natsauth.WithPasswords(natsauth.Users(c)) {
		u[x.Name] = x
	}
	return u
}

// startCluster starts NATS and MinIO, declares the streams (R3) and starts
// replicas labeler and windower partitions.
func startCluster(ctx context.Context, dir string, b bins, w *workload, replicas int, log *slog.Logger) (*Cluster, error) {
	k := &Cluster{dir: dir, bins: b, w: w, replicas: replicas, log: log, users: usersFor(w.c), AckWait: 5 * time.Second, Batch: 4096}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	tlsFiles, err := servers.NewTLS(dir)
	if err != nil {
		return nil, err
	}
	var users []servers.User
	for _, u := range k.users {
		users = append(users, u)
	}
	if k.NATS, err = servers.StartNATSCluster(b.nats, filepath.Join(dir, "nats"), 3, tlsFiles, users); err != nil {
		return nil, err
	}
	if k.MinIO, err = servers.StartMinIO(b.minio, filepath.Join(dir, "minio")); err != nil {
		k.Close()
		return nil, err
	}
	// Declare the streams R3 before any agent publishes: agents may read
	// stream information but not declare streams.
	conn, err := k.Admin(ctx)
	if err != nil {
		k.Close()
		return nil, err
	}
	conn.Close()
	for i := range replicas {
		if err := k.StartLabeler(i); err != nil {
			k.Close()
			return nil, err
		}
		if err := k.StartWindower(i); err != nil {
			k.Close()
			return nil, err
		}
	}
	return k, nil
}

// env is a worker's environment: endpoints, its user, its logs.
func (k *Cluster) env(user string) []string {
	u := k.users[user]
	return append(k.MinIO.Env(),
		"HOMEMOLE_NATS_URL="+k.NATS.URL, "HOMEMOLE_NATS_REPLICAS=3",
		"HOMEMOLE_NATS_USER="+u.Name, "HOMEMOLE_NATS_PASSWORD="+u.Password, "HOMEMOLE_NATS_CA="+k.NATS.TLS.CA,
		"HOMEMOLE_S3_BUCKET=homemole", "HOMEMOLE_LOG="+logLevel, "HOMEMOLE_METRICS_ADDR=", "HOMEMOLE_HOME="+filepath.Join(k.dir, "unused"))
}

// Auth is the NATS login of user.
func (k *Cluster) Auth(user string) bus.Auth {
	u := k.users[user]
	return bus.Auth{User: u.Name, Password: u.Password, CAFile: k.NATS.TLS.CA}
}

// Admin connects as the admin user with R3 streams declared.
func (k *Cluster) Admin(ctx context.Context) (*bus.Conn, error) {
	return bus.Connect(ctx, bus.Config{URL: k.NATS.URL, Replicas: 3, Name: "cluster-admin", Auth: k.Auth("admin")}, k.log)
}

// Store opens the MinIO bucket the windowers write.
func (k *Cluster) Store(ctx context.Context) (store.Store, error) {
	return store.OpenS3(ctx, store.S3Config{Endpoint: k.MinIO.Addr, AccessKey: servers.MinIOAccessKey, SecretKey: servers.MinIOSecretKey, Bucket: "homemole"})
}

func (k *Cluster) partArgs(i int) []string {
	return []string{"--campaign", k.w.file, "--partition", fmt.Sprint(i), "--partitions", fmt.Sprint(k.replicas), "--ack-wait", k.AckWait.String()}
}

// StartLabeler starts (or restarts) the labeler of partition i.
func (k *Cluster) StartLabeler(i int) error { return k.startWorker("labeler", i) }

// StartWindower starts (or restarts) the windower of partition i.
func (k *Cluster) StartWindower(i int) error { return k.startWorker("windower", i) }

func (k *Cluster) startWorker(kind string, i int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.spawn(kind, i)
}

// spawn starts a worker process of partition i; k.mu is held.
func (k *Cluster) spawn(kind string, i int) error {
	args := k.partArgs(i)
	if kind == "windower" {
		args = append(args, k.w.windowerArgs()...)
	}
	name := fmt.Sprintf("%s-%d", kind, i)
	p, err := servers.Start(name, filepath.Join(k.bins.dir, kind), args, k.env(kind), filepath.Join(k.dir, name+".log"))
	if err != nil {
		return err
	}
	if kind == "labeler" {
		k.Labelers = setProc(k.Labelers, i, p)
	} else {
		k.Windowers = setProc(k.Windowers, i, p)
	}
	return nil
}

func setProc(ps []*servers.Proc, i int, p *servers.Proc) []*servers.Proc {
	for len(ps) <= i {
		ps = append(ps, nil)
	}
	ps[i] = p
	return ps
}

// StartCapture starts the capture agent of one home, spooling under the
// cluster's folder so a restarted agent resumes where the last one stopped.
func (k *Cluster) StartCapture(home string) (*servers.Proc, error) {
	args := []string{"--campaign", k.w.file, "--home", home, "--batch", fmt.Sprint(k.Batch), "--spool", filepath.Join(k.dir, "spool", home)}
	if k.captureArgs != nil {
		args = append(args, k.captureArgs(home)...)
	}
	return servers.Start("capture-"+home, filepath.Join(k.bins.dir, "capture"), args, k.env("capture-"+home), filepath.Join(k.dir, "capture-"+home+".log"))
}

// RunCaptures runs every home's agent, parallel at a time, until each has
// published all its captures. An agent killed by a signal (a fault test)
// is started again and resumes from its spool and progress files.
func (k *Cluster) RunCaptures(ctx context.Context, parallel int) error {
	sem := make(chan struct{}, parallel)
	errs := make(chan error, len(k.w.c.Homes))
	var wg sync.WaitGroup
	for _, h := range k.w.c.Homes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			for life := 0; ; life++ {
				p, err := k.StartCapture(h.Name)
				if err != nil {
					errs <- err
					return
				}
				if k.onCapture != nil {
					k.onCapture(h.Name, p)
				}
				select {
				case <-ctx.Done():
					p.Stop(5 * time.Second)
					errs <- ctx.Err()
					return
				case <-p.Exited():
				}
				if p.Err() == nil {
					return
				}
				if servers.ExitCode(p.Err()) != -1 || life > 5 {
					out, _ := os.ReadFile(p.LogFile)
					errs <- fmt.Errorf("capture agent of %s failed: %v\n%s", h.Name, p.Err(), out)
					return
				}
				// Killed: a replacement resumes from the spool and progress files.
				k.log.Info("capture agent killed; restarting", "home", h.Name)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	return nil
}

// WaitWindowed waits until every session has its part record in the store,
// watching the workers: one that exits on its own fails the wait.
func (k *Cluster) WaitWindowed(ctx context.Context, st store.Store, spec window.Spec, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		n, err := countParts(ctx, st, spec)
		if err == nil && n == len(k.w.sessions) {
			return n, nil
		}
		if time.Now().After(deadline) {
			return n, fmt.Errorf("%d of %d sessions windowed after %s (last error %v); logs in %s", n, len(k.w.sessions), timeout, err, k.dir)
		}
		if err := k.workersAlive(); err != nil {
			return n, err
		}
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// workersAlive reports a worker that ended without being told to: tests
// that kill one restart it at once, under the lock.
func (k *Cluster) workersAlive() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range append(slices.Clone(k.Labelers), k.Windowers...) {
		select {
		case <-p.Exited():
			out, _ := os.ReadFile(p.LogFile)
			return fmt.Errorf("%s exited: %v\n%s", p.Name, p.Err(), tail(out, 4000))
		default:
		}
	}
	return nil
}

// KillWorker SIGKILLs a labeler ("labeler") or windower replica and starts
// its replacement, as a Deployment would; the lock keeps WaitWindowed from
// taking the kill for a crash.
func (k *Cluster) KillWorker(kind string, i int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	p := k.Windowers[i]
	if kind == "labeler" {
		p = k.Labelers[i]
	}
	if !p.Kill() {
		return fmt.Errorf("%s had ended before the kill: %v", p.Name, p.Err())
	}
	return k.spawn(kind, i)
}

func countParts(ctx context.Context, st store.Store, spec window.Spec) (int, error) {
	objs, err := st.List(ctx, spec.Prefix()+"/")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, o := range objs {
		if path.Base(o.Key) == window.PartSuffix {
			n++
		}
	}
	return n, nil
}

// Close stops every process.
func (k *Cluster) Close() {
	k.mu.Lock()
	procs := append(slices.Clone(k.Labelers), k.Windowers...)
	k.mu.Unlock()
	for _, p := range procs {
		p.Stop(10 * time.Second)
	}
	if k.MinIO != nil {
		k.MinIO.Stop()
	}
	if k.NATS != nil {
		k.NATS.Close()
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// objects reads every object of the dataset, manifest included.
func objects(ctx context.Context, st store.Store, spec window.Spec) (map[string][]byte, error) {
	infos, err := st.List(ctx, spec.Prefix()+"/")
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, o := range infos {
		data, err := st.Get(ctx, o.Key)
		if err != nil {
			return nil, err
		}
		out[o.Key] = data
	}
	if _, ok := out[dataset.Key(spec.Dataset, spec.Version)]; !ok {
		return nil, fmt.Errorf("no manifest among %d objects", len(out))
	}
	return out, nil
}
