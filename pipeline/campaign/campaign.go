// Package campaign is the typed configuration of a measurement campaign: its
// homes, each home's gateway, taps and device inventory. It is read from a
// YAML campaign file with strict decoding and validated before anything runs.
package campaign

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/homemole/homemole/schemas"
)

// Campaign is one collection effort over many homes.
type Campaign struct {
	// Name becomes a subject token and a prefix of dataset names.
	Name  string  `yaml:"name"`
	Homes []*Home `yaml:"homes"`
	// Retention bounds the streams (optional; flags and the environment
	// of the workers override it).
	Retention Retention `yaml:"retention,omitempty"`

	// file is the campaign file Load read, for errors found later.
	file string
}

// Home is one household behind one gateway.
type Home struct {
	Name    string  `yaml:"name"`
	Gateway Gateway `yaml:"gateway"`
	// Taps are the capture points of this home's gateway.
	Taps []Tap `yaml:"taps"`
	// Inventory maps the home's MACs to devices: the only source of labels.
	Inventory []Device `yaml:"inventory"`
	// InventoryFile, when set, is a YAML file holding the inventory list
	// (relative to the campaign file); entries are appended to Inventory.
	InventoryFile string `yaml:"inventory_file,omitempty"`
	// Live tunes the home's interface taps; file taps ignore it.
	Live Live `yaml:"live,omitempty"`
}

// Gateway describes how the home reaches the internet; it decides packet
// direction and which WAN view an observer sees.
type Gateway struct {
	// Mode is "napt" (address and port translation) or "vpn" (every packet in
	// one encrypted tunnel).
	Mode string `yaml:"mode"`
	// MAC is the gateway's LAN-side address. A frame sent to it leaves the
	// home; a frame from it enters. Optional when LANNets decides. "auto"
	// (or `gateway: auto` for the whole gateway) infers the MAC and the
	// home's prefixes from each LAN capture instead.
	MAC string `yaml:"mac,omitempty"`
	// LANNets are the home's own prefixes. Empty means the private ranges
	// (RFC 1918, IPv6 link-local and ULA), written out by Defaults so the
	// decision is visible in the effective configuration.
	LANNets []string `yaml:"lan_nets"`
}

// GatewayAuto is the value of gateway (or gateway.mac) that has the home
// side inferred from the captures.
const GatewayAuto = "auto"

// UnmarshalYAML takes `gateway: auto` as well as the mapping, which stays
// strict: an unknown key is an error, as everywhere in a campaign file.
func (g *Gateway) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if n.Value != GatewayAuto {
			return fmt.Errorf("line %d: gateway %q: want %q or a mapping with mode, mac and lan_nets", n.Line, n.Value, GatewayAuto)
		}
		*g = Gateway{MAC: GatewayAuto}
		return nil
	}
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			switch k := n.Content[i]; k.Value {
			case "mode", "mac", "lan_nets":
			default:
				return fmt.Errorf("line %d: field %s not found in type campaign.Gateway", k.Line, k.Value)
			}
		}
	}
	type plain Gateway
	return n.Decode((*plain)(g))
}

// Auto tells whether the home side is inferred from the captures.
func (g Gateway) Auto() bool { return g.MAC == GatewayAuto }

// Tap is one capture point: a file or an interface.
type Tap struct {
	Name string `yaml:"name"` // "lan" or "wan"
	// Files are capture files (pcap or pcapng), relative to the campaign
	// file; each is one capture session.
	Files []string `yaml:"files,omitempty"`
	// Interface is a live interface, instead of files. "any" is every
	// interface of the gateway (capture.AnyInterface), read as its LAN
	// side for the lan tap and as its WAN side for the others; a home
	// whose lan and wan taps are both "any" captures once for both.
	// Capture files of a gateway on every interface (tcpdump -i any) are
	// read the same way. "nflog:N" is netfilter's log group N (the
	// packets iptables or nftables NFLOG rules log), read as the frames
	// it logged (see capture's nflogView).
	Interface string `yaml:"interface,omitempty"`
	// Watch is a folder a capture tool writes its rotated files into
	// (tcpdump -G SECONDS -w 'lan-%Y%m%d-%H%M%S.pcap', tcpdump -C MB,
	// dumpcap -b), relative to the campaign file: each capture file is
	// one capture session, published once complete, for as long as the
	// capture runs (the capture agent's WatchSettle says when a file is
	// complete). A one-off build reads the files there when it starts
	// (SnapshotWatched).
	Watch string `yaml:"watch,omitempty"`
}

// Device is one inventory entry.
type Device struct {
	MAC      string `yaml:"mac"`
	Name     string `yaml:"name"`
	Category string `yaml:"category"` // "iot" or "non-iot"
}

// Categories of devices.
const (
	CategoryIoT    = "iot"
	CategoryNonIoT = "non-iot"
)

// DefaultLANNets are the private ranges used when a home names none.
var DefaultLANNets = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fe80::/10", "fc00::/7"}

// Load reads, defaults and validates a campaign file.
func Load(path string) (*Campaign, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read campaign file: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("campaign file %s: %w", path, err)
	}
	base := filepath.Dir(path)
	for _, h := range c.Homes {
		for i := range h.Taps {
			for j, f := range h.Taps[i].Files {
				if !filepath.IsAbs(f) {
					h.Taps[i].Files[j] = filepath.Join(base, f)
				}
			}
			if w := h.Taps[i].Watch; w != "" && !filepath.IsAbs(w) {
				h.Taps[i].Watch = filepath.Join(base, w)
			}
		}
		if h.InventoryFile != "" {
			f := h.InventoryFile
			if !filepath.IsAbs(f) {
				f = filepath.Join(base, f)
			}
			inv, err := LoadInventory(f)
			if err != nil {
				return nil, fmt.Errorf("campaign file %s: home %s: %w", path, h.Name, err)
			}
			h.Inventory = append(h.Inventory, inv...)
			h.InventoryFile = f
		}
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("campaign file %s: %w", path, err)
	}
	c.file = path
	return c, nil
}

// Parse decodes a campaign strictly (unknown fields are errors) and applies defaults.
func Parse(data []byte) (*Campaign, error) {
	var c Campaign
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); errors.Is(err, io.EOF) {
		return nil, errors.New("the file is empty (or only comments): a campaign gives its name and its homes, each with a gateway, taps and an inventory")
	} else if err != nil {
		return nil, fmt.Errorf("decode YAML: %w", err)
	}
	// A bare "-" in the list decodes to no home at all.
	for i, h := range c.Homes {
		if h == nil {
			return nil, fmt.Errorf("homes[%d] is empty: give it a name, a gateway, taps and an inventory", i)
		}
	}
	c.Defaults()
	return &c, nil
}

// Defaults fills the fields a campaign may leave out.
func (c *Campaign) Defaults() {
	for _, h := range c.Homes {
		if h.Gateway.Mode == "" {
			h.Gateway.Mode = "napt"
		}
		if len(h.Gateway.LANNets) == 0 && !h.Gateway.Auto() {
			h.Gateway.LANNets = append([]string(nil), DefaultLANNets...)
		}
		h.Live.Defaults()
		for i := range h.Inventory {
			if h.Inventory[i].Category == "" {
				h.Inventory[i].Category = CategoryIoT
			}
		}
	}
}

// Validate checks everything that can be checked without touching the network.
// Inventory and LAN prefixes are validated again when parsed for use, so the
// error names the field.
func (c *Campaign) Validate() error {
	var errs []error
	if err := schemas.ValidateToken("campaign name", c.Name); err != nil {
		errs = append(errs, err)
	}
	if len(c.Homes) == 0 {
		errs = append(errs, errors.New("no homes: add at least one entry under 'homes'"))
	}
	if err := c.Retention.Validate(); err != nil {
		errs = append(errs, err)
	}
	seen := map[string]bool{}
	for i, h := range c.Homes {
		if err := schemas.ValidateToken(fmt.Sprintf("homes[%d].name", i), h.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[h.Name] {
			errs = append(errs, fmt.Errorf("home %s appears twice", h.Name))
		}
		seen[h.Name] = true
		if err := h.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("home %s: %w", h.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Validate checks one home.
func (h *Home) Validate() error {
	var errs []error
	if h.Gateway.Mode != "napt" && h.Gateway.Mode != "vpn" {
		errs = append(errs, fmt.Errorf("gateway.mode %q: want napt or vpn", h.Gateway.Mode))
	}
	switch {
	case h.Gateway.Auto() && len(h.Gateway.LANNets) > 0:
		errs = append(errs, fmt.Errorf("gateway.mac %s infers the LAN prefixes too: drop gateway.lan_nets, or name the gateway's MAC", GatewayAuto))
	case h.Gateway.MAC != "" && !h.Gateway.Auto():
		if _, err := schemas.ParseMAC(h.Gateway.MAC); err != nil {
			errs = append(errs, fmt.Errorf("gateway.mac: %w (or %s to infer it)", err, GatewayAuto))
		}
	}
	if _, err := h.LANPrefixes(); err != nil {
		errs = append(errs, err)
	}
	if len(h.Taps) == 0 {
		errs = append(errs, errors.New("no taps: add one under taps, e.g. {name: lan, files: [lan.pcap]}, {name: lan, interface: br-lan} or {name: lan, watch: captures/lan}"))
	}
	taps := map[string]bool{}
	for i, t := range h.Taps {
		if err := schemas.ValidateToken(fmt.Sprintf("taps[%d].name", i), t.Name); err != nil {
			errs = append(errs, err)
		}
		if taps[t.Name] {
			errs = append(errs, fmt.Errorf("tap %s appears twice", t.Name))
		}
		taps[t.Name] = true
		if n := btoi(len(t.Files) > 0) + btoi(t.Interface != "") + btoi(t.Watch != ""); n != 1 {
			errs = append(errs, fmt.Errorf("tap %s: give one of files, interface and watch (a folder of rotated capture files)", t.Name))
		}
		// Sessions, and so message ids, are named after files: two files
		// with one name would be taken for one session.
		sessions := sessionFiles{}
		for _, f := range t.Files {
			if err := schemas.ValidateSession(SessionName(t.Name, f)); err != nil {
				errs = append(errs, fmt.Errorf("tap %s: file %s: %w: shorten its name", t.Name, f, err))
			}
			if err := sessions.claim(t.Name, f); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if _, err := h.MACIndex(); err != nil {
		errs = append(errs, err)
	}
	if err := h.Live.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("live: %w", err))
	}
	return errors.Join(errs...)
}

// ValidateInventories refuses homes without an inventory, where labels
// are wanted (a dataset build, a labeler, a windower): a home's inventory
// is the only source of its labels. Validate does not, as a detector's
// campaign needs none.
func (c *Campaign) ValidateInventories() error {
	var errs []error
	for _, h := range c.Homes {
		if len(h.Inventory) == 0 {
			errs = append(errs, fmt.Errorf("home %s has no inventory, and its inventory gives the labels: add inventory (one {mac, name, category} per device) or inventory_file to the home", h.Name))
		}
	}
	err := errors.Join(errs...)
	switch {
	case err == nil:
		return nil
	case c.file != "":
		return fmt.Errorf("campaign file %s: %w", c.file, err)
	}
	return fmt.Errorf("campaign %s: %w", c.Name, err)
}

// sessionFiles are the files of one tap by the session each is named.
type sessionFiles map[string]string

// claim names file's session of tap, and refuses a name another file of
// the tap has: two files of one name would be taken for one session.
func (s sessionFiles) claim(tap, file string) error {
	name := SessionName(tap, file)
	if prev, dup := s[name]; dup {
		return fmt.Errorf("tap %s: %s and %s would both be session %s: rename one (sessions are named after their files)", tap, prev, file, name)
	}
	s[name] = file
	return nil
}

// SessionName derives a capture session's name from its file: deterministic,
// so a restarted agent republishes under the same message ids.
func SessionName(tap, file string) string {
	base, _ := CaptureBase(filepath.Base(file))
	return tap + "-" + tokenOf(base)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// compressedExts are the suffixes of compressed captures: those the
// readers decompress as they read, and xz's and bzip2's, which they refuse
// saying how to decompress them (capture.OpenFile tells them by their
// bytes), rather than a folder's captures being passed over unsaid.
var compressedExts = []string{".gz", ".zst", ".zstd", ".lz4", ".xz", ".bz2"}

// CaptureBase is a capture file's name without its extensions (a
// compression's, then .pcapng or .pcap); ok says it had a capture's. The
// number tcpdump -C puts after the extension of each file but its first
// (lan.pcap, lan.pcap1, lan.pcap2) is kept: lan-1, lan-2.
func CaptureBase(name string) (base string, ok bool) {
	for _, ext := range compressedExts {
		if b, cut := strings.CutSuffix(name, ext); cut {
			name = b
			break
		}
	}
	num := strings.TrimRightFunc(name, func(r rune) bool { return r >= '0' && r <= '9' })
	for _, ext := range []string{".pcapng", ".pcap"} {
		if b, cut := strings.CutSuffix(name, ext); cut {
			return b, true
		}
		if b, cut := strings.CutSuffix(num, ext); cut && len(num) < len(name) {
			return b + "-" + name[len(num):], true
		}
	}
	return name, false
}

// LANPrefixes parses the home's LAN prefixes. A home whose gateway is
// inferred has the private ranges until a capture says more.
func (h *Home) LANPrefixes() ([]netip.Prefix, error) {
	nets := h.Gateway.LANNets
	if h.Gateway.Auto() && len(nets) == 0 {
		nets = DefaultLANNets
	}
	out := make([]netip.Prefix, 0, len(nets))
	for _, s := range nets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("gateway.lan_nets: %q is not a CIDR prefix such as 192.168.1.0/24", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// GatewayMAC parses the gateway MAC; the zero MAC when none is configured
// or it is inferred.
func (h *Home) GatewayMAC() schemas.MAC {
	m, _ := schemas.ParseMAC(h.Gateway.MAC) // validated in Validate
	return m
}

// MACIndex maps each inventory MAC to its device, refusing duplicates and bad entries.
func (h *Home) MACIndex() (map[schemas.MAC]Device, error) {
	idx := make(map[schemas.MAC]Device, len(h.Inventory))
	for i, d := range h.Inventory {
		m, err := schemas.ParseMAC(d.MAC)
		if err != nil {
			return nil, fmt.Errorf("inventory[%d]: %w", i, err)
		}
		if strings.TrimSpace(d.Name) == "" {
			return nil, fmt.Errorf("inventory[%d] (%s): name is empty", i, d.MAC)
		}
		if d.Category != CategoryIoT && d.Category != CategoryNonIoT {
			return nil, fmt.Errorf("inventory[%d] (%s): category %q: want iot or non-iot", i, d.MAC, d.Category)
		}
		if prev, dup := idx[m]; dup {
			return nil, fmt.Errorf("inventory[%d]: MAC %s already belongs to %s", i, d.MAC, prev.Name)
		}
		idx[m] = d
	}
	return idx, nil
}

// LoadInventory reads an inventory file: a YAML list of devices.
func LoadInventory(path string) ([]Device, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read inventory: %w", err)
	}
	var inv []Device
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&inv); errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("inventory %s is empty (or only comments): list the home's devices, one {mac, name, category} each", path)
	} else if err != nil {
		return nil, fmt.Errorf("inventory %s: decode YAML: %w", path, err)
	}
	for i := range inv {
		if inv[i].Category == "" {
			inv[i].Category = CategoryIoT
		}
	}
	return inv, nil
}

// WriteInventory writes an inventory file that LoadInventory reads back.
func WriteInventory(path string, inv []Device) error {
	data, err := yaml.Marshal(inv)
	if err != nil {
		return fmt.Errorf("encode inventory: %w", err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("write inventory: %w", err)
	}
	return nil
}

// FromDeviceDirs builds a campaign from a folder laid out like the IoT
// Sentinel captures (see DeviceDirs). Each folder becomes a home of its own
// whose inventory is that one device: the captures were taken one device
// at a time, and two devices that talk through one another share a MAC, so
// the folder, not the MAC, says which device a capture records. Everything
// else in a capture (the phone doing the setup, the router) is left
// unlabeled. No folder names its gateway, so each home's is `gateway:
// auto`: the home side each capture shows, as predict and features infer
// it, so that a model trained here reads packets' directions as predict
// will give them.
func FromDeviceDirs(dir, name string) (*Campaign, error) {
	devs, err := DeviceDirs(dir)
	if err != nil {
		return nil, err
	}
	c := &Campaign{Name: name}
	for _, d := range devs {
		c.Homes = append(c.Homes, &Home{
			Name:      tokenOf(d.Device),
			Taps:      []Tap{{Name: "lan", Files: d.Files}},
			Inventory: []Device{{MAC: d.MAC.String(), Name: d.Device, Category: CategoryIoT}},
			Gateway:   Gateway{MAC: GatewayAuto},
		})
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("device folders under %s: %w", dir, err)
	}
	return c, nil
}

// tokenOf turns a folder name into a home name: subject tokens allow only
// letters, digits, '-' and '_'.
func tokenOf(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// HomeNames are the names of the campaign's homes, in file order: what
// partitioned workers split among their replicas.
func (c *Campaign) HomeNames() []string {
	names := make([]string, 0, len(c.Homes))
	for _, h := range c.Homes {
		names = append(names, h.Name)
	}
	return names
}
