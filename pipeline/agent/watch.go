package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
)

// watch publishes the files of a watch tap's folder (in.Name) as they
// complete, each one capture session, in the order they were written,
// until ctx ends. A capture tool that rotates its files (tcpdump -G or -C,
// dumpcap -b) closes one when it opens the next, so a file is complete
// once a file written later lies beside it, or once it has gone unchanged
// for WatchSettle (the capture stopped). A run resumes where the last one
// stopped: a file it published is passed over, one it was reading when
// stopped is read on from where it was.
//
// A ring buffer (tcpdump -C with -W) writes new captures under the names
// of old ones. A file is told from the one published under its name by its
// first frame's time stamp, kept in the progress files, and is published
// as a session of its own: the second file named lan.pcap3 is session
// lan-lan-3-v2, source lan.pcap3+v2. A home's taps whose rings wrap alike
// count their versions alike, so their sessions still pair.
//
// Once a file has left the folder, or been rewritten, and its session is
// acknowledged whole, its progress file is removed: a campaign of weeks
// would otherwise leave thousands, all read at every start.
func (a *Agent) watch(ctx context.Context, in Input, resume map[string]progress, book *progressBook, bufs *bufPool, send func(*outBatch, bool) error) error {
	log := a.cfg.Log.With("home", a.cfg.Home.Name, "tap", in.Tap, "watch", in.Name)
	w := a.newWatched(in.Tap, resume, book)
	side := tapSide(in.Tap)
	// seen holds the files examined, with their modification time then: a
	// file modified since is examined again (a ring wrote it anew).
	seen := map[string]time.Time{}
	poll := time.NewTicker(a.cfg.WatchPoll)
	defer poll.Stop()
	var failing string
	for {
		files, err := campaign.WatchedFiles(in.Tap, in.Name)
		switch {
		case err != nil && err.Error() != failing:
			// Said once, not at every listing: a folder not yet mounted
			// comes back by itself.
			log.Warn("watched folder cannot be listed; trying again", "err", err)
			a.count(func(st *Stats) { st.ReadErrors++ })
			failing = err.Error()
		case err == nil:
			failing = ""
		}
		now := time.Now()
		for _, f := range files {
			if at, ok := seen[f.Path]; ok && at.Equal(f.ModTime) {
				continue
			}
			written := files[len(files)-1].ModTime.After(f.ModTime) || now.Sub(f.ModTime) >= a.cfg.WatchSettle
			if !written {
				break // the one being written, and any as new
			}
			seen[f.Path] = f.ModTime
			v := w.version(f, side, log)
			r := w.resumeAt(v.Source)
			if r.Final {
				continue // published already
			}
			fi := fileInput(in.Tap, f.Path, side)
			fi.Rewrites = v.Rewrites
			var ce *CaptureError
			if err := a.publishInput(ctx, fi, r, bufs, send, true); errors.As(err, &ce) {
				continue // logged and counted: the folder is watched on
			} else if err != nil {
				if ctx.Err() != nil {
					return nil // the next run resumes the file
				}
				return err
			}
		}
		if err == nil {
			w.forgetGone(files)
			// Files gone from the folder are forgotten here too: a run
			// of weeks would otherwise hold every name it saw.
			listed := make(map[string]time.Time, len(files))
			for _, f := range files {
				if at, ok := seen[f.Path]; ok {
					listed[f.Path] = at
				}
			}
			seen = listed
		}
		select {
		case <-ctx.Done():
			return nil
		case <-poll.C:
		}
	}
}

// watched is what a watch tap knows of the files of its folder.
type watched struct {
	a      *Agent
	tap    string
	prefix string // of the tap's sources
	resume map[string]progress
	book   *progressBook // nil without a spool folder
	// latest holds the last version seen of each file name, by the
	// source of its first version.
	latest map[string]progress
}

func (a *Agent) newWatched(tap string, resume map[string]progress, book *progressBook) *watched {
	w := &watched{
		a: a, tap: tap, prefix: a.cfg.Campaign + "/" + a.cfg.Home.Name + "/" + tap + "/",
		resume: resume, book: book, latest: map[string]progress{},
	}
	if book == nil {
		return w
	}
	for _, p := range book.under(w.prefix) {
		name := strings.TrimSuffix(p.Source, versioned("", p.Rewrites, "+"))
		if l, ok := w.latest[name]; !ok || p.Rewrites > l.Rewrites {
			w.latest[name] = p
		}
	}
	return w
}

// version says which version of its name the complete file f is, and
// notes a new one in the progress book before any of it is published.
func (w *watched) version(f campaign.WatchedFile, side capture.Side, log *slog.Logger) progress {
	name := w.a.source(Input{Tap: w.tap, Name: f.Path})
	last, known := w.latest[name]
	if known && !last.First.IsZero() && last.Modified.Equal(f.ModTime) {
		return last // unchanged since it was examined
	}
	first := firstStamp(f, side)
	switch {
	case known && (last.First.IsZero() || last.First.Equal(first)):
		// The same file, modified (touched, copied) or published by an
		// agent that recorded no time stamps: told by its stamp from now.
		last.First, last.Modified = first, f.ModTime
	case known:
		if !w.resumeAt(last.Source).Final {
			log.Error("a capture file was written anew before the last one of its name was published whole; the rest of that one is lost: keep more files in the ring (tcpdump -W), or use names that do not come back (tcpdump -G with strftime names, dumpcap -b)",
				"file", f.Path, "lost", last.Session)
			w.a.count(func(st *Stats) { st.ReadErrors++ })
		}
		n := last.Rewrites + 1
		last = progress{
			Source: versioned(name, n, "+"), Session: versioned(campaign.SessionName(w.tap, f.Path), n, "-"),
			Rewrites: n, First: first, Modified: f.ModTime,
		}
		log.Info("capture file written anew under a published name: a session of its own", "file", f.Path, "session", last.Session)
	default:
		last = progress{Source: name, Session: campaign.SessionName(w.tap, f.Path), First: first, Modified: f.ModTime}
	}
	w.latest[name] = last
	if w.book != nil {
		if err := w.book.note(last); err != nil {
			log.Warn("progress not saved; a restart may take the file for a new one", "file", f.Path, "err", err)
		}
	}
	return last
}

// resumeAt is where to read source from: what the progress book says now,
// or what the spool held at the start, whichever goes further.
func (w *watched) resumeAt(source string) progress {
	r := w.resume[source]
	if w.book == nil {
		return r
	}
	p := w.book.get(source)
	switch {
	case p.Final:
		return p
	case !r.Final && p.Next > r.Next:
		r.Next = p.Next
	}
	return r
}

// forgetGone drops the progress of the sessions acknowledged whole whose
// files have left the folder (files, a listing of it) or been written
// anew: no run will read them again. The last version of a file still in
// the folder stays, so a restart passes over it. A file counts as gone
// only while one modified after its first frame lies in the folder: an
// empty listing may be a share or a stick not mounted.
func (w *watched) forgetGone(files []campaign.WatchedFile) {
	if w.book == nil || len(files) == 0 {
		return
	}
	here := map[string]bool{}
	for _, f := range files {
		here[w.a.source(Input{Tap: w.tap, Name: f.Path})] = true
	}
	newest := files[len(files)-1].ModTime
	for _, p := range w.book.under(w.prefix) {
		name := strings.TrimSuffix(p.Source, versioned("", p.Rewrites, "+"))
		l, ok := w.latest[name]
		if here[name] && (!ok || l.Source == p.Source) || !newest.After(p.First) {
			continue // in the folder, or maybe only out of sight
		}
		if w.book.forget(p.Source) && ok && l.Source == p.Source {
			delete(w.latest, name)
		}
	}
}

// firstStamp tells a capture file from the others written under its name:
// the time stamp of its first frame, or, when it holds none, its
// modification time.
func firstStamp(f campaign.WatchedFile, side capture.Side) time.Time {
	if t, ok := capture.FirstFrameTime(f.Path, side); ok {
		return t
	}
	return f.ModTime // publishInput says why it cannot be read
}

// versioned names a version of a file written under a name others had (a
// ring buffer's): the first keeps the name, the nth (n > 1) has sep and
// "vn" after it.
func versioned(name string, rewrites int, sep string) string {
	if rewrites == 0 {
		return name
	}
	return fmt.Sprintf("%s%sv%d", name, sep, rewrites+1)
}
