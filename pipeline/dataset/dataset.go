// Package dataset assembles, verifies and reads dataset versions: the
// manifest that names every window object with its size and SHA-256, and
// the reader trainers use.
package dataset

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/schemas/windowfile"
)

// Manifest describes one dataset version. It holds no timestamps, so a
// rebuild from the same captures yields the same bytes.
type Manifest struct {
	Dataset              string         `json:"dataset"`
	Version              string         `json:"version"`
	FeatureSchemaVersion int            `json:"feature_schema_version"`
	Kind                 string         `json:"kind"`
	WindowSize           int            `json:"window_size"`
	Labels               []string       `json:"labels"`
	Windows              int            `json:"windows"`
	Packets              int            `json:"packets"`
	UnlabeledPackets     int            `json:"unlabeled_packets"`
	BackgroundPackets    int            `json:"background_packets"`
	WindowsPerDevice     map[string]int `json:"windows_per_device"`
	WindowsPerView       map[string]int `json:"windows_per_view"`
	// Groups are the units cross-validation keeps on one side of a split:
	// home/session, one group for the taps that saw the same session
	// (window.GroupOf).
	Groups []string `json:"groups"`
	// Cap and CapSeed are the spec's per-device cap. CapThresholds holds,
	// for each device with more than Cap windows, the largest CapScore the
	// cap keeps: readers keep a window of that device only when its score
	// is at most the threshold, so every reader sees the same Cap windows
	// without the objects being rewritten. Devices without a threshold
	// keep every window.
	Cap           int               `json:"cap,omitempty"`
	CapSeed       uint64            `json:"cap_seed,omitempty"`
	CapThresholds map[string]uint64 `json:"cap_thresholds,omitempty"`
	// KeptWindows and KeptPerDevice count what readers see after the cap
	// (the same as Windows and WindowsPerDevice without one).
	KeptWindows   int            `json:"kept_windows"`
	KeptPerDevice map[string]int `json:"kept_windows_per_device"`
	Parts         []window.Part  `json:"parts"`
}

// Key is the manifest's object key.
func Key(dataset, version string) string {
	return path.Join("datasets", dataset, version, "manifest.json")
}

// Assemble collects the part records the windowers wrote for spec and writes
// the manifest. It is written last, after every object it names.
func Assemble(ctx context.Context, st store.Store, spec window.Spec) (*Manifest, error) {
	objs, err := st.List(ctx, spec.Prefix()+"/")
	if err != nil {
		return nil, fmt.Errorf("assemble manifest of %s/%s: %w", spec.Dataset, spec.Version, err)
	}
	m := &Manifest{
		Dataset: spec.Dataset, Version: spec.Version, FeatureSchemaVersion: schemas.WindowSchemaVersion,
		Kind: spec.Kind, WindowSize: spec.Size, Labels: spec.Labels,
		WindowsPerDevice: map[string]int{}, WindowsPerView: map[string]int{},
		Cap: spec.Cap, CapSeed: spec.CapSeed, KeptPerDevice: map[string]int{},
	}
	// smallest[d] is device d's Cap smallest scores over the parts read so
	// far: merging each part's own Cap smallest keeps it exact while
	// holding at most Cap scores per device.
	smallest := map[string][]uint64{}
	for _, o := range objs {
		if path.Base(o.Key) != window.PartSuffix {
			continue
		}
		data, err := st.Get(ctx, o.Key)
		if err != nil {
			return nil, err
		}
		var p window.Part
		if err := json.Unmarshal(data, &p); err != nil {
			return nil, fmt.Errorf("part record %s: %w", st.Location(o.Key), err)
		}
		if err := checkPart(spec.Dataset, spec.Version, p); err != nil {
			return nil, fmt.Errorf("part record %s: %w; rebuild the session", st.Location(o.Key), err)
		}
		m.Windows += p.Windows
		m.Packets += p.Packets
		m.UnlabeledPackets += p.Unlabeled
		m.BackgroundPackets += p.Background
		m.WindowsPerView[p.View] += p.Windows
		for d, n := range p.PerDevice {
			m.WindowsPerDevice[d] += n
		}
		if spec.Cap > 0 {
			for d, n := range p.PerDevice {
				sc := p.CapScores[d]
				if len(sc) != min(n, spec.Cap) || !slices.IsSorted(sc) {
					return nil, fmt.Errorf("part record %s: %d cap scores for %d windows of %s with a cap of %d: was it written without the cap? rebuild under another version",
						st.Location(o.Key), len(sc), n, d, spec.Cap)
				}
				smallest[d] = mergeSmallest(smallest[d], sc, spec.Cap)
			}
		}
		// The scores only serve the thresholds; a manifest carrying them
		// would grow by Cap numbers per device and session.
		p.CapScores = nil
		m.Parts = append(m.Parts, p)
		m.Groups = append(m.Groups, window.GroupOf(p.Home, p.Session))
	}
	if len(m.Parts) == 0 {
		return nil, fmt.Errorf("assemble manifest of %s/%s: no sessions were windowed under %s", spec.Dataset, spec.Version, st.Location(spec.Prefix()))
	}
	m.KeptWindows = m.Windows
	for d, n := range m.WindowsPerDevice {
		m.KeptPerDevice[d] = n
		if spec.Cap > 0 && n > spec.Cap {
			if m.CapThresholds == nil {
				m.CapThresholds = map[string]uint64{}
			}
			m.CapThresholds[d] = smallest[d][spec.Cap-1]
			m.KeptPerDevice[d] = spec.Cap
			m.KeptWindows -= n - spec.Cap
		}
	}
	sort.Strings(m.Groups)
	m.Groups = compactStrings(m.Groups)
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if _, err := st.Put(ctx, Key(spec.Dataset, spec.Version), data, "application/json"); err != nil {
		return nil, err
	}
	return m, nil
}

// mergeSmallest merges two ascending lists and keeps the k smallest.
func mergeSmallest(a, b []uint64, k int) []uint64 {
	out := make([]uint64, 0, min(len(a)+len(b), k))
	for len(out) < k && (len(a) > 0 || len(b) > 0) {
		if len(b) == 0 || len(a) > 0 && a[0] <= b[0] {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return out
}

func compactStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// CheckNames refuses a dataset name or version that is not a plain token:
// both become object keys, and "../.." would reach outside datasets/.
func CheckNames(dataset, version string) error {
	if err := schemas.ValidateToken("dataset name", dataset); err != nil {
		return err
	}
	return schemas.ValidateToken("dataset version", version)
}

// Load reads a dataset version's manifest. Every object it names must lie
// under the version's own prefix: a manifest is read from a store others
// write to, and must not lead a reader elsewhere.
func Load(ctx context.Context, st store.Store, dataset, version string) (*Manifest, error) {
	if err := CheckNames(dataset, version); err != nil {
		return nil, err
	}
	data, err := st.Get(ctx, Key(dataset, version))
	if err != nil {
		return nil, fmt.Errorf("open dataset %s/%s: %w (list datasets with `homemole dataset ls`)", dataset, version, err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", st.Location(Key(dataset, version)), err)
	}
	if m.FeatureSchemaVersion != schemas.WindowSchemaVersion {
		return nil, fmt.Errorf("dataset %s/%s has feature schema v%d, this build reads v%d: rebuild the dataset or use a matching HomeMole",
			dataset, version, m.FeatureSchemaVersion, schemas.WindowSchemaVersion)
	}
	if m.Dataset != dataset || m.Version != version {
		return nil, fmt.Errorf("manifest %s names dataset %s/%s: it was copied from another version; reassemble it", st.Location(Key(dataset, version)), m.Dataset, m.Version)
	}
	for _, p := range m.Parts {
		if err := checkPart(dataset, version, p); err != nil {
			return nil, fmt.Errorf("manifest %s: %w; reassemble the dataset", st.Location(Key(dataset, version)), err)
		}
	}
	return &m, nil
}

// checkPart refuses a part record whose objects lie outside its dataset
// version or carry no SHA-256, or whose counts are negative: windowers
// write part records, and a reader follows them.
func checkPart(dataset, version string, p window.Part) error {
	prefix := path.Join("datasets", dataset, version) + "/"
	for _, o := range p.Objects {
		if !strings.HasPrefix(o.Key, prefix) || path.Clean(o.Key) != o.Key || len(o.SHA256) != sha256.Size*2 || o.Size < 0 {
			return fmt.Errorf("object %q is not a window object of %s with a size and a SHA-256", o.Key, prefix)
		}
	}
	if p.Windows < 0 || p.Packets < 0 || p.Unlabeled < 0 || p.Background < 0 {
		return fmt.Errorf("session %s/%s: negative counts", p.Home, p.Session)
	}
	for d, n := range p.PerDevice {
		if n < 0 {
			return fmt.Errorf("session %s/%s: %d windows of %s", p.Home, p.Session, n, d)
		}
	}
	return nil
}

// checkObject compares an object's bytes with what the manifest recorded.
func checkObject(st store.Store, o store.ObjectInfo, data []byte) error {
	sum := sha256.Sum256(data)
	if int64(len(data)) != o.Size || hex.EncodeToString(sum[:]) != o.SHA256 {
		return fmt.Errorf("%s: size or SHA-256 differs from the manifest (changed after the dataset was assembled); rebuild the dataset or restore the object", st.Location(o.Key))
	}
	return nil
}

// Verify re-reads every object the manifest names and checks its size,
// SHA-256 and window count.
func Verify(ctx context.Context, st store.Store, m *Manifest) error {
	var errs []error
	for _, p := range m.Parts {
		n := 0
		for _, o := range p.Objects {
			data, err := st.Get(ctx, o.Key)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if err := checkObject(st, o, data); err != nil {
				errs = append(errs, err)
				continue
			}
			ws, err := windowfile.Decode(data)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", st.Location(o.Key), err))
				continue
			}
			n += len(ws)
		}
		if n != p.Windows {
			errs = append(errs, fmt.Errorf("session %s/%s: %d windows in objects, manifest says %d", p.Home, p.Session, n, p.Windows))
		}
	}
	return errors.Join(errs...)
}

// Windows reads the windows of the groups keep accepts (nil keeps all),
// after the manifest's cap, in manifest order, all in memory. Trainers
// that should not hold a dataset at once use Stream.
func Windows(ctx context.Context, st store.Store, m *Manifest, keep func(group string) bool) ([]*schemas.Window, error) {
	var out []*schemas.Window
	err := Stream(ctx, st, m, ReadOptions{Keep: keep}, func(w *schemas.Window) error {
		out = append(out, w)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// List names the dataset versions in the store, as "dataset/version".
func List(ctx context.Context, st store.Store) ([]string, error) {
	objs, err := st.List(ctx, "datasets/")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, o := range objs {
		if strings.HasSuffix(o.Key, "/manifest.json") {
			out = append(out, strings.TrimSuffix(strings.TrimPrefix(o.Key, "datasets/"), "/manifest.json"))
		}
	}
	return out, nil
}
