package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/homemole/homemole/pipeline/campaign"
	"gopkg.in/yaml.v3"
)

// writeCampaign writes c as a campaign file that campaign.Load reads back:
// tap files are written relative to the file's folder, as Load resolves them.
func writeCampaign(path string, c *campaign.Campaign) error {
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("write demo campaign: %w", err)
	}
	out := *c
	out.Homes = nil
	for _, h := range c.Homes {
		hc := *h
		hc.Taps = nil
		for _, t := range h.Taps {
			tc := t
			tc.Files = nil
			for _, f := range t.Files {
				abs, err := filepath.Abs(f)
				if err != nil {
					return fmt.Errorf("write demo campaign: %w", err)
				}
				rel, err := filepath.Rel(dir, abs)
				if err != nil {
					return fmt.Errorf("write demo campaign: %w", err)
				}
				tc.Files = append(tc.Files, rel)
			}
			hc.Taps = append(hc.Taps, tc)
		}
		out.Homes = append(out.Homes, &hc)
	}
	data, err := yaml.Marshal(&out)
	if err != nil {
		return fmt.Errorf("encode demo campaign: %w", err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("write demo campaign: %w", err)
	}
	return nil
}
