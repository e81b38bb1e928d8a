package main

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
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

const gotchModule = gotchsrc.Module

// The binaries prepare builds, cgo ones linked to libtch.so.
var programs = []struct {
	pkg, name string
	cgo       bool
}{
	{"./services/homemole/full", "homemole", true},
	{"./tools/gpu/bench", "bench", true},
	{"./tools/gpu", "gpu", false},
}

// runPrepare builds, on a machine with Go, everything a GPU machine without
// Go needs: out/bin/*.gz (gzip: the device takes 64 MiB of working tree,
// and the trainer alone is about 50), and out/libtch-src, gotch's C layer
// as published, which `gpu layer` compiles there against its libtorch.
//
// The cgo binaries link to gotch's C layer as a shared library, libtch.so,
// instead of compiling it in: the layer has to be built against the
// device's libtorch, which is not here. They are linked here against a
// stub library with the layer's C symbols and nothing else (the C API is
// the same whatever libtorch is behind it); the real one is found at run
// time through LD_LIBRARY_PATH.
func runPrepare(args []string) error {
	fl := flag.NewFlagSet("prepare", flag.ContinueOnError)
	out := fl.String("out", "", "folder to write bin/ and libtch-src/ into (carried to the device)")
	build := fl.String("build", "", "scratch folder for the relinked gotch copy (default: OUT/../build)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("prepare needs --out DIR")
	}
	start := time.Now()
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return errors.New("run prepare from the repository root")
	}
	outDir, err := filepath.Abs(*out)
	if err != nil {
		return err
	}
	if *build == "" {
		*build = filepath.Join(filepath.Dir(outDir), "build")
	}
	buildDir, err := filepath.Abs(*build)
	if err != nil {
		return err
	}
	goVersion, gotchVersion, err := gotchsrc.ReadGoMod(filepath.Join(root, "go.mod"))
	if err != nil {
		return err
	}
	src, err := gotchsrc.ModuleDir(root, gotchVersion)
	if err != nil {
		return err
	}
	for _, d := range []string{outDir, buildDir} {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(outDir, "bin"), 0o755); err != nil {
		return err
	}
	gotch := filepath.Join(buildDir, "gotch")
	if err := gotchsrc.CopyTree(src, gotch, nil); err != nil {
		return fmt.Errorf("copy gotch: %w", err)
	}
	// The same result-slot patch as tools/gotchsetup's: the GPU trainer
	// would leak 40 bytes an operation without it.
	if _, err := gotchsrc.FreeOutSlots(filepath.Join(gotch, "ts")); err != nil {
		return fmt.Errorf("patch gotch's result slots: %w", err)
	}
	if err := gotchsrc.CopyTree(filepath.Join(src, "libtch"), filepath.Join(outDir, "libtch-src"), func(name string) bool {
		return slices.Contains(layerSources, name)
	}); err != nil {
		return fmt.Errorf("copy gotch's C layer: %w", err)
	}
	stub := filepath.Join(buildDir, "linkstub")
	if err := linkStub(filepath.Join(src, "libtch"), stub); err != nil {
		return err
	}
	// cgo compiles every .cpp in a package: without torch_api.cpp the
	// package is Go and C declarations only, and links to libtch.so.
	if err := os.Remove(filepath.Join(gotch, "libtch", "torch_api.cpp")); err != nil {
		return err
	}
	if err := relink(filepath.Join(gotch, "libtch", "lib.go"), stub); err != nil {
		return err
	}
	work := filepath.Join(buildDir, "go.work")
	if err := os.WriteFile(work, fmt.Appendf(nil, "// Written by tools/gpu prepare: gotch linked to libtch.so.\ngo %s\n\nuse %s\n\nreplace %s %s => %s\n",
		goVersion, root, gotchModule, gotchVersion, gotch), 0o644); err != nil {
		return err
	}
	for _, p := range programs {
		t := time.Now()
		bin := filepath.Join(buildDir, p.name)
		args := []string{"build", "-trimpath", "-ldflags=-s -w", "-o", bin}
		if p.cgo {
			// homemole's model commands (train, predict) are compiled only
			// with the torch tag; the device has no Go to build them there.
			args = append(args, "-tags", "torch")
		}
		cmd := exec.Command("go", append(args, p.pkg)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOWORK="+work, "CGO_ENABLED=1")
		if !p.cgo {
			cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
		}
		if o, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w\n%s", p.pkg, err, gotchsrc.FirstLines(string(o), 40))
		}
		size, err := gzipFile(bin, filepath.Join(outDir, "bin", p.name+".gz"))
		if err != nil {
			return err
		}
		log.Printf("built %s in %s (%.1f MB gzipped)", p.pkg, time.Since(t).Round(time.Second), float64(size)/1e6)
	}
	var total int64
	_ = filepath.WalkDir(outDir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	log.Printf("prepared %s in %s: %.1f MB to carry", outDir, time.Since(start).Round(time.Second), float64(total)/1e6)
	return nil
}

var cgoLineRe = regexp.MustCompile(`^//\s*#cgo\s`)

// relink replaces lib.go's cgo flags: no C++ flags (nothing is compiled
// here), and libtch.so instead of libtorch.
func relink(libGo, stubDir string) error {
	data, err := os.ReadFile(libGo)
	if err != nil {
		return err
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if cgoLineRe.MatchString(line) {
			continue
		}
		if strings.TrimSpace(line) == `import "C"` {
			out = append(out,
				"// Flags written by HomeMole's tools/gpu prepare: the C layer is libtch.so, built on the device.",
				"",
				"// #cgo CFLAGS: -I${SRCDIR} -O2",
				"// #cgo LDFLAGS: -L"+stubDir+" -ltch",
			)
		}
		out = append(out, line)
	}
	return os.WriteFile(libGo, []byte(strings.Join(out, "\n")), 0o644)
}

// cFuncRe finds the functions gotch's C headers declare.
var cFuncRe = regexp.MustCompile(`\b((?:at[gocsmi]?_|get_and_reset_last_err)\w*)\s*\(`)

// linkStub builds a libtch.so that defines every C function of the
// layer's headers and does nothing: enough for the linker here, never
// run (its soname is the real library's, which LD_LIBRARY_PATH finds).
func linkStub(libtch, dir string) error {
	names := map[string]bool{}
	for _, h := range []string{"torch_api.h", "torch_api_generated.h"} {
		data, err := os.ReadFile(filepath.Join(libtch, h))
		if err != nil {
			return err
		}
		for _, m := range cFuncRe.FindAllStringSubmatch(string(data), -1) {
			names[m[1]] = true
		}
	}
	if len(names) < 1000 {
		return fmt.Errorf("found only %d functions in gotch's C headers; this gotch version needs a new link stub", len(names))
	}
	var b bytes.Buffer
	b.WriteString("/* Written by tools/gpu prepare: symbols only, for linking; never loaded. */\n")
	for _, n := range slices.Sorted(func(yield func(string) bool) {
		for n := range names {
			if !yield(n) {
				return
			}
		}
	}) {
		fmt.Fprintf(&b, "void %s(void) {}\n", n)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	c := filepath.Join(dir, "stub.c")
	if err := os.WriteFile(c, b.Bytes(), 0o644); err != nil {
		return err
	}
	cc := envOr("CC", "gcc")
	if o, err := exec.Command(cc, "-shared", "-fPIC", "-o", filepath.Join(dir, "libtch.so"), "-Wl,-soname,libtch.so", c).CombinedOutput(); err != nil {
		return fmt.Errorf("build the link stub with %s: %w\n%s", cc, err, o)
	}
	return nil
}

func gzipFile(src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	f, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	zw, err := gzip.NewWriterLevel(f, gzip.BestCompression)
	if err != nil {
		f.Close()
		return 0, err
	}
	if _, err := io.Copy(zw, in); err != nil {
		f.Close()
		return 0, err
	}
	if err := zw.Close(); err != nil {
		f.Close()
		return 0, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return 0, err
	}
	return info.Size(), f.Close()
}

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
