package dataset_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/schemas/windowfile"
)

func newReaderStore() *store.Memory { return store.NewMemory() }

// capN bites on the plug's and the cam's windows of readerSessions, not the bulb's.
const capN = 80

type readerSession struct {
	home, id string
	pkts     []schemas.Packet
	labels   []int16
}

// readerSessions are six sessions of two homes in which the plug sends far
// more than the others, so a cap bites on it and not on the bulb.
func readerSessions() []readerSession {
	r := rand.New(rand.NewPCG(3, 3))
	var out []readerSession
	for k := range 6 {
		s := readerSession{home: fmt.Sprintf("h%d", k%2), id: fmt.Sprintf("lan-s%d", k)}
		for i := range 300 + 40*k {
			l := int16(0) // plug
			switch x := r.IntN(10); {
			case x == 0:
				l = 1 // bulb
			case x < 3:
				l = 2 // cam
			case x == 3:
				l = -1
			}
			s.pkts = append(s.pkts, schemas.Packet{TsNs: int64(i) * 1e7, Offset: uint64(i), DPort: int32(r.IntN(1000)), FrameLen: uint32(60 + r.IntN(100))})
			s.labels = append(s.labels, l)
		}
		out = append(out, s)
	}
	return out
}

// buildReaderDataset windows the sessions in the given order and assembles
// the manifest.
func buildReaderDataset(t testing.TB, st store.Store, version string, capN int, order []int) *dataset.Manifest {
	t.Helper()
	ctx := context.Background()
	spec := window.Spec{Dataset: "rd", Version: version, Kind: schemas.KindInd, Size: 4, Labels: []string{"plug", "bulb", "cam"},
		WindowsPerObject: 7, Cap: capN, CapSeed: 11}
	w, err := window.New(spec, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	sessions := readerSessions()
	for _, i := range order {
		s := sessions[i]
		if _, err := w.WriteSession(ctx, s.home, "lan", s.id, "src-"+s.id, s.pkts, s.labels); err != nil {
			t.Fatal(err)
		}
	}
	m, err := dataset.Assemble(ctx, st, spec)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readIDs(t *testing.T, st store.Store, m *dataset.Manifest, opt dataset.ReadOptions) []string {
	t.Helper()
	var ids []string
	if err := dataset.Stream(context.Background(), st, m, opt, func(w *schemas.Window) error {
		ids = append(ids, w.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestCapKeepsSeededWindowsWhateverTheOrder(t *testing.T) {
	st := newReaderStore()
	a := buildReaderDataset(t, st, "a", capN, []int{0, 1, 2, 3, 4, 5})
	b := buildReaderDataset(t, st, "b", capN, []int{5, 3, 1, 0, 4, 2})
	// A restart rewrites sessions already written: objects must not change.
	before := st.Snapshot()
	buildReaderDataset(t, st, "a", capN, []int{2, 0})
	after := st.Snapshot()
	for k, v := range before {
		if string(after[k]) != string(v) && !strings.HasSuffix(k, "manifest.json") {
			t.Errorf("rewriting a session changed %s", k)
		}
	}
	if a.WindowsPerDevice["plug"] <= capN || a.WindowsPerDevice["bulb"] > capN {
		t.Fatalf("fixture should overflow the cap for the plug only: %v", a.WindowsPerDevice)
	}
	if !maps.Equal(a.CapThresholds, b.CapThresholds) || !maps.Equal(a.KeptPerDevice, b.KeptPerDevice) {
		t.Errorf("session order changed the cap: %v %v / %v %v", a.CapThresholds, a.KeptPerDevice, b.CapThresholds, b.KeptPerDevice)
	}
	idsA := readIDs(t, st, a, dataset.ReadOptions{})
	idsB := readIDs(t, st, b, dataset.ReadOptions{})
	slices.Sort(idsA)
	slices.Sort(idsB)
	if !slices.Equal(idsA, idsB) {
		t.Error("the two builds keep different windows")
	}
	ws, err := dataset.Windows(context.Background(), st, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, w := range ws {
		got[window.DeviceOf(a.Labels, w)]++
	}
	if !maps.Equal(got, a.KeptPerDevice) || len(ws) != a.KeptWindows || got["plug"] != capN {
		t.Errorf("read %v (%d windows), manifest says %v (%d)", got, len(ws), a.KeptPerDevice, a.KeptWindows)
	}
	// The kept plug windows are exactly the capN of smallest score.
	all := readIDs(t, st, a, dataset.ReadOptions{Uncapped: true})
	if len(all) != a.Windows {
		t.Fatalf("uncapped read gave %d windows of %d", len(all), a.Windows)
	}
	var plug []string
	for _, id := range all {
		if strings.Contains(id, "/plug/") {
			plug = append(plug, id)
		}
	}
	sort.Slice(plug, func(i, j int) bool { return window.CapScore(a.CapSeed, plug[i]) < window.CapScore(a.CapSeed, plug[j]) })
	for i, id := range plug {
		if kept := slices.Contains(idsA, id); kept != (i < capN) {
			t.Fatalf("plug window %s of rank %d kept=%v", id, i, kept)
		}
	}
	for _, p := range a.Parts {
		if p.CapScores != nil {
			t.Fatal("the manifest carries the parts' cap scores")
		}
	}
	if err := dataset.Verify(context.Background(), st, a); err != nil {
		t.Fatal(err)
	}
}

func TestCapSeedChangesTheChoice(t *testing.T) {
	st := newReaderStore()
	a := buildReaderDataset(t, st, "a", capN, []int{0, 1, 2, 3, 4, 5})
	ids := readIDs(t, st, a, dataset.ReadOptions{})
	var plugA []string
	for _, id := range ids {
		if strings.Contains(id, "/plug/") {
			plugA = append(plugA, id)
		}
	}
	scores := map[string]bool{}
	for _, id := range plugA {
		scores[id] = true
	}
	// Under another seed the capN smallest scores are other windows.
	all := readIDs(t, st, a, dataset.ReadOptions{Uncapped: true})
	var plug []string
	for _, id := range all {
		if strings.Contains(id, "/plug/") {
			plug = append(plug, id)
		}
	}
	sort.Slice(plug, func(i, j int) bool {
		return window.CapScore(a.CapSeed+1, plug[i]) < window.CapScore(a.CapSeed+1, plug[j])
	})
	same := 0
	for _, id := range plug[:capN] {
		if scores[id] {
			same++
		}
	}
	if same == capN {
		t.Error("another cap seed keeps the same windows")
	}
}

func TestUncappedSpecKeepsAll(t *testing.T) {
	st := newReaderStore()
	m := buildReaderDataset(t, st, "a", 0, []int{0, 1, 2, 3, 4, 5})
	if m.CapThresholds != nil || m.KeptWindows != m.Windows || !maps.Equal(m.KeptPerDevice, m.WindowsPerDevice) {
		t.Errorf("no cap, yet kept %d of %d: %v", m.KeptWindows, m.Windows, m.CapThresholds)
	}
	for _, p := range m.Parts {
		if p.CapScores != nil {
			t.Fatal("parts of an uncapped spec carry cap scores")
		}
	}
}

func TestStreamShuffleIsSeeded(t *testing.T) {
	st := newReaderStore()
	m := buildReaderDataset(t, st, "a", capN, []int{0, 1, 2, 3, 4, 5})
	ordered := readIDs(t, st, m, dataset.ReadOptions{})
	one := readIDs(t, st, m, dataset.ReadOptions{ShuffleBuffer: 16, Seed: 1})
	again := readIDs(t, st, m, dataset.ReadOptions{ShuffleBuffer: 16, Seed: 1})
	two := readIDs(t, st, m, dataset.ReadOptions{ShuffleBuffer: 16, Seed: 2})
	if !slices.Equal(one, again) {
		t.Error("one seed gave two orders")
	}
	if slices.Equal(one, two) || slices.Equal(one, ordered) {
		t.Error("the seed does not change the order")
	}
	for _, ids := range [][]string{one, two} {
		sorted := slices.Sorted(slices.Values(ids))
		if !slices.Equal(sorted, slices.Compact(slices.Clone(sorted))) {
			t.Fatal("a window was read twice")
		}
		if !slices.Equal(sorted, slices.Sorted(slices.Values(ordered))) {
			t.Fatal("shuffled and ordered reads hold different windows")
		}
	}
	if len(ordered) != m.KeptWindows {
		t.Errorf("read %d windows, manifest keeps %d", len(ordered), m.KeptWindows)
	}
}

func TestStreamHoldsBufferAndOneObject(t *testing.T) {
	st := newReaderStore()
	m := buildReaderDataset(t, st, "a", 0, []int{0, 1, 2, 3, 4, 5})
	const buffer = 10
	decoded, biggest, objects := 0, 0, 0
	st.OnGet = func(key string, data []byte) {
		ws, err := windowfile.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		decoded += len(ws)
		biggest = max(biggest, len(ws))
		objects++
	}
	yielded := 0
	if err := dataset.Stream(context.Background(), st, m, dataset.ReadOptions{ShuffleBuffer: buffer, Seed: 5}, func(*schemas.Window) error {
		yielded++
		if held := decoded - yielded + 1; held > buffer+biggest {
			t.Fatalf("%d windows held at once, bound is %d buffered + %d of one object", held, buffer, biggest)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if objects < 5 || yielded != m.Windows {
		t.Fatalf("read %d objects and %d windows of %d", objects, yielded, m.Windows)
	}
}

func TestStreamKeepsGroupsAndStops(t *testing.T) {
	st := newReaderStore()
	m := buildReaderDataset(t, st, "a", 0, []int{0, 1, 2, 3, 4, 5})
	folds, err := dataset.Folds(m.Groups, 3, 9)
	if err != nil {
		t.Fatal(err)
	}
	train, test := dataset.FoldKeep(folds, 0)
	total := 0
	for _, keep := range []func(string) bool{train, test} {
		n := 0
		for w, err := range dataset.All(context.Background(), st, m, dataset.ReadOptions{Keep: keep, ShuffleBuffer: 8, Seed: 1}) {
			if err != nil {
				t.Fatal(err)
			}
			if !keep(w.Group) {
				t.Fatalf("window of group %s read on the wrong side", w.Group)
			}
			n++
		}
		total += n
	}
	if total != m.Windows {
		t.Errorf("the fold's two sides hold %d windows of %d", total, m.Windows)
	}
	n := 0
	for range dataset.All(context.Background(), st, m, dataset.ReadOptions{}) {
		if n++; n == 3 {
			break
		}
	}
	if n != 3 {
		t.Errorf("break read %d windows", n)
	}
}

func TestFolds(t *testing.T) {
	var groups []string
	for i := range 23 {
		groups = append(groups, fmt.Sprintf("h%d/s%02d", i%4, i))
	}
	folds, err := dataset.Folds(groups, 5, 1)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, f := range folds {
		if len(f) < 4 || len(f) > 5 {
			t.Errorf("fold of %d groups; 23 over 5 folds gives 4 or 5", len(f))
		}
		for _, g := range f {
			seen[g]++
		}
	}
	for _, g := range groups {
		if seen[g] != 1 {
			t.Errorf("group %s is in %d folds", g, seen[g])
		}
	}
	if len(seen) != len(groups) {
		t.Errorf("folds hold %d groups, want %d", len(seen), len(groups))
	}
	shuffled := slices.Clone(groups)
	slices.Reverse(shuffled)
	again, _ := dataset.Folds(shuffled, 5, 1)
	other, _ := dataset.Folds(groups, 5, 2)
	if fmt.Sprint(again) != fmt.Sprint(folds) {
		t.Error("the order of the groups changed the folds")
	}
	if fmt.Sprint(other) == fmt.Sprint(folds) {
		t.Error("another seed gave the same folds")
	}
	for _, k := range []int{0, 1, 24} {
		if _, err := dataset.Folds(groups, k, 1); err == nil {
			t.Errorf("%d folds of 23 groups accepted", k)
		}
	}
}
