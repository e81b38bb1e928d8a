package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/homemole/homemole/tools/internal/gotchsrc"
)

const sample = `#include<torch/torch.h>
#include "torch_api.h"
#define PLAIN 1
#define CONTINUED(x) \
  { x }

using namespace std;

// A comment with a brace { that is not code.
vector<torch::Tensor> of_carray_tensor(torch::Tensor **vs, int len) {
  vector<torch::Tensor> result;
  for (int i = 0; i < len; ++i)
    result.push_back(*(vs[i]));
  return result;
}

void at_free(tensor t) { delete (t); }

/* a block comment } */
template <class T> void set_lr(optimizer t, double learning_rate) {
  char c = '{';
  const char *s = "}\"{";
}

tensor at_new_tensor() {
  PROTECT(return new torch::Tensor();)
  return nullptr;
}
`

func TestTopLevelFuncs(t *testing.T) {
	fs, err := topLevelFuncs(sample)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range fs {
		names = append(names, f.name)
	}
	if want := []string{"of_carray_tensor", "at_free", "set_lr", "at_new_tensor"}; !slices.Equal(names, want) {
		t.Fatalf("functions %v, want %v", names, want)
	}
	voids := []bool{false, true, true, false}
	for i, f := range fs {
		if f.void != voids[i] {
			t.Errorf("%s: void %v, want %v", f.name, f.void, voids[i])
		}
		if sig := sample[f.start:f.open]; strings.Contains(sig, "\n\n") || strings.HasPrefix(sig, "//") {
			t.Errorf("%s: signature %q takes in more than the function", f.name, sig)
		}
		if sample[f.end-1] != '}' {
			t.Errorf("%s does not end at its closing brace", f.name)
		}
	}
	if got := strings.TrimSpace(sample[fs[0].start:fs[0].open]); got != "vector<torch::Tensor> of_carray_tensor(torch::Tensor **vs, int len)" {
		t.Errorf("signature %q", got)
	}
	for _, bad := range []string{"namespace x {\n}\n", "void f() {\n", "void f() }\n", "/* open", `void f() { "x }`} {
		if _, err := topLevelFuncs(bad); err == nil {
			t.Errorf("topLevelFuncs(%q) found no fault", bad)
		}
	}
}

func TestStubFuncs(t *testing.T) {
	line := func(s string) int { return strings.Count(sample[:strings.Index(sample, s)], "\n") + 1 }
	out, names, err := stubFuncs(sample, map[int]bool{line("delete (t)"): true, line("PROTECT(return"): true}, "9.9")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"at_free", "at_new_tensor"}) {
		t.Fatalf("stubbed %v", names)
	}
	if strings.Contains(out, "delete (t)") || strings.Contains(out, "new torch::Tensor") {
		t.Errorf("stubbed bodies remain:\n%s", out)
	}
	if !strings.Contains(out, "of_carray_tensor") || !strings.Contains(out, `"}\"{"`) {
		t.Errorf("untouched functions changed:\n%s", out)
	}
	// void functions get no return value, the others a zero one.
	fs, err := topLevelFuncs(out)
	if err != nil {
		t.Fatalf("stubbed text does not parse: %v\n%s", err, out)
	}
	for _, f := range fs {
		body := out[f.open:f.end]
		switch f.name {
		case "at_free":
			if strings.Contains(body, "return") || !strings.Contains(body, "at_free is not available in this libtorch (9.9)") {
				t.Errorf("at_free stub: %s", body)
			}
		case "at_new_tensor":
			if !strings.Contains(body, "return {};") {
				t.Errorf("at_new_tensor stub: %s", body)
			}
		}
	}
	// A function that fails again after its stub cannot be fixed by stubbing.
	if _, _, err := stubFuncs(out, map[int]bool{line("at_free"): true}, "9.9"); err == nil || !strings.Contains(err.Error(), "still fails") {
		t.Errorf("restubbing: %v", err)
	}
	if _, _, err := stubFuncs(sample, map[int]bool{1: true}, "9.9"); err == nil || !strings.Contains(err.Error(), "outside every function") {
		t.Errorf("an error on an include line: %v", err)
	}
}

func TestBlamed(t *testing.T) {
	out := `chunk_01.cpp: In function 'void atg_x(tensor*, tensor)':
chunk_01.cpp:12:40: error: 'x' is not a member of 'torch'
/usr/include/ATen/core/TensorBody.h:99:5: error: no matching function
chunk_01.cpp:30:7:   required from here
torch_api.cpp:5:1: error: elsewhere
chunk_01.cpp:31:7: warning: only a warning
`
	lines, elsewhere := blamed(out, "chunk_01.cpp")
	if len(lines) != 2 || !lines[12] || !lines[30] || !elsewhere {
		t.Errorf("blamed %v, elsewhere %v", lines, elsewhere)
	}
	if lines, elsewhere := blamed("chunk_02.cpp:3:1: error: x\n", "chunk_02.cpp"); len(lines) != 1 || elsewhere {
		t.Errorf("blamed %v, elsewhere %v", lines, elsewhere)
	}
}

// TestSplitLayer splits gotch's real C layer: the prelude declares the
// helpers, the chunks hold every wrapper once, the error slot is defined once.
func TestSplitLayer(t *testing.T) {
	src, err := gotchsrc.ModuleDir(repoRoot(t), "v0.7.0")
	if err != nil {
		t.Skipf("gotch's source is not in the module cache and cannot be fetched: %v", err)
	}
	files := map[string]string{}
	for _, name := range layerSources {
		b, err := os.ReadFile(filepath.Join(src, "libtch", name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(b)
	}
	gen := files["torch_api_generated.cpp.h"]
	units, err := splitLayer(files, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(units) != 6 || units[0] != "torch_api.cpp" {
		t.Fatalf("units %v", units)
	}
	wrappers := 0
	for _, u := range units[1:] {
		fs, err := topLevelFuncs(files[u])
		if err != nil {
			t.Fatal(err)
		}
		wrappers += len(fs)
	}
	all, _ := topLevelFuncs(gen)
	if wrappers != len(all) || len(all) < 1000 {
		t.Errorf("%d wrappers in the chunks, %d in gotch's file", wrappers, len(all))
	}
	for _, h := range wrapperHelpers {
		if !strings.Contains(files["prelude.h"], h+"(") {
			t.Errorf("prelude lacks %s:\n%s", h, files["prelude.h"])
		}
	}
	if strings.Count(files["torch_api.cpp"], "thread_local char *torch_last_err = nullptr;") != 1 ||
		!strings.Contains(files["torch_api.h"], "extern thread_local char *torch_last_err;") {
		t.Error("the error slot is not declared in the header and defined once")
	}
	if strings.Contains(files["torch_api.cpp"], "torch_api_generated.cpp.h") {
		t.Error("torch_api.cpp still includes the generated wrappers")
	}
}

func repoRoot(t *testing.T) string {
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func FuzzTopLevelFuncs(f *testing.F) {
	f.Add(sample)
	f.Add("void f() { if (x) { y; } }\n")
	f.Add("#define X \\\n {\nint g() { return '}'; }")
	f.Fuzz(func(t *testing.T, text string) {
		fs, err := topLevelFuncs(text)
		if err != nil {
			return
		}
		prev := 0
		for _, fn := range fs {
			if fn.start < prev || fn.start > fn.open || fn.open >= fn.end || fn.end > len(text) || text[fn.open] != '{' || text[fn.end-1] != '}' {
				t.Fatalf("function %+v out of order or bounds in %q", fn, text)
			}
			prev = fn.end
		}
		lines := map[int]bool{}
		for _, fn := range fs {
			lines[lineOf(text, fn.open)] = true
		}
		if out, _, err := stubFuncs(text, lines, "x"); err == nil {
			if _, err := topLevelFuncs(out); err != nil {
				t.Fatalf("stubbed text does not parse: %v\n%q", err, out)
			}
		}
	})
}

func TestDropMissingIncludes(t *testing.T) {
	work := t.TempDir()
	src := "#include <torch/torch.h>\n#include <torch/csrc/jit/passes/gone.h>\nint f() { return 1; }\n"
	if err := os.WriteFile(filepath.Join(work, "prelude.h"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := "In file included from chunk_00.cpp:2:\nprelude.h:2:10: fatal error: torch/csrc/jit/passes/gone.h: No such file or directory\n" +
		"/usr/include/x.h:3:10: fatal error: y.h: No such file or directory\n"
	dropped, err := dropMissingIncludes(work, out)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dropped, []string{"torch/csrc/jit/passes/gone.h"}) {
		t.Errorf("dropped %v", dropped)
	}
	b, _ := os.ReadFile(filepath.Join(work, "prelude.h"))
	if !strings.Contains(string(b), "#include <torch/torch.h>\n// homemole: dropped") || strings.Count(string(b), "\n") != 3 {
		t.Errorf("prelude now:\n%s", b)
	}
	// The same output again drops nothing more.
	if dropped, _ := dropMissingIncludes(work, out); len(dropped) != 0 {
		t.Errorf("dropped %v twice", dropped)
	}
}
