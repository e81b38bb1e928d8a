package modroot

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFindPassesNestedModules runs Find from inside a nested module: the
// nearest go.mod wins without a module path, this module's with one.
func TestFindPassesNestedModules(t *testing.T) {
	root := t.TempDir()
	nested := filepath.Join(root, ".build", "dep", "sub")
	if err := os.MkdirAll(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(path, text string) {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(root, "go.mod"), "// a comment first\nmodule example.com/home\n\ngo 1.25\n")
	write(filepath.Join(root, ".build", "dep", "go.mod"), "module github.com/other/dep\n")
	t.Chdir(nested)
	if got, err := Find(""); err != nil || got != filepath.Join(root, ".build", "dep") {
		t.Errorf(`Find("") = %q, %v; want the nested module's folder`, got, err)
	}
	if got, err := Find("example.com/home"); err != nil || got != root {
		t.Errorf("Find(example.com/home) = %q, %v; want %q", got, err, root)
	}
	if got, err := Find("example.com/none"); err == nil {
		t.Errorf("Find(example.com/none) = %q, want an error", got)
	}
}
