package campaign

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/homemole/homemole/schemas"
)

// FuzzParse feeds campaign files, the good and bad ones of testdata as
// seeds: Parse and Validate must refuse or accept, never panic, and what
// they accept names its campaign, homes and taps with valid tokens.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil || len(files) == 0 {
		f.Fatalf("seeds: %v", err)
	}
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		if c.Validate() != nil {
			return
		}
		if err := schemas.ValidateToken("campaign", c.Name); err != nil {
			t.Fatalf("accepted: %v", err)
		}
		for _, h := range c.Homes {
			if err := schemas.ValidateToken("home", h.Name); err != nil {
				t.Fatalf("accepted: %v", err)
			}
			for _, tp := range h.Taps {
				if err := schemas.ValidateToken("tap", tp.Name); err != nil {
					t.Fatalf("accepted: %v", err)
				}
			}
			if _, err := h.MACIndex(); err != nil {
				t.Fatalf("a validated home's inventory does not index: %v", err)
			}
			if _, err := h.LANPrefixes(); err != nil {
				t.Fatalf("a validated home's LAN prefixes do not parse: %v", err)
			}
		}
	})
}
