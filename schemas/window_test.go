package schemas

import (
	"bytes"
	"reflect"
	"testing"
)

func TestWindowsArrowRoundTrip(t *testing.T) {
	const n = 4
	var ws []*Window
	for k := 0; k < 3; k++ {
		w := NewWindow(n)
		w.ID, w.Home, w.Session, w.View, w.Kind, w.Group = "lan/h/s/ind/plug/"+string(rune('0'+k)), "h", "s", "lan", KindInd, "h/s"
		w.Len = n - k // the last windows are padded
		for i := 0; i < w.Len; i++ {
			p := Packet{TsNs: int64(i * 1000), DPort: int32(80 + i), ProtoBits: ProtoIP | ProtoTCP, Direction: DirOutbound,
				FrameLen: uint32(100 + i), TTL: 64, IPLen: uint16(86 + i), Transport: 6, TCPFlags: 0x10, TCPWindow: 512, TCPOptionsLen: 12, PayloadLen: 20}
			w.Set(i, &p, float32(i)/10, int32(k))
		}
		ws = append(ws, w)
	}
	data, err := EncodeWindows(n, ws)
	if err != nil {
		t.Fatal(err)
	}
	again, err := EncodeWindows(n, ws)
	if err != nil || !bytes.Equal(data, again) {
		t.Fatal("encoding the same windows twice gave different bytes: rewrites would not be idempotent")
	}
	got, err := DecodeWindows(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ws, got) {
		t.Fatalf("round trip differs:\n%+v\n%+v", ws[2], got[2])
	}
	if got[2].Label[n-1] != int16(Unlabeled) || got[2].DPort[n-1] != NoPort {
		t.Error("padding slots must stay unlabeled with no port")
	}
}

func TestWindowsRefuseWrongSize(t *testing.T) {
	if _, err := EncodeWindows(5, []*Window{NewWindow(4)}); err == nil {
		t.Fatal("a 4-slot window was written into a 5-packet dataset")
	}
	if _, err := DecodeWindows([]byte("not arrow")); err == nil {
		t.Fatal("garbage decoded")
	}
}
