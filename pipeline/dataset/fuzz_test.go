package dataset_test

import (
	"context"
	"io"
	"path"
	"testing"

	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
)

// FuzzManifest: a manifest read from the store is refused or loaded, and
// what loads can be read, verified and inspected without a panic, over
// the real objects of a small dataset.
func FuzzManifest(f *testing.F) {
	st := newReaderStore()
	buildReaderDataset(f, st, "v1", capN, []int{0, 1, 2})
	seed, err := st.Get(context.Background(), dataset.Key("rd", "v1"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"dataset":"rd","version":"v1","feature_schema_version":1,"labels":[],"parts":[{"objects":[{"key":"datasets/rd/v1/x"}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		if _, err := st.Put(ctx, dataset.Key("rd", "v1"), data, "application/json"); err != nil {
			t.Fatal(err)
		}
		m, err := dataset.Load(ctx, st, "rd", "v1")
		if err != nil {
			return
		}
		_ = dataset.Stream(ctx, st, m, dataset.ReadOptions{ShuffleBuffer: 3, Seed: 1}, func(*schemas.Window) error { return nil })
		_ = dataset.Verify(ctx, st, m)
		if in, err := dataset.Inspect(ctx, st, m); err == nil {
			_ = in.Print(io.Discard, m)
		}
	})
}

// FuzzPart: a part record a windower left is refused or assembled into a
// manifest that loads; never a panic.
func FuzzPart(f *testing.F) {
	st := newReaderStore()
	buildReaderDataset(f, st, "v1", capN, []int{0})
	spec := window.Spec{Dataset: "rd", Version: "v1", Kind: schemas.KindInd, Size: 4, Labels: []string{"plug", "bulb", "cam"},
		WindowsPerObject: 7, Cap: capN, CapSeed: 11}
	var partKey string
	base := st.Snapshot()
	for k, v := range base {
		if path.Base(k) == window.PartSuffix {
			partKey = k
			f.Add(v)
		}
	}
	if partKey == "" {
		f.Fatal("no part record to start from")
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		st.Restore(base)
		if _, err := st.Put(ctx, partKey, data, "application/json"); err != nil {
			t.Fatal(err)
		}
		if _, err := dataset.Assemble(ctx, st, spec); err != nil {
			return
		}
		if _, err := dataset.Load(ctx, st, "rd", "v1"); err != nil {
			t.Fatalf("Assemble wrote a manifest Load refuses: %v", err)
		}
	})
}
