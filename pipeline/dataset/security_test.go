package dataset_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/schemas"
)

// TestSecurityStreamVerifiesObjects: whoever can write to the store can
// swap a window object for another one that decodes well (a window of
// another session, another label). Trainers read through Stream, which
// must compare every object with the manifest's size and SHA-256; and a
// manifest must not lead readers to objects outside its version.
func TestSecurityStreamVerifiesObjects(t *testing.T) {
	ctx := context.Background()
	st := newReaderStore()
	m := buildReaderDataset(t, st, "v1", 0, []int{0, 1, 2})
	var objs []string
	for _, p := range m.Parts {
		for _, o := range p.Objects {
			objs = append(objs, o.Key)
		}
	}
	if len(objs) < 2 {
		t.Fatalf("%d objects; the test needs two", len(objs))
	}
	if n := len(readIDs(t, st, m, dataset.ReadOptions{})); n == 0 {
		t.Fatal("the untouched dataset reads no window")
	}
	objects := st.Snapshot()
	objects[objs[0]] = objects[objs[1]]
	st.Restore(objects)
	err := dataset.Stream(ctx, st, m, dataset.ReadOptions{}, func(*schemas.Window) error { return nil })
	if err == nil || !strings.Contains(err.Error(), objs[0]) || !strings.Contains(err.Error(), "SHA-256") {
		t.Errorf("a swapped object was read: %v", err)
	}
	swapped := err

	// A manifest rewritten to name an object of another dataset.
	raw, err := st.Get(ctx, dataset.Key("rd", "v1"))
	if err != nil {
		t.Fatal(err)
	}
	var mf map[string]any
	if err := json.Unmarshal(raw, &mf); err != nil {
		t.Fatal(err)
	}
	parts := mf["parts"].([]any)
	obj := parts[0].(map[string]any)["objects"].([]any)[0].(map[string]any)
	obj["key"] = "datasets/victim/v1/" + strings.TrimPrefix(objs[0], "datasets/rd/v1/")
	raw, _ = json.Marshal(mf)
	if _, err := st.Put(ctx, dataset.Key("rd", "v1"), raw, "application/json"); err != nil {
		t.Fatal(err)
	}
	if _, err := dataset.Load(ctx, st, "rd", "v1"); err == nil || !strings.Contains(err.Error(), "datasets/victim") {
		t.Errorf("a manifest naming another dataset's object loaded: %v", err)
	}
	_, climb := dataset.Load(ctx, st, "../rd", "v1")
	if climb == nil || !strings.Contains(climb.Error(), "not allowed") {
		t.Errorf("a dataset name with '..' was looked up: %v", climb)
	}
	t.Logf("attack: a dataset object swapped for another, a manifest naming another dataset's object, a dataset name with '..' | expected: each refused | observed: swapped refused: %v; foreign refused; '..' refused: %v", swapped != nil, climb != nil)
}
