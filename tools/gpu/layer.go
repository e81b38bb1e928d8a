package main

import (
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/homemole/homemole/tools/internal/gotchsrc"
)

// libtorch is a libtorch tree as the layer is compiled and linked against it.
type libtorch struct {
	Root, Include, API, Lib string
	Version                 string
	CUDA                    bool // lib holds libtorch_cuda.so: link it, so CUDA registers itself
	CXX11ABI                int  // _GLIBCXX_USE_CXX11_ABI libtorch was built with
	Std                     int  // C++ standard its headers want
}

// findLibtorch reads a libtorch tree: PyTorch's torch/ folder (include/,
// lib/), a libtorch zip, or /usr for Debian's libtorch-dev (lib/<multiarch>).
func findLibtorch(root string) (libtorch, error) {
	t := libtorch{Root: root, Include: filepath.Join(root, "include"), Std: 17}
	t.API = filepath.Join(t.Include, "torch/csrc/api/include")
	versionH := filepath.Join(t.API, "torch/version.h")
	data, err := os.ReadFile(versionH)
	if err != nil {
		return t, fmt.Errorf("libtorch at %s: %w (want a folder with include/torch/csrc/api/include and lib/libtorch.so: PyTorch's site-packages/torch, or /usr with Debian's libtorch-dev)", root, err)
	}
	m := regexp.MustCompile(`#define\s+TORCH_VERSION\s*\\?\s*"([^"]+)"`).FindSubmatch(data)
	if m == nil {
		return t, fmt.Errorf("libtorch at %s: no TORCH_VERSION in %s", root, versionH)
	}
	t.Version = string(m[1])
	candidates := []string{filepath.Join(root, "lib"), filepath.Join(root, "lib64")}
	more, _ := filepath.Glob(filepath.Join(root, "lib", "*-linux-gnu"))
	for _, dir := range append(candidates, more...) {
		if _, err := os.Stat(filepath.Join(dir, "libtorch_cpu.so")); err == nil {
			t.Lib = dir
			break
		}
	}
	if t.Lib == "" {
		return t, fmt.Errorf("libtorch at %s: no libtorch_cpu.so in lib/, lib64/ or lib/<multiarch>/", root)
	}
	if _, err := os.Stat(filepath.Join(t.Lib, "libtorch_cuda.so")); err == nil {
		t.CUDA = true
	}
	if t.CXX11ABI, err = cxx11ABI(filepath.Join(t.Lib, "libc10.so")); err != nil {
		return t, err
	}
	// PyTorch's CMake files say which standard its headers need; Debian's
	// 1.13 says nothing and wants C++17.
	for _, f := range []string{"share/cmake/Caffe2/Caffe2Targets.cmake", "share/cmake/Torch/TorchConfig.cmake"} {
		if b, err := os.ReadFile(filepath.Join(root, f)); err == nil {
			for _, m := range regexp.MustCompile(`cxx_std_(\d+)`).FindAllSubmatch(b, -1) {
				var n int
				fmt.Sscan(string(m[1]), &n)
				t.Std = max(t.Std, n)
			}
		}
	}
	return t, nil
}

// cxx11ABI tells which std::string ABI a library was built with: symbols
// of the new one carry __cxx11 in their mangled names. Compiling the layer
// with the other ABI links, then fails at load with undefined symbols.
func cxx11ABI(lib string) (int, error) {
	f, err := elf.Open(lib)
	if err != nil {
		return 0, fmt.Errorf("read %s to learn its C++ ABI: %w", lib, err)
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil {
		return 0, fmt.Errorf("read the symbols of %s: %w", lib, err)
	}
	for _, s := range syms {
		if strings.Contains(s.Name, "__cxx11") {
			return 1, nil
		}
	}
	return 0, nil
}

// layerSources are gotch's C layer files the build needs.
var layerSources = []string{"torch_api.cpp", "torch_api.h", "torch_api_generated.cpp.h", "torch_api_generated.h",
	"stb_image.h", "stb_image_write.h", "stb_image_resize.h"}

// wrapperHelpers are torch_api.cpp's functions that the generated wrappers
// call; each chunk of wrappers gets their declarations.
var wrapperHelpers = []string{"of_carray_tensor", "of_carray_tensor_opt", "device_of_int"}

type unit struct {
	file string // in the work folder
	obj  string
}

// buildLayer compiles gotch's C layer (libtch) against t into out/libtch.so.
// The generated wrappers are cut into chunks compiled in parallel: one
// translation unit of them takes minutes, most of it in libtorch's headers.
// A wrapper or function that does not compile against this libtorch is
// stubbed (it returns gotch's error instead) and its unit compiled again.
func buildLayer(t libtorch, src, out, cxx string, jobs int) ([]string, error) {
	start := time.Now()
	work := filepath.Join(out, "src")
	if err := os.RemoveAll(work); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(out, "obj"), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, err
	}
	read := func(name string) (string, error) {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			return "", fmt.Errorf("gotch's C layer source: %w", err)
		}
		return string(b), nil
	}
	files := map[string]string{}
	for _, name := range layerSources {
		s, err := read(name)
		if err != nil {
			return nil, err
		}
		files[name] = s
	}
	units, err := splitLayer(files, max(jobs, 1))
	if err != nil {
		return nil, err
	}
	for name, s := range files {
		if name == "torch_api_generated.cpp.h" {
			continue // its wrappers are in the chunks
		}
		if err := os.WriteFile(filepath.Join(work, name), []byte(s), 0o644); err != nil {
			return nil, err
		}
	}
	var us []unit
	for _, name := range units {
		us = append(us, unit{file: name, obj: filepath.Join(out, "obj", strings.TrimSuffix(name, ".cpp")+".o")})
	}
	log.Printf("compiling gotch's C layer against libtorch %s (%s, C++%d, cxx11 ABI %d) as %d units, %d at a time",
		t.Version, map[bool]string{true: "CUDA", false: "CPU"}[t.CUDA], t.Std, t.CXX11ABI, len(us), jobs)

	var stubbed []string
	pending := us
	triedStd := false
	for round := 1; len(pending) > 0; round++ {
		if round > 8 {
			return nil, fmt.Errorf("the C layer still fails to compile after %d rounds of stubbing", round-1)
		}
		rt := time.Now()
		fails := compileUnits(t, work, cxx, pending, jobs)
		var next []unit
		headerOnly := 0
		for _, u := range pending {
			out, failed := fails[u.file]
			if !failed {
				continue
			}
			dropped, err := dropMissingIncludes(work, out)
			if err != nil {
				return nil, err
			}
			if len(dropped) > 0 {
				// A header this libtorch moved or removed: what needed it
				// fails in the next round and is stubbed then.
				log.Printf("%s: dropped #includes this libtorch lacks: %s", u.file, strings.Join(dropped, ", "))
				next = append(next, u)
				continue
			}
			lines, elsewhere := blamed(out, u.file)
			if len(lines) == 0 {
				if elsewhere {
					headerOnly++
					next = append(next, u)
					continue
				}
				return nil, fmt.Errorf("compile %s:\n%s", u.file, gotchsrc.FirstLines(out, 40))
			}
			path := filepath.Join(work, u.file)
			text, err := os.ReadFile(path)
			if err != nil {
				return nil, err
			}
			patched, names, err := stubFuncs(string(text), lines, t.Version)
			if err != nil {
				return nil, fmt.Errorf("stub what fails in %s: %w\ncompiler output:\n%s", u.file, err, gotchsrc.FirstLines(out, 40))
			}
			if err := os.WriteFile(path, []byte(patched), 0o644); err != nil {
				return nil, err
			}
			stubbed = append(stubbed, names...)
			next = append(next, u)
		}
		if headerOnly > 0 {
			// Errors only inside libtorch's headers: they want a newer
			// standard than their CMake files said (or than 17).
			if triedStd || t.Std >= 20 {
				return nil, fmt.Errorf("compile %s: errors inside libtorch's or the layer's headers, which stubbing cannot fix:\n%s", next[0].file, gotchsrc.FirstLines(fails[next[0].file], 40))
			}
			triedStd, t.Std = true, 20
			log.Printf("errors inside libtorch's headers with C++17: compiling everything again as C++20")
			next = us
		}
		log.Printf("round %d: %d units compiled in %s, %d to compile again (%d functions stubbed so far)",
			round, len(pending), time.Since(rt).Round(time.Second), len(next), len(stubbed))
		pending = next
	}

	lib := filepath.Join(out, "libtch.so")
	args := []string{"-shared", "-o", lib}
	for _, u := range us {
		args = append(args, u.obj)
	}
	// --no-as-needed: nothing in the layer names a symbol of libtorch_cuda,
	// yet without it loaded CUDA looks absent at run time.
	args = append(args, "-Wl,-soname,libtch.so", "-L"+t.Lib, "-Wl,-rpath,"+t.Lib, "-Wl,--no-as-needed", "-ltorch", "-ltorch_cpu", "-lc10")
	if t.CUDA {
		args = append(args, "-ltorch_cuda", "-lc10_cuda")
	}
	args = append(args, "-Wl,--as-needed")
	if o, err := exec.Command(cxx, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("link %s: %w\n%s", lib, err, gotchsrc.FirstLines(string(o), 40))
	}
	slices.Sort(stubbed)
	list := strings.Join(stubbed, "\n")
	if list != "" {
		list += "\n"
	}
	if err := os.WriteFile(filepath.Join(out, "stubbed.txt"), []byte(list), 0o644); err != nil {
		return nil, err
	}
	log.Printf("wrote %s in %s: %d functions stubbed (listed in %s)", lib, time.Since(start).Round(time.Second), len(stubbed), filepath.Join(out, "stubbed.txt"))
	return stubbed, nil
}

var missingIncludeRe = regexp.MustCompile(`(?m)^([^\s:]+):(\d+):\d+: fatal error: (\S+): No such file or directory`)

// dropMissingIncludes comments out each #include of the layer's own files
// (in work) that g++ could not find, and returns the headers dropped.
func dropMissingIncludes(work, out string) ([]string, error) {
	var dropped []string
	for _, m := range missingIncludeRe.FindAllStringSubmatch(out, -1) {
		path := filepath.Join(work, filepath.Base(m[1]))
		text, err := os.ReadFile(path)
		if err != nil {
			continue // a libtorch header's own include: not ours to drop
		}
		lines := strings.Split(string(text), "\n")
		var n int
		fmt.Sscan(m[2], &n)
		if n < 1 || n > len(lines) || !strings.HasPrefix(strings.TrimSpace(lines[n-1]), "#include") {
			continue
		}
		lines[n-1] = "// homemole: dropped by tools/gpu, not in this libtorch: " + lines[n-1]
		if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
			return nil, err
		}
		dropped = append(dropped, m[3])
	}
	return dropped, nil
}

// splitLayer rewrites the layer's sources for separate compilation and
// returns the translation units: torch_api.cpp without the generated
// wrappers, and chunk_NN.cpp files holding them. torch_api.h defines the
// error slot in every file that includes it, which one library of several
// units cannot have: the header now declares it and torch_api.cpp defines it.
func splitLayer(files map[string]string, chunks int) ([]string, error) {
	const def = "thread_local char *torch_last_err = nullptr;"
	h := files["torch_api.h"]
	if !strings.Contains(h, def) {
		return nil, errors.New("torch_api.h does not define torch_last_err as expected; this gotch version needs a new split")
	}
	files["torch_api.h"] = strings.Replace(h, def, "extern thread_local char *torch_last_err;", 1)

	api := files["torch_api.cpp"]
	const genInc = `#include "torch_api_generated.cpp.h"`
	const apiInc = `#include "torch_api.h"`
	if !strings.Contains(api, genInc) || !strings.Contains(api, apiInc) {
		return nil, errors.New("torch_api.cpp does not include torch_api.h and the generated wrappers as expected")
	}
	api = strings.Replace(api, genInc, "", 1)
	api = strings.Replace(api, apiInc, apiInc+"\n"+def, 1)
	files["torch_api.cpp"] = api

	// The chunks' prelude: torch_api.cpp's libtorch includes, the header,
	// and declarations of the helpers the wrappers call.
	var pre strings.Builder
	pre.WriteString("// Written by HomeMole's tools/gpu: what each chunk of gotch's generated wrappers needs.\n#pragma once\n")
	for _, line := range strings.Split(api, "\n") {
		l := strings.TrimSpace(line)
		if strings.HasPrefix(l, "#include") && !strings.Contains(l, "stb_") && !strings.Contains(l, "torch_api") {
			pre.WriteString(l + "\n")
		}
	}
	pre.WriteString(apiInc + "\nusing namespace std;\n")
	funcs, err := topLevelFuncs(api)
	if err != nil {
		return nil, fmt.Errorf("read torch_api.cpp's functions: %w", err)
	}
	for _, name := range wrapperHelpers {
		k := slices.IndexFunc(funcs, func(f cfunc) bool { return f.name == name })
		if k < 0 {
			return nil, fmt.Errorf("torch_api.cpp has no %s, which the generated wrappers call", name)
		}
		pre.WriteString(strings.TrimSpace(api[funcs[k].start:funcs[k].open]) + ";\n")
	}
	files["prelude.h"] = pre.String()

	gen := files["torch_api_generated.cpp.h"]
	wrappers, err := topLevelFuncs(gen)
	if err != nil {
		return nil, fmt.Errorf("read the generated wrappers: %w", err)
	}
	if len(wrappers) == 0 {
		return nil, errors.New("no wrappers in torch_api_generated.cpp.h")
	}
	units := []string{"torch_api.cpp"}
	per := (len(wrappers) + chunks - 1) / chunks
	for c := 0; c*per < len(wrappers); c++ {
		var b strings.Builder
		b.WriteString("// Written by HomeMole's tools/gpu: a share of gotch's torch_api_generated.cpp.h.\n#include \"prelude.h\"\n\n")
		for _, w := range wrappers[c*per : min((c+1)*per, len(wrappers))] {
			b.WriteString(gen[w.start:w.end] + "\n\n")
		}
		name := fmt.Sprintf("chunk_%02d.cpp", c)
		files[name] = b.String()
		units = append(units, name)
	}
	return units, nil
}

// compileUnits compiles units in parallel and returns the compiler output
// of each unit that failed.
func compileUnits(t libtorch, work, cxx string, us []unit, jobs int) map[string]string {
	var mu sync.Mutex
	fails := map[string]string{}
	sem := make(chan struct{}, max(jobs, 1))
	var wg sync.WaitGroup
	for _, u := range us {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			// -O1: the wrappers only forward calls; -O2 and above cost
			// compile time and buy nothing measurable.
			cmd := exec.Command(cxx, fmt.Sprintf("-std=c++%d", t.Std), "-fPIC", "-O1", "-w", "-fmax-errors=0",
				fmt.Sprintf("-D_GLIBCXX_USE_CXX11_ABI=%d", t.CXX11ABI), "-I.", "-I"+t.Include, "-I"+t.API,
				"-c", u.file, "-o", u.obj)
			cmd.Dir = work
			var buf bytes.Buffer
			cmd.Stdout, cmd.Stderr = &buf, &buf
			if err := cmd.Run(); err != nil {
				mu.Lock()
				fails[u.file] = buf.String() + "\n" + err.Error()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return fails
}

func runLayer(args []string) error {
	fl := flag.NewFlagSet("layer", flag.ContinueOnError)
	root := fl.String("libtorch", "", "libtorch folder: PyTorch's site-packages/torch, a libtorch zip's folder, or /usr (Debian's libtorch-dev)")
	src := fl.String("src", "", "gotch's libtch folder (torch_api.cpp and its headers)")
	out := fl.String("out", "", "folder for libtch.so, its objects and the list of stubbed functions")
	cxx := fl.String("cxx", envOr("CXX", firstFound("g++", "c++", "clang++")), "C++ compiler (env CXX; default the first of g++, c++, clang++ on PATH)")
	jobs := fl.Int("jobs", runtime.NumCPU(), "compilers run at once (and chunks the wrappers are cut into)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *root == "" || *src == "" || *out == "" {
		return errors.New("layer needs --libtorch DIR --src DIR --out DIR")
	}
	if _, err := exec.LookPath(*cxx); err != nil {
		return fmt.Errorf("no C++ compiler %q (install g++ or set CXX): %w", *cxx, err)
	}
	t, err := findLibtorch(*root)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(*src, "torch_api.cpp")); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("--src %s holds no torch_api.cpp: give gotch's libtch folder (run.sh prepare copies it)", *src)
	}
	_, err = buildLayer(t, *src, *out, *cxx, *jobs)
	return err
}

// firstFound returns the first program on PATH, else the first name (whose
// absence the caller then reports).
func firstFound(names ...string) string {
	for _, n := range names {
		if _, err := exec.LookPath(n); err == nil {
			return n
		}
	}
	return names[0]
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
