package agent

import (
	"context"
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
func (a *Agent) watch(ctx context.Context, in Input, resume map[string]progress, bufs *bufPool, send func(*outBatch, bool) error) error {
	log := a.cfg.Log.With("home", a.cfg.Home.Name, "tap", in.Tap, "watch", in.Name)
	side := tapSide(in.Tap)
	done := map[string]bool{}
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
			if done[f.Path] {
				continue
			}
			written := files[len(files)-1].ModTime.After(f.ModTime) || now.Sub(f.ModTime) >= a.cfg.WatchSettle
			if !written {
				break // the one being written, and any as new
			}
			done[f.Path] = true
			fi := Input{Tap: in.Tap, Name: f.Path, Open: func() (capture.Source, error) { return openFileAhead(f.Path, side) }}
			r := resume[a.source(fi)]
			if r.Final {
				continue // published by an earlier run
			}
			if err := a.publishInput(ctx, fi, r, bufs, send); err != nil {
				if ctx.Err() != nil {
					return nil // the next run resumes the file
				}
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-poll.C:
		}
	}
}
