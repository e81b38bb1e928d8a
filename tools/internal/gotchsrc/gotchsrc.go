// Package gotchsrc finds and copies the gotch module the repository
// requires: the one place tools/gotchsetup (the patched copy the build
// uses) and tools/gpu prepare (the copy relinked for a GPU machine) learn
// which gotch go.mod names and take it out of the module cache.
package gotchsrc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// Module is gotch's module path.
const Module = "github.com/sugarme/gotch"

var (
	goLineRe      = regexp.MustCompile(`^go\s+(\S+)`)
	gotchRequirRe = regexp.MustCompile(`^(?:require\s+)?` + regexp.QuoteMeta(Module) + `\s+(v\S+)`)
)

// ReadGoMod reads the go directive and the required gotch version straight
// from the go.mod at path: `go list -m` would cost a module-graph load on
// every warm run, and would itself fail when go.work points at a copy that
// was deleted.
func ReadGoMod(path string) (goVersion, gotchVersion string, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("read go.mod: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := goLineRe.FindStringSubmatch(line); m != nil && goVersion == "" {
			goVersion = m[1]
		}
		if m := gotchRequirRe.FindStringSubmatch(line); m != nil {
			gotchVersion = m[1]
		}
	}
	if goVersion == "" {
		return "", "", fmt.Errorf("read go.mod: no go directive in %s", path)
	}
	if gotchVersion == "" {
		return "", "", fmt.Errorf("read go.mod: %s does not require %s; add it with `go get %s@v0.7.0`", path, Module, Module)
	}
	return goVersion, gotchVersion, nil
}

// ModuleDir asks the go command, run in root outside any workspace (go.work
// may name a copy that does not exist yet), where the module cache holds
// gotch at version, downloading it if this machine has never fetched it.
func ModuleDir(root, version string) (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", Module+"@"+version)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var info struct {
		Dir   string
		Error string
	}
	if jerr := json.Unmarshal(out, &info); jerr == nil && info.Error != "" {
		return "", fmt.Errorf("download %s@%s: %s", Module, version, info.Error)
	}
	if err != nil {
		return "", fmt.Errorf("download %s@%s: %w: %s", Module, version, err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(out, &info); err != nil || info.Dir == "" {
		return "", fmt.Errorf("download %s@%s: no module directory in `go mod download -json` output", Module, version)
	}
	return info.Dir, nil
}

// CopyTree copies a module out of the cache; keep, when set, chooses the
// files by base name. Cache files are read-only; the copy must be writable
// to be patched and later removed, so it gets 0644 (0755 where the cached
// file is executable).
func CopyTree(src, dst string, keep func(name string) bool) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		// The module cache holds no links or devices worth copying.
		if !d.Type().IsRegular() || keep != nil && !keep(d.Name()) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		perm := fs.FileMode(0o644)
		if info.Mode()&0o111 != 0 {
			perm = 0o755
		}
		return copyFile(path, target, perm)
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// FirstLines is the start of a compiler's or the go command's output, at
// most n lines and a count of the rest, for the error of a build of gotch
// or its C layer that failed.
func FirstLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = append(lines[:n], fmt.Sprintf("... (%d more lines)", len(lines)-n))
	}
	return strings.Join(lines, "\n")
}

// outSlotRe matches where a gotch tensor function makes the C memory its
// libtorch wrapper writes the result tensors' pointers into.
var outSlotRe = regexp.MustCompile(`(?m)^([ \t]*)(\w+) := \(\*lib\.Ctensor\)\(unsafe\.Pointer\(C\.malloc\(0\)\)\)$`)

// outSlotBytes holds eight result pointers; gotch's tensor functions
// return at most five (a TorchScript value's tensor list, in jit.go, may
// hold more: not on HomeMole's paths).
const outSlotBytes = 64

// FreeOutSlots patches every tensor function in the ts folder: gotch
// 0.7.0 takes the slots for its results from malloc(0) and never frees
// them. That leaked 40 bytes an operation (a BLSTM training step makes
// about two hundred, 66 to 109 MB an epoch of 560,000 windows, which a
// --max-memory budget cannot hold), and a function of four or five
// results writes past the 24 bytes malloc(0) gives. The slots are sized
// and freed when the function returns, after it has read them.
func FreeOutSlots(dir string) (int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return n, err
		}
		matches := outSlotRe.FindAllSubmatchIndex(data, -1)
		if len(matches) == 0 {
			continue
		}
		var out []byte
		last := 0
		for _, m := range matches {
			indent, name := data[m[2]:m[3]], string(data[m[4]:m[5]])
			out = append(out, data[last:m[0]]...)
			out = append(out, fmt.Sprintf("%s%s := (*lib.Ctensor)(unsafe.Pointer(C.malloc(%d)))", indent, name, outSlotBytes)...)
			// A few hand-written functions (RunBackward) free their slot
			// already: a second free would be a double free.
			free := "defer C.free(unsafe.Pointer(" + name + "))"
			if next, _, _ := bytes.Cut(bytes.TrimLeft(data[m[1]:], "\n\t "), []byte("\n")); string(bytes.TrimSpace(next)) != free {
				out = append(out, fmt.Sprintf("\n%s%s", indent, free)...)
			}
			last = m[1]
		}
		out = append(out, data[last:]...)
		if err := os.WriteFile(f, out, 0o644); err != nil {
			return n, err
		}
		n += len(matches)
	}
	if n == 0 {
		return 0, fmt.Errorf("no output slot made with malloc(0) in %s: gotch changed; check the patch", dir)
	}
	return n, nil
}
