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
