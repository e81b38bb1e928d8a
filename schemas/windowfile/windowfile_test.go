package windowfile

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/apache/arrow/go/v15/arrow/ipc"
	"github.com/apache/arrow/go/v15/arrow/memory"

	"github.com/homemole/homemole/schemas"
)

func TestWindowsArrowRoundTrip(t *testing.T) {
	const n = 4
	var ws []*schemas.Window
	for k := 0; k < 3; k++ {
		w := schemas.NewWindow(n)
		w.ID, w.Home, w.Session, w.View, w.Kind, w.Group = "lan/h/s/ind/plug/"+string(rune('0'+k)), "h", "s", "lan", schemas.KindInd, "h/s"
		w.Len = n - k // the last windows are padded
		for i := 0; i < w.Len; i++ {
			p := schemas.Packet{TsNs: int64(i * 1000), DPort: int32(80 + i), ProtoBits: schemas.ProtoIP | schemas.ProtoTCP, Direction: schemas.DirOutbound,
				FrameLen: uint32(100 + i), TTL: 64, IPLen: uint16(86 + i), Transport: 6, TCPFlags: 0x10, TCPWindow: 512, TCPOptionsLen: 12, PayloadLen: 20}
			w.Set(i, &p, float32(i)/10, int32(k))
		}
		ws = append(ws, w)
	}
	data, err := Encode(n, ws)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Encode(n, ws)
	if err != nil || !bytes.Equal(data, again) {
		t.Fatal("encoding the same windows twice gave different bytes: rewrites would not be idempotent")
	}
	// Encode copies columns whole; the bytes must be those of the
	// builders' record, or datasets built before and after would differ.
	rec, err := ToRecord(memory.DefaultAllocator, n, ws)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Release()
	var ref seekBuffer
	fw, err := ipc.NewFileWriter(&ref, ipc.WithSchema(rec.Schema()))
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, ref.buf) {
		t.Fatalf("Encode wrote %d bytes that differ from the builders' %d", len(data), len(ref.buf))
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ws, got) {
		t.Fatalf("round trip differs:\n%+v\n%+v", ws[2], got[2])
	}
	if got[2].Label[n-1] != int16(schemas.Unlabeled) || got[2].DPort[n-1] != schemas.NoPort {
		t.Error("padding slots must stay unlabeled with no port")
	}
}

func TestWindowsRefuseWrongSize(t *testing.T) {
	if _, err := Encode(5, []*schemas.Window{schemas.NewWindow(4)}); err == nil {
		t.Fatal("a 4-slot window was written into a 5-packet dataset")
	}
	if _, err := Decode([]byte("not arrow")); err == nil {
		t.Fatal("garbage decoded")
	}
}

// FuzzDecode feeds Decode damaged window files: objects come from S3, where
// a truncated upload or a foreign file must give an error, never a crash.
func FuzzDecode(f *testing.F) {
	w := schemas.NewWindow(4)
	w.ID, w.Home, w.Session, w.View, w.Kind, w.Group, w.Len = "lan/h/s/ind/plug/0", "h", "s", "lan", schemas.KindInd, "h/s", 2
	for i := range w.Len {
		p := schemas.Packet{TsNs: int64(i), DPort: 443, FrameLen: 60, Transport: 6}
		w.Set(i, &p, 0.5, 0)
	}
	good, err := Encode(4, []*schemas.Window{w})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte("ARROW1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ws, err := Decode(data)
		if err != nil {
			return
		}
		for _, w := range ws {
			if w.Len < 0 || w.Len > len(w.Label) || len(w.DPort) != len(w.Label) {
				t.Fatalf("decoded window %q has Len %d over %d slots (%d ports)", w.ID, w.Len, len(w.Label), len(w.DPort))
			}
		}
	})
}
