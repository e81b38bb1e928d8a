package gotchsrc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFreeOutSlots patches a file shaped like gotch's: every result slot
// is sized and freed once, a slot already freed is not freed twice, and a
// folder without any is an error.
func TestFreeOutSlots(t *testing.T) {
	dir := t.TempDir()
	src := `package ts

func Neg() {
  ptr := (*lib.Ctensor)(unsafe.Pointer(C.malloc(0)))
  
  lib.AtgNeg(ptr)
}

func RunBackward() {
	for range tensors {
		outputPtr := (*lib.Ctensor)(unsafe.Pointer(C.malloc(0)))
		defer C.free(unsafe.Pointer(outputPtr))
	}
}
`
	if err := os.WriteFile(filepath.Join(dir, "a.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := FreeOutSlots(dir)
	if err != nil || n != 2 {
		t.Fatalf("FreeOutSlots: %d slots, %v; want 2", n, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "a.go"))
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, want := range []string{
		"  ptr := (*lib.Ctensor)(unsafe.Pointer(C.malloc(64)))\n  defer C.free(unsafe.Pointer(ptr))\n",
		"\t\toutputPtr := (*lib.Ctensor)(unsafe.Pointer(C.malloc(64)))\n\t\tdefer C.free(unsafe.Pointer(outputPtr))\n\t}",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("patched file lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "malloc(0)") || strings.Count(got, "C.free") != 2 {
		t.Errorf("want every malloc(0) replaced and each slot freed once:\n%s", got)
	}
	if _, err := FreeOutSlots(dir); err == nil {
		t.Error("a second pass found slots to patch in an already patched folder")
	}
}
