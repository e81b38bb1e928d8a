// Package atomicfile writes a file whole or not at all: through a
// temporary file beside it, renamed over the name once written and
// closed, so a crash or an error part-way never leaves half a file (a
// model, a capture, its truth) under the name.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write writes path with write. What write returns is returned as is; the
// file's own errors name path.
func Write(path string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.partial")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// File is an output being written: a temporary file beside its path
// (.NAME.*.partial) that Commit renames over the path and Abort removes.
// A command that writes several outputs creates them all before it
// writes any, so a missing or unwritable folder fails before any work,
// and commits them only once all are written: an error part-way leaves
// none behind, nor an empty or truncated file under any name.
type File struct {
	*os.File
	path string
	done bool
}

// Create starts the output path. Its error names path and says what to
// check.
func Create(path string) (*File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.partial")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w (does its folder exist and is it writable?)", path, err)
	}
	return &File{File: f, path: path}, nil
}

// Path is the name the output gets once committed.
func (f *File) Path() string { return f.path }

// Commit closes the output and renames it over its path, readable by all
// (0644) as a file os.Create made would be under the usual umask.
func (f *File) Commit() error {
	if f.done {
		return nil
	}
	f.done = true
	err := f.File.Close()
	if err == nil {
		err = os.Chmod(f.File.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.File.Name(), f.path)
	}
	if err != nil {
		os.Remove(f.File.Name())
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	return nil
}

// Abort closes and removes the output; after Commit it does nothing, so
// a deferred Abort cleans up whatever path a command leaves by.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	os.Remove(f.File.Name())
}

// Commit commits files in order; on an error it aborts those not yet
// committed.
func Commit(files ...*File) error {
	var errs []error
	for _, f := range files {
		if len(errs) > 0 {
			f.Abort()
			continue
		}
		if err := f.Commit(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
