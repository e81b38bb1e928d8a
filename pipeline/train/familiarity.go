package train

import (
	"fmt"
	"slices"

	"github.com/homemole/homemole/schemas"
)

// Familiarity is the open-set rule's second test, one that asks the
// training data instead of the model: which share of a host's packets are
// of a kind (PacketKind) the training windows hold from the device the host
// is named as. A model's confidence can be high on a device it never saw
// when that device's packets fall on rows the model knows well (the
// embedding of a port too rare to have its own, a frame length shared by
// many devices); a host whose frames are of sizes its named device never
// sent is unlike it whatever the model says. It reads no port, so the
// ports a model keeps out of its vocabulary (learn.Config.PortSessions)
// cannot make an unseen device look familiar to it.
type Familiarity struct {
	// Threshold: a host whose familiarity is below it is unknown.
	Threshold float64 `json:"threshold"`
	// Kinds[c] are the packet kinds class c's training windows hold,
	// sorted.
	Kinds [][]uint64 `json:"kinds"`
}

// PacketKind is packet j of w as the familiarity test tells packets apart:
// its direction, transport protocol and exact frame length. IoT firmware
// sends messages of fixed sizes; which sizes, and which way, is what a
// device's own traffic repeats from one capture to the next, where ports
// and addresses may not.
func PacketKind(w *schemas.Window, j int) uint64 {
	return uint64(uint8(w.Direction[j]))<<40 | uint64(w.Transport[j])<<32 | uint64(uint32(w.FrameLen[j]))
}

// KindSets gathers the packet kinds of training windows by class.
type KindSets struct {
	byClass []map[uint64]struct{}
}

// NewKindSets gathers for classes classes; a packet labeled outside them
// (a test-only device, padding) is left out.
func NewKindSets(classes int) *KindSets {
	k := &KindSets{byClass: make([]map[uint64]struct{}, classes)}
	for c := range k.byClass {
		k.byClass[c] = map[uint64]struct{}{}
	}
	return k
}

// Add takes in the labeled packets of ws. Adding a window twice changes
// nothing, so a streamed source may pass it once per epoch.
func (k *KindSets) Add(ws ...*schemas.Window) {
	for _, w := range ws {
		for j := range w.Len {
			if c := int(w.Label[j]); c >= 0 && c < len(k.byClass) {
				k.byClass[c][PacketKind(w, j)] = struct{}{}
			}
		}
	}
}

// Sorted are the sets as Familiarity.Kinds stores them.
func (k *KindSets) Sorted() [][]uint64 {
	out := make([][]uint64, len(k.byClass))
	for c, set := range k.byClass {
		out[c] = make([]uint64, 0, len(set))
		for kind := range set {
			out[c] = append(out[c], kind)
		}
		slices.Sort(out[c])
	}
	return out
}

// familiarity is the share of a host's packets, counted by kind in kinds,
// whose kind sorted holds: the kinds of the class it is named as.
func familiarity(kinds map[uint64]int, sorted []uint64) float64 {
	known, all := 0, 0
	for kind, n := range kinds {
		all += n
		if _, ok := slices.BinarySearch(sorted, kind); ok {
			known += n
		}
	}
	if all == 0 {
		return 0
	}
	return float64(known) / float64(all)
}

// check refuses a stored test predict could not apply to classes classes.
func (f *Familiarity) check(classes int) error {
	if f == nil {
		return nil
	}
	if !(f.Threshold >= 0 && f.Threshold <= 1) {
		return fmt.Errorf("unknown-device familiarity threshold %v: want a share between 0 and 1", f.Threshold)
	}
	if len(f.Kinds) != classes {
		return fmt.Errorf("unknown-device familiarity holds packet kinds of %d classes for %d labels", len(f.Kinds), classes)
	}
	for c, ks := range f.Kinds {
		if !slices.IsSorted(ks) {
			return fmt.Errorf("unknown-device familiarity: the packet kinds of class %d are not sorted", c)
		}
	}
	return nil
}
