package dataset_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/apache/arrow/go/v15/arrow"
	"github.com/apache/arrow/go/v15/arrow/array"
	"github.com/apache/arrow/go/v15/arrow/memory"
	"github.com/apache/arrow/go/v15/parquet/file"
	"github.com/apache/arrow/go/v15/parquet/pqarrow"

	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/schemas/windowfile"
)

// twoSessionDataset stores the generated windows as two sessions of two
// objects each, so the export crosses parts and objects.
func twoSessionDataset(t *testing.T) (*store.Memory, *dataset.Manifest, []*schemas.Window) {
	t.Helper()
	ws, names := generatedWindows(t, 20)
	st := store.NewMemory()
	m := &dataset.Manifest{Dataset: "d", Version: "v1", FeatureSchemaVersion: schemas.WindowSchemaVersion,
		Kind: schemas.KindNoise, WindowSize: 20, Labels: names, Windows: len(ws)}
	half := len(ws) / 2
	for s, sess := range [][]*schemas.Window{ws[:half], ws[half:]} {
		p := window.Part{Home: "h", View: "lan", Session: fmt.Sprintf("s%d", s), Windows: len(sess)}
		q := len(sess) / 2
		for o, chunk := range [][]*schemas.Window{sess[:q], sess[q:]} {
			for _, w := range chunk {
				w.Home, w.Session, w.View, w.Kind, w.Group = p.Home, p.Session, p.View, m.Kind, window.GroupOf(p.Home, p.Session)
			}
			data, err := windowfile.Encode(20, chunk)
			if err != nil {
				t.Fatal(err)
			}
			info, err := st.Put(context.Background(), fmt.Sprintf("datasets/d/v1/lan/h/%s/%d.arrow", p.Session, o), data, "")
			if err != nil {
				t.Fatal(err)
			}
			p.Objects = append(p.Objects, info)
		}
		m.Parts = append(m.Parts, p)
		m.Groups = append(m.Groups, window.GroupOf(p.Home, p.Session))
	}
	return st, m, ws
}

// readParquet reads an export back through the Arrow library's Parquet reader.
func readParquet(t *testing.T, data []byte) ([]*schemas.Window, map[string]string) {
	t.Helper()
	pr, err := file.NewParquetReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	kv := map[string]string{}
	for _, e := range pr.MetaData().KeyValueMetadata() {
		if e.Value != nil {
			kv[e.Key] = *e.Value
		}
	}
	fr, err := pqarrow.NewFileReader(pr, pqarrow.ArrowReadProperties{BatchSize: 1 << 16}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	tr := array.NewTableReader(tbl, 1<<16)
	defer tr.Release()
	// The export's lists go back to the objects' fixed-size lists, and the
	// window schema's metadata (ReadTable leaves it out) back on, so that
	// the Go reader checks the rows as it checks objects.
	want := windowfile.Schema(20)
	var out []*schemas.Window
	for tr.Next() {
		rec := tr.Record()
		cols := make([]arrow.Array, rec.NumCols())
		for i, c := range rec.Columns() {
			wt := want.Field(i).Type
			if fsl, ok := wt.(*arrow.FixedSizeListType); ok {
				l, ok := c.(*array.List)
				if !ok || !arrow.TypeEqual(l.ListValues().DataType(), fsl.Elem()) || l.NullN() > 0 || l.ListValues().NullN() > 0 {
					t.Fatalf("column %s reads back as %s with nulls, want a list of %s without", want.Field(i).Name, c.DataType(), fsl.Elem())
				}
				off := l.Offsets()
				for r := range int(rec.NumRows()) {
					if off[r+1]-off[r] != 20 || off[r] != int32(r*20) {
						t.Fatalf("column %s row %d holds %d values, want 20", want.Field(i).Name, r, off[r+1]-off[r])
					}
				}
				d := array.NewData(wt, int(rec.NumRows()), []*memory.Buffer{nil}, []arrow.ArrayData{l.ListValues().Data()}, 0, 0)
				cols[i] = array.MakeFromData(d)
				d.Release()
				continue
			}
			if !arrow.TypeEqual(c.DataType(), wt) {
				t.Fatalf("column %s reads back as %s, want %s", want.Field(i).Name, c.DataType(), wt)
			}
			c.Retain()
			cols[i] = c
		}
		fixed := array.NewRecord(want, cols, rec.NumRows())
		for _, c := range cols {
			c.Release()
		}
		ws, err := windowfile.FromRecord(fixed)
		fixed.Release()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ws...)
	}
	return out, kv
}

func TestExportParquet(t *testing.T) {
	ctx := context.Background()
	st, m, ws := twoSessionDataset(t)
	var buf bytes.Buffer
	rows, err := dataset.ExportParquet(ctx, st, m, &buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rows != len(ws) {
		t.Fatalf("exported %d rows, the dataset has %d windows", rows, len(ws))
	}
	got, kv := readParquet(t, buf.Bytes())
	if !reflect.DeepEqual(got, ws) {
		t.Fatalf("the Parquet export reads back as %d windows that differ from the %d stored", len(got), len(ws))
	}
	var labels []string
	if err := json.Unmarshal([]byte(kv[dataset.LabelsKey]), &labels); err != nil || !reflect.DeepEqual(labels, m.Labels) {
		t.Errorf("label vocabulary in the file's metadata: %q (%v), want %q", kv[dataset.LabelsKey], err, m.Labels)
	}
	if kv[dataset.DatasetKey] != "d/v1" || kv["homemole.window.size"] != "20" {
		t.Errorf("file metadata %v lacks the dataset name or window size", kv)
	}

	// Only the kept group's windows, in the stored order.
	buf.Reset()
	keep := m.Groups[1]
	rows, err = dataset.ExportParquet(ctx, st, m, &buf, func(g string) bool { return g == keep })
	if err != nil {
		t.Fatal(err)
	}
	got, _ = readParquet(t, buf.Bytes())
	if rows != len(ws)-len(ws)/2 || !reflect.DeepEqual(got, ws[len(ws)/2:]) {
		t.Errorf("export of group %s: %d rows, want the %d windows of that session", keep, rows, len(ws)-len(ws)/2)
	}
}

// A capped manifest exports the windows the Go reader keeps, not all the
// objects hold.
func TestExportParquetKeepsTheCap(t *testing.T) {
	ctx := context.Background()
	st, m, ws := twoSessionDataset(t)
	m.Cap, m.CapSeed = 1, 9
	byDevice := map[string][]uint64{}
	for _, w := range ws {
		d := window.DeviceOf(m.Labels, w)
		byDevice[d] = append(byDevice[d], window.CapScore(m.CapSeed, w.ID))
	}
	m.CapThresholds = map[string]uint64{}
	for d, sc := range byDevice {
		if len(sc) > 2 {
			sort.Slice(sc, func(i, j int) bool { return sc[i] < sc[j] })
			m.CapThresholds[d] = sc[len(sc)/2]
		}
	}
	want, err := dataset.Windows(ctx, st, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) == len(ws) {
		t.Fatal("the cap kept every window; the test needs one that drops some")
	}
	var buf bytes.Buffer
	rows, err := dataset.ExportParquet(ctx, st, m, &buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := readParquet(t, buf.Bytes())
	if rows != len(want) || !reflect.DeepEqual(got, want) {
		t.Errorf("capped export: %d rows, the Go reader sees %d windows", rows, len(want))
	}
}

func TestExportParquetNamesBrokenObject(t *testing.T) {
	st, m, _ := twoSessionDataset(t)
	key := m.Parts[1].Objects[0].Key
	if _, err := st.Put(context.Background(), key, []byte("not arrow"), ""); err != nil {
		t.Fatal(err)
	}
	_, err := dataset.ExportParquet(context.Background(), st, m, &bytes.Buffer{}, nil)
	if err == nil || !strings.Contains(err.Error(), key) {
		t.Fatalf("got %v, want an error naming %s", err, key)
	}
}
