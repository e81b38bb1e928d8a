package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/homemole/homemole/internal/sentineldata"

	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"

	"github.com/homemole/homemole/pipeline/agent"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/embedded"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/tools/internal/servers"
)

// liveInput is the capture whose busiest device the live test replays, as
// the lab does by default (relative to this package's folder).
const liveInput = "../../../shared/data/iot-sentinel-dev/HueBridge/Setup-A-1-STA.pcap"

// liveRotation is the campaign's rotation; the replay lasts more than five.
const liveRotation = 20 * time.Second

// labUp serializes the namespace set-up of labs running at once: ip names
// its temporary veths the same way in each.
var labUp sync.Mutex

// TestLiveCampaign runs a live campaign through the lab's real gateways,
// NAPT and OpenVPN at once, each in namespaces of its own: the flows of
// liveInput's busiest device are replayed through real sockets for more
// than five rotations of 20 s while the capture agent reads the gateway's
// LAN and WAN interfaces live, and the labeler and windower run as their
// own processes (services/labeler, services/windower) against embedded
// NATS and S3 servers this test starts. tcpdump records the same
// interfaces, from which the lab's payload ground truth names each WAN
// packet's LAN packet. Every packet captured must be labeled once and
// windowed once, no worker may hold anything at the end, and at least
// 99.5 % of the WAN packets that carry a LAN packet must have that LAN
// packet's label. Each variant prints its live: line at the end.
func TestLiveCampaign(t *testing.T) {
	labTurn(t)
	if os.Geteuid() != 0 {
		t.Skip("the live campaign test creates network namespaces, runs iptables, OpenVPN and tcpdump and captures live: run it as root (go tool task live-test)")
	}
	for _, p := range debPackages[:5] {
		if _, err := exec.LookPath(p[0]); err != nil {
			t.Fatalf("%s not found: install it with `bash tools/debian-packages.sh iproute2 iptables tcpdump openvpn openssl` (go tool task live-test does)", p[0])
		}
	}
	sentineldata.Need(t)
	removeStale()
	s, err := loadScript(liveInput, limits{maxPackets: 100000, maxLength: 110 * time.Second, maxGap: 2 * time.Second, minPayload: 8, maxPayload: 1300})
	if err != nil {
		t.Fatalf("load the flows to replay: %v", err)
	}
	if s.length < 5*liveRotation {
		t.Fatalf("%s replays %s: want at least 5 rotations of %s", liveInput, s.length, liveRotation)
	}
	bin := buildWorkers(t)
	var mu sync.Mutex
	lines := map[string]string{}
	variants := [][2]string{{"napt", ""}, {"vpn", string(gateway.AES256GCM)}}
	// The lines come last, in order, once both variants are done.
	t.Cleanup(func() {
		for _, v := range variants {
			if l, ok := lines[v[0]]; ok {
				fmt.Printf("variant %s:\n%s\n", v[0], l)
			}
		}
	})
	for _, v := range variants {
		t.Run(v[0], func(t *testing.T) {
			t.Parallel()
			line := runLive(t, bin, s, v[0], v[1])
			mu.Lock()
			lines[v[0]] = line
			mu.Unlock()
		})
	}
}

// buildWorkers builds the labeler and windower services for this test.
func buildWorkers(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", dir+"/", "github.com/homemole/homemole/services/labeler", "github.com/homemole/homemole/services/windower").CombinedOutput()
	if err != nil {
		t.Fatalf("build services/labeler and services/windower: %v\n%s", err, out)
	}
	return dir
}

func runLive(t *testing.T, bin string, s *script, mode, cipher string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

	l := newLabNamed(false, false, mode)
	t.Cleanup(l.close)
	labUp.Lock()
	err := l.up(ctx)
	labUp.Unlock()
	if err != nil {
		t.Fatalf("build the lab's namespaces: %v", err)
	}
	if err := l.route(ctx, mode, cipher, dir); err != nil {
		t.Fatalf("make the gateway a %s gateway: %v", mode, err)
	}
	c := &campaign.Campaign{Name: "live", Homes: []*campaign.Home{{
		Name:      "gw",
		Gateway:   campaign.Gateway{Mode: mode, MAC: macOf(t, l.gw, "lan0"), LANNets: []string{lanNet}},
		Taps:      []campaign.Tap{{Name: "lan", Interface: "lan0"}, {Name: "wan", Interface: "wan0"}},
		Inventory: []campaign.Device{{MAC: macOf(t, l.dev, "eth0"), Name: "replayed", Category: campaign.CategoryIoT}},
		Live:      campaign.Live{Rotation: liveRotation},
	}}}
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "campaign.yaml")
	data, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}

	srv, err := embedded.Start(ctx, filepath.Join(dir, "servers"), log)
	if err != nil {
		t.Fatalf("start the embedded NATS and S3: %v", err)
	}
	t.Cleanup(srv.Close)
	conn, err := bus.Connect(ctx, bus.Config{URL: srv.NATSURL}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	st, err := store.OpenS3(ctx, store.S3Config{Endpoint: srv.S3Endpoint, AccessKey: srv.S3AccessKey, SecretKey: srv.S3SecretKey, Bucket: "homemole"})
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"HOMEMOLE_NATS_URL=" + srv.NATSURL, "HOMEMOLE_S3_ENDPOINT=" + srv.S3Endpoint, "HOMEMOLE_S3_ACCESS_KEY=" + srv.S3AccessKey,
		"HOMEMOLE_S3_SECRET_KEY=" + srv.S3SecretKey, "HOMEMOLE_S3_BUCKET=homemole", "HOMEMOLE_LOG=warn", "HOMEMOLE_METRICS_ADDR=",
		"HOMEMOLE_HOME=" + filepath.Join(dir, "home")}
	spec := window.Spec{Dataset: "live", Version: "v1", Kind: schemas.KindNoise, Size: 20, Cap: 0}
	workers := map[string][]string{
		"labeler": {"--campaign", file},
		"windower": {"--campaign", file, "--dataset", spec.Dataset, "--version", spec.Version, "--kind", spec.Kind,
			"--window", strconv.Itoa(spec.Size), "--cap", "0", "--flush-windows", "8"},
	}
	procs := map[string]*servers.Proc{}
	for _, name := range []string{"labeler", "windower"} {
		p, err := servers.Start(name, filepath.Join(bin, name), workers[name], env, filepath.Join(dir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		procs[name] = p
		t.Cleanup(func() { p.Stop(10 * time.Second) })
	}

	lanPath, wanPath, tunPath := filepath.Join(dir, "lan.pcap"), filepath.Join(dir, "wan.pcap"), filepath.Join(dir, "tun.pcap")
	caps := [][2]string{{"lan0", lanPath}, {"wan0", wanPath}}
	if mode != "napt" {
		caps = append(caps, [2]string{l.tun, tunPath})
	}
	var stops []func() (string, error)
	for _, cp := range caps {
		stop, err := l.tcpdump(ctx, l.gw, cp[0], cp[1])
		if err != nil {
			t.Fatal(err)
		}
		stops = append(stops, stop)
	}
	ag, err := agent.New(agent.Config{Campaign: c.Name, Home: c.Homes[0], BatchSize: 256, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	var sources []capture.Source
	var inputs []agent.Input
	for _, tap := range c.Homes[0].Taps {
		src, err := inNS(l.gw, func() (capture.Source, error) {
			return capture.OpenLive(tap.Interface, capture.LiveOptions{PollTimeout: 10 * time.Millisecond, BufferBytes: 16 << 20})
		})
		if err != nil {
			t.Fatalf("capture %s in the gateway: %v", tap.Interface, err)
		}
		sources = append(sources, src)
		inputs = append(inputs, agent.Input{Tap: tap.Name, Name: tap.Interface, Live: true, Open: func() (capture.Source, error) { return src, nil }})
	}
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx, conn, inputs) }()

	start := time.Now()
	rs, err := l.replay(ctx, s)
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if n := rs.errs.Load(); n > 0 {
		t.Errorf("%d replayed flows failed, first: %v", n, rs.firstErr.Load())
	}
	// Let the last packets reach every tap before the captures stop.
	time.Sleep(time.Second)
	for _, stop := range stops {
		if _, err := stop(); err != nil {
			t.Error(err)
		}
	}
	for _, src := range sources {
		src.Close()
	}
	if err := <-done; err != nil {
		t.Fatalf("agent: %v", err)
	}
	ast := ag.Stats()
	t.Logf("%s: replayed %d flows, %d payloads in %s; agent: %d packets in %d sessions, %d decode errors",
		mode, rs.flows, rs.sent.Load(), time.Since(start).Round(time.Millisecond), ast.Packets, ast.Sessions, ast.DecodeErrors)

	if err := waitDrained(ctx, conn, procs, 2*time.Minute); err != nil {
		t.Fatalf("%v (worker logs in %s)", err, dir)
	}
	rss := map[string]float64{}
	for name, p := range procs {
		if rss[name], err = p.PeakRSS(); err != nil {
			t.Fatal(err)
		}
		p.Stop(10 * time.Second)
	}

	packets := embeddedtest.Batches(t, conn, schemas.StreamPackets)
	labeled := embeddedtest.Batches(t, conn, schemas.StreamLabeled)
	type key struct {
		session string
		offset  uint64
	}
	byTap := map[string][]key{}
	pkts := map[key]schemas.Packet{}
	dups := 0
	for _, b := range packets {
		for _, p := range b.Packets {
			k := key{b.Session, p.Offset}
			if _, ok := pkts[k]; ok {
				dups++
				continue
			}
			pkts[k] = p
			byTap[b.Tap] = append(byTap[b.Tap], k)
		}
	}
	label := map[key]string{}
	for _, b := range labeled {
		for i, p := range b.Packets {
			k := key{b.Session, p.Offset}
			if _, ok := label[k]; ok {
				dups++
				continue
			}
			label[k] = ""
			if b.Labels[i] >= 0 {
				label[k] = b.Devices[b.Labels[i]].Name
			}
		}
	}
	spec.Labels = []string{"replayed"}
	m, err := dataset.Assemble(ctx, st, spec)
	if err != nil {
		t.Fatalf("assemble the dataset the windower wrote: %v", err)
	}
	captured, windowed := ast.Packets, m.Packets
	if windowed > len(label) {
		dups += windowed - len(label)
	}
	lost := max(captured-len(label), 0) + max(len(label)-windowed, 0)

	// Ground truth: the lab's, from tcpdump's captures of the same
	// interfaces; each capture's packets are the agent's in capture order.
	var truth []int64
	if mode == "napt" {
		truth, _, err = truthNAPT(lanPath, wanPath)
	} else {
		truth, _, err = truthVPN(lanPath, tunPath, wanPath, gateway.Cipher(cipher))
	}
	if err != nil {
		t.Fatalf("ground truth: %v", err)
	}
	isOut := func(gateway.Header) bool { return false }
	lanCap, err := readCap(lanPath, isOut)
	if err != nil {
		t.Fatal(err)
	}
	wanCap, err := readCap(wanPath, isOut)
	if err != nil {
		t.Fatal(err)
	}
	order := func(ks []key) []key {
		// Session names sort by their slots; offsets count within one.
		slices.SortFunc(ks, func(a, b key) int {
			if c := strings.Compare(a.session, b.session); c != 0 {
				return c
			}
			return int(a.offset) - int(b.offset)
		})
		return ks
	}
	lanOf, lanMissed, lanByTime := alignCapture(lanCap, order(byTap["lan"]), pkts)
	wanOf, wanMissed, wanByTime := alignCapture(wanCap, order(byTap["wan"]), pkts)
	correct, total := 0, 0
	var misses []string // the first WAN packets without their LAN packet's label
	for i, j := range truth {
		if j < 0 {
			continue
		}
		total++
		w, okW := wanOf[int64(i)]
		lp, okL := lanOf[j]
		if okW && okL && label[lp] != "" && label[w] == label[lp] {
			correct++
		} else if len(misses) < 10 {
			misses = append(misses, fmt.Sprintf("WAN %s #%d (%q) at %s, its LAN packet %s #%d (%q) %s before",
				w.session, w.offset, label[w], time.Unix(0, pkts[w].TsNs).UTC().Format("15:04:05.000000"), lp.session, lp.offset, label[lp],
				time.Duration(pkts[w].TsNs-pkts[lp].TsNs)))
		}
	}
	rate := float64(correct) / float64(max(total, 1))
	t.Logf("%s: tcpdump: %d LAN, %d WAN packets, %d and %d of them not among the agent's, %d and %d found by time stamp; %d WAN packets carry a LAN packet (payload truth), %d of them labeled as it (%.2f %%)",
		mode, len(lanCap), len(wanCap), lanMissed, wanMissed, lanByTime, wanByTime, total, correct, 100*rate)

	line := fmt.Sprintf("live: %d packets captured, %d labeled, %d windowed, %d lost, %d duplicated, %d sessions, peak RSS labeler %.0f MiB windower %.0f MiB",
		captured, len(label), windowed, lost, dups, ast.Sessions, rss["labeler"], rss["windower"])
	t.Logf("%s: %s", mode, line)
	if captured == 0 || len(label) != captured || windowed != captured || lost != 0 || dups != 0 {
		t.Errorf("%d packets captured, %d labeled, %d windowed, %d lost, %d duplicated: want every packet labeled once and windowed once", captured, len(label), windowed, lost, dups)
	}
	if total < int(rs.sent.Load()) {
		t.Errorf("%d WAN packets carry a LAN packet, fewer than the %d payloads replayed", total, rs.sent.Load())
	}
	if rate < 0.995 {
		t.Errorf("%d of %d WAN packets carry their LAN packet's label (%.2f %%): want at least 99.5 %%", correct, total, 100*rate)
		t.Logf("the first of them:\n%s", strings.Join(misses, "\n"))
	}
	if wanMissed > 0 || lanMissed > 0 {
		t.Errorf("tcpdump saw %d LAN and %d WAN packets the agent did not", lanMissed, wanMissed)
	}
	if rot := int(time.Since(start) / liveRotation); ast.Sessions < 2*rot {
		t.Errorf("%d sessions on two taps over %d rotations", ast.Sessions, rot)
	}
	return line
}

// alignCapture names each IPv4 packet of a tcpdump capture by the agent's
// packet it is: the same header fields and, where one has it, the same
// time stamp (the kernel stamps a packet once for every socket that
// captures it), else the first in capture order: two packets of one
// header, such as OpenVPN's datagrams of one size, may reach two sockets
// in different orders when two CPUs handle them at once. missed counts
// packets tcpdump saw that the agent did not; byTime those named by their
// time stamp.
func alignCapture[K comparable](capPkts []capPkt, agentOrder []K, pkts map[K]schemas.Packet) (out map[int64]K, missed, byTime int) {
	headerKey := func(src, dst any, sport, dport int32, proto uint8, id, iplen uint16, seq, ack uint32) string {
		if proto != gateway.ProtoTCP && proto != gateway.ProtoUDP {
			sport, dport = 0, 0
		}
		return fmt.Sprint(src, dst, sport, dport, proto, id, iplen, seq, ack)
	}
	queue := map[string][]K{}
	for _, k := range agentOrder {
		p := pkts[k]
		if !p.SrcIP.Is4() {
			continue
		}
		hk := headerKey(p.SrcIP, p.DstIP, p.SrcPort, p.DPort, p.Transport, p.IPID, p.IPLen, p.TCPSeq, p.TCPAck)
		queue[hk] = append(queue[hk], k)
	}
	out = map[int64]K{}
	for _, c := range capPkts {
		if !c.ok || c.h.Later {
			continue
		}
		h := c.h
		hk := headerKey(h.Src, h.Dst, int32(h.SrcPort), int32(h.DstPort), h.Proto, h.ID, uint16(h.Len), h.Seq, h.Ack)
		q := queue[hk]
		if len(q) == 0 {
			missed++
			continue
		}
		at := 0
		if i := slices.IndexFunc(q, func(k K) bool { return pkts[k].TsNs == c.ts }); i >= 0 {
			at = i
			byTime++
		}
		out[c.idx] = q[at]
		queue[hk] = slices.Delete(q, at, at+1)
	}
	return out, missed, byTime
}

// waitDrained waits until both workers have taken and acknowledged every
// batch of their streams: a session still held would keep its batches
// unacknowledged. A worker that exits fails the wait.
func waitDrained(ctx context.Context, conn *bus.Conn, procs map[string]*servers.Proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	consumers := [][2]string{{schemas.StreamPackets, "labeler-live"}, {schemas.StreamLabeled, "windower-live-v1"}}
	var last string
	for steady := 0; steady < 3; {
		for name, p := range procs {
			select {
			case <-p.Exited():
				out, _ := os.ReadFile(p.LogFile)
				return fmt.Errorf("%s exited: %v\n%s", name, p.Err(), tail(string(out), 20))
			default:
			}
		}
		ok := true
		last = ""
		for _, c := range consumers {
			s, err := conn.JS.Stream(ctx, c[0])
			if err != nil {
				return err
			}
			si, err := s.Info(ctx)
			if err != nil {
				return err
			}
			var ci *jetstream.ConsumerInfo
			if cons, err := s.Consumer(ctx, c[1]); err == nil {
				ci, err = cons.Info(ctx)
				if err != nil {
					return err
				}
			}
			if ci == nil || ci.NumPending != 0 || ci.NumAckPending != 0 || ci.AckFloor.Stream != si.State.LastSeq {
				ok = false
				if ci != nil {
					last += fmt.Sprintf(" %s: %d pending, %d unacknowledged, acked to %d of %d;", c[1], ci.NumPending, ci.NumAckPending, ci.AckFloor.Stream, si.State.LastSeq)
				} else {
					last += fmt.Sprintf(" %s: no consumer yet;", c[1])
				}
			}
		}
		if ok {
			steady++
		} else {
			steady = 0
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the workers still hold batches after %s:%s", timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return nil
}

// macOf is an interface's MAC address in a namespace of the lab.
func macOf(t *testing.T, ns, iface string) string {
	t.Helper()
	mac, err := inNS(ns, func() (string, error) {
		i, err := net.InterfaceByName(iface)
		if err != nil {
			return "", err
		}
		return i.HardwareAddr.String(), nil
	})
	if err != nil {
		t.Fatalf("MAC of %s in %s: %v", iface, ns, err)
	}
	return mac
}
