package cmdkit

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/homemole/homemole/internal/atomicfile"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
)

// HomeFlags adds --lan-net and the gateway-MAC flag (named macFlag), which
// place LAN packets as the capture agent does. Without either flag the home
// side is inferred from the capture (HomeChoice.Of).
func HomeFlags(fs *flag.FlagSet, macFlag string) *HomeChoice {
	h := &HomeChoice{macFlag: macFlag}
	fs.Func("lan-net", "a LAN prefix such as 192.168.1.0/24; repeat the flag or separate with commas (default: inferred from the capture)", func(s string) error {
		for _, part := range strings.Split(s, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(part))
			if err != nil {
				return fmt.Errorf("%q is not a CIDR prefix such as 192.168.1.0/24", part)
			}
			h.nets = append(h.nets, p.Masked())
		}
		h.given = true
		return nil
	})
	fs.Func(macFlag, "the gateway's LAN-side MAC, aa:bb:cc:dd:ee:ff: frames to it are outbound, from it inbound (default: inferred from the capture)", func(s string) error {
		m, err := schemas.ParseMAC(s)
		if err != nil {
			return err
		}
		if m.IsZero() {
			return fmt.Errorf("MAC %q: the zero address cannot be a gateway", s)
		}
		h.mac, h.given = m, true
		return nil
	})
	return h
}

// HomeChoice is the home side a command decodes a capture with: the flags'
// when any was given, else the one the capture shows.
type HomeChoice struct {
	nets    []netip.Prefix
	mac     schemas.MAC
	given   bool
	macFlag string
}

// Given says whether either flag was given.
func (h *HomeChoice) Given() bool { return h.given }

// Flags is the home the flags describe, with the private ranges where no
// --lan-net was given.
func (h *HomeChoice) Flags() features.HomeConfig {
	nets := h.nets
	if len(nets) == 0 {
		for _, s := range campaign.DefaultLANNets {
			nets = append(nets, netip.MustParsePrefix(s))
		}
	}
	return features.HomeConfig{LANNets: nets, GatewayMAC: h.mac}
}

// Of is the home to decode the capture at path with: the flags' home when
// either flag was given, otherwise the home side inferred from the capture,
// which is reported on w (one line, prefixed by cmd) so the user can check
// it and correct it with the flags.
func (h *HomeChoice) Of(ctx context.Context, cmd, path string, w io.Writer) (features.HomeConfig, error) {
	hc, note, err := h.Resolve(ctx, cmd, path)
	if note != "" {
		fmt.Fprintln(w, note)
	}
	return hc, err
}

// Resolve is Of without the printing: note is the line to show, empty when
// the flags decided.
func (h *HomeChoice) Resolve(ctx context.Context, cmd, path string) (features.HomeConfig, string, error) {
	if h.given {
		return h.Flags(), "", nil
	}
	r, err := capture.InferHome(ctx, path)
	if err != nil {
		return features.HomeConfig{}, "", fmt.Errorf("%s: %w", cmd, err)
	}
	return r.Home, fmt.Sprintf("%s: home side of %s inferred: %s (--%s and --lan-net override)", cmd, path, r, h.macFlag), nil
}

// RefuseInput refuses an output path that is one of the inputs, which
// creating it would empty before it is read.
func RefuseInput(cmd, flagName, path string, inputs ...string) error {
	for _, in := range inputs {
		if filepath.Clean(path) == filepath.Clean(in) {
			return cli.Usagef("%s: --%s %s is one of the input captures", cmd, flagName, path)
		}
	}
	return nil
}

// CreateOutput starts the output path unless it is one of the inputs: a
// temporary file beside it, which gets the name on Commit (defer Abort).
// A command of several outputs creates them all before it writes any, and
// commits them once all are written (atomicfile.Commit), so a missing
// folder or an error part-way leaves no output behind.
func CreateOutput(cmd, flagName, path string, inputs ...string) (*atomicfile.File, error) {
	if err := RefuseInput(cmd, flagName, path, inputs...); err != nil {
		return nil, err
	}
	f, err := atomicfile.Create(path)
	if err != nil {
		return nil, fmt.Errorf("%s: --%s: %w", cmd, flagName, err)
	}
	return f, nil
}
