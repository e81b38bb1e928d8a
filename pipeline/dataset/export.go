package dataset

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/apache/arrow/go/v15/arrow"
	"github.com/apache/arrow/go/v15/arrow/array"
	"github.com/apache/arrow/go/v15/arrow/memory"
	"github.com/apache/arrow/go/v15/parquet"
	"github.com/apache/arrow/go/v15/parquet/compress"
	"github.com/apache/arrow/go/v15/parquet/pqarrow"

	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/schemas/windowfile"
)

// Parquet key-value metadata ExportParquet adds to the window schema's own
// (homemole.window.version and homemole.window.size). Labels index
// LabelsKey's JSON array, so a Parquet reader can name them without the
// manifest.
const (
	LabelsKey  = "homemole.labels"
	DatasetKey = "homemole.dataset" // dataset/version
	KindKey    = "homemole.kind"
	RowsKey    = "homemole.windows"
)

// ExportParquet writes the windows the Go reader sees (Stream in manifest
// order: the groups keep accepts, nil keeping all, after the manifest's
// per-device cap) as one Parquet file: a row per window, the Arrow objects'
// columns, and the label vocabulary in the file's key-value metadata. Rows
// go out in row groups of exportRowGroup windows, so memory holds one
// object and one row group at a time, however large the dataset.
//
// The per-packet columns are plain lists of n values: the Arrow library's
// Parquet writer (v15) writes fixed-size lists as lists of nulls. The Arrow
// schema is stored in the file too (ARROW:schema), so pyarrow and pandas
// get the unsigned and narrow integer types back.
func ExportParquet(ctx context.Context, st store.Store, m *Manifest, w io.Writer, keep func(group string) bool) (rows int, err error) {
	if m.WindowSize <= 0 {
		return 0, fmt.Errorf("export %s/%s: manifest has window size %d; rebuild the dataset", m.Dataset, m.Version, m.WindowSize)
	}
	labels, err := json.Marshal(m.Labels)
	if err != nil {
		return 0, err
	}
	props := parquet.NewWriterProperties(
		// Zstd, because readers everywhere (DuckDB, pyarrow, Polars, Spark) have it
		// and the label and padding columns are long runs that it shrinks well.
		parquet.WithCompression(compress.Codecs.Zstd),
		parquet.WithCreatedBy("homemole dataset export"),
	)
	sc := parquetSchema(m.WindowSize)
	fw, err := pqarrow.NewFileWriter(sc, w, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		return 0, fmt.Errorf("export %s/%s: parquet writer: %w", m.Dataset, m.Version, err)
	}
	defer func() {
		if cerr := fw.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("export %s/%s: finish parquet file: %w", m.Dataset, m.Version, cerr)
		}
	}()
	batch := make([]*schemas.Window, 0, exportRowGroup)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		fixed, err := windowfile.ToRecord(memory.DefaultAllocator, m.WindowSize, batch)
		if err != nil {
			return fmt.Errorf("export %s/%s: %w", m.Dataset, m.Version, err)
		}
		rec := toLists(sc, fixed, m.WindowSize)
		fixed.Release()
		err = fw.Write(rec)
		rec.Release()
		if err != nil {
			return fmt.Errorf("export %s/%s: write parquet rows: %w", m.Dataset, m.Version, err)
		}
		rows += len(batch)
		batch = batch[:0]
		return nil
	}
	err = Stream(ctx, st, m, ReadOptions{Keep: keep}, func(win *schemas.Window) error {
		batch = append(batch, win)
		if len(batch) == exportRowGroup {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return rows, err
	}
	// The footer is written on Close, so the row count can go in last.
	for _, kv := range [][2]string{
		{LabelsKey, string(labels)},
		{DatasetKey, m.Dataset + "/" + m.Version},
		{KindKey, m.Kind},
		{RowsKey, strconv.Itoa(rows)},
	} {
		if err := fw.AppendKeyValueMetadata(kv[0], kv[1]); err != nil {
			return rows, err
		}
	}
	return rows, nil
}

// exportRowGroup is the windowers' default object size: row groups as large
// as the objects they come from.
const exportRowGroup = 1024

// parquetSchema is the window schema with each fixed-size list of n values
// turned into a list whose values cannot be null.
func parquetSchema(n int) *arrow.Schema {
	ws := windowfile.Schema(n)
	fields := ws.Fields()
	for i, f := range fields {
		if fsl, ok := f.Type.(*arrow.FixedSizeListType); ok {
			fields[i].Type = arrow.ListOfNonNullable(fsl.Elem())
		}
	}
	md := ws.Metadata()
	return arrow.NewSchema(fields, &md)
}

// toLists re-types rec's fixed-size-list columns as lists of sc, sharing
// their values: only an offsets buffer (every row n values) is new.
func toLists(sc *arrow.Schema, rec arrow.Record, n int) arrow.Record {
	rows := int(rec.NumRows())
	offs := make([]int32, rows+1)
	for i := range offs {
		offs[i] = int32(i * n)
	}
	ob := memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offs))
	cols := make([]arrow.Array, rec.NumCols())
	for i, c := range rec.Columns() {
		fsl, ok := c.(*array.FixedSizeList)
		if !ok {
			c.Retain()
			cols[i] = c
			continue
		}
		d := array.NewData(sc.Field(i).Type, rows, []*memory.Buffer{nil, ob}, []arrow.ArrayData{fsl.ListValues().Data()}, 0, 0)
		cols[i] = array.NewListData(d)
		d.Release()
	}
	out := array.NewRecord(sc, cols, int64(rows))
	for _, c := range cols {
		c.Release()
	}
	return out
}
