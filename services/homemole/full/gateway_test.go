package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
)

// TestGatewayAndPairCommands runs homemole gateway and homemole pair on a
// generated session, in both modes, and checks the reported accuracy.
func TestGatewayAndPairCommands(t *testing.T) {
	dir := t.TempDir()
	h, err := homegen.Generate(homegen.Config{Seed: 2, Sessions: 1, SessionDuration: 2 * time.Minute}, dir)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	inv := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(inv, []byte(fmt.Sprintf("- {mac: %q, name: plug, category: iot}\n", capturetest.DeviceMAC)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{{"--mode", "napt"}, {"--mode", "vpn", "--cipher", "aes-256-cbc"},
		{"--mode", "vpn", "--cipher", "wireguard"}, {"--mode", "vpn", "--cipher", "aes-256-gcm", "--vpn-proto", "tcp"}} {
		wan, truth, pairs := filepath.Join(dir, "wan.pcap"), filepath.Join(dir, "truth.csv"), filepath.Join(dir, "pairs.csv")
		var out bytes.Buffer
		args := append([]string{"--in", h.Files[0], "--out", wan, "--truth", truth, "--seed", "9",
			"--lan-net", h.LANNet, "--gateway-mac", h.GatewayMAC}, c...)
		if err := runGateway(context.Background(), log, &out, args); err != nil {
			t.Fatalf("gateway %v: %v", c, err)
		}
		if !strings.Contains(out.String(), "crossed to the WAN") {
			t.Fatalf("gateway output %q", out.String())
		}
		out.Reset()
		args = append([]string{"--lan", h.Files[0], "--wan", wan, "--out", pairs, "--truth", truth,
			"--lan-net", h.LANNet, "--gateway-mac", h.GatewayMAC}, c[:2]...)
		if err := runPair(context.Background(), log, &out, args); err != nil {
			t.Fatalf("pair %v: %v", c, err)
		}
		t.Logf("%s", out.String())
		if !strings.Contains(out.String(), "(100.000 %)") {
			t.Errorf("pair %v: %s", c, out.String())
		}
		b, err := os.ReadFile(pairs)
		if err != nil || !strings.HasPrefix(string(b), "wan_index,lan_index\n0,") {
			t.Fatalf("pairs file: %v %.40q", err, b)
		}
		// label pairs the records as the labeler does, a tunnel over TCP
		// by the records the agent's cutter finds in its segments.
		out.Reset()
		args = append([]string{"--lan", h.Files[0], "--wan", wan, "--inventory", inv, "--truth", truth,
			"--lan-net", h.LANNet, "--gateway-mac", h.GatewayMAC}, c[:2]...)
		if err := runLabel(context.Background(), log, &out, args); err != nil {
			t.Fatalf("label %v: %v", c, err)
		}
		if strings.Contains(out.String(), "warning") || !strings.Contains(out.String(), "WAN packets (100.000 %)") {
			t.Errorf("label %v: %s", c, out.String())
		}
	}
	for _, args := range [][]string{{"--lan", "x"}, {"--lan", "x", "--mode", "napt"}, {"--any", "x", "--lan", "y", "--mode", "napt"}} {
		if err := runPair(context.Background(), log, &bytes.Buffer{}, args); !errors.Is(err, cli.ErrUsage) {
			t.Errorf("pair %q: %v, want a usage error", args, err)
		}
	}
	// One capture of the gateway on every interface is both sides.
	var out bytes.Buffer
	anyPath := capturetest.GatewayAny(t, 10)
	if err := runPair(context.Background(), log, &out, []string{"--any", anyPath, "--mode", "napt", "--lan-net", "192.168.1.0/24", "--out", filepath.Join(dir, "any-pairs.csv")}); err != nil {
		t.Fatalf("pair --any: %v", err)
	}
	if !strings.Contains(out.String(), "20 WAN packets, 20 paired (100.00 %)") {
		t.Errorf("pair --any: %s", out.String())
	}
	// So is one dumpcap capture of its LAN and WAN interfaces.
	out.Reset()
	if err := runPair(context.Background(), log, &out, []string{"--any", capturetest.GatewayInterfaces(t, 10), "--mode", "napt", "--lan-net", "192.168.1.0/24", "--out", filepath.Join(dir, "ng-pairs.csv")}); err != nil {
		t.Fatalf("pair --any of a pcapng of its interfaces: %v", err)
	}
	if !strings.Contains(out.String(), "20 WAN packets, 20 paired (100.00 %)") {
		t.Errorf("pair --any of a pcapng of its interfaces: %s", out.String())
	}
	// Given as --wan, the same capture is read as its WAN side too.
	out.Reset()
	if err := runPair(context.Background(), log, &out, []string{"--lan", anyPath, "--wan", anyPath, "--mode", "napt", "--lan-net", "192.168.1.0/24", "--out", filepath.Join(dir, "wan-pairs.csv")}); err != nil {
		t.Fatalf("pair --lan any --wan any: %v", err)
	}
	if !strings.Contains(out.String(), "20 WAN packets, 20 paired (100.00 %)") {
		t.Errorf("pair --lan any --wan any: %s", out.String())
	}
	// label reads it so too: the LAN side labeled from the inventory,
	// the WAN side paired with it.
	out.Reset()
	if err := runLabel(context.Background(), log, &out, []string{"--lan", anyPath, "--wan", anyPath, "--inventory", inv, "--mode", "napt", "--lan-net", "192.168.1.0/24"}); err != nil {
		t.Fatalf("label --lan any --wan any: %v", err)
	}
	if !strings.Contains(out.String(), "20 packets, 20 paired with a LAN packet (pairing rate 100.00 %), 0 unpaired and kept unlabeled; WAN address 203.0.113.") || !regexp.MustCompile(`plug\s+20\s+20\n`).MatchString(out.String()) {
		t.Errorf("label --lan any --wan any:\n%s", out.String())
	}
	if err := runGateway(context.Background(), log, &bytes.Buffer{}, []string{"--in", h.Files[0], "--out", h.Files[0], "--truth", filepath.Join(dir, "t.csv")}); !errors.Is(err, cli.ErrUsage) {
		t.Errorf("gateway writing over its input: %v, want a usage error", err)
	}
}

// TestPairTunCaptureNoFlags is the OpenVPN client case: the LAN side is a
// tun capture (raw IP as link type 12 in pcapng, and as 101 in pcap)
// holding IPv4 and IPv6 with the home's global IPv6 prefix, and neither the
// emulator nor the pairing is told anything about the home.
func TestPairTunCaptureNoFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := homegen.Config{Seed: 3, Sessions: 1, SessionDuration: 5 * time.Minute, AddressPlan: homegen.PlanDual}
	h, err := homegen.Generate(cfg, filepath.Join(dir, "home"))
	if err != nil {
		t.Fatal(err)
	}
	truthHome, err := h.HomeConfig()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	for _, tun := range []struct {
		name string
		link uint8
		ng   bool
	}{{"tun-12.pcapng", 12, true}, {"tun-101.pcap", 101, false}} {
		lan, v4, v6 := writeTunCapture(t, h.Files[0], truthHome, filepath.Join(dir, tun.name), tun.link, tun.ng)
		if v4 == 0 || v6 == 0 {
			t.Fatalf("tun capture holds %d IPv4 and %d IPv6 packets, want both", v4, v6)
		}
		wan, truth := filepath.Join(dir, "wan.pcap"), filepath.Join(dir, "truth.csv")
		var out bytes.Buffer
		if err := runGateway(context.Background(), log, &out, []string{"--in", lan, "--out", wan, "--truth", truth, "--mode", "vpn"}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "no Ethernet: every packet crosses") || !strings.Contains(out.String(), " 0 stayed local") {
			t.Errorf("gateway on %s:\n%s", tun.name, out.String())
		}
		out.Reset()
		if err := runPair(context.Background(), log, &out, []string{"--lan", lan, "--wan", wan, "--mode", "vpn", "--truth", truth, "--out", filepath.Join(dir, "pairs.csv")}); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s (%d IPv4, %d IPv6 packets):\n%s", tun.name, v4, v6, out.String())
		m := regexp.MustCompile(`accuracy against .*: (\d+) of (\d+)`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no accuracy in %q", out.String())
		}
		if c, n := atoi(t, m[1]), atoi(t, m[2]); n < v4+v6 || float64(c) < 0.995*float64(n) {
			t.Errorf("%s: %d of %d WAN packets paired right, want >= 99.5 %% of at least %d", tun.name, c, n, v4+v6)
		}
	}
}

// writeTunCapture keeps the packets of a LAN capture that cross the
// gateway, without their Ethernet header, as a tun device on the home side
// of a VPN would capture them.
func writeTunCapture(t *testing.T, in string, home features.HomeConfig, out string, link uint8, ng bool) (string, int, int) {
	t.Helper()
	dec := features.NewDecoder(home)
	var p schemas.Packet
	var frames []capFrame
	v4, v6 := 0, 0
	for _, f := range capturetest.Frames(t, in) {
		if err := dec.Decode(f.LinkType, f.Data, f.CI, f.Offset, &p); err != nil {
			t.Fatal(err)
		}
		if p.Direction == schemas.DirLocal {
			continue
		}
		ip := f.Data[14:]
		if ip[0]>>4 == 6 {
			v6++
		} else {
			v4++
		}
		frames = append(frames, capFrame{f.CI, ip})
	}
	writeCapture(t, out, uint16(link), ng, frames)
	return out, v4, v6
}

// TestDefendCommand defends a real IoT Sentinel capture with each kind of
// defence and checks the printed cost against the files written: the
// defended capture holds as many packets as printed, the truth names every
// crossing LAN packet once and nothing else for the dummies.
func TestDefendCommand(t *testing.T) {
	sentineldata.Need(t)
	in := filepath.Join(sentinelDir, "D-LinkCam", "Setup-A-1-STA.pcap")
	if _, err := os.Stat(in); err != nil {
		t.Skipf("IoT Sentinel captures not at %s: %v", sentinelDir, err)
	}
	dir := t.TempDir()
	wan, truth := filepath.Join(dir, "wan.pcap"), filepath.Join(dir, "truth.csv")
	log := quiet()
	counts := regexp.MustCompile(`(\d+) WAN packets undefended, (\d+) defended \((\d+) dummies\)`)
	for _, spec := range []string{"none", "pad:mtu", "cbr:20", "pad:128+stp:6", "mimic:Aria", "vpn-pad"} {
		var out bytes.Buffer
		err := runDefend(context.Background(), log, &out, []string{"--in", in, "--defense", spec, "--out", wan, "--truth", truth,
			"--mimic-dir", sentinelDir})
		if err != nil {
			t.Fatalf("defend %s: %v", spec, err)
		}
		t.Logf("%s", out.String())
		m := counts.FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("defend %s printed no packet counts: %s", spec, out.String())
		}
		real, total, dummies := atoi(t, m[1]), atoi(t, m[2]), atoi(t, m[3])
		if real+dummies != total || real == 0 {
			t.Errorf("defend %s: %d real + %d dummies != %d", spec, real, dummies, total)
		}
		if (spec == "none" || spec == "pad:mtu" || spec == "vpn-pad") != (dummies == 0) {
			t.Errorf("defend %s: %d dummies", spec, dummies)
		}
		if n := len(capturetest.Frames(t, wan)); n != total {
			t.Errorf("defend %s: %s holds %d packets, printed %d", spec, wan, n, total)
		}
		lan, err := readTruthFile("defend", truth)
		if err != nil {
			t.Fatal(err)
		}
		seen, none := map[int64]bool{}, 0
		for _, l := range lan {
			if l < 0 {
				none++
			} else if seen[l] {
				t.Fatalf("defend %s: LAN packet %d twice in the truth", spec, l)
			} else {
				seen[l] = true
			}
		}
		if len(seen) != real || none != dummies {
			t.Errorf("defend %s: truth names %d LAN packets and %d dummies, printed %d and %d", spec, len(seen), none, real, dummies)
		}
	}
}

func TestDefendCommandRefuses(t *testing.T) {
	in := filepath.Join(sentinelDir, "D-LinkCam", "Setup-A-1-STA.pcap")
	dir := t.TempDir()
	log := quiet()
	for _, args := range [][]string{
		{"--defense", "pad:2000"},
		{"--defense", "vpn-pad", "--mode", "napt"},
		{"--defense", "mimic:Aria"},
		{"--defense", "cbr:10", "--out", in},
	} {
		full := append([]string{"--in", in, "--out", filepath.Join(dir, "w.pcap"), "--truth", filepath.Join(dir, "t.csv")}, args...)
		err := runDefend(context.Background(), log, &bytes.Buffer{}, full)
		if !errors.Is(err, cli.ErrUsage) {
			t.Errorf("defend %v: %v, want a usage error", args, err)
		}
	}
}
