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
)

// progress is what JetStream has acknowledged of one source: every batch
// before Next, and the whole session when Final is set. It is only ever
// written with acknowledged values, so a stale file makes a restart resend
// (which message ids deduplicate within the stream's window), never skip.
type progress struct {
	Source  string `json:"source"`
	Session string `json:"session"`
	Next    uint64 `json:"next"`
	Final   bool   `json:"final"`
}

// covers reports whether the batch is acknowledged according to p.
func (p progress) covers(m *batchMeta) bool {
	return p.Final || (!m.final && m.next <= p.Next)
}

// progressBook keeps one small JSON file per source in dir, replaced
// atomically (write, rename) so a crash leaves the old or the new one.
type progressBook struct {
	dir   string
	log   *slog.Logger
	m     map[string]progress
	dirty map[string]bool
}

func openProgress(dir string, log *slog.Logger) (*progressBook, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create progress folder: %w", err)
	}
	b := &progressBook{dir: dir, log: log, m: map[string]progress{}, dirty: map[string]bool{}}
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

func (b *progressBook) get(source string) progress { return b.m[source] }

func (b *progressBook) advance(m *batchMeta) {
	p := b.m[m.source]
	if p.Final || m.next < p.Next {
		return
	}
	b.m[m.source] = progress{Source: m.source, Session: m.session, Next: m.next, Final: m.final}
	b.dirty[m.source] = true
}

// flush writes the files of the sources that advanced since the last flush.
// They are not fsynced: a power cut can only roll them back.
func (b *progressBook) flush() error {
	var errs []error
	for src := range b.dirty {
		data, err := json.Marshal(b.m[src])
		if err != nil {
			return fmt.Errorf("encode progress of %s: %w", src, err)
		}
		path := filepath.Join(b.dir, progressFileName(src))
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("write progress of %s: %w", src, err))
			continue
		}
		if err := os.Rename(tmp, path); err != nil {
			errs = append(errs, fmt.Errorf("replace progress of %s: %w", src, err))
			continue
		}
		delete(b.dirty, src)
	}
	return errors.Join(errs...)
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
