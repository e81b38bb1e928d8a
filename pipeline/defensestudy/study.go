// Package defensestudy measures attacks against the gateway defences
// (pipeline/gateway/defense) on captures laid out like the IoT Sentinel set:
// every capture is emulated through the gateway and defended, the attack is
// trained on defended training captures (the adversary knows the defence)
// and tested on defended held-out captures, captures grouped into folds so
// that no capture is on both sides. The Random Forest is built in; other
// attacks (the BLSTM and the sequence profiles, which need libtorch) come
// in through WindowAttack and SessionAttack.
package defensestudy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
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
	"github.com/homemole/homemole/pipeline/seqprofile"
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
	// MaxWindows > 0 keeps at most that many windows of each session for
	// the window attacks, spread evenly over it: a defence that multiplies
	// the packets (constant-rate shaping far above the traffic) would
	// otherwise multiply an LSTM's training time with them.
	MaxWindows int
	// Log, when set, says per defence how many windows were cut and kept.
	Log  *slog.Logger
	Seed uint64
	// Forest is the rf attack's configuration (zero: forest.DefaultConfig).
	Forest forest.Config
	// Attacks are judged in turn on every defence (nil: the forest alone).
	Attacks []Attack
	// MimicDir holds a folder of captures per device type, the traffic
	// mimic:DEVICE imitates (empty: Dir).
	MimicDir string
	// Span, when set, defends every capture for that long from its first
	// WAN packet (defense.Options.Span): the always-on defences (cbr, stp,
	// mimic) go on sending after the capture ends, as at a real gateway,
	// and no session's length shows. Zero cuts each defended capture at
	// its last real packet.
	Span time.Duration
	// Actions are the true times of one user action (a generated home's
	// switchings): the sequence-profile interaction detector is judged on
	// them under every defence, in every row of it as activity_f1.
	Actions *Actions
}

// Actions are the ground truth of activity inference: when the user acted
// on Device (Unix ns, sorted), each time starting a burst of its traffic.
type Actions struct {
	Device string
	Kind   string
	At     []int64
}

// Attack is one adversary, a WindowAttack or a SessionAttack. The study
// cuts the folds and scores the verdicts, so every attack is judged alike.
type Attack interface {
	Name() string
}

// WindowAttack fits a model on defended training windows and labels every
// packet of the defended held-out windows.
type WindowAttack interface {
	Attack
	Label(ctx context.Context, train, test []*schemas.Window, labels []string, seed uint64) ([][]int32, error)
}

// SessionAttack judges whole sessions rather than packets (the sequence
// profiles find device types in a stream): fitted on the defended
// training sessions, it returns per held-out session the devices (indexes
// into labels) it finds there, its verdict first; none when it finds
// nothing (the study then names the commonest training device, as an
// attacker guessing would).
type SessionAttack interface {
	Attack
	Detect(ctx context.Context, train, test []Session, labels []string, seed uint64) ([][]int, error)
}

// Session is one defended capture as the observer sees it: the device's
// WAN packets and the defence's dummies, in time order.
type Session struct {
	Device  int
	File    string
	Packets []seqprofile.Stamped
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

// Row is one defence against one attack, as issue 19 names its fields.
// Accuracies count the device's WAN packets and the defence's dummies
// alike, as the observer cannot tell them apart; a session is one held-out
// capture, judged by the packets' majority vote (a SessionAttack's verdict
// is its own, and its per-packet accuracy gives every packet its session's
// verdict). DetectionF1 is device detection per held-out session: which
// device types (evaluate.TypeOf) are present; the set found is the
// verdict's type for a WindowAttack and every type a SessionAttack finds;
// F1 per type over the sessions, macro-averaged over the types held out.
// ActivityF1, with Config.Actions, is the user-activity attack's F1 on the
// held-out actions (the sequence-profile interaction detector; one figure
// per defence, repeated in the row of every attack). Latency mean is over every real
// packet; its p99 is the largest of the captures' p99s, an upper bound of
// the whole set's.
type Row struct {
	Defense           string  `json:"defense"`
	Attack            string  `json:"attack"`
	View              string  `json:"view,omitempty"`
	SessionAccuracy   float64 `json:"session_accuracy"`
	TypeAccuracy      float64 `json:"type_accuracy"`
	PerPacketAccuracy float64 `json:"per_packet_accuracy"`
	DetectionF1       float64 `json:"detection_f1"`
	// ActivityF1 is set in studies with Actions.
	ActivityF1 *float64 `json:"activity_f1,omitempty"`
	// Activity is the count behind ActivityF1.
	Activity       *seqprofile.InteractionScore `json:"activity,omitempty"`
	ByteOverhead   float64                      `json:"byte_overhead"`
	PacketOverhead float64                      `json:"packet_overhead"`
	KBps           float64                      `json:"kbps_per_home"`
	LatencyMsMean  float64                      `json:"latency_ms_mean"`
	LatencyMsP99   float64                      `json:"latency_ms_p99"`
	Sessions       int                          `json:"sessions"`
	// PerDevice is each device's session accuracy.
	PerDevice map[string]float64 `json:"per_device_accuracy,omitempty"`
}

// session is one defended capture: its device, its windows and its
// packets' sequence-profile vectors.
type session struct {
	device int
	file   string
	ws     []*schemas.Window
	pkts   []seqprofile.Stamped
	// start is the first WAN packet's time, to place actions in it.
	start, end int64
}

// Run measures the Random Forest under every defence of cfg.
func Run(ctx context.Context, cfg Config) ([]Row, error) {
	if cfg.Folds < 2 {
		return nil, fmt.Errorf("defence study: %d folds, want 2 or more", cfg.Folds)
	}
	if cfg.Window <= 0 {
		return nil, fmt.Errorf("defence study: window of %d packets, want 1 or more", cfg.Window)
	}
	devs, err := deviceDirs(cfg)
	if err != nil {
		return nil, err
	}
	if len(cfg.Attacks) == 0 {
		cfg.Attacks = []Attack{ForestAttack{Config: cfg.Forest}}
	}
	for _, a := range cfg.Attacks {
		_, w := a.(WindowAttack)
		_, s := a.(SessionAttack)
		if !w && !s {
			return nil, fmt.Errorf("defence study: attack %s labels neither windows nor sessions", a.Name())
		}
	}
	if cfg.MimicDir == "" {
		cfg.MimicDir = cfg.Dir
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

// deviceDirs are the studied devices and their captures.
func deviceDirs(cfg Config) ([]campaign.DeviceDir, error) {
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
	return devs, nil
}

// Traffic is what the studied captures' undefended WAN views say about
// the defences a study should set.
type Traffic struct {
	// Peak is the most WAN packets the gateway sends, or receives, in one
	// second of any capture (each capture is a home), in PeakIn. cbr:RATE
	// gives each direction RATE/2 slots a second, so cbr above twice the
	// peak never queues a second's traffic.
	Peak   int
	PeakIn string
	// Longest is the longest WAN view's span, first packet to last, in
	// LongestIn: Config.Span set to it defends every capture as long.
	Longest   time.Duration
	LongestIn string
}

// Survey reads every studied capture's undefended WAN view once.
func Survey(ctx context.Context, cfg Config) (Traffic, error) {
	var tr Traffic
	devs, err := deviceDirs(cfg)
	if err != nil {
		return tr, err
	}
	seen := map[string]bool{}
	for _, dev := range devs {
		files := dev.Files
		if cfg.MaxFiles > 0 && len(files) > cfg.MaxFiles {
			files = files[:cfg.MaxFiles]
		}
		for k, f := range files {
			if seen[f] {
				continue // a generated home's sessions are every device's
			}
			seen[f] = true
			view, gw, err := wanView(ctx, cfg, f, uint64(k))
			if err != nil {
				return tr, err
			}
			if len(view) == 0 {
				continue
			}
			if span := time.Duration(view[len(view)-1].TS - view[0].TS); span > tr.Longest {
				tr.Longest, tr.LongestIn = span, f
			}
			wan := gw.WANAddr
			if !wan.IsValid() {
				wan = gateway.DefaultConfig().WANAddr
			}
			var ways [2][]int64
			for _, p := range view {
				out := 0
				if defense.Outbound(p.Frame, wan) {
					out = 1
				}
				ways[out] = append(ways[out], p.TS)
			}
			for _, ts := range ways {
				for i, j := 0, 0; j < len(ts); j++ {
					for ts[j]-ts[i] >= int64(time.Second) {
						i++
					}
					if n := j - i + 1; n > tr.Peak {
						tr.Peak, tr.PeakIn = n, f
					}
				}
			}
		}
	}
	return tr, nil
}

// runDefense defends every capture once and judges every attack on the
// same defended sessions and folds: a row per attack.
func runDefense(ctx context.Context, cfg Config, devs []campaign.DeviceDir, names []string, spec defense.Spec) ([]Row, error) {
	row := Row{Defense: spec.String(), View: string(cfg.Gateway.Mode)}
	var mimic [][]defense.Packet
	if spec.Mimic != "" {
		if cfg.MimicDir == "" {
			return nil, fmt.Errorf("mimic:%s needs captures of %s to imitate: give the study a folder of device folders (--mimic-dir)", spec.Mimic, spec.Mimic)
		}
		var err error
		if mimic, err = defense.ViewsOfDir(ctx, filepath.Join(cfg.MimicDir, spec.Mimic), cfg.Gateway); err != nil {
			return nil, fmt.Errorf("mimic:%s: %w", spec.Mimic, err)
		}
	}
	var sessions []session
	var fold []int
	var total defense.Cost
	var cut, kept int
	var latSum, latP99 float64
	for label, dev := range devs {
		files := dev.Files
		if cfg.MaxFiles > 0 && len(files) > cfg.MaxFiles {
			files = files[:cfg.MaxFiles]
		}
		for k, f := range files {
			s, cost, err := defended(ctx, cfg, spec, mimic, dev, label, names, f, uint64(k))
			if err != nil {
				return nil, err
			}
			if len(s.ws) == 0 {
				continue
			}
			cut += len(s.ws)
			s.ws = spread(s.ws, cfg.MaxWindows)
			kept += len(s.ws)
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
	if cfg.Log != nil {
		cfg.Log.Info("defended", "defense", spec.String(), "sessions", len(sessions), "windows", cut, "windows_kept", kept)
	}
	row.ByteOverhead, row.PacketOverhead, row.KBps = total.ByteOverhead(), total.PacketOverhead(), total.KBps()
	row.LatencyMsMean = latSum / math.Max(float64(total.RealPackets), 1) / 1e6
	row.LatencyMsP99 = latP99 / 1e6
	if cfg.Actions != nil {
		sc, err := judgeActivity(cfg, names, sessions, fold)
		if err != nil {
			return nil, fmt.Errorf("activity: %w", err)
		}
		f1 := sc.F1()
		row.ActivityF1, row.Activity = &f1, &sc
	}
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

// spread keeps n of the windows, evenly spaced, in order (n <= 0: all).
func spread(ws []*schemas.Window, n int) []*schemas.Window {
	if n <= 0 || len(ws) <= n {
		return ws
	}
	out := make([]*schemas.Window, n)
	for i := range n {
		out[i] = ws[i*len(ws)/n]
	}
	return out
}

// verdicts is what an attack said of one fold's held-out sessions: per
// session the devices found, the verdict first, and per packet the
// devices it labelled (nil for a SessionAttack).
func verdicts(ctx context.Context, a Attack, names []string, train, test []session, seed uint64) (found [][]int, perPacket [][][]int32, err error) {
	switch a := a.(type) {
	case WindowAttack:
		var tw, held []*schemas.Window
		for _, s := range train {
			tw = append(tw, s.ws...)
		}
		for _, s := range test {
			held = append(held, s.ws...)
		}
		all, err := a.Label(ctx, tw, held, names, seed)
		if err != nil {
			return nil, nil, err
		}
		if len(all) != len(held) {
			return nil, nil, fmt.Errorf("%d labelled windows for %d held out", len(all), len(held))
		}
		for _, s := range test {
			pred := all[:len(s.ws)]
			all = all[len(s.ws):]
			votes := make([]int, len(names))
			for wi, w := range s.ws {
				for i := range w.Len {
					if w.Label[i] < 0 {
						continue
					}
					if p := pred[wi][i]; p < 0 || int(p) >= len(names) {
						return nil, nil, fmt.Errorf("label %d of %d devices", p, len(names))
					}
					votes[pred[wi][i]]++
				}
			}
			found = append(found, []int{evaluate.Commonest(votes)})
			perPacket = append(perPacket, pred)
		}
		return found, perPacket, nil
	case SessionAttack:
		conv := func(ss []session) []Session {
			out := make([]Session, len(ss))
			for i, s := range ss {
				out[i] = Session{Device: s.device, File: s.file, Packets: s.pkts}
			}
			return out
		}
		found, err := a.Detect(ctx, conv(train), conv(test), names, seed)
		if err != nil {
			return nil, nil, err
		}
		if len(found) != len(test) {
			return nil, nil, fmt.Errorf("verdicts on %d sessions for %d held out", len(found), len(test))
		}
		for _, f := range found {
			for _, d := range f {
				if d < 0 || d >= len(names) {
					return nil, nil, fmt.Errorf("device %d of %d found", d, len(names))
				}
			}
		}
		return found, make([][][]int32, len(test)), nil
	}
	return nil, nil, fmt.Errorf("attack %s labels neither windows nor sessions", a.Name())
}

// judge trains the attack fold by fold and scores its verdicts on the
// held-out sessions into row.
func judge(ctx context.Context, cfg Config, a Attack, names []string, sessions []session, fold []int, row *Row) error {
	var okSess, okType, okPkt, pkts int
	devSess, devOK := make([]int, len(names)), make([]int, len(names))
	var det detection
	for f := range cfg.Folds {
		var train, test []session
		for i, s := range sessions {
			if fold[i] == f {
				test = append(test, s)
			} else {
				train = append(train, s)
			}
		}
		if len(test) == 0 || len(train) == 0 {
			continue
		}
		found, perPacket, err := verdicts(ctx, a, names, train, test, cfg.Seed+uint64(f))
		if err != nil {
			return fmt.Errorf("fold %d: %w", f, err)
		}
		prior := commonestDevice(train, len(names))
		for i, s := range test {
			// An attacker whose detectors find nothing still names a
			// device: the commonest of its training sessions, as always
			// guessing would. Detection F1 scores what was found.
			guess := prior
			if len(found[i]) > 0 {
				guess = found[i][0]
			}
			for wi, w := range s.ws {
				for k := range w.Len {
					if w.Label[k] < 0 {
						continue
					}
					pkts++
					p := guess
					if perPacket[i] != nil {
						p = int(perPacket[i][wi][k])
					}
					if p == s.device {
						okPkt++
					}
				}
			}
			row.Sessions++
			devSess[s.device]++
			if guess == s.device {
				okSess++
				devOK[s.device]++
			}
			if guess >= 0 && evaluate.TypeOf(names[guess]) == evaluate.TypeOf(names[s.device]) {
				okType++
			}
			det.add(names, s.device, found[i])
		}
	}
	if row.Sessions == 0 {
		return fmt.Errorf("no fold had both training and test captures: give devices with %d captures or more", cfg.Folds)
	}
	row.SessionAccuracy = float64(okSess) / float64(row.Sessions)
	row.TypeAccuracy = float64(okType) / float64(row.Sessions)
	row.PerPacketAccuracy = float64(okPkt) / math.Max(float64(pkts), 1)
	row.DetectionF1 = det.macroF1()
	row.PerDevice = map[string]float64{}
	for d, n := range devSess {
		if n > 0 {
			row.PerDevice[names[d]] = float64(devOK[d]) / float64(n)
		}
	}
	return nil
}

// commonestDevice is the device of the most sessions (the first such).
func commonestDevice(ss []session, devices int) int {
	n := make([]int, devices)
	for _, s := range ss {
		n[s.device]++
	}
	return evaluate.Commonest(n)
}

// detection counts, per device type, the held-out sessions where the type
// was found and present (tp), found and absent (fp), present and not
// found (fn).
type detection struct {
	tp, fp, fn map[string]int
}

func (d *detection) add(names []string, truth int, found []int) {
	if d.tp == nil {
		d.tp, d.fp, d.fn = map[string]int{}, map[string]int{}, map[string]int{}
	}
	present := evaluate.TypeOf(names[truth])
	seen := map[string]bool{}
	for _, f := range found {
		seen[evaluate.TypeOf(names[f])] = true
	}
	for t := range seen {
		if t == present {
			d.tp[t]++
		} else {
			d.fp[t]++
		}
	}
	if !seen[present] {
		d.fn[present]++
	}
}

// macroF1 is the mean over the types held out (present in some session)
// of 2tp / (2tp + fp + fn); a type only ever wrongly found lowers the
// others' precision through its fp but is not itself averaged, as it has
// no sessions to be found in.
func (d *detection) macroF1() float64 {
	var sum float64
	var n int
	types := map[string]bool{}
	for t := range d.tp {
		types[t] = true
	}
	for t := range d.fn {
		types[t] = true
	}
	for t := range types {
		sum += 2 * float64(d.tp[t]) / float64(2*d.tp[t]+d.fp[t]+d.fn[t])
		n++
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

// defended emulates and defends one capture and cuts the device's windows
// from its defended WAN view: the WAN packets of the device's LAN packets
// and the defence's dummies, which the observer cannot tell from them, all
// labeled with the device; the other hosts' packets (the phone doing the
// setup) are left out, as in the LAN study.
func defended(ctx context.Context, cfg Config, spec defense.Spec, mimic [][]defense.Packet, dev campaign.DeviceDir, label int, names []string, path string, k uint64) (session, defense.Cost, error) {
	s := session{device: label, file: path}
	mine, err := deviceFrames(path, dev.MAC)
	if err != nil {
		return s, defense.Cost{}, err
	}
	view, gw, err := wanView(ctx, cfg, path, k)
	if err != nil {
		return s, defense.Cost{}, err
	}
	if len(view) == 0 {
		return s, defense.Cost{}, nil
	}
	out, cost, err := defense.Apply(view, spec, defense.Options{Mode: gw.Mode, WANAddr: gw.WANAddr, Cipher: gw.Cipher, Seed: cfg.Seed + k, Mimic: mimic, Span: cfg.Span})
	if err != nil {
		return s, cost, fmt.Errorf("defend the WAN view of %s: %w", path, err)
	}
	s.start, s.end = view[0].TS, view[len(view)-1].TS
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
	s.pkts = seqprofile.StampedOf(pkts)
	return s, cost, nil
}

// wanView is the undefended WAN view of the k-th capture of a device
// through the study's gateway (seeded per capture), and that gateway.
func wanView(ctx context.Context, cfg Config, path string, k uint64) ([]defense.Packet, gateway.Config, error) {
	gw := cfg.Gateway
	gw.Seed = cfg.Seed + k
	r, err := capture.InferHome(ctx, path)
	if err != nil {
		return nil, gw, err
	}
	src, err := capture.OpenFile(path)
	if err != nil {
		return nil, gw, err
	}
	defer src.Close()
	view, _, err := defense.WANView(ctx, src, r.Home, gw)
	if err != nil {
		return nil, gw, fmt.Errorf("emulate the WAN view of %s: %w", path, err)
	}
	return view, gw, nil
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
