package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// progress is what JetStream has acknowledged of one source: every batch
// before Next, and the whole session when Final is set. It is only ever
// written with acknowledged values, so a stale file makes a restart resend
// (which message ids deduplicate within the stream's window), never skip.
//
// A watched file's source also says which of the files written under its
// name it is (Agent.watch): Rewrites is how many came before it, First what
// tells it from them, and Modified its modification time when it was last
// examined, which spares a restart reading an unchanged file again.
type progress struct {
	Source   string    `json:"source"`
	Session  string    `json:"session"`
	Next     uint64    `json:"next"`
	Final    bool      `json:"final"`
	Rewrites int       `json:"rewrites,omitempty"`
	First    time.Time `json:"first,omitzero"`
	Modified time.Time `json:"modified,omitzero"`
}

// covers reports whether the batch is acknowledged according to p.
func (p progress) covers(m *batchMeta) bool {
	return p.Final || (!m.final && m.next <= p.Next)
}

// progressBook keeps one small JSON file per source in dir, replaced
// atomically (write, rename) so a crash leaves the old or the new one. The
// sender advances and flushes it; a watch tap also notes and forgets its
// files' sources, from its own goroutine.
type progressBook struct {
	dir string
	log *slog.Logger

	mu    sync.Mutex
	m     map[string]progress
	dirty map[string]bool
	// gone are the sources forgotten since the last flush: their files
	// are removed once the files of the dirty ones are written.
	gone map[string]bool
}

func openProgress(dir string, log *slog.Logger) (*progressBook, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create progress folder: %w", err)
	}
	b := &progressBook{dir: dir, log: log, m: map[string]progress{}, dirty: map[string]bool{}, gone: map[string]bool{}}
	names, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("list progress files in %s: %w", dir, err)
	}
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("read progress: %w", err)
		}
		var p progress
		if err := json.Unmarshal(data, &p); err != nil || p.Source == "" {
			// Losing a progress file costs a resend from the start of the
			// source, not a hole: keep going, but say so.
			log.Warn("unreadable progress file ignored; its source will be published again from the start", "file", n, "err", err)
			continue
		}
		b.m[p.Source] = p
	}
	return b, nil
}

func (b *progressBook) get(source string) progress {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.m[source]
}

// under returns the progress of the sources whose names start with prefix.
func (b *progressBook) under(prefix string) []progress {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []progress
	for src, p := range b.m {
		if strings.HasPrefix(src, prefix) {
			out = append(out, p)
		}
	}
	return out
}

func (b *progressBook) advance(m *batchMeta) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.m[m.source]
	if p.Final || m.next < p.Next {
		return
	}
	p.Source, p.Session, p.Next, p.Final = m.source, m.session, m.next, m.final
	b.m[m.source] = p
	b.dirty[m.source] = true
}

// note records which file a source is (v's names and watched file's
// fields; what is acknowledged of it stays), and writes it at once: a
// restart must find the version of a rewritten file it was publishing
// before any of it is published, not take the file for a newer one.
func (b *progressBook) note(v progress) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.m[v.Source]
	p.Source, p.Session, p.Rewrites, p.First, p.Modified = v.Source, v.Session, v.Rewrites, v.First, v.Modified
	b.m[v.Source] = p
	b.dirty[v.Source] = true
	delete(b.gone, v.Source)
	if err := b.write(v.Source); err != nil {
		return err
	}
	delete(b.dirty, v.Source)
	return nil
}

// forget drops a source that is acknowledged whole, saved so, and that no
// run will read again, and says whether it did. Its file goes at the next
// flush, after those of the sources that advanced: a crash between them
// loses no record that a newer version of a file needs.
func (b *progressBook) forget(source string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.m[source].Final || b.dirty[source] {
		return false
	}
	delete(b.m, source)
	b.gone[source] = true
	return true
}

// flush writes the files of the sources that advanced since the last
// flush, then, if all were written, removes those of the sources
// forgotten. They are not fsynced: a power cut can only roll them back.
func (b *progressBook) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for src := range b.dirty {
		if err := b.write(src); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(b.dirty, src)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for src := range b.gone {
		err := os.Remove(filepath.Join(b.dir, progressFileName(src)))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove progress of %s: %w", src, err))
			continue
		}
		delete(b.gone, src)
	}
	return errors.Join(errs...)
}

// write replaces the file of src with its progress; b.mu is held.
func (b *progressBook) write(src string) error {
	data, err := json.Marshal(b.m[src])
	if err != nil {
		return fmt.Errorf("encode progress of %s: %w", src, err)
	}
	path := filepath.Join(b.dir, progressFileName(src))
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write progress of %s: %w", src, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace progress of %s: %w", src, err)
	}
	return nil
}

// progressFileName is readable for people and unique per source: source
// names may hold characters a file name cannot, and differ only there.
func progressFileName(source string) string {
	var sb strings.Builder
	for _, r := range source {
		switch {
		case sb.Len() >= 96:
		case r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.':
			sb.WriteRune(r)
		default:
			sb.WriteByte('_')
		}
	}
	h := fnv.New64a()
	h.Write([]byte(source))
	return fmt.Sprintf("%s-%016x.json", sb.String(), h.Sum64())
}
