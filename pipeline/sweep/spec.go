// Package sweep runs a grid of experiments (models x views x windows x
// kinds x seeds x model flags, each cross-validated) as one set of
// (configuration, fold) tasks whose results are kept in the store under
// the configuration's hash, so that a sweep restarted after a failure or a
// kill runs only what is missing.
package sweep

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/schemas"
)

// Spec is a sweep file: the grid and where its data comes from.
type Spec struct {
	// FromDir is a folder of device folders (IoT Sentinel layout): one
	// dataset is built per view, kind and window size.
	FromDir string `yaml:"from_dir"`
	// Dataset (and Version, default v1) is an existing dataset version
	// instead: its view, kind and window size are the dataset's.
	Dataset string   `yaml:"dataset"`
	Version string   `yaml:"version"`
	Models  []string `yaml:"models"`
	Views   []string `yaml:"views"`
	Windows []int    `yaml:"windows"`
	Kinds   []string `yaml:"kinds"`
	Seeds   []uint64 `yaml:"seeds"`
	CV      CV       `yaml:"cv"`
	// ModelFlags are the model flags of homemole train (epochs, hidden,
	// trees, ...), each one value or a list of values to sweep over.
	ModelFlags map[string]Values `yaml:"model_flags"`
}

// CV is the cross-validation every configuration gets.
type CV struct {
	Mode  string `yaml:"mode"`
	Folds int    `yaml:"folds"`
}

// Values is one scalar or a list of them, kept as text as a flag would be.
type Values []string

// UnmarshalYAML takes `epochs: 5` as well as `epochs: [5, 15]`.
func (v *Values) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*v = Values{n.Value}
		return nil
	case yaml.SequenceNode:
		var out Values
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: a model flag's values are scalars", c.Line)
			}
			out = append(out, c.Value)
		}
		*v = out
		return nil
	}
	return fmt.Errorf("line %d: a model flag is one value or a list of values", n.Line)
}

// Keys are the keys a sweep file may have, for error messages.
const Keys = "from_dir, dataset, version, models, views, windows, kinds, seeds, cv {mode, folds}, model_flags"

// MaxConfigurations bounds a grid: past it a typo in a list (or a sweep
// that would run for years) is likelier than a wish.
const MaxConfigurations = 10000

// Views a from_dir sweep can build.
var Views = []string{"lan", "napt", "vpn"}

// Parse reads a sweep file strictly: an unknown key is an error naming it,
// and the grid is checked before anything runs. name is the file's name in
// errors.
func Parse(r io.Reader, name string) (*Spec, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read sweep spec %s: %w", name, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var s Spec
	if err := dec.Decode(&s); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("sweep spec %s is empty: it needs from_dir or dataset, and models", name)
		}
		return nil, fmt.Errorf("sweep spec %s: %w (a sweep spec's keys: %s; model flags go under model_flags)", name, err, Keys)
	}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("sweep spec %s: %w", name, err)
	}
	return &s, nil
}

func (s *Spec) check() error {
	switch {
	case (s.FromDir == "") == (s.Dataset == ""):
		return errors.New("give from_dir (a folder of device folders) or dataset (an existing dataset version), one of them")
	case len(s.Models) == 0:
		return fmt.Errorf("models: list at least one of %s", strings.Join(train.Models, ", "))
	}
	for _, m := range s.Models {
		if err := (train.Spec{Name: m}).Check(); err != nil {
			return fmt.Errorf("models: %w", err)
		}
	}
	if s.Dataset != "" {
		if len(s.Views)+len(s.Windows)+len(s.Kinds) > 0 {
			return errors.New("views, windows and kinds are the dataset's own with dataset:; sweep them with from_dir")
		}
		if s.Version == "" {
			s.Version = "v1"
		}
		if err := schemas.ValidateToken("dataset", s.Dataset); err != nil {
			return err
		}
		if err := schemas.ValidateToken("version", s.Version); err != nil {
			return err
		}
	} else {
		if s.Version != "" {
			return errors.New("version goes with dataset:, not from_dir")
		}
		if len(s.Views) == 0 {
			s.Views = []string{"lan"}
		}
		if len(s.Kinds) == 0 {
			s.Kinds = []string{schemas.KindInd}
		}
		if len(s.Windows) == 0 {
			return errors.New("windows: list the window sizes (packets) to build, e.g. [20, 40, 100]")
		}
		for _, v := range s.Views {
			if !slices.Contains(Views, v) {
				return fmt.Errorf("views: %q, want %s", v, strings.Join(Views, ", "))
			}
		}
		for _, k := range s.Kinds {
			if k != schemas.KindInd && k != schemas.KindNoise {
				return fmt.Errorf("kinds: %q, want %s or %s", k, schemas.KindInd, schemas.KindNoise)
			}
		}
		for _, w := range s.Windows {
			if w < 1 {
				return fmt.Errorf("windows: %d, want a window size of 1 packet or more", w)
			}
		}
	}
	if len(s.Seeds) == 0 {
		s.Seeds = []uint64{1}
	}
	if s.CV.Mode == "" {
		s.CV.Mode = train.CVGrouped
	}
	if !slices.Contains(train.CVModes, s.CV.Mode) {
		return fmt.Errorf("cv.mode %q: want one of %s", s.CV.Mode, strings.Join(train.CVModes, ", "))
	}
	if s.CV.Folds == 0 {
		s.CV.Folds = 5
	}
	if s.CV.Mode != train.CVLeaveOneHomeOut && s.CV.Folds < 2 {
		return fmt.Errorf("cv.folds %d: want 2 or more", s.CV.Folds)
	}
	n := len(s.Models) * max(1, len(s.Views)) * max(1, len(s.Windows)) * max(1, len(s.Kinds)) * len(s.Seeds)
	for _, vs := range s.ModelFlags {
		n *= max(1, len(vs))
		if n > MaxConfigurations {
			break
		}
	}
	if n > MaxConfigurations {
		return fmt.Errorf("the grid has over %d configurations: split it into several sweeps", MaxConfigurations)
	}
	for k, vs := range s.ModelFlags {
		if k == "model" || k == "device" {
			return fmt.Errorf("model_flags.%s: the model is swept by models:, the device is the runner's (--device)", k)
		}
		if len(vs) == 0 {
			return fmt.Errorf("model_flags.%s: give a value", k)
		}
	}
	return nil
}

// Config is one point of the grid: what is cross-validated.
type Config struct {
	// Data is the from_dir folder or the dataset/version.
	Data       string            `json:"data"`
	View       string            `json:"view,omitempty"`
	Kind       string            `json:"kind,omitempty"`
	Window     int               `json:"window,omitempty"`
	Model      string            `json:"model"`
	ModelFlags map[string]string `json:"model_flags,omitempty"`
	Seed       uint64            `json:"seed"`
	CVMode     string            `json:"cv_mode"`
	Folds      int               `json:"folds"`
}

// Hash names the configuration in the store: the same settings give the
// same hash in every run, so their finished folds are found again.
func (c Config) Hash() string {
	js, _ := json.Marshal(c) // map keys come out sorted
	sum := sha256.Sum256(js)
	return hex.EncodeToString(sum[:8])
}

// dataKey is what a from_dir dataset depends on.
func (c Config) dataKey() string {
	js, _ := json.Marshal([]any{c.Data, c.View, c.Kind, c.Window})
	sum := sha256.Sum256(js)
	return hex.EncodeToString(sum[:8])
}

// Label is the configuration in a few words, for tables and logs.
func (c Config) Label() string {
	var parts []string
	parts = append(parts, c.Model)
	if c.View != "" {
		parts = append(parts, c.View, fmt.Sprintf("w%d", c.Window), c.Kind)
	}
	keys := make([]string, 0, len(c.ModelFlags))
	for k := range c.ModelFlags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, k+"="+c.ModelFlags[k])
	}
	return strings.Join(append(parts, fmt.Sprintf("seed %d", c.Seed)), " ")
}

// Configurations expands the grid, in the spec's order.
func (s *Spec) Configurations() []Config {
	data := filepath.Clean(s.FromDir)
	views, kinds, windows := s.Views, s.Kinds, s.Windows
	if s.Dataset != "" {
		data = s.Dataset + "/" + s.Version
		views, kinds, windows = []string{""}, []string{""}, []int{0}
	}
	flagSets := []map[string]string{nil}
	keys := make([]string, 0, len(s.ModelFlags))
	for k := range s.ModelFlags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var next []map[string]string
		for _, base := range flagSets {
			for _, v := range s.ModelFlags[k] {
				m := map[string]string{k: v}
				for bk, bv := range base {
					m[bk] = bv
				}
				next = append(next, m)
			}
		}
		flagSets = next
	}
	var out []Config
	seen := map[string]bool{}
	for _, m := range s.Models {
		for _, v := range views {
			for _, w := range windows {
				for _, k := range kinds {
					for _, f := range flagSets {
						for _, seed := range s.Seeds {
							c := Config{Data: data, View: v, Kind: k, Window: w, Model: m, ModelFlags: flagsOf(m, f),
								Seed: seed, CVMode: s.CV.Mode, Folds: s.CV.Folds}
							// epochs: [5, 15] makes one forest, not two.
							if h := c.Hash(); !seen[h] {
								seen[h] = true
								out = append(out, c)
							}
						}
					}
				}
			}
		}
	}
	return out
}

// forestFlags are the model flags a Random Forest reads; the LSTMs read
// every other one.
var forestFlags = map[string]bool{"trees": true}

// flagsOf keeps the flags that change model m, so that a flag it ignores
// neither splits its configuration nor changes its hash.
func flagsOf(m string, flags map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range flags {
		if forestFlags[k] == (m == "rf") {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
