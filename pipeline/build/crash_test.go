package build

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/embedded"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
)

// The MinIO the crash tests also run against, when set (tools/minio starts
// one and sets these): host:port, or a URL (https:// turns TLS on).
const (
	envMinIO          = "HOMEMOLE_TEST_MINIO"
	envMinIOAccessKey = "HOMEMOLE_TEST_MINIO_ACCESS_KEY"
	envMinIOSecretKey = "HOMEMOLE_TEST_MINIO_SECRET_KEY"
)

// s3For says where one build of a test writes: srv is the build's own
// embedded servers, name tells the builds of a test apart.
type s3For func(t *testing.T, srv *embedded.Servers, name string) store.S3Config

func embeddedS3(_ *testing.T, srv *embedded.Servers, _ string) store.S3Config {
	return embeddedtest.S3(srv)
}

// minioS3 puts each build in a bucket of its own on the MinIO the
// environment names, which OpenS3 creates; it skips the test without one.
func minioS3(t *testing.T) s3For {
	endpoint := os.Getenv(envMinIO)
	if endpoint == "" {
		t.Skipf("no MinIO to test against: set %s (host:port) and %s/%s, or run `go tool task test:minio`, which builds and starts one",
			envMinIO, envMinIOAccessKey, envMinIOSecretKey)
	}
	tls := strings.HasPrefix(endpoint, "https://")
	endpoint = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(endpoint, "https://"), "http://"), "/")
	run := time.Now().UTC().Format("150405.000")
	return func(_ *testing.T, _ *embedded.Servers, name string) store.S3Config {
		return store.S3Config{Endpoint: endpoint, TLS: tls, Bucket: strings.ReplaceAll("hm-crash-"+run+"-"+name, ".", "-"),
			AccessKey: os.Getenv(envMinIOAccessKey), SecretKey: os.Getenv(envMinIOSecretKey)}
	}
}

// TestWindowerKilledMidBuild kills the windowing worker at seeded random
// points of a build (between deliveries, and between the object writes of
// a session's flush), replaces it with a fresh one each time, and checks
// that the build ends with every object and the manifest byte-identical to
// those of an uninterrupted build.
func TestWindowerKilledMidBuild(t *testing.T) { killedInProcess(t, embeddedS3, nil) }

// TestWindowerKilledMidBuildIncremental is the same with sessions written
// as they go (window.Spec.FlushWindows, SessionBudget): kills land between
// an object and its checkpoint, and a restarted windower resumes sessions
// from their checkpoints, yet every object, checkpoint and the manifest
// equal the uninterrupted build's.
func TestWindowerKilledMidBuildIncremental(t *testing.T) {
	t.Run("flush-windows", func(t *testing.T) {
		killedInProcess(t, embeddedS3, func(s *window.Spec) { s.FlushWindows = 6 })
	})
	t.Run("session-budget", func(t *testing.T) {
		killedInProcess(t, embeddedS3, func(s *window.Spec) { s.SessionBudget = 400 * 144 })
	})
}

// TestWindowerKilledMidBuildMinIO is the same against a real MinIO server.
func TestWindowerKilledMidBuildMinIO(t *testing.T) { killedInProcess(t, minioS3(t), nil) }

// TestWindowerProcessKilledMidBuild runs the windower as its own process
// (services/windower) and SIGKILLs it mid-build: nothing it buffered, not
// even the batches its client had fetched and not handed over, survives.
func TestWindowerProcessKilledMidBuild(t *testing.T) { killedProcess(t, embeddedS3) }

// TestWindowerProcessKilledMidBuildMinIO is the same against a real MinIO.
func TestWindowerProcessKilledMidBuildMinIO(t *testing.T) { killedProcess(t, minioS3(t)) }

// crashFixture is a generated home of a few sessions, labeled from its
// inventory (the LAN tap only: the WAN pairing is not what is tested).
type crashFixture struct {
	c   *campaign.Campaign
	log *slog.Logger
	s3  s3For
}

func newCrashFixture(t *testing.T, s3 s3For, sessions int) *crashFixture {
	g, err := homegen.Generate(homegen.Config{Seed: 7, Sessions: sessions, SessionDuration: 3 * time.Minute}, filepath.Join(t.TempDir(), "lan"))
	if err != nil {
		t.Fatal(err)
	}
	c := g.Campaign("crash", "home-1")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return &crashFixture{c: c, s3: s3, log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
}

// build runs one build on servers of its own; prepare may replace the
// windowing worker before it starts.
func (f *crashFixture) build(t *testing.T, name string, spec window.Spec, prepare func(b *Build, srv *embedded.Servers, s3 store.S3Config)) (store.Store, *Result) {
	t.Helper()
	srv, err := embedded.Start(context.Background(), t.TempDir(), f.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	conn, err := bus.Connect(context.Background(), bus.Config{URL: srv.NATSURL}, f.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	cfg := f.s3(t, srv, name)
	st, err := store.OpenS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Small batches give a kill many places to land between.
	b := &Build{Campaign: f.c, Spec: spec, Bus: conn, Store: st, Log: f.log, Timeout: 2 * time.Minute,
		batchSize: 100, windowerAckWait: time.Second}
	if prepare != nil {
		prepare(b, srv, cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := b.Run(ctx)
	if err != nil {
		t.Fatalf("build %s: %v", name, err)
	}
	return st, res
}

// reference builds without interruption and returns every object.
func (f *crashFixture) reference(t *testing.T, spec window.Spec) map[string][]byte {
	start := time.Now()
	st, res := f.build(t, "ref", spec, nil)
	want := objects(t, st, spec)
	t.Logf("uninterrupted build: %d objects, %d windows of %d packets in %d sessions, %s",
		len(want), res.Manifest.Windows, res.Manifest.Packets, len(res.Manifest.Parts), time.Since(start).Round(time.Millisecond))
	if n := len(f.c.Homes[0].Taps[0].Files); len(res.Manifest.Parts) != n {
		t.Fatalf("reference build windowed %d sessions, want %d", len(res.Manifest.Parts), n)
	}
	return want
}

func killedInProcess(t *testing.T, s3 s3For, tune func(*window.Spec)) {
	f := newCrashFixture(t, s3, 3)
	// Objects of a few windows give a kill places to land between the
	// writes of one session's flush.
	spec := window.Spec{Dataset: "crash", Version: "v1", Kind: schemas.KindNoise, Size: 50, WindowsPerObject: 4, Labels: LabelsOf(f.c)}
	if tune != nil {
		tune(&spec)
	}
	want := f.reference(t, spec)
	if tune != nil {
		checkpoints := 0
		for key := range want {
			if path.Base(key) == window.StateSuffix {
				checkpoints++
			}
		}
		if checkpoints == 0 {
			t.Fatal("no session was written as it went (no checkpoint): the test tests nothing new")
		}
		t.Logf("%d sessions checkpointed", checkpoints)
	}
	for _, seed := range []uint64{1, 2, 3, 4} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			start := time.Now()
			// Three lives end after 1..40 events each (a delivery handled
			// or an object written); the fourth runs to the end.
			rng := rand.New(rand.NewPCG(seed, 0x5eed))
			kills := []int{rng.IntN(40) + 1, rng.IntN(40) + 1, rng.IntN(40) + 1}
			killed := 0
			st, res := f.build(t, fmt.Sprint("seed", seed), spec, func(b *Build, _ *embedded.Servers, _ store.S3Config) {
				b.runWindower = func(ctx context.Context, newWindower newWindowerFunc, consume consumeFunc) error {
					for life := 0; ; life++ {
						wctx, cancel := context.WithCancel(ctx)
						k := &killer{left: -1, kill: cancel}
						if life < len(kills) {
							k.left = kills[life]
						}
						// A fresh windower: nothing of its predecessor but
						// what the store and JetStream kept.
						w, err := newWindower(dyingStore{Store: b.Store, k: k})
						if err != nil {
							cancel()
							return err
						}
						err = consume(wctx, func(ctx context.Context, d *bus.Delivery) error {
							if k.step("before batch " + d.Batch.MsgID()) {
								return errKilled
							}
							return w.Handle(ctx, d)
						})
						cancel()
						if ctx.Err() != nil || !k.dead() {
							return err
						}
						t.Logf("windower killed %s", k.where)
						killed++
					}
				}
			})
			t.Logf("kills after %v events: windower killed %d times, build took %s", kills, killed, time.Since(start).Round(time.Millisecond))
			if killed == 0 {
				t.Errorf("the windower was never killed (kill points %v): the test tested nothing", kills)
			}
			checkSame(t, st, res, spec, want)
		})
	}
}

func killedProcess(t *testing.T, s3 s3For) {
	f := newCrashFixture(t, s3, 6)
	// The spec the windower's flags give; one object per session.
	spec := window.Spec{Dataset: "crash", Version: "v1", Kind: schemas.KindNoise, Size: 50, Labels: LabelsOf(f.c)}
	dir := t.TempDir()
	bin := filepath.Join(dir, "windower")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/homemole/homemole/services/windower").CombinedOutput(); err != nil {
		t.Fatalf("build the windower: %v\n%s", err, out)
	}
	data, err := yaml.Marshal(f.c)
	if err != nil {
		t.Fatal(err)
	}
	campaignFile := filepath.Join(dir, "campaign.yaml")
	if err := os.WriteFile(campaignFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	want := f.reference(t, spec)
	for _, seed := range []uint64{1, 2} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			start := time.Now()
			// Each of three lives is killed once the store holds 0..2
			// more parts than when it started and it has fetched batches.
			rng := rand.New(rand.NewPCG(seed, 0xdead))
			kills := []int{rng.IntN(3), rng.IntN(3), rng.IntN(3)}
			var stderr bytes.Buffer
			killed := 0
			st, res := f.build(t, fmt.Sprint("proc", seed), spec, func(b *Build, srv *embedded.Servers, s3 store.S3Config) {
				args := []string{"--campaign", campaignFile, "--nats", srv.NATSURL, "--s3", s3.Endpoint, "--bucket", s3.Bucket,
					"--dataset", spec.Dataset, "--version", spec.Version, "--kind", spec.Kind, "--window", fmt.Sprint(spec.Size),
					"--cap", fmt.Sprint(spec.Cap), "--cap-seed", fmt.Sprint(spec.CapSeed), "--ack-wait", b.windowerAckWait.String()}
				if s3.TLS {
					args = append(args, "--s3-tls")
				}
				env := append(os.Environ(), "HOMEMOLE_S3_ACCESS_KEY="+s3.AccessKey, "HOMEMOLE_S3_SECRET_KEY="+s3.SecretKey, "HOMEMOLE_LOG=warn",
					// A metrics address in the environment belongs to some other process.
					"HOMEMOLE_METRICS_ADDR=")
				b.runWindower = func(ctx context.Context, newWindower newWindowerFunc, _ consumeFunc) error {
					// The processes tell the build nothing: it learns of
					// each session windowed from the part in the store.
					w, err := newWindower(b.Store)
					if err != nil {
						return err
					}
					parts := &partWatch{st: b.Store, spec: spec, seen: map[string]bool{}, onPart: w.OnPart}
					durable := "windower-" + spec.Dataset + "-" + spec.Version
					delivered := func() uint64 {
						cons, err := b.Bus.JS.Consumer(ctx, schemas.StreamLabeled, durable)
						if err != nil {
							return 0
						}
						info, err := cons.Info(ctx)
						if err != nil {
							return 0
						}
						return info.Delivered.Consumer
					}
					for life := 0; ; life++ {
						fmt.Fprintf(&stderr, "--- windower life %d\n", life)
						cmd := exec.Command(bin, args...)
						cmd.Env, cmd.Stdout, cmd.Stderr = env, &stderr, &stderr
						if err := cmd.Start(); err != nil {
							return err
						}
						exited := make(chan error, 1)
						go func() { exited <- cmd.Wait() }()
						threshold, fetched := -1, delivered()
						if life < len(kills) {
							threshold = parts.count() + kills[life]
						}
						tick := time.NewTicker(5 * time.Millisecond)
						dead := false
						for !dead {
							select {
							case <-ctx.Done():
								tick.Stop()
								_ = cmd.Process.Signal(syscall.SIGTERM)
								<-exited
								return nil
							case err := <-exited:
								tick.Stop()
								return fmt.Errorf("windower exited on its own: %v\n%s", err, stderr.String())
							case <-tick.C:
							}
							n, err := parts.poll(ctx)
							if err != nil && ctx.Err() == nil {
								t.Logf("list parts: %v", err)
							}
							if threshold >= 0 && n >= threshold && delivered() > fetched {
								_ = cmd.Process.Signal(syscall.SIGKILL)
								<-exited
								t.Logf("windower process killed with %d parts stored", n)
								killed++
								dead = true
							}
						}
						tick.Stop()
					}
				}
			})
			t.Logf("kills at %v more parts: windower killed %d times, build took %s", kills, killed, time.Since(start).Round(time.Millisecond))
			if killed == 0 {
				t.Errorf("the windower process was never killed (kill points %v): the test tested nothing", kills)
			}
			if t.Failed() {
				t.Logf("windower logs:\n%s", stderr.String())
			}
			checkSame(t, st, res, spec, want)
		})
	}
}

// TestWindowerAcksRemnantsOfStoredSession: a windower killed while acking a
// session it had stored leaves the unacked batches to its successor, which
// gets them without the session's start. They must be acked, not left to
// come back every second for good.
func TestWindowerAcksRemnantsOfStoredSession(t *testing.T) {
	f := newCrashFixture(t, embeddedS3, 3)
	spec := window.Spec{Dataset: "crash", Version: "v1", Kind: schemas.KindNoise, Size: 50, WindowsPerObject: 4, Labels: LabelsOf(f.c)}
	want := f.reference(t, spec)
	// The first session published, so its batches reach the windower before
	// the build's last session is stored.
	stored := campaign.SessionName("lan", f.c.Homes[0].Taps[0].Files[0])
	var b *Build
	st, res := f.build(t, "remnants", spec, func(bb *Build, _ *embedded.Servers, _ store.S3Config) {
		b = bb
		// What the dead windower stored of the session before it was killed.
		for key, data := range want {
			if strings.Contains(key, "/"+stored+"/") {
				if _, err := b.Store.Put(context.Background(), key, data, ""); err != nil {
					t.Fatal(err)
				}
			}
		}
		b.runWindower = func(ctx context.Context, newWindower newWindowerFunc, consume consumeFunc) error {
			w, err := newWindower(b.Store)
			if err != nil {
				return err
			}
			return consume(ctx, func(ctx context.Context, d *bus.Delivery) error {
				if d.Batch.Session == stored && d.Batch.FirstOffset == 0 {
					// The one ack the dead windower got out.
					return d.Ack()
				}
				return w.Handle(ctx, d)
			})
		}
	})
	checkSame(t, st, res, spec, want)
	cons, err := b.Bus.JS.Consumer(context.Background(), schemas.StreamLabeled, "windower-"+spec.Dataset+"-"+spec.Version)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("after the build %d batches wait for an ack and %d for delivery, want none: the stored session's remnants were not acked", info.NumAckPending, info.NumPending)
	}
}

// partWatch reports each part record that appears in the store, once.
type partWatch struct {
	st     store.Store
	spec   window.Spec
	seen   map[string]bool
	onPart func(window.Part)
}

func (p *partWatch) count() int { return len(p.seen) }

func (p *partWatch) poll(ctx context.Context) (int, error) {
	objs, err := p.st.List(ctx, p.spec.Prefix()+"/")
	if err != nil {
		return len(p.seen), err
	}
	for _, o := range objs {
		if path.Base(o.Key) != window.PartSuffix || p.seen[o.Key] {
			continue
		}
		data, err := p.st.Get(ctx, o.Key)
		if err != nil {
			return len(p.seen), err
		}
		var part window.Part
		if err := json.Unmarshal(data, &part); err != nil {
			return len(p.seen), err
		}
		p.seen[o.Key] = true
		p.onPart(part)
	}
	return len(p.seen), nil
}

// checkSame compares every object of a build's store, the manifest
// included, with the uninterrupted build's.
func checkSame(t *testing.T, st store.Store, res *Result, spec window.Spec, want map[string][]byte) {
	t.Helper()
	if err := dataset.Verify(context.Background(), st, res.Manifest); err != nil {
		t.Error(err)
	}
	got := objects(t, st, spec)
	for key, data := range want {
		g, ok := got[key]
		switch {
		case !ok:
			t.Errorf("%s: missing after the kills", key)
		case !bytes.Equal(g, data):
			t.Errorf("%s: %d bytes differ from the uninterrupted build's %d", key, len(g), len(data))
		}
	}
	for key := range got {
		if _, ok := want[key]; !ok {
			t.Errorf("%s: written after the kills, not by the uninterrupted build", key)
		}
	}
}

// objects reads every object of the store's datasets, manifest included.
func objects(t *testing.T, st store.Store, spec window.Spec) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	infos, err := st.List(ctx, "datasets/")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, o := range infos {
		data, err := st.Get(ctx, o.Key)
		if err != nil {
			t.Fatal(err)
		}
		out[o.Key] = data
	}
	if _, ok := out[dataset.Key(spec.Dataset, spec.Version)]; !ok {
		t.Fatalf("no manifest among %d objects", len(out))
	}
	return out
}

var errKilled = errors.New("windower killed")

// killer ends a windower's life after a number of events: a process killed
// there runs nothing further, so once dead every event fails.
type killer struct {
	mu   sync.Mutex
	left int // events before the kill; negative lives forever
	gone bool
	kill context.CancelFunc
	// where the kill landed
	where string
}

func (k *killer) step(where string) (dead bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.gone:
	case k.left == 0:
		k.gone, k.where = true, where
		k.kill()
	case k.left > 0:
		k.left--
	}
	return k.gone
}

func (k *killer) dead() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.gone
}

// dyingStore is the windower's store, counting each write as an event of
// its life: a kill between two objects of a session leaves the first
// written and the second not, as a killed process would.
type dyingStore struct {
	store.Store
	k *killer
}

func (s dyingStore) Put(ctx context.Context, key string, data []byte, contentType string) (store.ObjectInfo, error) {
	if s.k.step("before writing " + path.Base(key)) {
		return store.ObjectInfo{}, errKilled
	}
	return s.Store.Put(ctx, key, data, contentType)
}
