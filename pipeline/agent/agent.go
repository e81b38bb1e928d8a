// Package agent is the capture agent: it reads a home's taps, decodes every
// packet into its metadata record and publishes the records in batches.
// It builds without cgo so it cross-compiles for small gateways.
//
// Batches are encoded as they fill (schemas.RecordEncoder) and cut by
// packet count, by encoded size and, for live sources, by age. A sender
// goroutine publishes them asynchronously with a bounded window; when
// JetStream stops acknowledging, it keeps them in an on-disk spool of
// bounded size and drains it in order once JetStream answers again. When
// the window and the spool are full, reading stops: backpressure, never
// loss. Per-source progress files and the spool let a restarted agent
// resume where the last one stopped.
package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/pair"
	"github.com/homemole/homemole/schemas"
)

// Publisher is the seam between the agent and JetStream; *bus.Conn
// implements it. The agent keeps data untouched until the future resolves.
type Publisher interface {
	PublishAsync(subject, msgID string, data []byte) (jetstream.PubAckFuture, error)
}

// Config of one home's agent. Zero values take the defaults.
type Config struct {
	Campaign string
	Home     *campaign.Home
	// BatchSize is the most packets per message (default 4096).
	BatchSize int
	// BatchBytes is the most bytes per message (default 64 KiB: about 2500
	// packets, well under NATS's default 1 MiB payload limit).
	BatchBytes int
	// MaxBatchAge sends the batch of a live source once its first packet is
	// this old (default 200 ms), so a tap that trickles is not held back
	// until a batch fills. Files are read far faster and ignore it.
	MaxBatchAge time.Duration
	// Window is the most batches published and not yet acknowledged
	// (default 32); publishing waits beyond it.
	Window int
	// AckTimeout turns a batch that is not acknowledged in time into a
	// failed publish (default 10 s).
	AckTimeout time.Duration
	// RetryMax caps the pause between attempts while JetStream does not
	// answer (default 5 s); pauses start at 50 ms and double.
	RetryMax time.Duration
	// SpoolDir holds the spool and the per-source progress files. Empty: no
	// spool, batches wait in memory only (up to Window), and a restart
	// publishes every capture from its start again.
	SpoolDir string
	// SpoolMaxBytes bounds the spool (default 256 MiB).
	SpoolMaxBytes int64
	// ShutdownGrace is how long a cancelled agent waits for the batches in
	// flight before spooling them (default 2 s).
	ShutdownGrace time.Duration
	Log           *slog.Logger
	// Progress, when set, is called after every acknowledged batch, from
	// the goroutine that publishes: it must return quickly.
	Progress func(Stats)
	// WatchSettle is how long a file of a watch tap's folder must have
	// gone unchanged to be complete when no later file lies beside it: the
	// capture stopped (default the home's live idle timeout). WatchPoll is
	// how often the folder is listed (default 2 s).
	WatchSettle, WatchPoll time.Duration
	// OnSession, when set, is called with the name of each capture session
	// as the agent starts publishing it or finds that an earlier run did,
	// from the goroutine reading the tap: it must return quickly, and guard
	// what it keeps, as a home's live and watch taps are read side by side.
	OnSession func(session string)
}

// Stats counts what the agent read and sent.
type Stats struct {
	Files int
	// Packets were put in batches in this run. A cancelled run counts the
	// few of its last batches that it neither sent nor spooled, which the
	// next run reads again.
	Packets      int
	DecodeErrors int
	ReadErrors   int
	// NotPackets counts the frames that are the link's own
	// (features.ErrNotPacket: a Wi-Fi capture's beacons and
	// retransmissions), left out like those that do not decode.
	NotPackets int
	// OtherViews counts the frames of cooked captures (tcpdump -i any)
	// beyond the gateway's side each tap reads (capture.Stats.OtherViews);
	// a capture feeding two taps counts those it gave neither.
	OtherViews int
	// Batches were cut in this run; Acked of them, or of those a previous
	// run spooled, were acknowledged by JetStream.
	Batches int
	Acked   int
	// Spooled counts batches written to the spool; Outages the times
	// JetStream stopped acknowledging.
	Spooled int
	Outages int
	// InterfaceOutages counts the times a live tap found its interface
	// missing, at its start or later (removed: a PPP link or a VPN's tun
	// re-created, a USB NIC unplugged); the tap reopens it once it is back.
	InterfaceOutages int
	// Skipped counts the packets of resumed sessions that an earlier run
	// had published or spooled already.
	Skipped int
	// Sessions counts the capture sessions published, including those an
	// earlier run completed; LastSessions names the latest of them, oldest
	// first, at most lastSessions: a live agent opens about 200 a day per
	// home, for weeks. Config.OnSession sees every one.
	Sessions     int
	LastSessions []string
	// HomeSides are the home sides inferred (gateway "auto"), one per LAN
	// capture, as InferredHome.Brief tells them (the log has the evidence).
	HomeSides []string
}

// Agent publishes one home's captures.
type Agent struct {
	cfg  Config
	home features.HomeConfig
	live campaign.Live
	// now is the wall clock of live sessions; tests set it back.
	now func() time.Time
	// reopenMin and reopenMax bound the pauses between attempts to reopen
	// a live tap's missing interface.
	reopenMin, reopenMax time.Duration

	mu sync.Mutex
	st Stats
}

// New checks the configuration and prepares the home's direction rules.
func New(cfg Config) (*Agent, error) {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.MaxBatchAge, 200*time.Millisecond)
	def(&cfg.AckTimeout, 10*time.Second)
	def(&cfg.RetryMax, 5*time.Second)
	def(&cfg.ShutdownGrace, 2*time.Second)
	def(&cfg.WatchPoll, 2*time.Second)
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 4096
	}
	if cfg.BatchBytes == 0 {
		cfg.BatchBytes = 64 << 10
	}
	if cfg.Window == 0 {
		cfg.Window = 32
	}
	if cfg.SpoolMaxBytes == 0 {
		cfg.SpoolMaxBytes = 256 << 20
	}
	switch {
	case cfg.BatchSize < 1 || cfg.BatchSize > 65536:
		return nil, fmt.Errorf("batch size %d: want 1..65536 packets", cfg.BatchSize)
	case cfg.BatchBytes < 4<<10 || cfg.BatchBytes > 8<<20:
		return nil, fmt.Errorf("batch bytes %d: want 4 KiB..8 MiB (and at most the NATS server's max_payload)", cfg.BatchBytes)
	case cfg.Window < 1 || cfg.Window > 1024:
		return nil, fmt.Errorf("publish window %d: want 1..1024 batches", cfg.Window)
	case cfg.MaxBatchAge < 0 || cfg.AckTimeout < 0 || cfg.RetryMax < 0 || cfg.ShutdownGrace < 0 || cfg.WatchSettle < 0 || cfg.WatchPoll < 0:
		return nil, errors.New("agent durations must not be negative")
	case cfg.SpoolDir != "" && cfg.SpoolMaxBytes < 4*int64(cfg.BatchBytes+spoolSlack):
		return nil, fmt.Errorf("spool limit %d bytes: want at least 4 batches (%d bytes)", cfg.SpoolMaxBytes, 4*(cfg.BatchBytes+spoolSlack))
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if err := schemas.ValidateToken("campaign name", cfg.Campaign); err != nil {
		return nil, err
	}
	nets, err := cfg.Home.LANPrefixes()
	if err != nil {
		return nil, fmt.Errorf("home %s: %w", cfg.Home.Name, err)
	}
	live := cfg.Home.Live
	live.Defaults()
	if err := live.Validate(); err != nil {
		return nil, fmt.Errorf("home %s: live: %w", cfg.Home.Name, err)
	}
	def(&cfg.WatchSettle, live.IdleTimeout)
	return &Agent{cfg: cfg, home: features.HomeConfig{LANNets: nets, GatewayMAC: cfg.Home.GatewayMAC()}, live: live,
		now: time.Now, reopenMin: time.Second, reopenMax: 30 * time.Second}, nil
}

// Stats returns the counts so far.
func (a *Agent) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.st
	st.LastSessions = slices.Clone(a.st.LastSessions)
	return st
}

// lastSessions is how many session names Stats keeps.
const lastSessions = 64

// session counts the capture session published under name.
func (a *Agent) session(name string) {
	a.count(func(st *Stats) {
		st.Files++
		st.Sessions++
		if len(st.LastSessions) == lastSessions {
			n := copy(st.LastSessions, st.LastSessions[1:])
			st.LastSessions = st.LastSessions[:n]
		}
		st.LastSessions = append(st.LastSessions, name)
	})
	if a.cfg.OnSession != nil {
		a.cfg.OnSession(name)
	}
}

func (a *Agent) count(f func(*Stats)) {
	a.mu.Lock()
	f(&a.st)
	a.mu.Unlock()
}

// Input is one capture session to publish.
type Input struct {
	Tap string
	// Name is a file's path, from which the session and the source, hence
	// the message ids, derive; for a live source, the interface, which
	// only the logs show: its sessions are named after their rotation slots.
	Name string
	// Open opens the source when its turn comes. A live input's is called
	// again while its interface is missing (an error wrapping
	// capture.ErrNoInterface, from Open or Next), until the interface is
	// back.
	Open func() (capture.Source, error)
	// Live marks a source that delivers packets as they happen: it is read
	// beside the other inputs, cut into sessions on the home's rotation
	// slots (campaign.Live), its batches are also cut by age, and as it
	// cannot be read twice it is never skipped or resumed from the
	// progress of an earlier run. Its Close must interrupt a Next that
	// waits for packets.
	Live bool
	// Watch marks a watch tap's folder (Name; Open is nil): its files are
	// read as they complete, beside the other inputs (Agent.watch).
	Watch bool
	// Rewrites counts the files a watched folder held under this file's
	// name before it (a ring buffer's): the session and source of any but
	// the first carry its version (Agent.watch).
	Rewrites int
}

// RunFiles publishes every file of every file tap, one capture session per
// file. A capture cut short (capture.ErrTruncated) is read up to the cut,
// with a warning, and its session ends there. A capture that cannot be
// read whole (it cannot be opened, it is corrupt, or none of its frames
// decode) is logged and counted, the agent goes on with the next file, and
// the run then fails with UnreadCaptures naming each of them.
func (a *Agent) RunFiles(ctx context.Context, pub Publisher) error {
	return a.Run(ctx, pub, a.Inputs(false))
}

// CaptureError is a capture that could not be read whole: it could not be
// opened, reading it failed before its end for another reason than a cut
// at the end (capture.ErrTruncated, whose packets up to the cut are read),
// or none of its frames decode. The packets before a fault are published,
// but a capture file's session gets no final batch: a later run over the
// mended file publishes it whole, under the same message ids. A watched
// folder's file does get its final batch, as its rotation goes on.
type CaptureError struct {
	Home, Tap string
	File      string // the capture file, or a watched folder
	Err       error
}

func (e *CaptureError) Error() string {
	return fmt.Sprintf("home %s tap %s: capture %s: %v", e.Home, e.Tap, e.File, e.Err)
}

func (e *CaptureError) Unwrap() error { return e.Err }

// UnreadCaptures is the error of a run that read some of its capture files
// only in part, or not at all: one CaptureError each.
type UnreadCaptures []*CaptureError

func (u UnreadCaptures) Error() string {
	var b strings.Builder
	if len(u) == 1 {
		b.WriteString("1 capture could not be read whole")
	} else {
		fmt.Fprintf(&b, "%d captures could not be read whole", len(u))
	}
	b.WriteString(" (mend each, or take it out of the campaign, and run again: what was read of it is published under the same message ids again, so nothing is duplicated):")
	for _, e := range u {
		b.WriteString("\n  ")
		b.WriteString(e.Error())
	}
	return b.String()
}

// Inputs lists the home's taps as inputs: every file of the file taps and,
// when live is set, every interface tap, which runs until ctx ends. A watch
// tap is its folder, watched until ctx ends, when live is set; otherwise
// the files its folder holds now.
//
// A capture of the gateway on every interface (tcpdump -i any, or
// interface any) is read as its LAN side for the lan tap and as its WAN side
// for the others. Where the lan tap and another are both interface any,
// one capture feeds both (capture.OpenLiveSides).
func (a *Agent) Inputs(live bool) []Input {
	var inputs []Input
	// The taps one capture of both sides feeds: the lan tap and the first
	// other, where both are interface any.
	anyTap := func(lan bool) int {
		return slices.IndexFunc(a.cfg.Home.Taps, func(t campaign.Tap) bool {
			return (t.Name == tapLAN) == lan && t.Interface == capture.AnyInterface
		})
	}
	var both *gatewaySides
	lanAny, wanAny := anyTap(true), anyTap(false)
	if live && lanAny >= 0 && wanAny >= 0 {
		both = &gatewaySides{}
	}
	for i, tap := range a.cfg.Home.Taps {
		side := tapSide(tap.Name)
		files := tap.Files
		if tap.Watch != "" {
			if live {
				inputs = append(inputs, Input{Tap: tap.Name, Name: tap.Watch, Watch: true})
				continue
			}
			watched, err := campaign.WatchedFiles(tap.Name, tap.Watch)
			if err != nil {
				// Counted and logged as a capture that cannot be read.
				inputs = append(inputs, Input{Tap: tap.Name, Name: tap.Watch, Open: func() (capture.Source, error) { return nil, err }})
			}
			for _, w := range watched {
				files = append(files, w.Path)
			}
		}
		for _, f := range files {
			inputs = append(inputs, fileInput(tap.Name, f, side))
		}
		if !live || tap.Interface == "" {
			continue
		}
		iface := tap.Interface
		open := func() (capture.Source, error) { return capture.OpenLive(iface, capture.LiveOptions{Side: side}) }
		if both != nil && (i == lanAny || i == wanAny) {
			open = func() (capture.Source, error) { return both.open(side) }
		}
		inputs = append(inputs, Input{Tap: tap.Name, Name: iface, Live: true, Open: open})
	}
	return inputs
}

// fileInput is the input of a tap's capture file, read ahead as side.
func fileInput(tap, path string, side capture.Side) Input {
	return Input{Tap: tap, Name: path, Open: func() (capture.Source, error) { return openFileAhead(path, side) }}
}

// tapSide is the side of the gateway a tap captures: the LAN for the lan
// tap, the WAN for the others.
func tapSide(tap string) capture.Side {
	if tap == tapLAN {
		return capture.SideLAN
	}
	return capture.SideWAN
}

// gatewaySides is one live capture on every interface of the gateway that
// feeds a home's lan tap and one other, opened by whichever tap starts
// first.
type gatewaySides struct {
	once     sync.Once
	lan, wan capture.Source
	err      error
}

func (g *gatewaySides) open(side capture.Side) (capture.Source, error) {
	g.once.Do(func() { g.lan, g.wan, g.err = capture.OpenLiveSides(capture.LiveOptions{}) })
	switch {
	case g.err != nil:
		return nil, g.err
	case side == capture.SideWAN:
		return g.wan, nil
	}
	return g.lan, nil
}

// Run publishes the inputs in order and returns once JetStream has
// acknowledged every batch. When ctx ends it stops reading, spools what is
// not acknowledged and returns ctx's error; a run with the same spool
// folder then resumes without loss or duplicates.
func (a *Agent) Run(ctx context.Context, pub Publisher, inputs []Input) error {
	s := &sender{
		cfg: &a.cfg, log: a.cfg.Log, pub: pub,
		bufs:    newBufPool(a.cfg.Window+8, a.cfg.BatchBytes),
		onSpool: func() { a.count(func(st *Stats) { st.Spooled++ }) },
		onFail:  func() { a.count(func(st *Stats) { st.Outages++ }) },
		onAck: func(*batchMeta) {
			a.count(func(st *Stats) { st.Acked++ })
			if a.cfg.Progress != nil {
				a.cfg.Progress(a.Stats())
			}
		},
	}
	// resume maps a source to where this run starts reading it.
	resume := map[string]progress{}
	if a.cfg.SpoolDir != "" {
		book, err := openProgress(filepath.Join(a.cfg.SpoolDir, "progress"), a.cfg.Log)
		if err != nil {
			return fmt.Errorf("home %s: %w", a.cfg.Home.Name, err)
		}
		sp, recs, err := openSpool(filepath.Join(a.cfg.SpoolDir, "spool"), a.cfg.SpoolMaxBytes)
		var damage *spoolDamage
		if errors.As(err, &damage) {
			a.cfg.Log.Warn("spool damaged", "home", a.cfg.Home.Name, "err", err)
		} else if err != nil {
			return fmt.Errorf("home %s: %w", a.cfg.Home.Name, err)
		}
		s.spool, s.book = sp, book
		for src, p := range book.m {
			resume[src] = p
		}
		for _, r := range recs {
			if book.get(r.meta.source).covers(&r.meta) {
				// Acknowledged, but the segment outlived the run that sent it.
				if err := sp.ack(r.ref); err != nil {
					sp.close()
					return fmt.Errorf("home %s: %w", a.cfg.Home.Name, err)
				}
				continue
			}
			s.q = append(s.q, &entry{batchMeta: r.meta, ref: r.ref})
			p := resume[r.meta.source]
			resume[r.meta.source] = progress{Source: p.Source, Next: max(p.Next, r.meta.next), Final: p.Final || r.meta.final}
		}
		if len(s.q) > 0 {
			a.cfg.Log.Info("spool from an earlier run will be sent first", "home", a.cfg.Home.Name, "batches", len(s.q))
		}
	}

	// The sender outlives ctx a little: after cancellation it still waits
	// for the batches in flight and spools the rest, and it takes the
	// final batch of a live session that the cancellation ended.
	sctx, stopSender := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSender()
	in := make(chan *outBatch, 2)
	stopped := make(chan struct{})
	var serr error
	go func() {
		defer close(stopped)
		serr = s.run(sctx, in)
	}()
	// send hands a batch over. Once ctx ends, only a live session's
	// batches still go, for a grace period: its packets cannot be read again.
	send := func(b *outBatch, live bool) error {
		select {
		case in <- b:
			return nil
		case <-stopped:
			return errSenderStopped
		case <-ctx.Done():
		}
		if !live {
			return ctx.Err()
		}
		grace := time.NewTimer(a.cfg.ShutdownGrace)
		defer grace.Stop()
		select {
		case in <- b:
			return nil
		case <-stopped:
			return errSenderStopped
		case <-grace.C:
			return ctx.Err()
		}
	}
	rerr := a.publishAll(ctx, inputs, resume, s.book, s.bufs, send)
	if ctx.Err() != nil {
		stopSender()
	}
	close(in)
	select {
	case <-stopped:
	case <-ctx.Done():
		stopSender()
		<-stopped
	}
	var unread UnreadCaptures
	switch {
	case serr != nil:
		return fmt.Errorf("home %s: publish: %w", a.cfg.Home.Name, serr)
	case errors.As(rerr, &unread):
		// Before a stop by signal, which would end the process with 0: a
		// capture not read whole fails the run. Each names its home.
		return unread
	case ctx.Err() != nil:
		return fmt.Errorf("home %s: stopped: %w", a.cfg.Home.Name, ctx.Err())
	case rerr != nil:
		return fmt.Errorf("home %s: %w", a.cfg.Home.Name, rerr)
	}
	return nil
}

var errSenderStopped = errors.New("publishing stopped")

// publishAll reads the file inputs one after the other and every live
// input beside them, on one rotation clock so that a home's taps cut their
// sessions at the same instants. Live inputs run until ctx ends or an input
// fails.
func (a *Agent) publishAll(ctx context.Context, inputs []Input, resume map[string]progress, book *progressBook, bufs *bufPool, send func(*outBatch, bool) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	clk := newClock(a.live, a.now())
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	fail := func(err error) {
		if err != nil {
			once.Do(func() { first = err; cancel() })
		}
	}
	var (
		liveMu sync.Mutex
		live   []*liveTap
	)
	for _, input := range inputs {
		switch {
		case input.Live:
			wg.Go(func() {
				lt, err := a.publishLive(ctx, input, clk, bufs, send)
				fail(err)
				if lt != nil {
					liveMu.Lock()
					live = append(live, lt)
					liveMu.Unlock()
				}
			})
		case input.Watch:
			wg.Go(func() { fail(a.watch(ctx, input, resume, book, bufs, send)) })
		}
	}
	var unread UnreadCaptures
	for _, input := range inputs {
		if input.Live || input.Watch {
			continue
		}
		r := progress{}
		if a.cfg.SpoolDir != "" {
			r = resume[a.source(input)]
		}
		var ce *CaptureError
		if err := a.publishInput(ctx, input, r, bufs, send, false); errors.As(err, &ce) {
			unread = append(unread, ce) // logged; the next file is read
		} else if err != nil {
			fail(err)
			break
		}
	}
	wg.Wait()
	fail(endLive(live))
	if len(unread) > 0 {
		// Run reports them whatever else ended the run.
		return errors.Join(unread, first)
	}
	return first
}

// source names an input as consumers check it (schemas.ValidateSource):
// the file's base name is mapped into the source-name alphabet, which
// leaves the usual capture names as they are.
func (a *Agent) source(in Input) string {
	return a.cfg.Campaign + "/" + a.cfg.Home.Name + "/" + in.Tap + "/" + schemas.SourceName(versioned(filepath.Base(in.Name), in.Rewrites, "+"))
}

// Frames are read in runs between context checks: a check per frame would
// cost more than decoding some of them.
const ctxCheckEvery = 4096

// publishInput reads one capture session, starting at r, and hands its
// batches to send. A capture it cannot read whole is logged and counted,
// and returned as a *CaptureError; endOnFault still ends its session with
// the final batch (a watched folder's file, which no one will mend).
func (a *Agent) publishInput(ctx context.Context, in Input, r progress, bufs *bufPool, send func(*outBatch, bool) error, endOnFault bool) error {
	log := a.cfg.Log.With("home", a.cfg.Home.Name, "tap", in.Tap, "input", in.Name)
	session := versioned(campaign.SessionName(in.Tap, in.Name), in.Rewrites, "-")
	if r.Final {
		log.Info("session already published by an earlier run")
		a.session(session)
		return nil
	}
	src, err := in.Open()
	if err != nil {
		a.count(func(st *Stats) { st.ReadErrors++ })
		log.Error("capture cannot be read", "err", err)
		return &CaptureError{Home: a.cfg.Home.Name, Tap: in.Tap, File: in.Name, Err: err}
	}
	defer src.Close()
	a.session(session)
	if r.Next > 0 {
		log.Info("resuming session", "offset", r.Next)
	}

	bt, err := a.newBatcher(in.Tap, a.source(in), session, r.Next, false, bufs, send)
	if err != nil {
		return err
	}
	dec := features.NewDecoder(a.home)
	if a.cfg.Home.Gateway.Auto() && in.Tap == tapLAN {
		home, err := a.inferFile(ctx, in, log)
		if err != nil {
			return err
		}
		dec = features.NewDecoder(home)
	}
	tunnels := tunnelTracker(in.Tap)
	var p schemas.Packet
	var frames, skipped, decodeErrs, notPackets int
	// Over every frame, those before the resume point too: decoded tells
	// whether any frame decoded (or was the link's own), undecodable how
	// many did not, firstErr why the first did not.
	var decoded bool
	var undecodable int
	var firstErr, fault error
	defer func() {
		a.count(func(st *Stats) {
			st.Skipped += skipped
			st.DecodeErrors += decodeErrs
			st.NotPackets += notPackets
			st.OtherViews += int(capture.LeftOut(src))
		})
	}()
	for {
		if frames++; frames%ctxCheckEvery == 0 && ctx.Err() != nil {
			break
		}
		fr, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			a.count(func(st *Stats) { st.ReadErrors++ })
			if errors.Is(err, capture.ErrTruncated) {
				// Cut at its end (a copy of a file still being written):
				// read up to the cut.
				log.Warn("capture is cut short: its packets up to the cut are published, its session ends there", "err", err)
			} else {
				fault = err
			}
			break
		}
		// Frames before the resume point are decoded all the same: the
		// decoder's clock gives the first resumed packet its interval.
		if err := dec.Decode(fr.LinkType, fr.Data, fr.CI, fr.Offset, &p); err != nil {
			notPacket := errors.Is(err, features.ErrNotPacket)
			if notPacket {
				decoded = true
			} else if undecodable++; firstErr == nil {
				firstErr = err // it names the frame and the link type
			}
			switch {
			case fr.Offset < r.Next:
			case notPacket:
				notPackets++
			default:
				decodeErrs++
			}
			continue
		}
		decoded = true
		// Before the resume point too: a stream's records are cut from
		// its beginning.
		if tunnels != nil {
			tunnels.Observe(fr.LinkType, fr.Data, &p)
		}
		if fr.Offset < r.Next {
			skipped++
			continue
		}
		if err := bt.add(&p); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		// A file is resumed by the next run.
		return ctx.Err()
	}
	if undecodable > 0 {
		// Once per capture, not per frame: a capture of an unknown link
		// type has every frame fail alike.
		log.Warn("frames that do not decode are left out", "undecodable", undecodable, "first_err", firstErr)
	}
	if fault == nil && undecodable > 0 && !decoded {
		fault = fmt.Errorf("none of its %d frames decode: %w", undecodable, firstErr)
	}
	if fault != nil {
		if endOnFault {
			log.Error("capture cannot be read whole: its packets before the fault are published, its session ends there", "err", fault)
			if err := bt.cut(true); err != nil {
				return err
			}
		} else {
			log.Error("capture cannot be read whole: its packets before the fault are published, its session is left open for a run over the mended file", "err", fault)
		}
		return &CaptureError{Home: a.cfg.Home.Name, Tap: in.Tap, File: in.Name, Err: fault}
	}
	// The final batch may be empty: it still tells downstream the session ended.
	return bt.cut(true)
}

// tapLAN is the tap whose captures show the home side.
const tapLAN = "lan"

// tunnelTracker is what a tap's packets need to be paired through a VPN
// over TCP (schemas.TunnelRecords): a tracker for every tap but the LAN,
// where no tunnel runs; nil for the LAN.
func tunnelTracker(tap string) *pair.TunnelTracker {
	if tap == tapLAN {
		return nil
	}
	return pair.NewTunnelTracker()
}

// inferFile infers the home side of a capture file of a home whose gateway
// is "auto", reading the file once before it is published.
func (a *Agent) inferFile(ctx context.Context, in Input, log *slog.Logger) (features.HomeConfig, error) {
	src, err := in.Open()
	if err != nil {
		return features.HomeConfig{}, fmt.Errorf("home %s: infer the home side: %w", a.cfg.Home.Name, err)
	}
	defer src.Close()
	res, err := capture.InferSource(ctx, src, in.Name)
	if err != nil && ctx.Err() != nil {
		return features.HomeConfig{}, err
	}
	// A capture cut short is published up to the fault; what was read
	// of it decides its home side.
	log.Info("home side inferred", "side", res.String())
	a.count(func(st *Stats) { st.HomeSides = append(st.HomeSides, res.Brief()) })
	return res.Home, nil
}

// The home side of an "auto" live tap is inferred from its first frames,
// held back until warmupFrames frames, warmupBytes bytes or warmupFor of
// capture time have gone by.
const (
	warmupFrames = 5000
	warmupBytes  = 16 << 20
	warmupFor    = time.Minute
)

type warmup struct {
	inf   *features.HomeInference
	held  []capture.Frame
	bytes int
}

// hold keeps a copy of fr and feeds it to the inference; false once the
// warm-up is over (fr is then not held).
func (w *warmup) hold(fr capture.Frame) bool {
	if len(w.held) >= warmupFrames || w.bytes >= warmupBytes ||
		(len(w.held) > 0 && fr.CI.Timestamp.Sub(w.held[0].CI.Timestamp) >= warmupFor) {
		return false
	}
	fr.Data = bytes.Clone(fr.Data)
	w.inf.Observe(fr.LinkType, fr.Data)
	w.held = append(w.held, fr)
	w.bytes += len(fr.Data)
	return true
}

// batcher encodes one session's packets into batches as they arrive.
type batcher struct {
	a       *Agent
	hdr     schemas.Batch
	meta    batchMeta // subject, source and session of every batch
	enc     schemas.RecordEncoder
	body    []byte
	n       int
	first   uint64
	last    uint64
	maxBody int
	bufs    *bufPool
	send    func(b *outBatch, live bool) error
	// Live sources only: born is when the batch's first packet arrived.
	// The live tap's lock guards the batcher against its ticker.
	live bool
	born time.Time
}

func (a *Agent) newBatcher(tap, source, session string, first uint64, live bool, bufs *bufPool, send func(*outBatch, bool) error) (*batcher, error) {
	bt := &batcher{
		a: a, bufs: bufs,
		hdr: schemas.Batch{
			Kind: schemas.KindPackets, Campaign: a.cfg.Campaign, Home: a.cfg.Home.Name, Tap: tap,
			Source: source, Session: session,
		},
		first: first,
		enc:   schemas.NewRecordEncoder(first),
		send:  send,
		live:  live,
	}
	bt.meta = batchMeta{subject: schemas.PacketSubject(a.cfg.Campaign, a.cfg.Home.Name, tap), source: bt.hdr.Source, session: session, live: live}
	// The header at its widest: offsets of 10 bytes, a count of 3.
	bt.hdr.FirstOffset = 1 << 63
	hdr, err := bt.hdr.AppendHeader(nil, 65536)
	if err != nil {
		return nil, err
	}
	bt.maxBody = a.cfg.BatchBytes - len(hdr) - schemas.MaxPacketRecordLen
	if bt.maxBody < schemas.MaxPacketRecordLen {
		return nil, fmt.Errorf("batch bytes %d leave no room for packets after the %d-byte header of %s", a.cfg.BatchBytes, len(hdr), bt.hdr.Source)
	}
	bt.body = make([]byte, 0, bt.maxBody+schemas.MaxPacketRecordLen)
	return bt, nil
}

func (b *batcher) add(p *schemas.Packet) error {
	if b.live && b.n == 0 {
		b.born = time.Now()
	}
	b.body = b.enc.AppendPacket(b.body, p)
	b.n++
	b.last = p.Offset
	if b.n >= b.a.cfg.BatchSize || len(b.body) > b.maxBody {
		return b.cut(false)
	}
	return nil
}

// cut sends the batch so far. Batches start where the previous one's last
// packet ended, not at the next decodable packet, so a resumed run cuts
// them at the same offsets and gives them the same message ids.
func (b *batcher) cut(final bool) error {
	next := b.first
	if b.n > 0 {
		next = b.last + 1
	}
	b.hdr.FirstOffset, b.hdr.Final = b.first, final
	data, err := b.hdr.AppendHeader(b.bufs.get(), b.n)
	if err != nil {
		return err
	}
	data = append(data, b.body...)
	m := b.meta
	m.msgID, m.first, m.next, m.final, m.packets = b.hdr.MsgID(), b.first, next, final, b.n
	packets := b.n
	b.first, b.n, b.body = next, 0, b.body[:0]
	b.enc = schemas.NewRecordEncoder(next)
	b.a.count(func(st *Stats) { st.Batches++; st.Packets += packets })
	return b.send(&outBatch{batchMeta: m, data: data}, b.live)
}
