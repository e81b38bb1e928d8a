package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWrite: a write that fails leaves the file as it was and no temporary
// file behind; one that succeeds replaces it whole.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.json")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := Write(path, func(w io.Writer) error { w.Write([]byte("half")); return boom }); !errors.Is(err, boom) {
		t.Fatalf("a failed write returned %v, want its error", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("after a failed write the file holds %q, want the old content", b)
	}
	if err := Write(path, func(w io.Writer) error { _, err := w.Write([]byte("new")); return err }); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Errorf("the file holds %q, want the new content", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%d files in the folder, want the model alone", len(ents))
	}
	if err := Write(filepath.Join(dir, "no", "such", "dir"), func(io.Writer) error { return nil }); err == nil {
		t.Error("a write into a missing folder succeeded")
	}
}

// TestFiles: outputs written together are created before either is
// written, so a missing folder fails at once; an aborted pair leaves
// neither name nor temporary file; a committed pair has both, readable by
// all, and a deferred Abort after Commit keeps them.
func TestFiles(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.pcap"), filepath.Join(dir, "b.csv")
	if _, err := Create(filepath.Join(dir, "no", "b.csv")); err == nil || !strings.Contains(err.Error(), "folder exist") {
		t.Errorf("an output in a missing folder: %v, want an error asking whether its folder exists", err)
	}
	fa, err := Create(a)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := Create(b)
	if err != nil {
		t.Fatal(err)
	}
	fa.Write([]byte("half"))
	fa.Abort()
	fb.Abort()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("%d files after an abort, want none", len(ents))
	}
	fa, _ = Create(a)
	fb, _ = Create(b)
	fa.Write([]byte("capture"))
	fb.Write([]byte("truth"))
	if err := Commit(fa, fb); err != nil {
		t.Fatal(err)
	}
	fa.Abort()
	for p, want := range map[string]string{a: "capture", b: "truth"} {
		st, err := os.Stat(p)
		if b, _ := os.ReadFile(p); err != nil || string(b) != want || st.Mode().Perm() != 0o644 {
			t.Errorf("%s: %q (%v), want %q, mode 0644", p, b, err, want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("%d files after a commit, want the two outputs", len(ents))
	}
}
