package gotchsrc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadGoMod reads the repository's own go.mod, and refuses one without
// a go directive or without gotch, naming the file and the fix.
func TestReadGoMod(t *testing.T) {
	goVersion, gotchVersion, err := ReadGoMod(filepath.Join("..", "..", "..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(goVersion, "1.") || !strings.HasPrefix(gotchVersion, "v0.") {
		t.Errorf("go %q, gotch %q: want go 1.x and gotch v0.x", goVersion, gotchVersion)
	}
	dir := t.TempDir()
	for name, body := range map[string]string{
		"no go directive": "module x\n\nrequire " + Module + " v0.7.0\n",
		"no gotch":        "module x\n\ngo 1.24\n\nrequire golang.org/x/text v0.1.0\n",
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".mod")
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ReadGoMod(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v, want an error naming %s", name, err, path)
		}
	}
	if _, _, err := ReadGoMod(filepath.Join(dir, "missing.mod")); err == nil {
		t.Error("a missing go.mod read without an error")
	}
}

// TestCopyTree copies a read-only tree (as the module cache holds it) into
// a writable one, keeping only the chosen files and the executable bit.
func TestCopyTree(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "libtch"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"libtch/lib.go": 0o444, "libtch/build.sh": 0o555, "README.md": 0o444} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(name), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := CopyTree(src, dst, func(name string) bool { return name != "README.md" }); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{"libtch/lib.go": 0o644, "libtch/build.sh": 0o755} {
		info, err := os.Stat(filepath.Join(dst, name))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s copied with mode %v, want %v", name, info.Mode().Perm(), want)
		}
		if b, _ := os.ReadFile(filepath.Join(dst, name)); string(b) != name {
			t.Errorf("%s holds %q", name, b)
		}
	}
	if _, err := os.Stat(filepath.Join(dst, "README.md")); err == nil {
		t.Error("README.md was copied though keep refused it")
	}
}
