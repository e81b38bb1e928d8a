package gateway

import (
	"context"
	"fmt"
	"os"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
)

// EmulateFile runs Emulate from the LAN capture at lanPath into a WAN
// capture at wanPath and its ground truth at truthPath. The LAN capture is
// opened first, so a wrong input leaves no empty outputs behind.
func EmulateFile(ctx context.Context, lanPath, wanPath, truthPath string, home features.HomeConfig, cfg Config) (Stats, error) {
	src, err := capture.OpenFile(lanPath)
	if err != nil {
		return Stats{}, err
	}
	defer src.Close()
	wan, err := os.Create(wanPath)
	if err != nil {
		return Stats{}, fmt.Errorf("emulate the WAN view of %s: %w", lanPath, err)
	}
	defer wan.Close()
	truth, err := os.Create(truthPath)
	if err != nil {
		return Stats{}, fmt.Errorf("emulate the WAN view of %s: %w", lanPath, err)
	}
	defer truth.Close()
	st, err := Emulate(ctx, src, home, cfg, wan, truth)
	if err != nil {
		return st, fmt.Errorf("emulate the WAN view of %s: %w", lanPath, err)
	}
	if err := wan.Close(); err != nil {
		return st, fmt.Errorf("write %s: %w", wanPath, err)
	}
	if err := truth.Close(); err != nil {
		return st, fmt.Errorf("write %s: %w", truthPath, err)
	}
	return st, nil
}
