package build

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/agent"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/label"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"

	"github.com/homemole/homemole/internal/proctest"
)

// peakRSS is the process's peak resident set (VmHWM) in MiB.
func peakRSS(t *testing.T) float64 {
	return float64(proctest.Status(t, "VmHWM")) / (1 << 20)
}

// liveRig is one live home on the embedded servers with a labeler and a
// windower running, the parts the windower writes gathered.
type liveRig struct {
	c     *campaign.Campaign
	g     *homegen.Home
	log   *slog.Logger
	conn  *bus.Conn
	st    store.Store
	lab   *label.Labeler
	w     *window.Windower
	wctx  context.Context
	wg    sync.WaitGroup
	mu    sync.Mutex
	parts map[string]window.Part // by session
	count map[string]int         // parts written per session
	// windowed counts the packets of the parts written.
	windowed atomic.Int64
	stop     func()
}

// newLiveRig generates a home whose LAN tap is live on the rotation, and
// starts the workers (see startLiveRig).
func newLiveRig(t *testing.T, ctx context.Context, rotation time.Duration, spec window.Spec, idle time.Duration) *liveRig {
	t.Helper()
	g, err := homegen.Generate(homegen.Config{Seed: 3, Sessions: 2, SessionDuration: 2 * time.Minute}, filepath.Join(t.TempDir(), "lan"))
	if err != nil {
		t.Fatal(err)
	}
	h := g.CampaignHome("home-1")
	h.Taps = []campaign.Tap{{Name: "lan", Interface: "syn0"}}
	h.Live = campaign.Live{Rotation: rotation}
	c := &campaign.Campaign{Name: "live", Homes: []*campaign.Home{h}}
	r := startLiveRig(t, ctx, c, spec, idle)
	r.g = g
	return r
}

// startLiveRig starts the embedded servers, a labeler and a windower for
// the campaign; spec's labels come from its inventories; idle, when set,
// is both workers' idle timeout.
func startLiveRig(t *testing.T, ctx context.Context, c *campaign.Campaign, spec window.Spec, idle time.Duration) *liveRig {
	t.Helper()
	r := &liveRig{c: c, parts: map[string]window.Part{}, count: map[string]int{},
		log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
	r.c.Defaults()
	if err := r.c.Validate(); err != nil {
		t.Fatal(err)
	}
	_, r.conn, r.st = embeddedtest.Start(ctx, t, r.log)
	var err error
	if r.lab, err = label.New(r.c); err != nil {
		t.Fatal(err)
	}
	spec.Labels = LabelsOf(r.c)
	if r.w, err = window.New(spec, r.st, r.log); err != nil {
		t.Fatal(err)
	}
	r.lab.IdleTimeout, r.w.IdleTimeout = idle, idle
	r.w.OnPart = func(p window.Part) {
		r.mu.Lock()
		r.parts[p.View+"/"+p.Session] = p
		r.count[p.View+"/"+p.Session]++
		r.mu.Unlock()
		r.windowed.Add(int64(p.Packets))
	}
	wctx, stop := context.WithCancel(ctx)
	r.wctx = wctx
	r.wg.Go(func() { _ = r.lab.Run(wctx, r.conn, "labeler", r.log) })
	r.wg.Go(func() { r.w.Sweeper(wctx) })
	r.wg.Go(func() {
		_ = r.conn.Consume(wctx, window.ConsumerConfig(spec, r.c.Name, time.Minute), r.w.Handle)
	})
	r.stop = func() { stop(); r.wg.Wait() }
	t.Cleanup(r.stop)
	return r
}

// TestLiveSoak runs a fast synthetic live tap through the embedded mode as a
// live campaign runs: the agent rotates sessions every second, the labeler
// labels them, the windower writes them as it goes under a session budget.
// Every packet must be windowed exactly once (the parts' counts add up to
// what the agent read, one part per session) with the process's peak RSS
// under 512 MiB. HOMEMOLE_SOAK_PACKETS sets the packets (default 300,000;
// the issue's soak is 20,000,000: `HOMEMOLE_SOAK_PACKETS=20000000 go test
// -run TestLiveSoak -timeout 1h -v ./pipeline/build`).
func TestLiveSoak(t *testing.T) {
	packets := int64(300_000)
	if v := os.Getenv("HOMEMOLE_SOAK_PACKETS"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			t.Fatalf("HOMEMOLE_SOAK_PACKETS=%q: want a positive number of packets", v)
		}
		packets = n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	spec := window.Spec{Dataset: "soak", Version: "v1", Kind: schemas.KindNoise, Size: 100, FlushWindows: 256, SessionBudget: 32 << 20}
	r := newLiveRig(t, ctx, time.Second, spec, 0)
	c, g, conn, lab, log := r.c, r.g, r.conn, r.lab, r.log
	var maxHeld atomic.Int64
	r.wg.Go(func() {
		for r.wctx.Err() == nil {
			if h := r.w.HeldBytes(); h > maxHeld.Load() {
				maxHeld.Store(h)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})

	start := time.Now()
	ag, err := agent.New(agent.Config{Campaign: c.Name, Home: c.Homes[0], Log: log})
	if err != nil {
		t.Fatal(err)
	}
	src := homegen.NewLiveSource(g.Files, packets)
	if err := ag.Run(ctx, conn, []agent.Input{{Tap: "lan", Name: "syn0", Live: true, Open: func() (capture.Source, error) { return src, nil }}}); err != nil {
		t.Fatal(err)
	}
	ast := ag.Stats()
	for r.windowed.Load() < int64(ast.Packets) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(start)
	r.stop()
	rss := peakRSS(t)
	windowed, parts := &r.windowed, r.parts
	dups := 0
	for _, n := range r.count {
		if n != 1 {
			dups++
		}
	}
	t.Logf("soak: %d packets read, %d labeled, %d windowed in %d sessions of a 1 s rotation, %s (%.0f packets/s); windower held at most %.1f MiB; peak RSS %.0f MiB (the whole test process: agent, embedded NATS and S3, labeler, windower)",
		ast.Packets, lab.Stats()["home-1"].Packets, windowed.Load(), ast.Sessions, elapsed.Round(time.Millisecond), float64(ast.Packets)/elapsed.Seconds(), float64(maxHeld.Load())/(1<<20), rss)
	if int64(ast.Packets) != packets || windowed.Load() != packets || lab.Stats()["home-1"].Packets != int(packets) {
		t.Errorf("%d packets read, %d labeled, %d windowed: want %d each", ast.Packets, lab.Stats()["home-1"].Packets, windowed.Load(), packets)
	}
	if len(parts) != ast.Sessions || dups != 0 {
		t.Errorf("%d sessions published, %d windowed, %d more than once", ast.Sessions, len(parts), dups)
	}
	if maxHeld.Load() > spec.SessionBudget+int64(4096)*200 {
		t.Errorf("the windower held %d bytes: more than its session budget of %d and a batch", maxHeld.Load(), spec.SessionBudget)
	}
	if rss > 512 {
		t.Errorf("peak RSS %.0f MiB: want under 512", rss)
	}
}
