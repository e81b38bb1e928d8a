package learn

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/schemas"
)

// familyStreams makes streams of one vendor family, cut into windows of n:
// three devices whose packets come from one distribution (a shared
// firmware) except that device 0 sends one packet of 777 bytes somewhere in
// its stream, device 1 one of 901 bytes, and device 2 neither. Only the
// stream tells them apart, and device 2 only by what it does not send.
func familyStreams(rng *rand.Rand, count, windows, n int, prefix string) []*schemas.Window {
	var out []*schemas.Window
	shared := []int32{60, 74, 90, 342, 590, 1434}
	for s := range count {
		dev := s % 3
		total := windows * n
		marker := rng.IntN(total)
		for k := range windows {
			w := schemas.NewWindow(n)
			w.ID = fmt.Sprintf("%s/%d/ind/dev/%d", prefix, s, k)
			w.Group = fmt.Sprintf("%s/%d", prefix, s)
			w.Len = n
			for i := range n {
				j := k*n + i
				w.DPort[i], w.ProtoBits[i] = 443, 0b1101000
				w.Direction[i] = int8(rng.IntN(2))
				w.FrameLen[i] = shared[rng.IntN(len(shared))]
				w.Interval[i] = float32(rng.ExpFloat64() * 0.1)
				if j == marker && dev < 2 {
					w.FrameLen[i], w.Direction[i] = []int32{777, 901}[dev], 1
				}
				w.Label[i] = int16(dev)
			}
			out = append(out, w)
		}
	}
	return out
}

// sessionVotes is the share of streams whose session vote (the rule every
// command reports, evaluate.Voter) names their device.
func sessionVotes(ws []*schemas.Window, pred [][]int32) float64 {
	v := evaluate.NewVoter([]string{"dev-a", "dev-b", "dev-c"})
	for i, w := range ws {
		for j := range w.Len {
			v.Add(w.Group, int(w.Label[j]), int(pred[i][j]))
		}
	}
	right, _ := evaluate.SessionAccuracy(v.Votes())
	return right
}

// TestStreamContext: with the paper's output layer the family's shared
// packets are a three-way guess and a capture's majority vote is close to
// chance; with the stream context every packet knows which telling packet
// its stream held (or that it held none), on streams never trained on.
func TestStreamContext(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	train := familyStreams(rng, 120, 6, 10, "train")
	test := familyStreams(rng, 60, 6, 10, "test")
	cfg := smallConfig()
	score := func(c string) (pkt, sess float64) {
		cfg.Context = c
		pred := trainPredict(t, cfg, train, test, 3)
		return accuracy(t, test, pred), sessionVotes(test, pred)
	}
	nonePkt, noneSess := score(ContextNone)
	streamPkt, streamSess := score(ContextStream)
	t.Logf("held-out per packet / per stream: paper's output layer %.3f / %.3f, stream context %.3f / %.3f", nonePkt, noneSess, streamPkt, streamSess)
	if noneSess > 0.6 || nonePkt > 0.6 {
		t.Errorf("the paper's output layer scored %.3f per packet and %.3f per stream: the task leaks something besides the stream's telling packet", nonePkt, noneSess)
	}
	if streamPkt < 0.9 || streamSess < 0.95 {
		t.Errorf("stream context: %.3f per packet (want >= 0.9), %.3f per stream (want >= 0.95)", streamPkt, streamSess)
	}
}

// TestStreamPredictOrderFree: a stream's windows may come in any order and
// mixed with other streams; each packet's prediction stays the same.
func TestStreamPredictOrderFree(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	train := familyStreams(rng, 30, 3, 8, "train")
	test := familyStreams(rng, 9, 3, 8, "test")
	cfg := smallConfig()
	cfg.Epochs = 2
	m := trainT(t, cfg, train, 3, nil)
	defer m.Close()
	want, err := m.LogProbs(test)
	if err != nil {
		t.Fatal(err)
	}
	perm := rng.Perm(len(test))
	shuffled := make([]*schemas.Window, len(test))
	for i, k := range perm {
		shuffled[i] = test[k]
	}
	got, err := m.LogProbs(shuffled)
	if err != nil {
		t.Fatal(err)
	}
	// Batched kernels may round differently with a window's place in the
	// batch (bit-for-bit equality held on one CPU and not on an AVX-512
	// EPYC), so the log-probabilities must agree to a rounding error: a
	// stream context gathered from the wrong windows moves them by far more.
	const tol = 1e-4
	worst := 0.0
	for i, k := range perm {
		if len(got[i]) != len(want[k]) {
			t.Fatalf("window %s: %d values in another order, %d in its own", test[k].ID, len(got[i]), len(want[k]))
		}
		for j := range got[i] {
			worst = max(worst, math.Abs(float64(got[i][j]-want[k][j])))
		}
		if worst > tol {
			t.Fatalf("window %s: log-probabilities move by %.2g (more than %g) with the order windows are given in", test[k].ID, worst, tol)
		}
	}
	t.Logf("largest change of a log-probability with the windows' order: %.2g", worst)
	// Alone, a window has less context: its predictions may differ, and
	// must still cover its packets.
	alone, err := m.LogProbs(test[:1])
	if err != nil {
		t.Fatal(err)
	}
	if len(alone[0]) != test[0].Len*3 {
		t.Fatalf("a window alone: %d values, want %d", len(alone[0]), test[0].Len*3)
	}
}

func TestStreamsAndContexts(t *testing.T) {
	win := func(id string, n int) *schemas.Window {
		w := schemas.NewWindow(n)
		w.ID, w.Len = id, n
		return w
	}
	ws := []*schemas.Window{
		win("lan/h/s1/ind/cam/2", 4), win("lan/h/s1/ind/plug/0", 4), win("lan/h/s1/ind/cam/0", 4),
		win("lan/h/s1/ind/cam/1", 4), win("hand-made", 4), win("lan/h/s1/ind/cam/10", 4),
		win("lan/h/s1/ind/cam/0", 8), // the same stream cut at another size
	}
	streams := streamsOf(ws)
	if len(streams) != 4 {
		t.Fatalf("%d streams, want 4", len(streams))
	}
	var got [][]string
	for _, s := range streams {
		var ids []string
		for _, w := range s {
			ids = append(ids, fmt.Sprintf("%s@%d", w.ID, len(w.Label)))
		}
		got = append(got, ids)
	}
	want := [][]string{
		{"lan/h/s1/ind/cam/0@4", "lan/h/s1/ind/cam/1@4", "lan/h/s1/ind/cam/2@4", "lan/h/s1/ind/cam/10@4"},
		{"lan/h/s1/ind/plug/0@4"},
		{"hand-made@4"},
		{"lan/h/s1/ind/cam/0@8"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("streams\n got %v\nwant %v", got, want)
	}

	// Inference gives each window its whole stream's kinds; training gives
	// half of them those of a run of their stream that holds them.
	for _, w := range ws {
		for i := range w.Len {
			w.FrameLen[i], w.Direction[i] = int32(60+i), 1
		}
	}
	ws[3].FrameLen[0] = 777 // cam/1 alone sends this kind
	f := fitFeatures(ws, 16, 64, 0)
	c := f.contextsOf(ws)
	whole := c.whole()
	has := func(ks []int32, w *schemas.Window, i int) bool { return slices.Contains(ks, f.kindOf(w, i)) }
	for i, w := range ws[:6] {
		if has(whole[i], ws[3], 0) != (i == 0 || i == 2 || i == 3 || i == 5) {
			t.Errorf("window %s: the whole-stream context %v the kind only cam/1 sends", w.ID, map[bool]string{true: "holds", false: "lacks"}[has(whole[i], ws[3], 0)])
		}
	}
	rng := rand.New(rand.NewPCG(1, 1))
	partial := 0
	for range 50 {
		sample := c.sample(rng)
		for i, w := range ws {
			for j := range w.Len {
				if !has(sample[i], w, j) {
					t.Fatalf("window %s: its training context lacks its own packet %d", w.ID, j)
				}
			}
			for _, k := range sample[i] {
				if !slices.Contains(whole[i], k) {
					t.Fatalf("window %s: its training context holds kind %d from outside its stream", w.ID, k)
				}
			}
			if len(sample[i]) < len(whole[i]) {
				partial++
			}
		}
	}
	if partial == 0 {
		t.Error("training never gave a window part of its stream as context")
	}
}

// TestPortSessions: a port seen in one capture session only (a device's
// ephemeral port, one session's server) stays out of the embedding's
// vocabulary when PortSessions is 2, however many packets it has; a port
// of two sessions gets its row. With fewer sessions than the rule asks,
// the rule cannot judge and every port seen twice is kept.
func TestPortSessions(t *testing.T) {
	win := func(group string, ports ...int32) *schemas.Window {
		w := schemas.NewWindow(len(ports))
		w.Group, w.Len = group, len(ports)
		copy(w.DPort, ports)
		return w
	}
	ws := []*schemas.Window{
		win("plug/Setup-A-1", 9999, 9999, 49153, 49153, 49153, 49153),
		win("plug/Setup-A-2", 9999, 9999, 50211, 50211),
		win("plug/Setup-A-3", 9999, 9999),
	}
	vocab := func(ws []*schemas.Window, sessions int) []int32 {
		return fitFeatures(ws, 16, 0, sessions).Ports
	}
	if got := vocab(ws, 0); !slices.Equal(got, []int32{9999, 49153, 50211}) {
		t.Errorf("PortSessions 0: vocabulary %v, want every port seen twice", got)
	}
	if got := vocab(ws, 2); !slices.Equal(got, []int32{9999}) {
		t.Errorf("PortSessions 2: vocabulary %v, want only 9999 (the ephemeral ports are each one session's)", got)
	}
	if got := vocab(ws[:1], 2); !slices.Equal(got, []int32{49153, 9999}) {
		t.Errorf("PortSessions 2 over one session: vocabulary %v, want the rule off", got)
	}
	bad := DefaultConfig()
	bad.PortSessions, bad.LabelSmoothing = -1, 1
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "PortSessions") || !strings.Contains(err.Error(), "LabelSmoothing") {
		t.Errorf("Validate: %v, want both fields named", err)
	}
}

// TestStreamIndex: the streaming trainer's compact index gives each window
// the contexts contextsOf does (its whole stream's kinds, or a run of its
// stream that holds it), finds windows by ID whatever the order they come
// in, and draws an epoch's contexts from the epoch and the window alone.
func TestStreamIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	ws := familyStreams(rng, 6, 5, 8, "lan/h")
	ws = append(ws, familyStreams(rng, 1, 1, 8, "hand")[0])
	ws[len(ws)-1].ID = "hand-made"
	f := fitFeatures(ws, 16, 64, 0)
	m := &Model{feat: f}
	order := rand.New(rand.NewPCG(5, 5)).Perm(len(ws))
	src := func(_ context.Context, _ int, yield func(*schemas.Window) error) error {
		for _, k := range order {
			if err := yield(ws[k]); err != nil {
				return err
			}
		}
		return nil
	}
	x, err := m.indexStreams(context.Background(), src, 8)
	if err != nil {
		t.Fatal(err)
	}
	whole := f.contextsOf(ws).whole()
	seen := make([]bool, f.bagRows())
	partial := 0
	for k, w := range ws {
		i, ok := x.window(w.ID)
		if !ok {
			t.Fatalf("window %s not found by its ID", w.ID)
		}
		for key := range uint64(40) {
			got := x.contextOf(i, key, seen)
			if again := x.contextOf(i, key, seen); !slices.Equal(got, again) {
				t.Fatalf("window %s, epoch key %d: two draws %v and %v", w.ID, key, got, again)
			}
			for j := range w.Len {
				if !slices.Contains(got, f.kindOf(w, j)) {
					t.Fatalf("window %s: its context lacks its own packet %d", w.ID, j)
				}
			}
			for _, kind := range got {
				if !slices.Contains(whole[k], kind) {
					t.Fatalf("window %s: its context holds kind %d from outside its stream", w.ID, kind)
				}
			}
			if len(got) < len(whole[k]) {
				partial++
			} else if len(got) != len(whole[k]) {
				t.Fatalf("window %s: context of %d kinds, its stream has %d", w.ID, len(got), len(whole[k]))
			}
		}
	}
	if partial == 0 {
		t.Error("no window was given part of its stream as context")
	}
	if _, ok := x.window("lan/h/never/ind/dev/0"); ok {
		t.Error("a window the passes never gave was found")
	}
	twice := func(_ context.Context, _ int, yield func(*schemas.Window) error) error {
		for _, w := range append(slices.Clip(ws), ws[0]) {
			if err := yield(w); err != nil {
				return err
			}
		}
		return nil
	}
	if _, err := m.indexStreams(context.Background(), twice, 8); err == nil || !strings.Contains(err.Error(), "read twice") {
		t.Errorf("a pass giving a window twice: %v, want an error", err)
	}
	per := IndexBytes(ws[0])
	t.Logf("index: %d windows, %d bytes of arrays; IndexBytes keeps back %d a window", len(ws), x.bytes(), per)
	if x.bytes() > per*int64(len(ws)) {
		t.Errorf("the index holds %d bytes, more than IndexBytes allows (%d x %d windows)", x.bytes(), per, len(ws))
	}
}
