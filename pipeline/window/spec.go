package window

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"path"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
)

// Spec is what a dataset build asks of the windower.
type Spec struct {
	Dataset string
	Version string
	Kind    string // schemas.KindInd or schemas.KindNoise
	Size    int    // packets per window
	// Labels is the dataset's label vocabulary (device names); a window's
	// labels index it. Devices outside it are treated as unlabeled.
	Labels []string
	// WindowsPerObject bounds an object's size; a session writes several.
	WindowsPerObject int
	// Views, when set, are the only views windowed ("lan", "napt", "vpn");
	// batches of other views are acknowledged and left out.
	Views []string `json:",omitempty"`
	// Cap bounds the windows a trainer reads per device (majority label),
	// 5,000 in the paper; 0 keeps every window. The windower still writes
	// every window: which ones a capped dataset keeps is decided from all
	// sessions at once (see CapScore), which no single session can know.
	Cap int `json:",omitempty"`
	// CapSeed picks which windows the cap keeps.
	CapSeed uint64 `json:",omitempty"`
	// FlushWindows, when set, writes a session as it goes: once a batch
	// leaves at least this many finished windows, they are stored, the
	// session's unfinished tail is checkpointed and the batches it
	// consumed are acknowledged (see incremental.go). 0 writes each
	// session whole when its final batch comes.
	FlushWindows int `json:",omitempty"`
	// SessionBudget, when set, bounds the bytes of packets a session holds
	// in memory: a batch that takes it past them writes what is finished
	// and checkpoints the rest as FlushWindows does. It counts packets,
	// not the Go heap, so the cuts stay where they are on every run.
	SessionBudget int64 `json:",omitempty"`
}

// RegisterFlags adds the spec's flags (all but the label vocabulary, which
// comes from the campaign's inventories) to fs.
func (s *Spec) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&s.Dataset, "dataset", "", "dataset name")
	fs.StringVar(&s.Version, "version", "v1", "dataset version")
	fs.StringVar(&s.Kind, "kind", schemas.KindInd, "ind: one device's own packets per window (pure IoT); noise: the home's merged stream")
	fs.IntVar(&s.Size, "window", 100, "packets per window (the paper studies 20, 40 and 100)")
	fs.IntVar(&s.Cap, "cap", 5000, "windows kept per device, chosen by --cap-seed (the paper keeps 5,000); 0 keeps all")
	fs.Uint64Var(&s.CapSeed, "cap-seed", 1, "seed of the choice of windows --cap keeps")
	fs.IntVar(&s.FlushWindows, "flush-windows", 0, "write a session as it goes: store its finished windows and checkpoint the rest whenever a batch leaves this many; 0 writes each session whole at its end")
	fs.Func("session-budget", "bytes of packets a session may hold (e.g. 64MiB, about 140 bytes a packet) before it writes what is finished and checkpoints the rest; unset: no budget", func(v string) error {
		n, err := campaign.ParseBytes(v)
		s.SessionBudget = n
		return err
	})
}

// Validate refuses specs no window can be cut from.
func (s *Spec) Validate() error {
	if err := schemas.ValidateToken("dataset name", s.Dataset); err != nil {
		return err
	}
	if err := schemas.ValidateToken("dataset version", s.Version); err != nil {
		return err
	}
	if s.Kind != schemas.KindInd && s.Kind != schemas.KindNoise {
		return fmt.Errorf("window kind %q: want %s or %s", s.Kind, schemas.KindInd, schemas.KindNoise)
	}
	if s.Size < 2 || s.Size > 10000 {
		return fmt.Errorf("window size %d: want 2..10000 packets (the paper uses 20, 40, 100)", s.Size)
	}
	if s.Cap < 0 {
		return fmt.Errorf("cap of %d windows per device: want 0 (no cap) or more", s.Cap)
	}
	if s.FlushWindows < 0 || s.SessionBudget < 0 {
		return fmt.Errorf("flush every %d windows, session budget %d bytes: want 0 (whole sessions) or more", s.FlushWindows, s.SessionBudget)
	}
	if len(s.Labels) == 0 || len(s.Labels) > 32767 {
		return fmt.Errorf("label vocabulary of %d devices: want 1..32767", len(s.Labels))
	}
	return nil
}

// Prefix is where the dataset's objects live.
func (s *Spec) Prefix() string { return path.Join("datasets", s.Dataset, s.Version) }

// SpecKey is where a build records its spec, so that the manifest can be
// assembled by any process once the windowers are done.
func (s *Spec) SpecKey() string { return path.Join(s.Prefix(), "_spec.json") }

// SaveSpec records the spec; a spec already there must be the same. A spec
// Validate refuses is not recorded: it would refuse the corrected retry.
func SaveSpec(ctx context.Context, st store.Store, s Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if old, err := st.Get(ctx, s.SpecKey()); err == nil && string(old) != string(data) {
		return fmt.Errorf("dataset %s/%s was started with another spec (%s): choose another version", s.Dataset, s.Version, st.Location(s.SpecKey()))
	}
	_, err = st.Put(ctx, s.SpecKey(), data, "application/json")
	return err
}

// LoadSpec reads the spec a build recorded.
func LoadSpec(ctx context.Context, st store.Store, dataset, version string) (Spec, error) {
	s := Spec{Dataset: dataset, Version: version}
	data, err := st.Get(ctx, s.SpecKey())
	if err != nil {
		return s, fmt.Errorf("dataset %s/%s has no recorded spec: was a windower started for it? %w", dataset, version, err)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("spec %s: %w", st.Location(s.SpecKey()), err)
	}
	return s, s.Validate()
}
