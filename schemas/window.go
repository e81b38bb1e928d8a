package schemas

import (
	"fmt"
	"strconv"
	"strings"
)

// WindowSchemaVersion names the feature layout of dataset objects. Readers
// refuse objects whose "homemole.window.version" metadata they do not know.
// The Arrow layout itself lives in schemas/windowfile, so that the capture
// agent, which never writes windows, builds without Arrow.
const WindowSchemaVersion = 1

// Window kinds, as in the seed's two datasets.
const (
	KindInd   = "ind"   // one device's own packet sequence (Dataset-Ind)
	KindNoise = "noise" // the home's merged stream, labels per packet (Dataset-Noise)
)

// Window is one traffic window: N consecutive packet vectors of one stream
// with a label per packet. Slices have length N (the dataset's window size);
// positions at and after Len are padding, labeled Unlabeled.
type Window struct {
	ID      string // deterministic: <view>/<home>/<session>/<kind>/<stream>/<seq> (SplitWindowID)
	Home    string
	Session string
	View    string
	Kind    string
	Group   string // the unit cross-validation keeps on one side of a split
	Len     int

	TsNs      []int64
	DPort     []int32
	ProtoBits []uint8
	Direction []int8
	FrameLen  []int32
	Interval  []float32 // seconds, within the stream the window was cut from

	TTL        []uint8
	IPLen      []int32
	Transport  []uint8
	TCPFlags   []int32
	TCPWindow  []int32
	TCPOptLen  []uint8
	PayloadLen []int32

	Label []int16 // index into the dataset's label vocabulary, or -1
}

// NewWindow allocates a window of n packet slots, all padding.
func NewWindow(n int) *Window {
	w := &Window{
		TsNs: make([]int64, n), DPort: make([]int32, n), ProtoBits: make([]uint8, n),
		Direction: make([]int8, n), FrameLen: make([]int32, n), Interval: make([]float32, n),
		TTL: make([]uint8, n), IPLen: make([]int32, n), Transport: make([]uint8, n),
		TCPFlags: make([]int32, n), TCPWindow: make([]int32, n), TCPOptLen: make([]uint8, n),
		PayloadLen: make([]int32, n), Label: make([]int16, n),
	}
	for i := range w.Label {
		w.Label[i] = int16(Unlabeled)
		w.DPort[i] = NoPort
	}
	return w
}

// NewWindows allocates k windows of n packet slots, all padding, backed by
// one array per column: a worker cutting thousands of windows at once
// makes 15 allocations instead of 15 per window. The windows share their
// backing arrays, so keeping any of them keeps all of them alive.
func NewWindows(k, n int) []*Window {
	ws := make([]Window, k)
	out := make([]*Window, k)
	ts, dport, proto := make([]int64, k*n), make([]int32, k*n), make([]uint8, k*n)
	dir, frame, gap := make([]int8, k*n), make([]int32, k*n), make([]float32, k*n)
	ttl, iplen, transport := make([]uint8, k*n), make([]int32, k*n), make([]uint8, k*n)
	flags, win, optlen := make([]int32, k*n), make([]int32, k*n), make([]uint8, k*n)
	payload, label := make([]int32, k*n), make([]int16, k*n)
	for i := range label {
		label[i] = int16(Unlabeled)
		dport[i] = NoPort
	}
	for i := range ws {
		lo, hi := i*n, (i+1)*n
		// Full slice expressions: an append to one window's column must
		// not run into the next window's.
		ws[i] = Window{
			TsNs: ts[lo:hi:hi], DPort: dport[lo:hi:hi], ProtoBits: proto[lo:hi:hi],
			Direction: dir[lo:hi:hi], FrameLen: frame[lo:hi:hi], Interval: gap[lo:hi:hi],
			TTL: ttl[lo:hi:hi], IPLen: iplen[lo:hi:hi], Transport: transport[lo:hi:hi],
			TCPFlags: flags[lo:hi:hi], TCPWindow: win[lo:hi:hi], TCPOptLen: optlen[lo:hi:hi],
			PayloadLen: payload[lo:hi:hi], Label: label[lo:hi:hi],
		}
		out[i] = &ws[i]
	}
	return out
}

// Set writes packet p with its label into slot i.
func (w *Window) Set(i int, p *Packet, intervalS float32, label int32) {
	w.TsNs[i] = p.TsNs
	w.DPort[i] = p.DPort
	w.ProtoBits[i] = p.ProtoBits
	w.Direction[i] = p.Direction
	w.FrameLen[i] = int32(p.FrameLen)
	w.Interval[i] = intervalS
	w.TTL[i] = p.TTL
	w.IPLen[i] = int32(p.IPLen)
	w.Transport[i] = p.Transport
	w.TCPFlags[i] = int32(p.TCPFlags)
	w.TCPWindow[i] = int32(p.TCPWindow)
	w.TCPOptLen[i] = p.TCPOptionsLen
	w.PayloadLen[i] = int32(p.PayloadLen)
	w.Label[i] = int16(label)
}

// Check reports what would make a model misread the window: no slots,
// feature columns of another length than Label, Len outside the slots, or
// (numClasses >= 0) a label outside [-1, numClasses).
func (w *Window) Check(numClasses int) error {
	n := len(w.Label)
	if n == 0 {
		return fmt.Errorf("window %q has no slots", w.ID)
	}
	for _, f := range []struct {
		name string
		len  int
	}{
		{"DPort", len(w.DPort)}, {"ProtoBits", len(w.ProtoBits)}, {"Direction", len(w.Direction)},
		{"FrameLen", len(w.FrameLen)}, {"Interval", len(w.Interval)},
	} {
		if f.len != n {
			return fmt.Errorf("window %q: %s has %d slots, Label has %d", w.ID, f.name, f.len, n)
		}
	}
	if w.Len < 0 || w.Len > n {
		return fmt.Errorf("window %q: Len %d outside [0, %d]", w.ID, w.Len, n)
	}
	if numClasses >= 0 {
		for i := range w.Len {
			if l := w.Label[i]; l < -1 || int(l) >= numClasses {
				return fmt.Errorf("window %q: label %d at slot %d outside [-1, %d)", w.ID, l, i, numClasses)
			}
		}
	}
	return nil
}

// SplitWindowID splits a window ID into the stream the window was cut from
// (everything before the last "/": one device's packets in one session for
// kind ind, the session's merged stream for noise) and the window's
// sequence number in it. An ID not ending in "/<seq>" (a window made by
// hand) is a stream of its own: ok is false and stream is the whole ID.
func SplitWindowID(id string) (stream string, seq int, ok bool) {
	i := strings.LastIndexByte(id, '/')
	if i <= 0 {
		return id, 0, false
	}
	n, err := strconv.Atoi(id[i+1:])
	if err != nil || n < 0 {
		return id, 0, false
	}
	return id[:i], n, true
}
