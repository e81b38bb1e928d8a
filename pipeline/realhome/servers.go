package realhome

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// Servers reads, per device type, the vendor servers (vendorServer)
// each of its captures shows the device sending to, by its MAC: what
// evaluate.ServerFamilies joins types by. Devices of one name (a type's
// units) pool their captures.
func Servers(ctx context.Context, devs []Device) (map[string][]map[evaluate.Server]bool, error) {
	out := map[string][]map[evaluate.Server]bool{}
	for _, d := range devs {
		for _, f := range d.Files {
			servers := map[evaluate.Server]bool{}
			_, err := capture.ReadFile(ctx, f, features.PrivateHome(), func(p *schemas.Packet) error {
				if p.SrcMAC == d.MAC && p.DPort != schemas.NoPort && vendorServer(p.DstIP, p.DPort) {
					servers[evaluate.Server{Addr: p.DstIP.Unmap(), Transport: p.Transport, Port: p.DPort}] = true
				}
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("read the servers %s reaches in %s: %w", d.Name, f, err)
			}
			out[d.Name] = append(out[d.Name], servers)
		}
	}
	return out, nil
}

// vendorServer says whether a packet to addr, port tells of the vendor's
// cloud: a public unicast address (not an ISP's shared address space), and
// no name or time service (DNS, DNS over TLS, NTP), whose servers a
// network's configuration or an operating system's default picks,
// whatever the vendor: Level 3's resolver or a university's time server
// would join unrelated vendors into one family.
func vendorServer(addr netip.Addr, port int32) bool {
	addr = addr.Unmap()
	if !addr.IsGlobalUnicast() || addr.IsPrivate() || features.IsCarrierNAT(addr) {
		return false
	}
	switch port {
	case 53, 853, 123:
		return false
	}
	return true
}
