// Package homegen generates a demo smart home: the LAN traffic of a few IoT
// devices and a phone, as Ethernet pcap files (one per capture session),
// and the inventory that labels it. The same seed gives byte-identical
// files, so the demo and the tests can rely on exact contents.
//
// Each device follows the behaviour the HomeMole paper attributes to its
// kind: a smart plug's sparse fixed-size TLS heartbeat (and a variant
// speaking MQTT in the clear), a camera's UDP bursts to a cloud relay with
// keepalives in between, a voice assistant's TLS bursts around interactions
// with DNS and NTP, a hub's MQTT-over-TLS keepalives and local SSDP/mDNS,
// a story teller's plain-HTTP polls and story downloads, and a phone
// browsing over HTTPS and QUIC as non-IoT background. Every
// device keeps its own stack (TTL, window, TCP options) and message sizes;
// timing and sizes carry jitter so that telling devices apart is not a
// lookup.
//
// Which numbers come from the papers: the HomeMole paper (seeds/004, its
// measurement section) gives the voice assistant's heartbeat (a TLS record
// every 30 s; Echo Dot's is 95 bytes, Google Home's two records of 135 and
// 104 bytes every 60 s), heartbeats of constant size and interval that
// other activity rarely disturbs, UDP for high-volume cameras, little HTTP
// from IoT devices and a low share of DNS (its Table 1, as a qualitative
// mix: the table's figures are not in the text we have). Every other
// number here (periods of 9 s to 5 min, message sizes, burst lengths,
// story and page sizes, round-trip times) is a plausible choice of ours,
// not a measurement; tune it to a campaign's devices before relying on it.
//
// Config.Household picks the devices: the demo home above (the default) or
// HouseholdPaper, the HomeMole paper's ten IoT devices (echo dot, google
// home, tmall assistant, xiaomi hub, 360 camera, xiaobai camera, tplink,
// orvibo and broadlink plugs, mitu story teller) with a phone and a tablet
// as non-IoT background; paper.go says which of their numbers are the
// paper's.
//
// Frames to and from the internet go through the gateway's MAC, as on a
// real LAN tap, so direction by gateway MAC and by LAN prefix both work.
package homegen

import (
	"bufio"
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// Config says what to generate. Zero fields take the defaults of
// DefaultConfig, except Seed: zero is a seed like any other.
type Config struct {
	Seed            uint64
	Sessions        int
	SessionDuration time.Duration
	// Start is when the first session begins. Sessions start an hour apart
	// (back to back when a session lasts longer than that).
	Start time.Time
	// Household picks the devices: HouseholdDemo (the default, DefaultClasses)
	// or HouseholdPaper (the HomeMole paper's ten IoT devices, PaperIoT,
	// with a phone and a tablet as non-IoT background).
	Household string
	// AddressPlan picks the addresses: PlanIPv4 (the default), PlanIPv6,
	// PlanDual or PlanPrivateRemotes.
	AddressPlan string
}

// DefaultConfig is six ten-minute sessions, about 40,000 packets.
func DefaultConfig() Config {
	return Config{
		Seed:            1,
		Sessions:        6,
		SessionDuration: 10 * time.Minute,
		Start:           time.Date(2024, 3, 4, 8, 0, 0, 0, time.UTC),
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Sessions <= 0 {
		c.Sessions = d.Sessions
	}
	if c.SessionDuration <= 0 {
		c.SessionDuration = d.SessionDuration
	}
	if c.Start.IsZero() {
		c.Start = d.Start
	}
	return c
}

// Home is what Generate wrote, in the terms of a campaign file so that it
// drops into campaign.Home as it is.
type Home struct {
	// Files are the session captures, in time order.
	Files []string
	// Inventory labels the devices; InventoryFile is where it was written.
	Inventory     []campaign.Device
	InventoryFile string
	// GatewayMAC is the gateway's LAN MAC ("aa:bb:cc:dd:ee:ff") and LANNet
	// the home's prefix ("192.168.1.0/24"), as campaign.Gateway takes them.
	GatewayMAC string
	LANNet     string
	// LANNet6 is the home's global IPv6 prefix under the IPv6 plans.
	LANNet6 string
	// Interactions are the user actions the sessions hold, in time order per
	// session: where interaction detection should fire.
	Interactions []Interaction
}

// Interaction is one user action on a device: the ground truth of the
// interaction detection of Ma et al. (Section III-C).
type Interaction struct {
	Device string
	Kind   string
	At     time.Time // when the device's traffic for it starts
}

// InteractionSwitch is a smart plug switched on or off from its app: the
// cloud pushes a command, the plug answers with its new state. On and off
// look alike on the wire (the paper finds the same on its Ezviz plug).
const InteractionSwitch = "switch on/off"

// HomeConfig is the home as the feature decoder needs it.
func (h *Home) HomeConfig() (features.HomeConfig, error) {
	lan, err := netip.ParsePrefix(h.LANNet)
	if err != nil {
		return features.HomeConfig{}, fmt.Errorf("generated home: LAN prefix: %w", err)
	}
	mac, err := schemas.ParseMAC(h.GatewayMAC)
	if err != nil {
		return features.HomeConfig{}, fmt.Errorf("generated home: gateway: %w", err)
	}
	nets := []netip.Prefix{lan}
	if h.LANNet6 != "" {
		p, err := netip.ParsePrefix(h.LANNet6)
		if err != nil {
			return features.HomeConfig{}, fmt.Errorf("generated home: LAN IPv6 prefix: %w", err)
		}
		nets = append(nets, p)
	}
	return features.HomeConfig{LANNets: nets, GatewayMAC: mac}, nil
}

// maxSessions keeps file names at most three digits and a mistyped
// configuration from filling the disk.
const maxSessions = 999

// Generate writes dir/session-NN.pcap for every session and
// dir/inventory.yaml, creating dir if needed. Existing files of those names
// are overwritten.
func Generate(cfg Config, dir string) (*Home, error) {
	cfg = cfg.withDefaults()
	if cfg.Sessions > maxSessions {
		return nil, fmt.Errorf("generate home: %d sessions, at most %d", cfg.Sessions, maxSessions)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("generate home: %w", err)
	}
	classes, err := HouseholdClasses(cfg.Household)
	if err != nil {
		return nil, fmt.Errorf("generate home: %w", err)
	}
	plan, err := parsePlan(cfg.AddressPlan)
	if err != nil {
		return nil, fmt.Errorf("generate home: %w", err)
	}
	h, err := newHome(cfg.Seed, classes)
	if err != nil {
		return nil, fmt.Errorf("generate home: %w", err)
	}
	out := &Home{LANNet: h.lan.String(), GatewayMAC: schemas.MAC(h.gw.mac).String()}
	if plan == PlanIPv6 || plan == PlanDual {
		out.LANNet6 = LANPrefix6.String()
	}
	spacing := max(time.Hour, cfg.SessionDuration)
	for i := range cfg.Sessions {
		start := cfg.Start.Add(time.Duration(i) * spacing)
		s := newSim(rand.New(rand.NewPCG(cfg.Seed, uint64(i+1))), start, cfg.SessionDuration, h.gw)
		s.plan = plan
		for _, d := range h.devices {
			d.run(s, d, h)
		}
		if s.err != nil {
			return nil, fmt.Errorf("generate session %d: %w", i+1, s.err)
		}
		slices.SortStableFunc(s.interactions, func(a, b Interaction) int { return a.At.Compare(b.At) })
		out.Interactions = append(out.Interactions, s.interactions...)
		name := filepath.Join(dir, fmt.Sprintf("session-%02d.pcap", i+1))
		if err := writePcap(name, start, s.pkts); err != nil {
			return nil, fmt.Errorf("generate session %d: %w", i+1, err)
		}
		out.Files = append(out.Files, name)
	}
	for _, d := range h.devices {
		out.Inventory = append(out.Inventory, campaign.Device{MAC: schemas.MAC(d.mac).String(), Name: d.name, Category: d.category})
	}
	out.InventoryFile = filepath.Join(dir, "inventory.yaml")
	if err := campaign.WriteInventory(out.InventoryFile, out.Inventory); err != nil {
		return nil, fmt.Errorf("generate home: %w", err)
	}
	return out, nil
}

// writePcap writes the frames in time order as a microsecond Ethernet pcap,
// the format every tool reads.
func writePcap(path string, start time.Time, pkts []packet) (err error) {
	slices.SortFunc(pkts, func(a, b packet) int {
		if c := cmp.Compare(a.at, b.at); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write capture: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("write capture: %w", cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<16)
	w := pcapgo.NewWriter(bw)
	if err := w.WriteFileHeader(262144, layers.LinkTypeEthernet); err != nil {
		return fmt.Errorf("write capture %s: %w", path, err)
	}
	for _, p := range pkts {
		ci := gopacket.CaptureInfo{Timestamp: start.Add(p.at), CaptureLength: len(p.data), Length: len(p.data)}
		if err := w.WritePacket(ci, p.data); err != nil {
			return fmt.Errorf("write capture %s: %w", path, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write capture %s: %w", path, err)
	}
	return nil
}

// Campaign is a campaign of one home (see CampaignHome): how the demo, the
// tests and the tools turn a generated home into something the pipeline
// runs on.
func (h *Home) Campaign(name, home string) *campaign.Campaign {
	c := &campaign.Campaign{Name: name, Homes: []*campaign.Home{h.CampaignHome(home)}}
	c.Defaults()
	return c
}

// CampaignHome is the generated home as a campaign's home named name: its
// LAN tap replays the generated sessions, its inventory labels them, and
// its gateway is a NAPT one at the generated MAC and prefix. The files and
// the inventory are copies, so a caller may add taps or rename devices.
func (h *Home) CampaignHome(name string) *campaign.Home {
	return &campaign.Home{
		Name:      name,
		Gateway:   campaign.Gateway{Mode: "napt", MAC: h.GatewayMAC, LANNets: []string{h.LANNet}},
		Taps:      []campaign.Tap{{Name: "lan", Files: slices.Clone(h.Files)}},
		Inventory: slices.Clone(h.Inventory),
	}
}
