//go:build torch

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/homemole/homemole/pipeline/train"
)

// TestReadFamilies reads the families a cv run wrote and refuses files
// that carry none, saying what to run.
func TestReadFamilies(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("cv.json", train.CVResult{Family: &train.FamilyScore{Families: [][]string{{"TP-LinkPlugHS100", "TP-LinkPlugHS110"}}}})
	fams, err := readFamilies(good)
	if err != nil {
		t.Fatal(err)
	}
	if familyOfDevice(fams, "TP-LinkPlugHS110") != "TP-LinkPlugHS" || familyOfDevice(fams, "Aria") != "Aria" {
		t.Fatalf("families %v", fams)
	}
	none := write("one-fold.json", train.CVResult{Mode: train.CVTime})
	if _, err := readFamilies(none); err == nil || !strings.Contains(err.Error(), "two folds or more") {
		t.Fatalf("readFamilies(one fold) = %v, want an error saying it needs two folds", err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte("{"), 0o644)
	if _, err := readFamilies(bad); err == nil || !strings.Contains(err.Error(), "not a cv.json") {
		t.Fatalf("readFamilies(bad) = %v", err)
	}
	if _, err := readFamilies(filepath.Join(dir, "missing.json")); err == nil || !strings.Contains(err.Error(), "--families") {
		t.Fatalf("readFamilies(missing) = %v", err)
	}
}
