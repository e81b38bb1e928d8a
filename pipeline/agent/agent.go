// Package agent is the capture agent: it reads a home's taps, decodes every
// packet into its metadata record and publishes the records in batches.
// It builds without cgo so it cross-compiles for small gateways.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// Publisher is the seam between the agent and the bus; bus.AsyncPublisher
// implements it.
type Publisher interface {
	Publish(ctx context.Context, subject string, b *schemas.Batch) error
	Flush(ctx context.Context) error
}

// Config of one home's agent.
type Config struct {
	Campaign string
	Home     *campaign.Home
	// BatchSize is the number of packets per message.
	BatchSize int
	Log       *slog.Logger
	// Progress, when set, is called after every published batch.
	Progress func(Stats)
}

// Stats counts what the agent read and sent.
type Stats struct {
	Files        int
	Packets      int
	DecodeErrors int
	ReadErrors   int
	Batches      int
	// Sessions are the capture sessions published, in order.
	Sessions []string
}

// Agent publishes one home's captures.
type Agent struct {
	cfg  Config
	home features.HomeConfig
	st   Stats
}

// New checks the configuration and prepares the home's direction rules.
func New(cfg Config) (*Agent, error) {
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 512
	}
	if cfg.BatchSize < 1 || cfg.BatchSize > 65536 {
		return nil, fmt.Errorf("batch size %d: want 1..65536 packets", cfg.BatchSize)
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
	return &Agent{cfg: cfg, home: features.HomeConfig{LANNets: nets, GatewayMAC: cfg.Home.GatewayMAC()}}, nil
}

// Stats returns the counts so far.
func (a *Agent) Stats() Stats { return a.st }

// SessionName derives a capture session's name from its file: deterministic,
// so a restarted agent republishes under the same message ids.
func SessionName(tap, file string) string {
	base := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	var b strings.Builder
	b.WriteString(tap + "-")
	for _, r := range base {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// RunFiles publishes every file of every file tap, one capture session per
// file. A corrupt file ends its session where the corruption starts: the
// packets before it are published, the error is logged and counted, and
// the agent goes on with the next file.
func (a *Agent) RunFiles(ctx context.Context, pub Publisher) error {
	for _, tap := range a.cfg.Home.Taps {
		for _, f := range tap.Files {
			if err := a.publishFile(ctx, pub, tap.Name, f); err != nil {
				return err
			}
		}
	}
	if err := pub.Flush(ctx); err != nil {
		return fmt.Errorf("home %s: wait for JetStream acks: %w", a.cfg.Home.Name, err)
	}
	return nil
}

func (a *Agent) publishFile(ctx context.Context, pub Publisher, tap, path string) error {
	src, err := capture.OpenFile(path)
	if err != nil {
		a.st.ReadErrors++
		a.cfg.Log.Error("capture skipped", "home", a.cfg.Home.Name, "tap", tap, "file", path, "err", err)
		return nil
	}
	defer src.Close()
	a.st.Files++
	a.st.Sessions = append(a.st.Sessions, SessionName(tap, path))
	subject := schemas.PacketSubject(a.cfg.Campaign, a.cfg.Home.Name, tap)
	b := &schemas.Batch{
		Kind: schemas.KindPackets, Campaign: a.cfg.Campaign, Home: a.cfg.Home.Name, Tap: tap,
		Source:  a.cfg.Campaign + "/" + a.cfg.Home.Name + "/" + tap + "/" + filepath.Base(path),
		Session: SessionName(tap, path),
	}
	dec := features.NewDecoder(a.home)
	send := func(final bool) error {
		b.Final = final
		if err := pub.Publish(ctx, subject, b); err != nil {
			return fmt.Errorf("home %s: %w", a.cfg.Home.Name, err)
		}
		a.st.Batches++
		if a.cfg.Progress != nil {
			a.cfg.Progress(a.st)
		}
		next := b.FirstOffset
		if n := len(b.Packets); n > 0 {
			next = b.Packets[n-1].Offset + 1
		}
		// A fresh slice: the async publisher already encoded the old one,
		// but keeping ownership simple costs little.
		b.Packets = make([]schemas.Packet, 0, a.cfg.BatchSize)
		b.FirstOffset = next
		return nil
	}
	b.Packets = make([]schemas.Packet, 0, a.cfg.BatchSize)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		fr, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			a.st.ReadErrors++
			a.cfg.Log.Error("capture ends early; packets before the fault are kept", "home", a.cfg.Home.Name, "tap", tap, "file", path, "err", err)
			break
		}
		if len(b.Packets) == 0 {
			b.FirstOffset = fr.Offset
		}
		b.Packets = b.Packets[:len(b.Packets)+1]
		if err := dec.Decode(fr.LinkType, fr.Data, fr.CI, fr.Offset, &b.Packets[len(b.Packets)-1]); err != nil {
			b.Packets = b.Packets[:len(b.Packets)-1]
			a.st.DecodeErrors++
			continue
		}
		a.st.Packets++
		if len(b.Packets) == a.cfg.BatchSize {
			if err := send(false); err != nil {
				return err
			}
		}
	}
	// The final batch may be empty: it still tells downstream the session ended.
	return send(true)
}
