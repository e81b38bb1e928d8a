package build

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
)

// EmulateWAN gives every home of c without a "wan" tap one, made by the
// gateway emulator from its LAN captures in mode (napt or vpn), written
// under dir. Each WAN capture keeps its LAN capture's base name, which is
// how the labeler pairs a WAN session with its LAN session. The ground
// truth is written beside each capture (.truth.csv).
func EmulateWAN(ctx context.Context, c *campaign.Campaign, mode gateway.Mode, cfg gateway.Config, dir string) error {
	cfg.Mode = mode
	for _, h := range c.Homes {
		var lan *campaign.Tap
		for i := range h.Taps {
			if h.Taps[i].Name == "lan" {
				lan = &h.Taps[i]
			}
		}
		// A home with a real WAN tap keeps its own gateway's mode: its WAN
		// packets are that gateway's, and the labeler pairs them by it.
		if lan == nil || hasTap(h, "wan") {
			continue
		}
		h.Gateway.Mode = string(mode)
		home, err := features.HomeFromCampaign(h)
		if err != nil {
			return fmt.Errorf("home %s: %w", h.Name, err)
		}
		out := filepath.Join(dir, h.Name)
		if err := os.MkdirAll(out, 0o755); err != nil {
			return fmt.Errorf("emulated WAN captures of home %s: %w", h.Name, err)
		}
		wan := campaign.Tap{Name: "wan"}
		for _, f := range lan.Files {
			dst := filepath.Join(out, filepath.Base(f))
			fileHome := home
			if h.Gateway.Auto() {
				// As the capture agent decodes it: the home side each
				// LAN capture shows.
				r, err := capture.InferHome(ctx, f)
				if err != nil {
					return fmt.Errorf("home %s: %w", h.Name, err)
				}
				fileHome = r.Home
			}
			if _, err := gateway.EmulateFile(ctx, f, dst, dst+".truth.csv", fileHome, cfg); err != nil {
				return fmt.Errorf("home %s: %w", h.Name, err)
			}
			wan.Files = append(wan.Files, dst)
		}
		h.Taps = append(h.Taps, wan)
	}
	return nil
}

func hasTap(h *campaign.Home, name string) bool {
	for _, t := range h.Taps {
		if t.Name == name {
			return true
		}
	}
	return false
}
