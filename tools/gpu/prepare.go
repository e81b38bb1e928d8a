package main

import (
	"bytes"
	"compress/gzip"
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
	"slices"
	"strings"
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
