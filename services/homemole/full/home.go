package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/services/internal/cli"
)

func runHome(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	return runSubcommand(ctx, log, out, args, map[string]runFunc{
		"assemble": runHomeAssemble,
		"count":    runHomeCount,
		"steady":   runHomeSteady,
		"pairs":    runHomePairs,
	}, "home needs a subcommand: assemble --from-dir DIR --devices N --duration D --out home.pcap --truth truth.csv | count --from-dir DIR --device TYPE | steady --from-dir DIR | pairs --from-dir DIR")
}

func runHomeAssemble(ctx context.Context, _ *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("home assemble", "--from-dir DIR --devices N --duration D --out home.pcap --truth truth.csv [--units TYPE=K] [--sessions all|early|late] [--view lan|napt|vpn] [--seed N]",
		"Assembles a home from real per-device captures (a folder laid out like\n"+
			"../shared/data/iot-sentinel-dev: one folder per device, its MAC in _iotdevice-mac.txt).\n"+
			"Each unit is one capture's frames to or from the device's MAC, moved onto a MAC of\n"+
			"its own (the vendor's OUI kept) and a LAN address of its own in 192.168.1.0/24, the\n"+
			"lab router becoming the home gateway 192.168.1.1, and shifted to a random start in\n"+
			"--duration (what runs past the end is cut). Several units of one type (--units)\n"+
			"come from distinct captures. --sessions late draws only on the later half of each\n"+
			"device's captures by sequence number (Setup-X-N-STA: N), the half held out from a\n"+
			"model trained on --sessions early. --view napt or vpn writes what the emulated\n"+
			"gateway's WAN observer captures instead of the LAN. The truth file has one row\n"+
			"index,lan_index,unit,device,mac per packet of --out. The same seed gives the same bytes.")
	dir := fs.String("from-dir", "", "folder of device folders with captures and _iotdevice-mac.txt")
	devices := fs.Int("devices", 0, "device folders (types) in the home, those of --units included (default: the --units types)")
	duration := fs.Duration("duration", 10*time.Minute, "the home's length")
	outPath := fs.String("out", "", "capture to write (pcap, Ethernet)")
	truthPath := fs.String("truth", "", "truth CSV to write")
	sessions := fs.String("sessions", string(realhome.AllSessions), "captures to draw on: all, early (earlier half by sequence number) or late (later half, held out)")
	view := fs.String("view", "lan", "lan, or napt or vpn: the WAN capture of the emulated gateway")
	cipher := fs.String("cipher", string(gateway.AES256GCM), "vpn: the data channel cipher (aes-256-gcm, aes-256-cbc, wireguard)")
	seed := fs.Uint64("seed", 1, "seed of every random choice (devices, captures, start times, MACs, the gateway's)")
	units := map[string]int{}
	fs.Func("units", "TYPE=K: K units of the device folder TYPE, each from a capture of its own; repeat or separate with commas", func(s string) error {
		for _, part := range strings.Split(s, ",") {
			name, k, ok := strings.Cut(strings.TrimSpace(part), "=")
			n, err := strconv.Atoi(k)
			if !ok || name == "" || err != nil || n < 1 {
				return fmt.Errorf("%q: want TYPE=K with K a count from 1, such as EdimaxCam1=3", part)
			}
			units[name] = n
		}
		return nil
	})
	if err := parseRequired(fs, args, "home assemble needs --from-dir DIR, --out home.pcap and --truth truth.csv", dir, outPath, truthPath); err != nil {
		return err
	}
	if *devices == 0 && len(units) == 0 {
		return cli.Usagef("home assemble: give --devices N, --units TYPE=K, or both")
	}
	if *devices < 0 {
		return cli.Usagef("home assemble: --devices %d: want a count", *devices)
	}
	if *duration <= 0 {
		return cli.Usagef("home assemble: --duration %s: want a positive length such as 10m", *duration)
	}
	split, err := realhome.ParseSplit(*sessions)
	if err != nil {
		return cli.Usagef("home assemble: --sessions: %v", err)
	}
	mode, err := viewFlag("home assemble", *view)
	if err != nil {
		return err
	}
	c, err := cipherFlag("home assemble", *cipher, false)
	if err != nil {
		return err
	}
	if filepath.Clean(*outPath) == filepath.Clean(*truthPath) {
		return cli.Usagef("home assemble: --out and --truth are the same file")
	}
	devs, err := realhome.LoadDevices(*dir)
	if err != nil {
		return fmt.Errorf("home assemble: --from-dir: %w", err)
	}
	var inputs []string
	for _, d := range devs {
		inputs = append(inputs, d.Files...)
	}
	h, err := realhome.Assemble(ctx, devs, realhome.Config{Devices: *devices, Units: units, Duration: *duration, Sessions: split, Seed: *seed})
	if err != nil {
		return fmt.Errorf("home assemble: %w", err)
	}
	capFile, err := createOutput("home assemble", "out", *outPath, inputs...)
	if err != nil {
		return err
	}
	defer capFile.Close()
	var lan []int64
	var st gateway.Stats
	if mode == "" {
		err = h.WritePcap(capFile)
	} else {
		lan, st, err = h.View(ctx, gateway.Config{Mode: mode, Cipher: c, Seed: *seed}, capFile)
	}
	if err == nil {
		err = capFile.Close()
	}
	if err != nil {
		os.Remove(*outPath)
		return fmt.Errorf("home assemble: %s: %w", *outPath, err)
	}
	truthFile, err := createOutput("home assemble", "truth", *truthPath, inputs...)
	if err != nil {
		return err
	}
	defer truthFile.Close()
	if err := h.WriteTruth(truthFile, lan); err != nil {
		return fmt.Errorf("home assemble: %s: %w", *truthPath, err)
	}
	if err := truthFile.Close(); err != nil {
		return fmt.Errorf("home assemble: write %s: %w", *truthPath, err)
	}
	fmt.Fprintf(out, "home assemble: %d units of %d devices over %s, %d LAN packets (%d past the end cut); gateway %s %s on %s\n",
		len(h.Units), countDevices(h.Units), *duration, len(h.Packets), h.Cut, h.GatewayIP, h.GatewayMAC, h.LAN)
	for _, u := range h.Units {
		fmt.Fprintf(out, "  %-24s %s %-15s from %s at +%s, %d packets\n", u.Name, u.MAC, u.IP, filepath.Base(u.Session), u.Offset.Round(time.Millisecond), u.Packets)
	}
	if mode != "" {
		fmt.Fprintf(out, "  %s view: %d of the LAN packets crossed the gateway, %d WAN packets\n", mode, st.Crossing, st.WANPackets)
	}
	fmt.Fprintf(out, "  wrote %s and %s\n", *outPath, *truthPath)
	return nil
}

func countDevices(us []realhome.Unit) int {
	seen := map[string]bool{}
	for _, u := range us {
		seen[u.Device] = true
	}
	return len(seen)
}

func ints(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// parseUnits reads "1-5" or "1,2,4".
func parseUnits(s string) ([]int, error) {
	if a, b, ok := strings.Cut(s, "-"); ok {
		lo, err1 := strconv.Atoi(a)
		hi, err2 := strconv.Atoi(b)
		if err1 != nil || err2 != nil || lo < 1 || hi < lo || hi > 100 {
			return nil, fmt.Errorf("%q: want a range such as 1-5 within 1-100", s)
		}
		var out []int
		for n := lo; n <= hi; n++ {
			out = append(out, n)
		}
		return out, nil
	}
	var out []int
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 || n > 100 {
			return nil, fmt.Errorf("%q: want counts from 1 to 100 such as 1,2,4 or a range 1-5", p)
		}
		out = append(out, n)
	}
	return out, nil
}

// homeMeasure is the flag set home count and home steady share: the n to
// measure, how many homes of what, drawn on which captures, seen how.
type homeMeasure struct {
	dir, units, sessions, view *string
	homes, others              *int
	duration                   *time.Duration
	seed                       *uint64
}

// homeMeasureFlags registers the shared flags with each command's defaults
// and the views it takes.
func homeMeasureFlags(fs *flag.FlagSet, units string, homes int, sessions realhome.Split, views string) *homeMeasure {
	return &homeMeasure{
		dir:      fs.String("from-dir", "", "folder of device folders with captures and _iotdevice-mac.txt"),
		units:    fs.String("units", units, "the n to measure: a range A-B or a list"),
		homes:    fs.Int("homes", homes, "homes per n"),
		others:   fs.Int("others", 3, "other device types in each home"),
		duration: fs.Duration("duration", 100*time.Second, "each home's length"),
		sessions: fs.String("sessions", string(sessions), "captures the homes draw on: all, early or late"),
		view:     fs.String("view", "napt", views),
		seed:     fs.Uint64("seed", 1, "seed of the homes"),
	}
}

// check checks the shared flags once parsed and returns them decoded.
func (m *homeMeasure) check(cmd string) ([]int, realhome.Split, gateway.Mode, error) {
	units, err := parseUnits(*m.units)
	if err != nil {
		return nil, "", "", cli.Usagef("%s: --units: %v", cmd, err)
	}
	if *m.homes < 1 || *m.others < 0 || *m.duration <= 0 {
		return nil, "", "", cli.Usagef("%s: --homes from 1, --others from 0 and a positive --duration", cmd)
	}
	split, err := realhome.ParseSplit(*m.sessions)
	if err != nil {
		return nil, "", "", cli.Usagef("%s: --sessions: %v", cmd, err)
	}
	mode, err := viewFlag(cmd, *m.view)
	if err != nil {
		return nil, "", "", err
	}
	return units, split, mode, nil
}
