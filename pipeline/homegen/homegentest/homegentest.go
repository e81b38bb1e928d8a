// Package homegentest generates a test's home: its LAN captures and the
// home configuration that decodes them, a failure failing the test.
package homegentest

import (
	"testing"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/homegen"
)

// Generate generates cfg's home into dir and returns it with its home
// configuration.
func Generate(tb testing.TB, cfg homegen.Config, dir string) (*homegen.Home, features.HomeConfig) {
	tb.Helper()
	h, err := homegen.Generate(cfg, dir)
	if err != nil {
		tb.Fatal(err)
	}
	home, err := h.HomeConfig()
	if err != nil {
		tb.Fatal(err)
	}
	return h, home
}
