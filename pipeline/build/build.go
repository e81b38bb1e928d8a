// Package build runs a dataset build in one process: capture agents for
// every home, a labeler and a windower, joined by JetStream exactly as the
// separate workers of a cluster are, then assembles the manifest once every
// published session has been windowed.
package build

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/homemole/homemole/pipeline/agent"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/label"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/window"
)

// Build is one dataset build.
type Build struct {
	Campaign *campaign.Campaign
	Spec     window.Spec
	Bus      *bus.Conn
	Store    store.Store
	Log      *slog.Logger
	// Timeout bounds the wait for the last session once publishing ended.
	Timeout time.Duration

	// Seams for tests that kill the windowing worker mid-build.
	// batchSize is the agents' packets per batch (the agent's default when
	// zero): small batches give a kill many points to land between.
	batchSize int
	// windowerAckWait is how long the batches a dead windower fetched stay
	// out of reach before JetStream hands them to its replacement.
	windowerAckWait time.Duration
	// runWindower replaces the one Windower a build runs otherwise.
	runWindower windowerRunner
}

// windowerRunner runs the windowing worker of a build until ctx ends.
type windowerRunner func(ctx context.Context, newWindower newWindowerFunc, consume consumeFunc) error

// newWindowerFunc makes a windower with no state but the store's, writing
// through st, and wired to the build.
type newWindowerFunc func(st store.Store) (*window.Windower, error)

// consumeFunc feeds the build's durable windower consumer to handle until
// ctx ends.
type consumeFunc func(ctx context.Context, handle func(context.Context, *bus.Delivery) error) error

// Result summarises a build for people.
type Result struct {
	Manifest *dataset.Manifest
	Agents   map[string]agent.Stats
	Labels   map[string]label.Stats
	Elapsed  time.Duration
}

// LabelsOf is the label vocabulary of a campaign: every inventory device
// name, in first-seen order over homes, so it is stable for a campaign file.
func LabelsOf(c *campaign.Campaign) []string {
	var out []string
	seen := map[string]bool{}
	for _, h := range c.Homes {
		for _, d := range h.Inventory {
			if !seen[d.Name] {
				seen[d.Name] = true
				out = append(out, d.Name)
			}
		}
	}
	return out
}

// Run publishes, labels and windows the campaign, then writes the manifest.
func (b *Build) Run(ctx context.Context) (*Result, error) {
	start := time.Now()
	if _, err := b.Store.Get(ctx, dataset.Key(b.Spec.Dataset, b.Spec.Version)); err == nil {
		return nil, fmt.Errorf("dataset %s/%s already exists: choose another --version (datasets are immutable)", b.Spec.Dataset, b.Spec.Version)
	}
	// Nothing is stored before the build is known to be one that can run:
	// a spec stored for a refused build would refuse its corrected retry.
	if err := b.Campaign.ValidateInventories(); err != nil {
		return nil, err
	}
	lab, err := label.New(b.Campaign)
	if err != nil {
		return nil, err
	}
	// wanted maps each session of the campaign's files to the view its
	// windows get: the lan tap's the lan view, a wan tap's the gateway's mode.
	wanted := map[string]string{}
	for _, h := range b.Campaign.Homes {
		for _, t := range h.Taps {
			view := "lan"
			if t.Name == "wan" {
				view = h.Gateway.Mode
			}
			for _, f := range t.Files {
				wanted[h.Name+"/"+campaign.SessionName(t.Name, f)] = view
			}
		}
	}
	accept := func(home, session string) bool { return wanted[home+"/"+session] != "" }
	var mu sync.Mutex
	// Sessions an interrupted run of this build already windowed have their
	// deliveries acknowledged and will not come again: count their parts.
	done, err := windowedSessions(ctx, b.Store, b.Spec)
	if err != nil {
		return nil, err
	}
	partCh := make(chan struct{}, 1)
	onPart := func(p window.Part) {
		mu.Lock()
		done[p.Home+"/"+p.Session] = true
		mu.Unlock()
		b.Log.Info("session windowed", "home", p.Home, "session", p.Session, "packets", p.Packets, "windows", p.Windows)
		select {
		case partCh <- struct{}{}:
		default:
		}
	}
	var newWindower newWindowerFunc = func(st store.Store) (*window.Windower, error) {
		w, err := window.New(b.Spec, st, b.Log)
		if err != nil {
			return nil, err
		}
		w.Accept, w.OnPart = accept, onPart
		w.IdleTimeouts = campaign.IdleTimeouts(b.Campaign)
		return w, nil
	}
	var consume consumeFunc = func(ctx context.Context, handle func(context.Context, *bus.Delivery) error) error {
		return b.Bus.Consume(ctx, window.ConsumerConfig(b.Spec, b.Campaign.Name, b.windowerAckWait), handle)
	}
	runWindower := b.runWindower
	if runWindower == nil {
		runWindower = func(ctx context.Context, newWindower newWindowerFunc, consume consumeFunc) error {
			w, err := newWindower(b.Store)
			if err != nil {
				return err
			}
			go w.Sweeper(ctx)
			return consume(ctx, w.Handle)
		}
	}
	// Fail before publishing on a spec no windower can take.
	if _, err := newWindower(b.Store); err != nil {
		return nil, err
	}
	if err := window.SaveSpec(ctx, b.Store, b.Spec); err != nil {
		return nil, err
	}

	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	errCh := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		errCh <- lab.Run(wctx, b.Bus, "labeler-"+b.Campaign.Name, b.Log)
	}()
	go func() {
		defer wg.Done()
		errCh <- runWindower(wctx, newWindower, consume)
	}()

	res := &Result{Agents: map[string]agent.Stats{}}
	var expected []string
	// The captures not read whole, of every home: the build fails naming
	// them all once every home is published, before its manifest.
	var unread agent.UnreadCaptures
	for _, h := range b.Campaign.Homes {
		// Stats names only the last sessions; RunFiles reads the files one
		// after the other, on this goroutine, and OnSession sees each.
		var sessions []string
		ag, err := agent.New(agent.Config{Campaign: b.Campaign.Name, Home: h, Log: b.Log, BatchSize: b.batchSize,
			OnSession: func(s string) { sessions = append(sessions, s) }})
		if err != nil {
			return nil, err
		}
		var u agent.UnreadCaptures
		if err := ag.RunFiles(ctx, b.Bus); errors.As(err, &u) {
			unread = append(unread, u...)
		} else if err != nil {
			return nil, err
		}
		st := ag.Stats()
		res.Agents[h.Name] = st
		b.Log.Info("home published", "home", h.Name, "files", st.Files, "packets", st.Packets, "decode_errors", st.DecodeErrors, "not_packets", st.NotPackets, "other_views", st.OtherViews, "read_errors", st.ReadErrors, "batches", st.Batches)
		for _, s := range sessions {
			key := h.Name + "/" + s
			if len(b.Spec.Views) == 0 || slices.Contains(b.Spec.Views, wanted[key]) {
				expected = append(expected, key)
			}
		}
	}
	if len(unread) > 0 {
		return nil, fmt.Errorf("dataset %s/%s not written: %w", b.Spec.Dataset, b.Spec.Version, unread)
	}
	if len(expected) == 0 {
		return nil, errors.New("no capture could be read: check the taps' files in the campaign")
	}

	timeout := b.Timeout
	if timeout == 0 {
		timeout = 10 * time.Minute
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		mu.Lock()
		missing := 0
		for _, s := range expected {
			if !done[s] {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		select {
		case <-partCh:
		case err := <-errCh:
			return nil, fmt.Errorf("worker stopped during the build: %w", err)
		case <-deadline.C:
			return nil, fmt.Errorf("%d of %d sessions were not windowed within %s: check the labeler and windower logs", missing, len(expected), timeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// The windower can store a session pair's views while the labeler still
	// waits for the last publish acks: stopped then, the labeler would
	// neither count nor ack the pair. Give it a moment to finish.
	for wait := time.Now(); lab.Held() > 0 && time.Since(wait) < 10*time.Second; {
		time.Sleep(10 * time.Millisecond)
	}
	stopWorkers()
	wg.Wait()
	res.Labels = lab.Stats()
	m, err := dataset.Assemble(ctx, b.Store, b.Spec)
	if err != nil {
		return nil, err
	}
	res.Manifest = m
	res.Elapsed = time.Since(start)
	return res, nil
}

// windowedSessions lists the home/session pairs whose part records exist.
func windowedSessions(ctx context.Context, st store.Store, spec window.Spec) (map[string]bool, error) {
	objs, err := st.List(ctx, spec.Prefix()+"/")
	if err != nil {
		return nil, fmt.Errorf("list the sessions already windowed: %w", err)
	}
	done := map[string]bool{}
	for _, o := range objs {
		// datasets/<dataset>/<version>/<view>/<home>/<session>/_part.json
		parts := strings.Split(strings.TrimPrefix(o.Key, spec.Prefix()+"/"), "/")
		if len(parts) == 4 && parts[3] == window.PartSuffix {
			done[parts[1]+"/"+parts[2]] = true
		}
	}
	return done, nil
}
