package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// Memory is a Store held in memory, safe for concurrent use: the one
// stand-in tests use where a real S3 server would add nothing to what they
// check (the cap scores of a part, a damaged object in a dataset).
type Memory struct {
	mu      sync.Mutex
	objects map[string][]byte
	// OnGet, when set, sees every object read (key and bytes), after it
	// was found.
	OnGet func(key string, data []byte)
}

// NewMemory is an empty store.
func NewMemory() *Memory { return &Memory{objects: map[string][]byte{}} }

// Put stores a copy of data.
func (s *Memory) Put(_ context.Context, key string, data []byte, _ string) (ObjectInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[key] = slices.Clone(data)
	sum := sha256.Sum256(data)
	return ObjectInfo{Key: key, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}, nil
}

// Get returns the object's bytes, or ErrNotFound.
func (s *Memory) Get(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	data, ok := s.objects[key]
	onGet := s.OnGet
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("get %s: %w", s.Location(key), ErrNotFound)
	}
	if onGet != nil {
		onGet(key, data)
	}
	return data, nil
}

// List returns the objects under prefix in key order.
func (s *Memory) List(_ context.Context, prefix string) ([]ObjectInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ObjectInfo
	for _, k := range slices.Sorted(maps.Keys(s.objects)) {
		if strings.HasPrefix(k, prefix) {
			out = append(out, ObjectInfo{Key: k, Size: int64(len(s.objects[k]))})
		}
	}
	return out, nil
}

// Delete removes the object; a missing one is no error, as in S3.
func (s *Memory) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objects, key)
	return nil
}

// Location names a key as mem://KEY.
func (s *Memory) Location(key string) string { return "mem://" + key }

// Snapshot is a copy of every object, to Restore later.
func (s *Memory) Snapshot() map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.objects)
}

// Restore replaces every object with a snapshot's.
func (s *Memory) Restore(objects map[string][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects = maps.Clone(objects)
}
