package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
)

func runDatasetExport(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs, ep := newStoreFlags("dataset export", "--dataset NAME [--version V] --out FILE.parquet [--session NAME]",
		"Writes a dataset version as one Parquet file for pandas, Polars or DuckDB: a row per\n"+
			"window with the columns of the dataset's Arrow objects (per-packet columns as\n"+
			"lists of the window size), the windows trainers read (after the per-device cap),\n"+
			"in manifest order. The label vocabulary is in the file's key-value metadata\n"+
			"(homemole.labels, a JSON array a label indexes; -1 is unlabeled):\n\n"+
			"  pandas:  pd.read_parquet(\"d.parquet\")\n"+
			"  DuckDB:  SELECT window_id, label FROM 'd.parquet'")
	name, version, outPath, session := exportFlags(fs)
	if err := parseRequired(fs, args, "dataset export needs --dataset NAME and --out FILE.parquet", name, outPath); err != nil {
		return err
	}
	env, m, keep, err := openSelection(ctx, *ep, log, *name, *version, *session)
	if err != nil {
		return err
	}
	defer env.Close()
	rows := 0
	err = writeOutput(*outPath, out, func(w io.Writer) error {
		rows, err = dataset.ExportParquet(ctx, env.Store, m, w, keep)
		return err
	})
	if err != nil {
		return err
	}
	if *outPath != "-" {
		fmt.Fprintf(out, "dataset %s/%s: %d windows of %d packets written to %s\n", m.Dataset, m.Version, rows, m.WindowSize, *outPath)
	}
	return nil
}

func runDatasetToPcap(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs, ep := newStoreFlags("dataset to-pcap", "--dataset NAME [--version V] --out FILE.pcap (--window ID | [--from I] [--to J]) [--session NAME]",
		"Writes windows of a dataset back out as a pcap, one record per packet, to look at\n"+
			"them in Wireshark or run them through `homemole features`. The capture is rebuilt\n"+
			"from the windows' metadata, not the original bytes: timestamps, destination ports,\n"+
			"frame lengths, directions, TTL and TCP header fields are the dataset's; addresses\n"+
			"are placeholders (home side 10.x.y.z, remote 192.0.2.1; a labeled packet's home\n"+
			"address 10.1.x.y encodes its label index) and payloads are zeros. Decode it with\n"+
			"`homemole features --in FILE.pcap --lan-net 10.0.0.0/8`.\n\n"+
			"Windows are numbered from 0 in manifest order, among the windows trainers read\n"+
			"(after the per-device cap, unless --uncapped) of the selected --session.")
	name, version, outPath, session := exportFlags(fs)
	from := fs.Int("from", 0, "first window to write (index from 0)")
	to := fs.Int("to", -1, "window index to stop before; -1 writes to the last window")
	id := fs.String("window", "", "write only the window of this `ID` (the window_id column of a Parquet export) instead of --from/--to")
	uncapped := fs.Bool("uncapped", false, "number and search every window the windower wrote, ignoring the per-device cap")
	if err := parseRequired(fs, args, "dataset to-pcap needs --dataset NAME and --out FILE.pcap", name, outPath); err != nil {
		return err
	}
	if *from < 0 || *to < -1 || (*to >= 0 && *to <= *from) {
		return cli.Usagef("dataset to-pcap: --from %d --to %d selects no window; want 0 <= from < to, or --to -1 for all after from", *from, *to)
	}
	if *id != "" && (*from != 0 || *to != -1) {
		return cli.Usagef("dataset to-pcap: give --window or --from/--to, not both")
	}
	env, m, keep, err := openSelection(ctx, *ep, log, *name, *version, *session)
	if err != nil {
		return err
	}
	defer env.Close()
	// errDone ends the read once the last selected window is written:
	// a window near the start should not cost a pass over the dataset.
	errDone := errors.New("selection written")
	windows, packets := 0, 0
	err = writeOutput(*outPath, out, func(w io.Writer) error {
		pw, err := dataset.NewPcapWriter(w)
		if err != nil {
			return err
		}
		i := 0
		err = dataset.Stream(ctx, env.Store, m, dataset.ReadOptions{Keep: keep, Uncapped: *uncapped}, func(win *schemas.Window) error {
			defer func() { i++ }()
			switch {
			case *id != "":
				if win.ID != *id {
					return nil
				}
			case i < *from:
				return nil
			case *to >= 0 && i >= *to:
				return errDone
			}
			if err := pw.WriteWindow(win); err != nil {
				return err
			}
			windows++
			if *id != "" {
				return errDone
			}
			return nil
		})
		packets = pw.Packets
		if errors.Is(err, errDone) {
			err = nil
		}
		if err == nil && windows == 0 {
			// An error, so that no empty capture is left behind.
			what := fmt.Sprintf("no window from index %d", *from)
			if *id != "" {
				what = fmt.Sprintf("no window %q", *id)
			}
			err = fmt.Errorf("dataset %s/%s: %s among the windows read (%s); window IDs are the window_id column of `homemole dataset export`; or widen --session, --uncapped",
				m.Dataset, m.Version, what, sessionWord(*session))
		}
		return err
	})
	if err != nil {
		return err
	}
	if *outPath != "-" {
		fmt.Fprintf(out, "dataset %s/%s: %d packets of %d windows written to %s (metadata rebuilt, not the original bytes)\n",
			m.Dataset, m.Version, packets, windows, *outPath)
	}
	return nil
}

func exportFlags(fs *flag.FlagSet) (name, version, outPath, session *string) {
	name = fs.String("dataset", "", "dataset name")
	version = fs.String("version", "v1", "dataset version")
	outPath = fs.String("out", "", "`FILE` to write; - writes to standard output")
	session = fs.String("session", "", "only this capture session: its `NAME` (lan-session-01), HOME/NAME, or its group HOME/session-01 (default: all)")
	return
}

// openSelection opens the store, the dataset an export reads and the
// filter of its --session; the caller closes the store.
func openSelection(ctx context.Context, ep endpoints.Config, log *slog.Logger, name, version, session string) (*endpoints.Env, *dataset.Manifest, func(group string) bool, error) {
	env, err := endpoints.OpenStore(ctx, ep, log)
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := dataset.Load(ctx, env.Store, name, version)
	if err != nil {
		env.Close()
		return nil, nil, nil, err
	}
	keep, err := sessionFilter(m, session)
	if err != nil {
		env.Close()
		return nil, nil, nil, err
	}
	return env, m, keep, nil
}

// sessionFilter keeps the groups of the sessions matching s ("" keeps all),
// refusing a name no part of the manifest has, which would export nothing.
func sessionFilter(m *dataset.Manifest, s string) (func(group string) bool, error) {
	if s == "" {
		return nil, nil
	}
	groups := map[string]bool{}
	for _, p := range m.Parts {
		if s == p.Session || s == p.Home+"/"+p.Session || s == window.GroupOf(p.Home, p.Session) {
			groups[window.GroupOf(p.Home, p.Session)] = true
		}
	}
	if len(groups) == 0 {
		return nil, fmt.Errorf("dataset %s/%s has no session %q; its sessions are the groups %v", m.Dataset, m.Version, s, m.Groups)
	}
	return func(g string) bool { return groups[g] }, nil
}

func sessionWord(s string) string {
	if s == "" {
		return "every session"
	}
	return "session " + s
}

// writeOutput writes to path through a temporary file renamed on success,
// so a failed export leaves no truncated file that looks complete, and
// records its SHA-256 beside it in path.sha256 (the format `sha256sum -c`
// checks), so a copy damaged later is caught; "-" writes to stdout.
func writeOutput(path string, stdout io.Writer, write func(io.Writer) error) (err error) {
	if path == "-" {
		bw := bufio.NewWriterSize(stdout, 1<<20)
		if err := write(bw); err != nil {
			return err
		}
		return bw.Flush()
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.partial")
	if err != nil {
		return fmt.Errorf("create %s: %w (does its folder exist and is it writable?)", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	if err := write(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	sum := fmt.Sprintf("%x  %s\n", h.Sum(nil), filepath.Base(path))
	if err := os.WriteFile(path+".sha256", []byte(sum), 0o644); err != nil {
		return fmt.Errorf("write %s.sha256: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
