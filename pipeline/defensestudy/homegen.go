package defensestudy

import (
	"fmt"
	"slices"

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

// Switchings are the generated home's smart-plug switchings, the user
// activity the study's sequence-profile attack is asked to find; nil when
// the home has none.
func Switchings(h *homegen.Home) *Actions {
	a := &Actions{Device: "smart-plug", Kind: homegen.InteractionSwitch}
	for _, in := range h.Interactions {
		if in.Device == a.Device && in.Kind == a.Kind {
			a.At = append(a.At, in.At.UnixNano())
		}
	}
	if len(a.At) == 0 {
		return nil
	}
	slices.Sort(a.At)
	return a
}
