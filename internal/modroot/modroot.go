// Package modroot finds the checkout a process runs in: the folder of a
// go.mod at or above the working directory. Tools, tests and the CLI's
// on-demand build run from anywhere inside the checkout.
package modroot

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Find returns the folder of the nearest go.mod at or above the working
// directory whose module path is module; with module "", the nearest
// go.mod of any module. A nested module (a patched dependency copied under
// .build) is then passed over when module names this one.
func Find(module string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		if path, ok := modulePath(filepath.Join(dir, "go.mod")); ok && (module == "" || path == module) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			if module == "" {
				return "", fmt.Errorf("no go.mod at or above %s", wd)
			}
			return "", fmt.Errorf("no go.mod of %s at or above %s", module, wd)
		}
		dir = parent
	}
}

// modulePath reads the module path a go.mod declares; ok is false when
// there is no such file.
func modulePath(goMod string) (path string, ok bool) {
	f, err := os.Open(goMod)
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, found := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module"); found {
			return strings.Trim(strings.TrimSpace(rest), `"`), true
		}
	}
	return "", true
}
