package defensestudy

import (
	"fmt"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/schemas"
)

// GeneratedHome lays a generated home out for Config.Homes: one entry per
// device of its inventory, every session capture its captures.
func GeneratedHome(h *homegen.Home) ([]campaign.DeviceDir, error) {
	var out []campaign.DeviceDir
	for _, d := range h.Inventory {
		mac, err := schemas.ParseMAC(d.MAC)
		if err != nil {
			return nil, fmt.Errorf("generated home, device %s: %w", d.Name, err)
		}
		out = append(out, campaign.DeviceDir{Device: d.Name, MAC: mac, Files: h.Files})
	}
	return out, nil
}
