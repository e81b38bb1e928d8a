package gateway

import (
	"context"
	"fmt"

	"github.com/homemole/homemole/internal/atomicfile"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
)

// EmulateFile runs Emulate from the LAN capture at lanPath into a WAN
// capture at wanPath and its ground truth at truthPath. The LAN capture is
// opened first and both outputs are created (as temporary files beside
// them) before anything is written, and they get their names only once
// both are whole: a wrong input, a missing folder or an error part-way
// leaves no output behind.
func EmulateFile(ctx context.Context, lanPath, wanPath, truthPath string, home features.HomeConfig, cfg Config) (Stats, error) {
	src, err := capture.OpenFile(lanPath)
	if err != nil {
		return Stats{}, err
	}
	defer src.Close()
	wan, err := atomicfile.Create(wanPath)
	if err != nil {
		return Stats{}, fmt.Errorf("emulate the WAN view of %s: %w", lanPath, err)
	}
	defer wan.Abort()
	truth, err := atomicfile.Create(truthPath)
	if err != nil {
		return Stats{}, fmt.Errorf("emulate the WAN view of %s: %w", lanPath, err)
	}
	defer truth.Abort()
	st, err := Emulate(ctx, src, home, cfg, wan, truth)
	if err != nil {
		return st, fmt.Errorf("emulate the WAN view of %s: %w", lanPath, err)
	}
	if err := atomicfile.Commit(wan, truth); err != nil {
		return st, err
	}
	return st, nil
}
