// Package windowfile is the Arrow layout of dataset objects: traffic
// windows as fixed-size-list columns in Arrow IPC files, readable from
// pandas, Polars and DuckDB. schemas/FORMAT.md describes the columns.
package windowfile

import (
	"bytes"
	"fmt"
	"io"
	"strconv"

	"github.com/apache/arrow/go/v15/arrow"
	"github.com/apache/arrow/go/v15/arrow/array"
	"github.com/apache/arrow/go/v15/arrow/ipc"
	"github.com/apache/arrow/go/v15/arrow/memory"

	"github.com/homemole/homemole/schemas"
)

// Schema is the Arrow schema of dataset objects for windows of n packets.
func Schema(n int) *arrow.Schema {
	fsl := func(t arrow.DataType) arrow.DataType { return arrow.FixedSizeListOf(int32(n), t) }
	md := arrow.NewMetadata(
		[]string{"homemole.window.version", "homemole.window.size"},
		[]string{strconv.Itoa(schemas.WindowSchemaVersion), strconv.Itoa(n)},
	)
	return arrow.NewSchema([]arrow.Field{
		{Name: "window_id", Type: arrow.BinaryTypes.String},
		{Name: "home", Type: arrow.BinaryTypes.String},
		{Name: "session", Type: arrow.BinaryTypes.String},
		{Name: "view", Type: arrow.BinaryTypes.String},
		{Name: "kind", Type: arrow.BinaryTypes.String},
		{Name: "group", Type: arrow.BinaryTypes.String},
		{Name: "n_packets", Type: arrow.PrimitiveTypes.Int32},
		{Name: "ts_ns", Type: fsl(arrow.PrimitiveTypes.Int64)},
		{Name: "dport", Type: fsl(arrow.PrimitiveTypes.Int32)},
		{Name: "proto_bits", Type: fsl(arrow.PrimitiveTypes.Uint8)},
		{Name: "direction", Type: fsl(arrow.PrimitiveTypes.Int8)},
		{Name: "frame_len", Type: fsl(arrow.PrimitiveTypes.Int32)},
		{Name: "interval_s", Type: fsl(arrow.PrimitiveTypes.Float32)},
		{Name: "ttl", Type: fsl(arrow.PrimitiveTypes.Uint8)},
		{Name: "ip_len", Type: fsl(arrow.PrimitiveTypes.Int32)},
		{Name: "transport", Type: fsl(arrow.PrimitiveTypes.Uint8)},
		{Name: "tcp_flags", Type: fsl(arrow.PrimitiveTypes.Int32)},
		{Name: "tcp_window", Type: fsl(arrow.PrimitiveTypes.Int32)},
		{Name: "tcp_options_len", Type: fsl(arrow.PrimitiveTypes.Uint8)},
		{Name: "payload_len", Type: fsl(arrow.PrimitiveTypes.Int32)},
		{Name: "label", Type: fsl(arrow.PrimitiveTypes.Int16)},
	}, &md)
}

// ToRecord builds one Arrow record batch from windows of size n.
// The caller releases the record.
func ToRecord(mem memory.Allocator, n int, ws []*schemas.Window) (arrow.Record, error) {
	b := array.NewRecordBuilder(mem, Schema(n))
	defer b.Release()
	for _, w := range ws {
		if len(w.Label) != n {
			return nil, fmt.Errorf("window %s has %d slots, dataset window size is %d", w.ID, len(w.Label), n)
		}
		for i, s := range []string{w.ID, w.Home, w.Session, w.View, w.Kind, w.Group} {
			b.Field(i).(*array.StringBuilder).Append(s)
		}
		b.Field(6).(*array.Int32Builder).Append(int32(w.Len))
		appendList(b.Field(7), w.TsNs, func(vb array.Builder, v int64) { vb.(*array.Int64Builder).Append(v) })
		appendList(b.Field(8), w.DPort, appendI32)
		appendList(b.Field(9), w.ProtoBits, appendU8)
		appendList(b.Field(10), w.Direction, func(vb array.Builder, v int8) { vb.(*array.Int8Builder).Append(v) })
		appendList(b.Field(11), w.FrameLen, appendI32)
		appendList(b.Field(12), w.Interval, func(vb array.Builder, v float32) { vb.(*array.Float32Builder).Append(v) })
		appendList(b.Field(13), w.TTL, appendU8)
		appendList(b.Field(14), w.IPLen, appendI32)
		appendList(b.Field(15), w.Transport, appendU8)
		appendList(b.Field(16), w.TCPFlags, appendI32)
		appendList(b.Field(17), w.TCPWindow, appendI32)
		appendList(b.Field(18), w.TCPOptLen, appendU8)
		appendList(b.Field(19), w.PayloadLen, appendI32)
		appendList(b.Field(20), w.Label, func(vb array.Builder, v int16) { vb.(*array.Int16Builder).Append(v) })
	}
	return b.NewRecord(), nil
}

func appendI32(vb array.Builder, v int32) { vb.(*array.Int32Builder).Append(v) }
func appendU8(vb array.Builder, v uint8)  { vb.(*array.Uint8Builder).Append(v) }

func appendList[T any](fb array.Builder, vals []T, add func(array.Builder, T)) {
	lb := fb.(*array.FixedSizeListBuilder)
	lb.Append(true)
	vb := lb.ValueBuilder()
	for _, v := range vals {
		add(vb, v)
	}
}

// FromRecord reads the windows of one record batch written by ToRecord.
func FromRecord(rec arrow.Record) ([]*schemas.Window, error) {
	md := rec.Schema().Metadata()
	if v := md.FindKey("homemole.window.version"); v < 0 || md.Values()[v] != strconv.Itoa(schemas.WindowSchemaVersion) {
		return nil, fmt.Errorf("read windows: feature-schema version is not %d; use a HomeMole build that matches the dataset", schemas.WindowSchemaVersion)
	}
	si := md.FindKey("homemole.window.size")
	if si < 0 {
		return nil, fmt.Errorf("read windows: no window size in schema metadata")
	}
	n, err := strconv.Atoi(md.Values()[si])
	if err != nil || n <= 0 {
		return nil, fmt.Errorf("read windows: bad window size %q", md.Values()[si])
	}
	if !rec.Schema().Equal(Schema(n)) {
		return nil, fmt.Errorf("read windows: schema differs from the window schema v%d", schemas.WindowSchemaVersion)
	}
	rows := int(rec.NumRows())
	out := make([]*schemas.Window, rows)
	str := func(c int) *array.String { return rec.Column(c).(*array.String) }
	vals := func(c int) arrow.Array { return rec.Column(c).(*array.FixedSizeList).ListValues() }
	for r := 0; r < rows; r++ {
		w := &schemas.Window{
			ID: str(0).Value(r), Home: str(1).Value(r), Session: str(2).Value(r), View: str(3).Value(r),
			Kind: str(4).Value(r), Group: str(5).Value(r),
			Len: int(rec.Column(6).(*array.Int32).Value(r)),
		}
		lo, hi := r*n, (r+1)*n
		w.TsNs = append([]int64(nil), vals(7).(*array.Int64).Int64Values()[lo:hi]...)
		w.DPort = append([]int32(nil), vals(8).(*array.Int32).Int32Values()[lo:hi]...)
		w.ProtoBits = append([]uint8(nil), vals(9).(*array.Uint8).Uint8Values()[lo:hi]...)
		w.Direction = append([]int8(nil), vals(10).(*array.Int8).Int8Values()[lo:hi]...)
		w.FrameLen = append([]int32(nil), vals(11).(*array.Int32).Int32Values()[lo:hi]...)
		w.Interval = append([]float32(nil), vals(12).(*array.Float32).Float32Values()[lo:hi]...)
		w.TTL = append([]uint8(nil), vals(13).(*array.Uint8).Uint8Values()[lo:hi]...)
		w.IPLen = append([]int32(nil), vals(14).(*array.Int32).Int32Values()[lo:hi]...)
		w.Transport = append([]uint8(nil), vals(15).(*array.Uint8).Uint8Values()[lo:hi]...)
		w.TCPFlags = append([]int32(nil), vals(16).(*array.Int32).Int32Values()[lo:hi]...)
		w.TCPWindow = append([]int32(nil), vals(17).(*array.Int32).Int32Values()[lo:hi]...)
		w.TCPOptLen = append([]uint8(nil), vals(18).(*array.Uint8).Uint8Values()[lo:hi]...)
		w.PayloadLen = append([]int32(nil), vals(19).(*array.Int32).Int32Values()[lo:hi]...)
		w.Label = append([]int16(nil), vals(20).(*array.Int16).Int16Values()[lo:hi]...)
		if w.Len < 0 || w.Len > n {
			return nil, fmt.Errorf("read windows: window %s has %d packets in %d slots", w.ID, w.Len, n)
		}
		out[r] = w
	}
	return out, nil
}

// Encode writes windows as one Arrow IPC file (one record batch).
// The bytes depend only on the windows, so a rewrite is byte-identical; they
// are the bytes ToRecord's builders would give (a test holds them to it).
func Encode(n int, ws []*schemas.Window) ([]byte, error) {
	rec, err := columns(n, ws)
	if err != nil {
		return nil, err
	}
	defer rec.Release()
	// A window of n packets takes about 40n bytes; sizing the buffer up
	// front saves the copies of growing it while Arrow writes.
	buf := seekBuffer{buf: make([]byte, 0, 4096+len(ws)*(46*n+256))}
	fw, err := ipc.NewFileWriter(&buf, ipc.WithSchema(rec.Schema()))
	if err != nil {
		return nil, fmt.Errorf("arrow file writer: %w", err)
	}
	if err := fw.Write(rec); err != nil {
		return nil, fmt.Errorf("write arrow record: %w", err)
	}
	if err := fw.Close(); err != nil {
		return nil, fmt.Errorf("close arrow file: %w", err)
	}
	return buf.buf, nil
}

// columns builds the record ToRecord builds, but copies each window's
// slices into the column buffers whole instead of appending value by value
// through builders: encoding is most of the windowing worker's CPU.
func columns(n int, ws []*schemas.Window) (arrow.Record, error) {
	for _, w := range ws {
		if len(w.Label) != n {
			return nil, fmt.Errorf("window %s has %d slots, dataset window size is %d", w.ID, len(w.Label), n)
		}
	}
	schema := Schema(n)
	rows := len(ws)
	cols := make([]arrow.Array, 0, len(schema.Fields()))
	for _, get := range []func(*schemas.Window) string{
		func(w *schemas.Window) string { return w.ID },
		func(w *schemas.Window) string { return w.Home },
		func(w *schemas.Window) string { return w.Session },
		func(w *schemas.Window) string { return w.View },
		func(w *schemas.Window) string { return w.Kind },
		func(w *schemas.Window) string { return w.Group },
	} {
		offsets := make([]int32, rows+1)
		size := 0
		for i, w := range ws {
			size += len(get(w))
			offsets[i+1] = int32(size)
		}
		data := make([]byte, 0, size)
		for _, w := range ws {
			data = append(data, get(w)...)
		}
		d := array.NewData(arrow.BinaryTypes.String, rows,
			[]*memory.Buffer{nil, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offsets)), memory.NewBufferBytes(data)}, nil, 0, 0)
		cols = append(cols, array.MakeFromData(d))
		d.Release()
	}
	lens := make([]int32, rows)
	for i, w := range ws {
		lens[i] = int32(w.Len)
	}
	cols = append(cols, primitive(arrow.PrimitiveTypes.Int32, rows, arrow.Int32Traits.CastToBytes(lens)))
	fsl := func(t arrow.DataType, values []byte) arrow.Array {
		child := array.NewData(t, rows*n, []*memory.Buffer{nil, memory.NewBufferBytes(values)}, nil, 0, 0)
		d := array.NewData(arrow.FixedSizeListOf(int32(n), t), rows, []*memory.Buffer{nil}, []arrow.ArrayData{child}, 0, 0)
		child.Release()
		a := array.MakeFromData(d)
		d.Release()
		return a
	}
	cols = append(cols,
		fsl(arrow.PrimitiveTypes.Int64, arrow.Int64Traits.CastToBytes(gather(ws, n, func(w *schemas.Window) []int64 { return w.TsNs }))),
		fsl(arrow.PrimitiveTypes.Int32, arrow.Int32Traits.CastToBytes(gather(ws, n, func(w *schemas.Window) []int32 { return w.DPort }))),
		fsl(arrow.PrimitiveTypes.Uint8, gather(ws, n, func(w *schemas.Window) []uint8 { return w.ProtoBits })),
		fsl(arrow.PrimitiveTypes.Int8, arrow.Int8Traits.CastToBytes(gather(ws, n, func(w *schemas.Window) []int8 { return w.Direction }))),
		fsl(arrow.PrimitiveTypes.Int32, arrow.Int32Traits.CastToBytes(gather(ws, n, func(w *schemas.Window) []int32 { return w.FrameLen }))),
		fsl(arrow.PrimitiveTypes.Float32, arrow.Float32Traits.CastToBytes(gather(ws, n, func(w *schemas.Window) []float32 { return w.Interval }))),
		fsl(arrow.PrimitiveTypes.Uint8, gather(ws, n, func(w *schemas.Window) []uint8 { return w.TTL })),
		fsl(arrow.PrimitiveTypes.Int32, arrow.Int32Traits.CastToBytes(gather(ws, n, func(w *schemas.Window) []int32 { return w.IPLen }))),
		fsl(arrow.PrimitiveTypes.Uint8, gather(ws, n, func(w *schemas.Window) []uint8 { return w.Transport })),
		fsl(arrow.PrimitiveTypes.Int32, arrow.Int32Traits.CastToBytes(gather(ws, n, func(w *schemas.Window) []int32 { return w.TCPFlags }))),
		fsl(arrow.PrimitiveTypes.Int32, arrow.Int32Traits.CastToBytes(gather(ws, n, func(w *schemas.Window) []int32 { return w.TCPWindow }))),
		fsl(arrow.PrimitiveTypes.Uint8, gather(ws, n, func(w *schemas.Window) []uint8 { return w.TCPOptLen })),
		fsl(arrow.PrimitiveTypes.Int32, arrow.Int32Traits.CastToBytes(gather(ws, n, func(w *schemas.Window) []int32 { return w.PayloadLen }))),
		fsl(arrow.PrimitiveTypes.Int16, arrow.Int16Traits.CastToBytes(gather(ws, n, func(w *schemas.Window) []int16 { return w.Label }))),
	)
	rec := array.NewRecord(schema, cols, int64(rows))
	for _, c := range cols {
		c.Release()
	}
	return rec, nil
}

func primitive(t arrow.DataType, rows int, values []byte) arrow.Array {
	d := array.NewData(t, rows, []*memory.Buffer{nil, memory.NewBufferBytes(values)}, nil, 0, 0)
	defer d.Release()
	return array.MakeFromData(d)
}

// gather lays the windows' slices of one column end to end.
func gather[T any](ws []*schemas.Window, n int, col func(*schemas.Window) []T) []T {
	out := make([]T, 0, len(ws)*n)
	for _, w := range ws {
		out = append(out, col(w)...)
	}
	return out
}

// Decode reads every record batch of an Arrow IPC file of windows.
func Decode(data []byte) (ws []*schemas.Window, err error) {
	// Arrow reads the file's flatbuffers without bounds checks and panics
	// on a damaged file (FuzzDecode found offsets past the end): a bad
	// object must be an error naming it, not a dead worker.
	defer func() {
		if r := recover(); r != nil {
			ws, err = nil, fmt.Errorf("damaged arrow file (%v): the object is not a window file this version wrote", r)
		}
	}()
	fr, err := ipc.NewFileReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("open arrow file: %w", err)
	}
	defer fr.Close()
	var out []*schemas.Window
	for i := 0; i < fr.NumRecords(); i++ {
		rec, err := fr.Record(i)
		if err != nil {
			return nil, fmt.Errorf("arrow record %d: %w", i, err)
		}
		rws, err := FromRecord(rec)
		if err != nil {
			return nil, err
		}
		out = append(out, rws...)
	}
	return out, nil
}

// seekBuffer is the in-memory io.WriteSeeker that Arrow's file writer needs.
type seekBuffer struct {
	buf []byte
	pos int
}

func (b *seekBuffer) Write(p []byte) (int, error) {
	if need := b.pos + len(p); need > len(b.buf) {
		b.buf = append(b.buf, make([]byte, need-len(b.buf))...)
	}
	copy(b.buf[b.pos:], p)
	b.pos += len(p)
	return len(p), nil
}

func (b *seekBuffer) Seek(off int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = off
	case io.SeekCurrent:
		abs = int64(b.pos) + off
	case io.SeekEnd:
		abs = int64(len(b.buf)) + off
	default:
		return 0, fmt.Errorf("seek: bad whence %d", whence)
	}
	if abs < 0 {
		return 0, fmt.Errorf("seek: negative position %d", abs)
	}
	b.pos = int(abs)
	return abs, nil
}
