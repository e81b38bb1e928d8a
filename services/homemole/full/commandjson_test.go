package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// commandJSON runs homemole NAME with args and --json FILE, logs what it
// printed and decodes FILE into got. It returns FILE, for tests that feed it
// to a later command, and its bytes, for failure messages.
func commandJSON(t *testing.T, name string, got any, args ...string) (file string, raw []byte) {
	t.Helper()
	file = filepath.Join(t.TempDir(), "out.json")
	var out bytes.Buffer
	if err := commands()[name].run(context.Background(), quiet(), &out, append(slices.Clip(args), "--json", file)); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out.String())
	}
	t.Logf("%s", out.String())
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, got); err != nil {
		t.Fatalf("%s --json: %v", name, err)
	}
	return file, raw
}
