// Command gotchsetup prepares the patched copy of gotch that pipeline/learn
// builds against, and the go.work that points the build at it.
//
// gotch as published cannot build here: its libtch/lib.go hard-codes CUDA
// link flags, and its generated C++ wrappers target libtorch 1.11, so some of
// them do not compile against Debian's libtorch 1.13. The module cache is
// read-only and gotch's source must not be committed, so the copy lives in
// the git-ignored .build/gotch and a git-ignored go.work replaces the module
// with it. go.mod stays untouched: a checkout without this step still builds
// every package that does not import gotch.
//
// Run from the repository root: go run ./tools/gotchsetup
//
// The step is idempotent: a stamp records what the copy was made from, and a
// rerun with nothing changed returns without compiling anything.
//
// Environment:
//
//	HOMEMOLE_TORCH=cuda  write CUDA link flags instead of the CPU ones
//	LIBTORCH=/path       a libtorch tree (include/, lib/); CUDA mode only
//	CUDA_HOME=/path      the CUDA toolkit; CUDA mode only, default /usr/local/cuda
//	CXX                  the C++ compiler for the syntax check, as for cgo (default g++)
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/homemole/homemole/internal/modroot"
	"github.com/homemole/homemole/tools/internal/gotchsrc"
)

// patchVersion changes whenever the way the copy is patched changes, so that
// existing copies made by older logic are redone.
const patchVersion = "3"

const (
	gotchModule = gotchsrc.Module
	copyDir     = ".build/gotch"
	stampName   = ".homemole-stamp"
	stubsName   = ".homemole-stubbed"

	genFile = "libtch/torch_api_generated.cpp.h"
	apiFile = "libtch/torch_api.cpp"
	libFile = "libtch/lib.go"

	// Debian's libtorch-dev puts the C++ API headers here, next to the ATen
	// headers in /usr/include.
	debianTorchAPIInclude = "/usr/include/torch/csrc/api/include"

	// The cgo build after the syntax pass rarely needs a second round; the
	// bound only stops a patch that cannot converge.
	maxRounds = 4
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("gotchsetup: ")
	force := flag.Bool("force", false, "redo the copy even if the stamp says it is current")
	flag.Parse()
	if err := run(*force); err != nil {
		log.Fatalf("error: %v", err)
	}
}

// torchMode is where libtorch comes from and how the copy links against it.
type torchMode struct {
	Name      string // "cpu" or "cuda"
	Includes  []string
	LibDir    string // empty: the linker's default search path
	CUDAHome  string
	TorchVers string
}

func run(force bool) error {
	start := time.Now()
	root, err := findRepoRoot()
	if err != nil {
		return err
	}
	goVersion, gotchVersion, err := gotchsrc.ReadGoMod(filepath.Join(root, "go.mod"))
	if err != nil {
		return err
	}
	mode, err := detectTorch()
	if err != nil {
		return err
	}
	cxx := os.Getenv("CXX")
	if cxx == "" {
		cxx = "g++"
	}
	stamp := stampFor(gotchVersion, mode, cxx)
	work := goWorkFor(goVersion, gotchVersion)

	dst := filepath.Join(root, copyDir)
	if !force && copyIsCurrent(dst, stamp) {
		changed, err := writeIfChanged(filepath.Join(root, "go.work"), work)
		if err != nil {
			return fmt.Errorf("write go.work: %w", err)
		}
		if changed {
			log.Printf("wrote go.work")
		}
		log.Printf("gotch %s already patched for libtorch %s (%s) in %s (%s)", gotchVersion, mode.TorchVers, mode.Name, copyDir, time.Since(start).Round(time.Millisecond))
		return nil
	}

	if _, err := exec.LookPath(cxx); err != nil {
		return fmt.Errorf("find the C++ compiler %q (install g++, or set CXX): %w", cxx, err)
	}
	src, err := gotchsrc.ModuleDir(root, gotchVersion)
	if err != nil {
		return err
	}

	// Work on a sibling and swap it in at the end, so an interrupted run
	// never leaves a half-patched copy behind a valid stamp.
	tmp := dst + ".new"
	if err := removeAll(tmp); err != nil {
		return fmt.Errorf("clear %s: %w", tmp, err)
	}
	log.Printf("copying gotch %s from %s to %s", gotchVersion, src, copyDir+".new")
	if err := gotchsrc.CopyTree(src, tmp, nil); err != nil {
		return fmt.Errorf("copy gotch from the module cache: %w", err)
	}
	if err := rewriteLibGo(filepath.Join(tmp, libFile), mode); err != nil {
		return fmt.Errorf("rewrite %s: %w", libFile, err)
	}
	log.Printf("wrote cgo flags for %s libtorch %s", mode.Name, mode.TorchVers)
	freed, err := gotchsrc.FreeOutSlots(filepath.Join(tmp, "ts"))
	if err != nil {
		return fmt.Errorf("patch the tensor functions' output slots: %w", err)
	}
	log.Printf("%d result slots of gotch's tensor functions sized and freed", freed)

	stubbed, err := syntaxPass(tmp, mode, cxx)
	if err != nil {
		return err
	}

	if err := swapIn(tmp, dst); err != nil {
		return err
	}
	if _, err := writeIfChanged(filepath.Join(root, "go.work"), work); err != nil {
		return fmt.Errorf("write go.work: %w", err)
	}
	log.Printf("wrote go.work (replace %s %s => ./%s)", gotchModule, gotchVersion, copyDir)

	// The real cgo build is the final check (it compiles what -fsyntax-only
	// only parses) and it fills Go's build cache, so the first test of
	// pipeline/learn does not pay the 1.5-minute C++ compile again.
	more, err := buildUntilItCompiles(root, dst, mode)
	if err != nil {
		return err
	}
	stubbed = append(stubbed, more...)
	slices.Sort(stubbed)
	stubList := strings.Join(stubbed, "\n")
	if len(stubbed) > 0 {
		stubList += "\n"
	}
	if err := os.WriteFile(filepath.Join(dst, stubsName), []byte(stubList), 0o644); err != nil {
		return fmt.Errorf("write list of stubbed functions: %w", err)
	}
	// The stamp goes last: its presence is the promise that the copy builds.
	if err := os.WriteFile(filepath.Join(dst, stampName), []byte(stamp), 0o644); err != nil {
		return fmt.Errorf("write stamp: %w", err)
	}
	log.Printf("done in %s: %d wrapper functions stubbed (listed in %s/%s)", time.Since(start).Round(time.Second), len(stubbed), copyDir, stubsName)
	return nil
}

// findRepoRoot walks up from the working directory to the go.mod of this
// repository, so the step also works when started from a subdirectory.
func findRepoRoot() (string, error) {
	dir, err := modroot.Find("")
	if err != nil {
		return "", fmt.Errorf("find repository root: %w; run from the HomeMole checkout", err)
	}
	return dir, nil
}

var torchVersionRe = regexp.MustCompile(`#define\s+TORCH_VERSION\s*\\?\s*"([^"]+)"`)

// detectTorch finds libtorch's headers for the selected mode and reads their
// version, which goes into the stamp: another libtorch needs other stubs.
func detectTorch() (torchMode, error) {
	switch m := os.Getenv("HOMEMOLE_TORCH"); m {
	case "", "cpu":
		mode := torchMode{Name: "cpu", Includes: []string{debianTorchAPIInclude}}
		return mode, mode.readVersion("/usr/include/torch/csrc/api/include/torch/version.h")
	case "cuda":
		// The CUDA branch cannot be exercised on the CPU-only machines this
		// was written on; it reproduces gotch's own CUDA link line and
		// nothing more. A trainer image needs a CUDA build of the same
		// libtorch version (cxx11 ABI, shared, with dependencies).
		mode := torchMode{Name: "cuda", CUDAHome: os.Getenv("CUDA_HOME")}
		if mode.CUDAHome == "" {
			mode.CUDAHome = "/usr/local/cuda"
		}
		lt := os.Getenv("LIBTORCH")
		versionH := "/usr/include/torch/csrc/api/include/torch/version.h"
		if lt != "" {
			mode.Includes = []string{filepath.Join(lt, "include"), filepath.Join(lt, "include/torch/csrc/api/include")}
			mode.LibDir = filepath.Join(lt, "lib")
			versionH = filepath.Join(lt, "include/torch/csrc/api/include/torch/version.h")
		} else {
			mode.Includes = []string{debianTorchAPIInclude}
		}
		mode.Includes = append(mode.Includes, filepath.Join(mode.CUDAHome, "include"))
		// cgo splits its directives on spaces and offers no quoting we could
		// rely on here.
		for _, p := range append(slices.Clone(mode.Includes), mode.LibDir) {
			if strings.ContainsAny(p, " \t") {
				return mode, fmt.Errorf("path %q contains spaces, which cgo flags cannot carry; move libtorch or CUDA to a path without spaces", p)
			}
		}
		return mode, mode.readVersion(versionH)
	default:
		return torchMode{}, fmt.Errorf("HOMEMOLE_TORCH=%q: want cpu (default) or cuda", m)
	}
}

func (m *torchMode) readVersion(versionH string) error {
	data, err := os.ReadFile(versionH)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			hint := "run `go tool task setup` (installs Debian's libtorch-dev), or `apt-get install -y libtorch-dev`"
			if m.Name == "cuda" {
				hint = "set LIBTORCH to a CUDA build of libtorch (a directory with include/ and lib/)"
			}
			return fmt.Errorf("libtorch not found: %s is missing; %s", versionH, hint)
		}
		return fmt.Errorf("read libtorch version: %w", err)
	}
	v := torchVersionRe.FindSubmatch(data)
	if v == nil {
		return fmt.Errorf("read libtorch version: no TORCH_VERSION in %s", versionH)
	}
	m.TorchVers = string(v[1])
	return nil
}

// stampFor lists everything the patched copy depends on. Any difference
// means the copy must be redone.
func stampFor(gotchVersion string, mode torchMode, cxx string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "patch=%s\n", patchVersion)
	fmt.Fprintf(&b, "gotch=%s\n", gotchVersion)
	fmt.Fprintf(&b, "libtorch=%s\n", mode.TorchVers)
	fmt.Fprintf(&b, "torch=%s\n", mode.Name)
	fmt.Fprintf(&b, "includes=%s\n", strings.Join(mode.Includes, " "))
	fmt.Fprintf(&b, "libdir=%s\n", mode.LibDir)
	fmt.Fprintf(&b, "cuda_home=%s\n", mode.CUDAHome)
	fmt.Fprintf(&b, "cxx=%s\n", cxx)
	return b.String()
}

func copyIsCurrent(dst, stamp string) bool {
	got, err := os.ReadFile(filepath.Join(dst, stampName))
	if err != nil || string(got) != stamp {
		return false
	}
	// A stamp without the files it vouches for (someone deleted them by
	// hand) must not pass.
	for _, f := range []string{libFile, genFile, apiFile, "go.mod"} {
		if _, err := os.Stat(filepath.Join(dst, f)); err != nil {
			return false
		}
	}
	return true
}

func goWorkFor(goVersion, gotchVersion string) string {
	return fmt.Sprintf(`// Written by tools/gotchsetup; do not edit, rerun `+"`go run ./tools/gotchsetup`"+`.
// Points gotch at the copy patched for the installed libtorch.
go %s

use .

replace %s %s => ./%s
`, goVersion, gotchModule, gotchVersion, copyDir)
}

func writeIfChanged(path, content string) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && string(old) == content {
		return false, nil
	}
	return true, os.WriteFile(path, []byte(content), 0o644)
}

// goCmd runs the go command outside any workspace unless the caller says
// otherwise: go.work may name a copy that does not exist yet.
func goCmd(dir string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// removeAll also removes trees made read-only, such as a copy taken with
// `cp -r` from the module cache.
func removeAll(path string) error {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(path)
}

func swapIn(tmp, dst string) error {
	old := dst + ".old"
	if err := removeAll(old); err != nil {
		return fmt.Errorf("clear %s: %w", old, err)
	}
	if _, err := os.Stat(dst); err == nil {
		if err := os.Rename(dst, old); err != nil {
			return fmt.Errorf("move the previous copy aside: %w", err)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("move the patched copy into place: %w", err)
	}
	if err := removeAll(old); err != nil {
		return fmt.Errorf("remove the previous copy: %w", err)
	}
	return nil
}

var cgoLineRe = regexp.MustCompile(`^//\s*#cgo\s`)

// rewriteLibGo replaces every #cgo directive of lib.go with ours and keeps
// the rest of the file, so a gotch version that adds code there still works.
func rewriteLibGo(path string, mode torchMode) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var out []string
	inserted := false
	for _, line := range strings.Split(string(data), "\n") {
		if cgoLineRe.MatchString(line) {
			continue
		}
		if strings.TrimSpace(line) == `import "C"` {
			if inserted {
				return errors.New(`more than one import "C"`)
			}
			out = append(out, cgoDirectives(mode)...)
			inserted = true
		}
		out = append(out, line)
	}
	if !inserted {
		return errors.New(`no import "C" to attach cgo flags to`)
	}
	return os.WriteFile(path, []byte(strings.Join(out, "\n")), 0o644)
}

// cgoDirectives are gotch's flags minus what breaks on Debian: CUDA
// libraries that a CPU build lacks, C++14 (libtorch 1.13's headers need
// C++17), and include paths inside gotch's own folder where no libtorch is.
// gotch's -D_GLIBCXX_USE_CXX11_ABI=0 goes too: Debian builds libtorch with
// the new ABI, and cgo applies CFLAGS only to C files anyway.
func cgoDirectives(mode torchMode) []string {
	inc := ""
	for _, i := range mode.Includes {
		inc += " -I" + i
	}
	lines := []string{
		// A blank line keeps this note out of the cgo preamble, which is C.
		"// Flags written by HomeMole's tools/gotchsetup for " + mode.Name + " libtorch " + mode.TorchVers + "; rerun it instead of editing.",
		"",
		"// #cgo CFLAGS: -I${SRCDIR} -O3 -Wall -Wno-unused-variable -Wno-deprecated-declarations -g -Wno-sign-compare -Wno-unused-function",
		"// #cgo CXXFLAGS: -std=c++17 -I${SRCDIR} -g -O3" + inc,
	}
	switch mode.Name {
	case "cuda":
		ld := "// #cgo LDFLAGS:"
		if mode.LibDir != "" {
			ld += " -L" + mode.LibDir + " -Wl,-rpath," + mode.LibDir
		}
		// --no-as-needed keeps libtorch_cuda linked although no symbol of it
		// is referenced directly; without it CUDA silently looks absent.
		ld += " -ltorch -lc10 -ltorch_cpu -L" + filepath.Join(mode.CUDAHome, "lib64") +
			" -Wl,--no-as-needed -lcuda -lcudart -lcublas -lcudnn -lcaffe2_nvrtc -lnvrtc-builtins -lnvrtc -lnvToolsExt -lc10_cuda -ltorch_cuda -lstdc++"
		lines = append(lines, ld)
	default:
		lines = append(lines, "// #cgo LDFLAGS: -ltorch -lc10 -ltorch_cpu -lstdc++")
	}
	return lines
}

// wrapper is one generated C function: lines [start, end] of the file, both
// inclusive, 0-based; protect..protectEnd is its PROTECT( ... ) block.
type wrapper struct {
	name                string
	start, end          int
	protect, protectEnd int
	alreadyStubbed      bool
}

var wrapperStartRe = regexp.MustCompile(`^[A-Za-z_][\w\s\*]*\b(atg_\w+)\(.*\)\s*\{\s*$`)

const stubMarker = "// homemole: stubbed by tools/gotchsetup"

func parseWrappers(lines []string) ([]wrapper, error) {
	var ws []wrapper
	for i := 0; i < len(lines); i++ {
		m := wrapperStartRe.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		w := wrapper{name: m[1], start: i, protect: -1, protectEnd: -1}
		j := i + 1
		for ; j < len(lines) && lines[j] != "}"; j++ {
			switch {
			case strings.TrimSpace(lines[j]) == "PROTECT(" && w.protect < 0:
				w.protect = j
			case strings.TrimSpace(lines[j]) == ")" && w.protect >= 0 && w.protectEnd < 0:
				w.protectEnd = j
			case strings.Contains(lines[j], stubMarker):
				w.alreadyStubbed = true
			}
		}
		if j == len(lines) {
			return nil, fmt.Errorf("%s at line %d has no closing brace", w.name, i+1)
		}
		w.end = j
		ws = append(ws, w)
		i = j
	}
	if len(ws) == 0 {
		return nil, errors.New("no atg_ wrapper functions found")
	}
	return ws, nil
}

// stubWrappers replaces the PROTECT block of each named wrapper with one
// that raises. Code after the block (the fallback `return 0;` of wrappers
// that return values) stays, so every signature keeps a valid return path.
// It returns the names actually stubbed.
func stubWrappers(path string, byLine map[int]bool, torchVers string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(data), "\n")
	ws, err := parseWrappers(lines)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Base(path), err)
	}
	hit := map[int]bool{} // index into ws
	var outside []int
	for ln := range byLine {
		i := ln - 1 // compiler lines are 1-based
		k, found := slices.BinarySearchFunc(ws, i, func(w wrapper, t int) int {
			switch {
			case w.end < t:
				return -1
			case w.start > t:
				return 1
			}
			return 0
		})
		if !found {
			outside = append(outside, ln)
			continue
		}
		hit[k] = true
	}
	if len(outside) > 0 {
		slices.Sort(outside)
		return nil, fmt.Errorf("compile errors at lines %v of %s are outside any atg_ function; the patch cannot fix them", outside, filepath.Base(path))
	}
	var names []string
	var out []string
	prev := 0
	for k, w := range ws {
		if !hit[k] {
			continue
		}
		if w.alreadyStubbed {
			return nil, fmt.Errorf("%s still fails to compile after being stubbed", w.name)
		}
		if w.protect < 0 || w.protectEnd < 0 {
			return nil, fmt.Errorf("%s (line %d) has no PROTECT( ... ) block to replace", w.name, w.start+1)
		}
		out = append(out, lines[prev:w.protect]...)
		out = append(out,
			"  "+stubMarker+": it does not compile against libtorch "+torchVers+".",
			"  PROTECT(",
			fmt.Sprintf(`    throw std::runtime_error("%s is not available in this libtorch (%s); stubbed by HomeMole's tools/gotchsetup");`, w.name, torchVers),
			"  )",
		)
		prev = w.protectEnd + 1
		names = append(names, w.name)
	}
	out = append(out, lines[prev:]...)
	if err := os.WriteFile(path, []byte(strings.Join(out, "\n")), 0o644); err != nil {
		return nil, err
	}
	return names, nil
}

// diagRe picks the generated-file lines a diagnostic blames: errors located
// there, and "required from here" lines that point from an error inside a
// libtorch template back to the wrapper that instantiated it.
var diagRe = regexp.MustCompile(`torch_api_generated\.cpp\.h:(\d+):\d+:\s+(?:(?:fatal )?error:|required from here)`)

func blamedLines(compilerOutput string) map[int]bool {
	lines := map[int]bool{}
	for _, m := range diagRe.FindAllStringSubmatch(compilerOutput, -1) {
		var n int
		fmt.Sscan(m[1], &n)
		lines[n] = true
	}
	return lines
}

// syntaxPass runs the syntax-only check once and stubs every wrapper it
// blames. One pass collects all errors, and the cgo build that follows is
// the second pass that proves the result (and catches anything missed).
func syntaxPass(dir string, mode torchMode, cxx string) ([]string, error) {
	t := time.Now()
	log.Printf("syntax check of the C++ wrappers against libtorch %s (about 15 s)", mode.TorchVers)
	out, ok, err := syntaxCheck(dir, mode, cxx)
	if err != nil {
		return nil, fmt.Errorf("syntax check: %w", err)
	}
	if ok {
		log.Printf("syntax check passed in %s: nothing to stub", time.Since(t).Round(time.Second))
		return nil, nil
	}
	blamed := blamedLines(out)
	if len(blamed) == 0 {
		return nil, fmt.Errorf("syntax check failed outside the generated wrappers, which the patch cannot fix:\n%s", gotchsrc.FirstLines(out, 40))
	}
	names, err := stubWrappers(filepath.Join(dir, genFile), blamed, mode.TorchVers)
	if err != nil {
		return nil, fmt.Errorf("stub failing wrappers: %w\ncompiler output:\n%s", err, gotchsrc.FirstLines(out, 40))
	}
	log.Printf("syntax check took %s; stubbed %d wrappers that do not compile: %s", time.Since(t).Round(time.Second), len(names), strings.Join(names, ", "))
	return names, nil
}

// syntaxCheck parses torch_api.cpp, which includes the generated wrappers,
// without generating code. It reports every error in one go; nearly all of
// its 15 seconds go to libtorch's headers, not to the wrappers.
func syntaxCheck(dir string, mode torchMode, cxx string) (string, bool, error) {
	args := []string{"-std=c++17", "-fsyntax-only", "-fmax-errors=0", "-w", "-I."}
	for _, i := range mode.Includes {
		args = append(args, "-I"+i)
	}
	cmd := exec.Command(cxx, append(args, filepath.Base(apiFile))...)
	cmd.Dir = filepath.Join(dir, filepath.Dir(apiFile))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), true, nil
	case errors.As(err, &exit):
		return string(out), false, nil
	default:
		return "", false, fmt.Errorf("run %s: %w", cxx, err)
	}
}

// buildUntilItCompiles builds gotch's cgo package through the new go.work.
// A failure blamed on wrappers that the syntax check let through gets those
// stubbed too, and another build.
func buildUntilItCompiles(root, dst string, mode torchMode) ([]string, error) {
	var all []string
	for round := 1; round <= maxRounds; round++ {
		t := time.Now()
		log.Printf("building %s/libtch with cgo (C++ compile, about 1.5 minutes)", gotchModule)
		cmd := goCmd(root, []string{"GOWORK=" + filepath.Join(root, "go.work")}, "build", gotchModule+"/libtch")
		out, err := cmd.CombinedOutput()
		if err == nil {
			log.Printf("cgo build passed in %s", time.Since(t).Round(time.Second))
			return all, nil
		}
		blamed := blamedLines(string(out))
		if len(blamed) == 0 {
			return nil, fmt.Errorf("build %s/libtch: %w:\n%s", gotchModule, err, gotchsrc.FirstLines(string(out), 40))
		}
		names, serr := stubWrappers(filepath.Join(dst, genFile), blamed, mode.TorchVers)
		if serr != nil {
			return nil, fmt.Errorf("stub failing wrappers after the cgo build: %w\nbuild output:\n%s", serr, gotchsrc.FirstLines(string(out), 40))
		}
		log.Printf("cgo build round %d: stubbed %d more wrappers: %s", round, len(names), strings.Join(names, ", "))
		all = append(all, names...)
	}
	return nil, fmt.Errorf("build %s/libtch still fails after %d rounds", gotchModule, maxRounds)
}
