// Package budget bounds the memory a worker spends on decoded batches it
// holds unacked, in bytes rather than messages: a decoded batch is about
// nine times its wire size, and one home's batches can be far larger than
// another's, so a message count bounds neither the worker nor one home's
// share of it.
package budget

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"github.com/homemole/homemole/schemas"
)

// ErrOver marks a batch refused because holding it would pass a budget.
// It is retryable: the batch fits once held ones are released.
var ErrOver = errors.New("over the byte budget")

// Bytes is a byte budget, in all and per key (a home). Take reserves,
// Release gives back. A key that holds nothing may always take one item
// when the whole budget holds nothing either, so that an item larger than
// a budget stalls nothing. Safe for concurrent use.
type Bytes struct {
	total, perKey int64

	mu    sync.Mutex
	used  int64
	byKey map[string]int64
}

// New is a budget of total bytes, at most perKey of them for one key.
func New(total, perKey int64) (*Bytes, error) {
	if total <= 0 || perKey <= 0 || perKey > total {
		return nil, fmt.Errorf("byte budget: %d in all, %d per home: want both > 0 and the per-home one no larger", total, perKey)
	}
	return &Bytes{total: total, perKey: perKey, byKey: map[string]int64{}}, nil
}

// Take reserves n bytes for key, or says (wrapping ErrOver) which budget
// it would pass.
func (b *Bytes) Take(key string, n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	held := b.byKey[key]
	first := held == 0 && b.used == 0
	switch {
	case first:
	case held+n > b.perKey:
		return fmt.Errorf("%w: %s holds %s of its %s; a batch of %s waits until some is released", ErrOver, key, mib(held), mib(b.perKey), mib(n))
	case b.used+n > b.total:
		return fmt.Errorf("%w: the worker holds %s of its %s; a batch of %s for %s waits until some is released", ErrOver, mib(b.used), mib(b.total), mib(n), key)
	}
	b.used += n
	b.byKey[key] = held + n
	return nil
}

// TakeToComplete reserves n bytes for key, which may hold up to twice its
// share this way: for an item that completes work key already holds (the
// other half of a session pair). Without it a key whose share is full of
// halves could never take the other halves that would let it release
// them; the cap keeps a key that sends only "completing" items from
// taking the whole budget.
func (b *Bytes) TakeToComplete(key string, n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	held := b.byKey[key]
	switch {
	case held == 0 && b.used == 0:
	case held+n > 2*b.perKey:
		return fmt.Errorf("%w: %s holds %s, twice its share of %s, with halves it cannot complete; a batch of %s waits", ErrOver, key, mib(held), mib(b.perKey), mib(n))
	case b.used+n > b.total:
		return fmt.Errorf("%w: the worker holds %s of its %s; a batch of %s for %s waits until some is released", ErrOver, mib(b.used), mib(b.total), mib(n), key)
	}
	b.used += n
	b.byKey[key] += n
	return nil
}

// Release gives back n bytes key took.
func (b *Bytes) Release(key string, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	held := b.byKey[key] - n
	if held <= 0 {
		delete(b.byKey, key)
		n += held // never give back more than was taken
	} else {
		b.byKey[key] = held
	}
	b.used -= n
}

// Held is what key holds now, and what all keys hold.
func (b *Bytes) Held(key string) (own, all int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.byKey[key], b.used
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// BatchSize is what a decoded batch costs in memory: its packets, labels
// and devices, and the strings that name it.
func BatchSize(b *schemas.Batch) int64 {
	n := int64(unsafe.Sizeof(*b)) + int64(len(b.Campaign)+len(b.Home)+len(b.Tap)+len(b.View)+len(b.Source)+len(b.Session))
	n += int64(cap(b.Packets))*int64(unsafe.Sizeof(schemas.Packet{})) + int64(cap(b.Labels))*4
	for _, d := range b.Devices {
		n += int64(unsafe.Sizeof(d)) + int64(len(d.Name)+len(d.Category))
	}
	return n
}
