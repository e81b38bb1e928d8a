// Package defensestudy measures attacks against the gateway defences
// (pipeline/gateway/defense) on captures laid out like the IoT Sentinel set:
// every capture is emulated through the gateway and defended, the attack is
// trained on defended training captures (the adversary knows the defence)
// and tested on defended held-out captures, captures grouped into folds so
// that no capture is on both sides. The Random Forest is built in; other
// attacks (the BLSTM, which needs libtorch) come in through Attack.
package defensestudy

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/gopacket"

	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/forest"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/gateway/defense"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
)

// Config is one study.
type Config struct {
	// Dir holds one folder per device (see campaign.DeviceDirs); Devices,
	// when set, keeps only those.
	Dir     string
	Devices []string
	// Homes, when set, replaces Dir: each device's captures are whole-home
	// captures (a generated home's sessions), its own packets picked by MAC.
	Homes []campaign.DeviceDir
	// MaxFiles > 0 keeps each device's first captures only.
	MaxFiles int
	Defenses []defense.Spec
	Gateway  gateway.Config
	// Folds: captures are dealt round-robin per device into this many
	// folds (at least 2).
	Folds  int
	Window int
	Seed   uint64
	// Forest is the rf attack's configuration (zero: forest.DefaultConfig).
	Forest forest.Config
	// Attacks are judged in turn on every defence (nil: the forest alone).
	Attacks []Attack
}

// Attack is one adversary: it fits a model on defended training windows
// and labels every packet of the defended held-out windows. The study
// cuts the folds and scores the labels, so every attack is judged alike.
type Attack interface {
	Name() string
	Label(ctx context.Context, train, test []*schemas.Window, labels []string, seed uint64) ([][]int32, error)
}

// ForestAttack is the paper's Random Forest, CGO-free.
type ForestAttack struct{ Config forest.Config }

func (ForestAttack) Name() string { return "rf" }

func (a ForestAttack) Label(ctx context.Context, train, test []*schemas.Window, labels []string, seed uint64) ([][]int32, error) {
	fc := a.Config
	if fc == (forest.Config{}) {
		fc = forest.DefaultConfig()
	}
	fc.Seed = seed
	m, err := forest.Train(ctx, fc, train, len(labels), nil)
	if err != nil {
		return nil, err
	}
	return m.Predict(test)
}

// Row is one defence against one attack, as issue 19 names its fields
// (detection_f1 is not measured yet). Accuracies count the device's WAN
// packets and the defence's dummies alike, as the observer cannot tell
// them apart; a session is one held-out capture, judged by the packets'
// majority vote. Latency mean is over every real packet; its p99 is the
// largest of the captures' p99s, an upper bound of the whole set's.
type Row struct {
	Defense           string  `json:"defense"`
	Attack            string  `json:"attack"`
	SessionAccuracy   float64 `json:"session_accuracy"`
	TypeAccuracy      float64 `json:"type_accuracy"`
	PerPacketAccuracy float64 `json:"per_packet_accuracy"`
	ByteOverhead      float64 `json:"byte_overhead"`
	PacketOverhead    float64 `json:"packet_overhead"`
	KBps              float64 `json:"kbps_per_home"`
	LatencyMsMean     float64 `json:"latency_ms_mean"`
	LatencyMsP99      float64 `json:"latency_ms_p99"`
	Sessions          int     `json:"sessions"`
	// PerDevice is each device's session accuracy.
	PerDevice map[string]float64 `json:"per_device_accuracy,omitempty"`
}

// session is one defended capture: its device and its windows.
type session struct {
	device int
	file   string
	ws     []*schemas.Window
}

// Run measures the Random Forest under every defence of cfg.
func Run(ctx context.Context, cfg Config) ([]Row, error) {
	if cfg.Folds < 2 {
		return nil, fmt.Errorf("defence study: %d folds, want 2 or more", cfg.Folds)
	}
	if cfg.Window <= 0 {
		return nil, fmt.Errorf("defence study: window of %d packets, want 1 or more", cfg.Window)
	}
	devs := cfg.Homes
	if devs == nil {
		var err error
		if devs, err = campaign.DeviceDirs(cfg.Dir); err != nil {
			return nil, fmt.Errorf("defence study: %w", err)
		}
	}
	if len(cfg.Devices) > 0 {
		devs = slices.DeleteFunc(devs, func(d campaign.DeviceDir) bool { return !slices.Contains(cfg.Devices, d.Device) })
		if len(devs) != len(cfg.Devices) {
			return nil, fmt.Errorf("defence study: of the devices %s, only %d have folders in %s", strings.Join(cfg.Devices, ","), len(devs), cfg.Dir)
		}
	}
	if len(devs) < 2 {
		return nil, fmt.Errorf("defence study: %d devices in %s, want 2 or more to tell apart", len(devs), cfg.Dir)
	}
	if len(cfg.Attacks) == 0 {
		cfg.Attacks = []Attack{ForestAttack{Config: cfg.Forest}}
	}
	names := make([]string, len(devs))
	for i, d := range devs {
		names[i] = d.Device
	}
	var rows []Row
	for _, spec := range cfg.Defenses {
		rs, err := runDefense(ctx, cfg, devs, names, spec)
		if err != nil {
			return nil, fmt.Errorf("defence study, %s: %w", spec, err)
		}
		rows = append(rows, rs...)
	}
	return rows, nil
}

// runDefense defends every capture once and judges every attack on the
// same defended sessions and folds: a row per attack.
func runDefense(ctx context.Context, cfg Config, devs []campaign.DeviceDir, names []string, spec defense.Spec) ([]Row, error) {
	row := Row{Defense: spec.String()}
	var sessions []session
	var fold []int
	var total defense.Cost
	var latSum, latP99 float64
	for label, dev := range devs {
		files := dev.Files
		if cfg.MaxFiles > 0 && len(files) > cfg.MaxFiles {
			files = files[:cfg.MaxFiles]
		}
		for k, f := range files {
			s, cost, err := defended(ctx, cfg, spec, dev, label, names, f, uint64(k))
			if err != nil {
				return nil, err
			}
			if len(s.ws) == 0 {
				continue
			}
			sessions = append(sessions, s)
			fold = append(fold, k%cfg.Folds)
			total.RealPackets += cost.RealPackets
			total.RealBytes += cost.RealBytes
			total.Packets += cost.Packets
			total.Bytes += cost.Bytes
			total.Seconds += cost.Seconds
			latSum += float64(cost.LatencyMean) * float64(cost.RealPackets)
			// The largest capture p99: the whole set's p99 is at most it.
			latP99 = max(latP99, float64(cost.LatencyP99))
		}
	}
	row.ByteOverhead, row.PacketOverhead, row.KBps = total.ByteOverhead(), total.PacketOverhead(), total.KBps()
	row.LatencyMsMean = latSum / math.Max(float64(total.RealPackets), 1) / 1e6
	row.LatencyMsP99 = latP99 / 1e6
	var rows []Row
	for _, a := range cfg.Attacks {
		r := row
		r.Attack = a.Name()
		if err := judge(ctx, cfg, a, names, sessions, fold, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", a.Name(), err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// judge trains the attack fold by fold and scores its labels of the
// held-out sessions into row.
func judge(ctx context.Context, cfg Config, a Attack, names []string, sessions []session, fold []int, row *Row) error {
	var okPkt, pkts int
	voter := evaluate.NewVoter(names)
	for f := range cfg.Folds {
		var train []*schemas.Window
		var test []session
		for i, s := range sessions {
			if fold[i] == f {
				test = append(test, s)
			} else {
				train = append(train, s.ws...)
			}
		}
		if len(test) == 0 || len(train) == 0 {
			continue
		}
		var held []*schemas.Window
		for _, s := range test {
			held = append(held, s.ws...)
		}
		all, err := a.Label(ctx, train, held, names, cfg.Seed+uint64(f))
		if err != nil {
			return fmt.Errorf("fold %d: %w", f, err)
		}
		if len(all) != len(held) {
			return fmt.Errorf("fold %d: %d labelled windows for %d held out", f, len(all), len(held))
		}
		for _, s := range test {
			pred := all[:len(s.ws)]
			all = all[len(s.ws):]
			// A capture of a generated home holds a session per device.
			unit := s.file + "/" + names[s.device]
			for wi, w := range s.ws {
				for i := range w.Len {
					if w.Label[i] < 0 {
						continue
					}
					voter.Add(unit, s.device, int(pred[wi][i]))
					pkts++
					if int(pred[wi][i]) == s.device {
						okPkt++
					}
				}
			}
		}
	}
	votes := voter.Votes()
	row.Sessions = len(votes)
	if row.Sessions == 0 {
		return fmt.Errorf("no fold had both training and test captures: give devices with %d captures or more", cfg.Folds)
	}
	row.SessionAccuracy, row.TypeAccuracy = evaluate.SessionAccuracy(votes)
	row.PerPacketAccuracy = float64(okPkt) / math.Max(float64(pkts), 1)
	devSess, devOK := map[string]int{}, map[string]int{}
	for _, v := range votes {
		devSess[v.Truth]++
		if v.Truth == v.Predicted {
			devOK[v.Truth]++
		}
	}
	row.PerDevice = map[string]float64{}
	for d, n := range devSess {
		row.PerDevice[d] = float64(devOK[d]) / float64(n)
	}
	return nil
}

// defended emulates and defends one capture and cuts the device's windows
// from its defended WAN view: the WAN packets of the device's LAN packets
// and the defence's dummies, which the observer cannot tell from them, all
// labeled with the device; the other hosts' packets (the phone doing the
// setup) are left out, as in the LAN study.
func defended(ctx context.Context, cfg Config, spec defense.Spec, dev campaign.DeviceDir, label int, names []string, path string, k uint64) (session, defense.Cost, error) {
	s := session{device: label, file: path}
	r, err := capture.InferHome(ctx, path)
	if err != nil {
		return s, defense.Cost{}, err
	}
	mine, err := deviceFrames(path, dev.MAC)
	if err != nil {
		return s, defense.Cost{}, err
	}
	src, err := capture.OpenFile(path)
	if err != nil {
		return s, defense.Cost{}, err
	}
	gw := cfg.Gateway
	gw.Seed = cfg.Seed + k
	view, _, err := defense.WANView(ctx, src, r.Home, gw)
	src.Close()
	if err != nil {
		return s, defense.Cost{}, fmt.Errorf("emulate the WAN view of %s: %w", path, err)
	}
	if len(view) == 0 {
		return s, defense.Cost{}, nil
	}
	out, cost, err := defense.Apply(view, spec, defense.Options{Mode: gw.Mode, WANAddr: gw.WANAddr, Cipher: gw.Cipher, Seed: cfg.Seed + k})
	if err != nil {
		return s, cost, fmt.Errorf("defend the WAN view of %s: %w", path, err)
	}
	wanAddr := gw.WANAddr
	if !wanAddr.IsValid() {
		wanAddr = gateway.DefaultConfig().WANAddr
	}
	dec := features.NewDecoder(features.HomeConfig{LANNets: []netip.Prefix{netip.PrefixFrom(wanAddr, 32)}})
	var pkts []schemas.Packet
	var labels []int16
	var p schemas.Packet
	for i, q := range out {
		if !q.Dummy() && !mine[q.LAN] {
			continue
		}
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(0, q.TS), CaptureLength: len(q.Frame), Length: q.Wire}
		if err := dec.Decode(features.LinkTypeEthernet, q.Frame, ci, uint64(i), &p); err != nil {
			continue
		}
		pkts = append(pkts, p)
		labels = append(labels, int16(label))
	}
	ws := window.Spec{Kind: schemas.KindInd, Size: cfg.Window, Labels: names}
	sess := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	s.ws = window.Cut(ws, dev.Device, string(gw.Mode), sess, pkts, labels)
	return s, cost, nil
}

// deviceFrames marks the LAN packets (by ordinal) the device sent or
// received.
func deviceFrames(path string, mac schemas.MAC) (map[int64]bool, error) {
	src, err := capture.OpenFile(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	mine := map[int64]bool{}
	for {
		fr, err := src.Next()
		if err == io.EOF {
			return mine, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if fr.LinkType != features.LinkTypeEthernet || len(fr.Data) < 12 {
			continue
		}
		if schemas.MAC(fr.Data[0:6]) == mac || schemas.MAC(fr.Data[6:12]) == mac {
			mine[int64(fr.Offset)] = true
		}
	}
}
