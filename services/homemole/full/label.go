package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/label"
	"github.com/homemole/homemole/pipeline/pair"
	"github.com/homemole/homemole/schemas"
)

// runLabel runs the labeler's own code (pipeline/label) on a LAN and a WAN
// capture of one session, without NATS, to see what it would publish.
func runLabel(ctx context.Context, _ *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("label", "--lan FILE --wan FILE --inventory FILE --mode napt|vpn [--cipher auto] [--truth truth.csv]",
		"Labels a LAN capture from the inventory (MAC -> device) and pairs every packet of the WAN\n"+
			"capture of the same session with its LAN packet, as the labeler worker does on the\n"+
			"records capture agents publish: WAN packets take the label of their LAN packet, or stay\n"+
			"unlabeled when unpaired. Prints packets, labeled packets per device on both sides, the\n"+
			"pairing rate, and with --truth (from homemole gateway) the pairing accuracy.")
	lanPath := fs.String("lan", "", "LAN capture")
	wanPath := fs.String("wan", "", "WAN capture of the same session")
	invPath := fs.String("inventory", "", "inventory YAML: a list of {mac, name, category}")
	mode := fs.String("mode", "", "the gateway's mode: napt or vpn")
	cipher := fs.String("cipher", "auto", "vpn: aes-256-gcm, aes-256-cbc (OpenVPN), wireguard, or auto to detect")
	truthPath := fs.String("truth", "", "ground truth from homemole gateway, to report pairing accuracy")
	home := homeFlags(fs, "gateway-mac")
	if err := parseRequired(fs, args, "label needs --lan FILE, --wan FILE, --inventory FILE and --mode napt|vpn", lanPath, wanPath, invPath, mode); err != nil {
		return err
	}
	m, err := modeFlag("label", "mode", *mode)
	if err != nil {
		return err
	}
	inv, err := campaign.LoadInventory(*invPath)
	if err != nil {
		return fmt.Errorf("label: --inventory: %w", err)
	}
	hc, err := home.Of(ctx, "label", *lanPath, out)
	if err != nil {
		return err
	}
	gw := campaign.Gateway{Mode: string(m)}
	for _, p := range hc.LANNets {
		gw.LANNets = append(gw.LANNets, p.String())
	}
	if !hc.GatewayMAC.IsZero() {
		gw.MAC = hc.GatewayMAC.String()
	}
	c := &campaign.Campaign{Name: "label", Homes: []*campaign.Home{{
		Name: "home", Gateway: gw, Inventory: inv,
		Taps: []campaign.Tap{{Name: label.TapLAN, Files: []string{*lanPath}}, {Name: label.TapWAN, Files: []string{*wanPath}}},
	}}}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return fmt.Errorf("label: %w", err)
	}
	l, err := label.New(c)
	if err != nil {
		return fmt.Errorf("label: %w", err)
	}
	if l.Cipher, err = cipherFlag("label", *cipher, true); err != nil {
		return err
	}
	truth, err := readTruthFile("label", *truthPath)
	if err != nil {
		return err
	}
	dc, err := features.HomeFromCampaign(c.Homes[0])
	if err != nil {
		return err
	}
	read := func(tap, path string) (*schemas.Batch, error) {
		b := &schemas.Batch{Kind: schemas.KindPackets, Campaign: c.Name, Home: "home", Tap: tap,
			Source: path, Session: campaign.SessionName(tap, path), Final: true}
		_, err := capture.ReadFile(ctx, path, dc, func(p *schemas.Packet) error {
			b.Packets = append(b.Packets, *p)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("label: read %s: %w", path, err)
		}
		return b, nil
	}
	lan, err := read(label.TapLAN, *lanPath)
	if err != nil {
		return err
	}
	wan, err := read(label.TapWAN, *wanPath)
	if err != nil {
		return err
	}
	res, err := l.LabelPair("home", []*schemas.Batch{lan}, []*schemas.Batch{wan})
	if err != nil {
		return fmt.Errorf("label: %w", err)
	}
	if res.PairErr != nil {
		fmt.Fprintf(out, "warning: %v: every WAN packet is unlabeled\n", res.PairErr)
	}
	pr := res.Pairing
	fmt.Fprintf(out, "lan %s: %d packets\n", *lanPath, len(lan.Packets))
	fmt.Fprintf(out, "%s %s: %d packets, %d paired with a LAN packet (pairing rate %.2f %%), %d unpaired and kept unlabeled",
		m, *wanPath, len(wan.Packets), pr.Paired, 100*pr.Rate(), len(pr.Pairs)-pr.Paired)
	if m == gateway.VPN && pr.Cipher != "" {
		fmt.Fprintf(out, "; cipher %s", pr.Cipher)
	}
	fmt.Fprintln(out)
	lanCount, wanCount := countLabels(res.LAN), countLabels(res.WAN)
	names := make([]string, 0, len(lanCount))
	for n := range lanCount {
		names = append(names, n)
	}
	for n := range wanCount {
		if _, ok := lanCount[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	fmt.Fprintf(out, "%-24s %10s %10s\n", "device", "lan", string(m))
	for _, n := range names {
		fmt.Fprintf(out, "%-24s %10d %10d\n", n, lanCount[n], wanCount[n])
	}
	if truth != nil {
		if len(truth) != len(wan.Packets) {
			return fmt.Errorf("label: --truth has %d WAN packets, %s decoded to %d: not the truth of this capture", len(truth), *wanPath, len(wan.Packets))
		}
		// Pairs are positions in the record slices; the truth speaks of
		// capture ordinals.
		byOrdinal := make([]int64, len(truth))
		for i := range byOrdinal {
			byOrdinal[i] = -1
		}
		for j, k := range pr.Pairs {
			if k >= 0 && wan.Packets[j].Offset < uint64(len(byOrdinal)) {
				byOrdinal[wan.Packets[j].Offset] = int64(lan.Packets[k].Offset)
			}
		}
		correct, total := pair.Score(byOrdinal, truth)
		fmt.Fprintf(out, "pairing accuracy against %s: %d of %d WAN packets (%.3f %%)\n", *truthPath, correct, total, 100*float64(correct)/float64(max(total, 1)))
	}
	return nil
}

// countLabels counts labeled packets per device name; "(unlabeled)" the rest.
func countLabels(bs []*schemas.Batch) map[string]int {
	out := map[string]int{}
	for _, b := range bs {
		for _, l := range b.Labels {
			if l == schemas.Unlabeled {
				out["(unlabeled)"]++
			} else {
				out[b.Devices[l].Name]++
			}
		}
	}
	return out
}
