package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/gateway/defense"
)

// A defended run replays the script through the lab's OpenVPN gateway
// (AES-256-GCM) with a defence running for real, padding (the padding
// shim, shim.go) or constant-rate shaping (tc and dummy senders, shape.go),
// and costs it with pipeline/gateway/defense's definitions (defense.Tally)
// beside the emulator's cost of the same LAN traffic (gateway.Emulate on
// the lab's own LAN capture, then defense.Apply).
//
// The lab's ground truth names each WAN packet: truthVPN gives a data
// packet its tun packet (tunnel order) and that one its LAN packet
// (payload tags); a tun packet to the dummy port is a dummy. A real
// packet's undefended WAN time is when it entered the gateway (lan0, for
// what the home sends) or the VPN server (its net0, for what it receives)
// plus the tunnel's own delay in that direction, the median of an
// undefended run's; its undefended size is what OpenVPN makes of its tun
// packet (gateway.PayloadSize, which the lab has checked against real
// OpenVPN packets).
type defenceRow struct {
	spec     string
	lab, emu defense.Cost
	// lan counts the LAN packets; lost those no WAN packet carries, dup
	// those more than one carries, unarrived those the VPN server's net0
	// never saw (what the home sends leaves there for the internet), and
	// reordered the real WAN packets that left before an earlier packet
	// of their flow (all must be 0).
	lan, lost, dup, unarrived, reordered int
	// firstReorder describes the first real packet that left before an
	// earlier packet of its flow.
	firstReorder string
	// other counts WAN packets neither real nor dummies.
	other int
	// padWrong counts real WAN packets of a padded run whose size is not
	// their bucket's, or whose shim trailer does not give their tunnel
	// datagram's size.
	padWrong int
	// tunOrder says whether the WAN's data packets and the tun device's
	// agree in number per direction (the tunnel-order truth's check).
	tunOrder   bool
	orderNote  string
	replayErrs int64
	firstErr   any
	// base is the tunnel's own median delay, inbound [0] and outbound [1].
	base [2]time.Duration
	// rate is the WAN's data packets per second, inbound [0] and
	// outbound [1], from the first real packet's departure to the last's.
	rate [2]float64
	// wgPad is what WireGuard's own padding (plaintext to a multiple of
	// 16 bytes) would add to the same real packets' WireGuard bytes.
	wgPad float64
	// labDir and emuDir are the costs per direction, inbound [0] and
	// outbound [1].
	labDir, emuDir [2]defense.Cost
	// copied, stale and early count the lab's dummies, inbound [0] and
	// outbound [1], against the emulator's rule that a dummy has the size
	// of the last real packet that left its way: those that have it,
	// those that do not, and those before any real packet left that way.
	copied, stale, early [2]int
}

// parseLabDefence parses a defence the lab runs for real: pad:N or
// pad:mtu, cbr:RATE, both, or none.
func parseLabDefence(text string) (defense.Spec, error) {
	spec, err := defense.ParseSpec(text)
	if err != nil {
		return spec, err
	}
	if spec.STP > 0 || spec.Mimic != "" || spec.VPNPad {
		return spec, fmt.Errorf("defence %q: the lab runs pad:N, pad:mtu and cbr:RATE (and none); stp, mimic and vpn-pad run in the emulator only (homemole defend)", text)
	}
	if spec.CBR > maxShapeRate {
		return spec, fmt.Errorf("defence %q: the lab shapes at most cbr:%d", text, maxShapeRate)
	}
	return spec, nil
}

// runDefended runs one defence in a fresh lab. base is the tunnel's own
// delay per direction; nil takes this run's (an undefended run's).
func runDefended(ctx context.Context, s *script, text, dir string, base *[2]time.Duration) (r defenceRow, err error) {
	r.spec = text
	spec, err := parseLabDefence(text)
	if err != nil {
		return r, err
	}
	l := newLabNamed(false, false, "def")
	defer l.close()
	if err := l.up(ctx); err != nil {
		return r, err
	}
	var shim *padShim
	if spec.Pad > 0 {
		l.padded = true
		if shim, err = l.startPadShim(spec.Pad); err != nil {
			return r, err
		}
		defer shim.stop()
	}
	cipher := gateway.AES256GCM
	if err := l.route(ctx, "vpn", string(cipher), dir); err != nil {
		return r, err
	}
	var shp *shaper
	if spec.CBR > 0 {
		if shp, err = l.startShaper(ctx, spec.CBR); err != nil {
			return r, err
		}
		defer shp.stop()
		fmt.Printf("shaping: tc HTB at %g packets/s per direction on %s (gateway) and tun0 (VPN server), dummy senders on\n", spec.CBR/2, l.tun)
	}
	p := func(n string) string { return filepath.Join(dir, n) }
	lanPath, wanPath, tunPath, net0Path := p("lan.pcap"), p("wan.pcap"), p("tun.pcap"), p("isp-net0.pcap")
	var caps captureSet
	defer caps.stop()
	for _, c := range [][3]string{{l.gw, "lan0", lanPath}, {l.gw, "wan0", wanPath}, {l.gw, l.tun, tunPath}, {l.isp, "net0", net0Path}} {
		if err := caps.start(ctx, l, c[0], c[1], c[2]); err != nil {
			return r, err
		}
	}
	if shp != nil {
		shp.sending.Store(true)
	}
	rs, err := l.replay(ctx, s)
	if err != nil {
		return r, err
	}
	r.replayErrs = rs.errs.Load()
	r.firstErr = rs.firstErr.Load()
	// Let a shaped queue drain and the last packets reach every tap; the
	// dummies stop a second before the captures do.
	time.Sleep(time.Second)
	if shp != nil {
		shp.sending.Store(false)
	}
	time.Sleep(time.Second)
	if err := caps.stop(); err != nil {
		return r, err
	}
	if shim != nil {
		if err := shim.firstErr(); err != nil {
			return r, err
		}
	}
	if shp != nil {
		if err := shp.firstErr(); err != nil {
			return r, err
		}
	}

	truth, ti, err := truthVPN(lanPath, tunPath, wanPath, cipher)
	if err != nil {
		return r, err
	}
	r.tunOrder = ti.wanOut == ti.tunOut && ti.wanIn == ti.tunIn
	r.orderNote = fmt.Sprintf("%d/%d outbound, %d/%d inbound data packets (WAN/tun)", ti.wanOut, ti.tunOut, ti.wanIn, ti.tunIn)
	if err := r.tally(lanPath, wanPath, tunPath, net0Path, truth, ti.tunTruth, spec, shim, base); err != nil {
		return r, err
	}
	if r.emu, r.emuDir, err = emulatedCost(ctx, lanPath, spec); err != nil {
		return r, err
	}
	return r, nil
}

// tally builds the lab's undefended and defended WAN views from its
// captures and truth, and costs them.
func (r *defenceRow) tally(lanPath, wanPath, tunPath, net0Path string, truth, tunTruth []int64, spec defense.Spec, shim *padShim, base *[2]time.Duration) error {
	lan, err := readCap(lanPath, lanOut)
	if err != nil {
		return err
	}
	tun, err := readCap(tunPath, tunOut)
	if err != nil {
		return err
	}
	net0, err := readCap(net0Path, tunOut)
	if err != nil {
		return err
	}
	wan, err := readWANSizes(wanPath)
	if err != nil {
		return err
	}
	if len(wan) != len(truth) {
		return fmt.Errorf("%s: %d packets, its truth %d", wanPath, len(wan), len(truth))
	}
	// What the home receives entered the VPN server on net0.
	atServer := matchByKey(net0, lan)
	r.lan = len(lan)
	carried := make([]int, len(lan))
	gw := netip.MustParseAddr(gwWANAddr)
	type real struct {
		pre, at int64
		out     bool
		wire    int
		lan     int64
		wanWire int
	}
	var reals []real
	type dummy struct {
		defense.Packet
		out bool
	}
	var dummies []dummy
	type flowKey struct {
		proto      uint8
		src, dst   netip.Addr
		sport, dpt uint16
	}
	// lastOf is, per flow, the latest place (a LAN index outbound, a net0
	// index inbound) of a packet already on the WAN.
	lastOf := map[flowKey]int64{}
	lastPre := map[flowKey]int64{} // when the packet at lastOf entered
	for _, m := range atServer {
		if m < 0 {
			r.unarrived++
		}
	}
	for i, w := range wan {
		if truth[i] < 0 {
			t := tunTruth[i]
			if t >= 0 && tun[t].ok && tun[t].h.Proto == gateway.ProtoUDP && tun[t].h.DstPort == dummyPort {
				dummies = append(dummies, dummy{defense.Packet{TS: w.ts, Wire: w.wire, LAN: -1}, w.src == gw})
			} else {
				r.other++
			}
			continue
		}
		li := truth[i]
		carried[li]++
		out := w.src == gw
		pre := lan[li].ts
		if !out {
			m := atServer[li]
			if m < 0 {
				return fmt.Errorf("LAN packet %d (inbound) has no packet on the VPN server's net0: the lab's ground truth is incomplete", li)
			}
			pre = net0[m].ts
		}
		h := lan[li].h
		k, at := flowKey{h.Proto, h.Src, h.Dst, h.SrcPort, h.DstPort}, li
		if !out {
			at = atServer[li]
		}
		if last, ok := lastOf[k]; ok && at < last {
			r.reordered++
			if r.firstReorder == "" {
				dir := "inbound"
				if out {
					dir = "outbound"
				}
				r.firstReorder = fmt.Sprintf("%s, proto %d %s:%d > %s:%d: entered at %d, %v before the packet entered at %d, which left first",
					dir, h.Proto, h.Src, h.SrcPort, h.Dst, h.DstPort, at, time.Duration(lastPre[k]-pre), last)
			}
		}
		if at >= lastOf[k] {
			lastOf[k], lastPre[k] = at, pre
		}
		inner := gateway.PayloadSize(gateway.AES256GCM, tun[tunTruth[i]].h.Len)
		if spec.Pad > 0 {
			n, err := shim.innerLen(w.udp)
			if err != nil || n != inner || w.ipLen != paddedLen(inner, spec.Pad) {
				r.padWrong++
			}
		}
		reals = append(reals, real{pre: pre, at: w.ts, out: out, wire: 14 + gateway.OuterUDPOverhead + inner, lan: li, wanWire: w.wire})
	}
	for _, n := range carried {
		switch {
		case n == 0:
			r.lost++
		case n > 1:
			r.dup++
		}
	}
	if len(reals) == 0 {
		return fmt.Errorf("%s: no WAN packet carries a LAN packet", wanPath)
	}
	if base == nil {
		var d [2][]int64
		for _, x := range reals {
			k := 0
			if x.out {
				k = 1
			}
			d[k] = append(d[k], x.at-x.pre)
		}
		for k := range d {
			if len(d[k]) > 0 {
				slices.Sort(d[k])
				r.base[k] = time.Duration(d[k][len(d[k])/2])
			}
		}
	} else {
		r.base = *base
	}
	var undefended, defended []defense.Packet
	var undefDir, defDir [2][]defense.Packet
	var perDir [2]int
	var wgPadded, wgBare int
	for i := range wan {
		if truth[i] >= 0 {
			n := tun[tunTruth[i]].h.Len
			wgPadded += gateway.PayloadSize(gateway.WireGuard, n)
			wgBare += gateway.PayloadSize(gateway.WireGuard, 0) + n
		}
	}
	// Per packet, the Ethernet, IP and UDP headers come on top of both.
	r.wgPad = float64(wgPadded-wgBare) / float64(wgBare+len(reals)*(14+gateway.OuterUDPOverhead))
	first, last := reals[0].at, reals[0].at
	for _, x := range reals {
		k := 0
		if x.out {
			k = 1
		}
		perDir[k]++
		u := defense.Packet{TS: x.pre + int64(r.base[k]), Wire: x.wire, LAN: x.lan}
		d := defense.Packet{TS: x.at, Wire: x.wanWire, LAN: x.lan}
		undefended, defended = append(undefended, u), append(defended, d)
		undefDir[k], defDir[k] = append(undefDir[k], u), append(defDir[k], d)
		first, last = min(first, x.at), max(last, x.at)
	}
	// As in the emulator, the defence's cost runs from the first real
	// packet's departure to the last one's: the dummy senders before and
	// after are the lab's, not the home's traffic.
	for _, d := range dummies {
		if d.TS >= first && d.TS <= last {
			defended = append(defended, d.Packet)
			k := dirIndex(d.out)
			perDir[k]++
			defDir[k] = append(defDir[k], d.Packet)
		}
	}
	if span := float64(last-first) / 1e9; span > 0 {
		r.rate = [2]float64{float64(perDir[0]) / span, float64(perDir[1]) / span}
	}
	// The lab's dummies against the emulator's rule, on the lab's own
	// departures (padding, which the shim adds to dummies too, aside).
	if spec.Pad == 0 {
		var lastWire [2]int
		type event struct {
			ts    int64
			dir   int
			dummy bool
			wire  int
		}
		var evs []event
		for _, x := range reals {
			evs = append(evs, event{x.at, dirIndex(x.out), false, x.wanWire})
		}
		for _, d := range dummies {
			evs = append(evs, event{d.TS, dirIndex(d.out), true, d.Wire})
		}
		slices.SortStableFunc(evs, func(a, b event) int { return cmp.Compare(a.ts, b.ts) })
		for _, e := range evs {
			switch {
			case !e.dummy:
				lastWire[e.dir] = e.wire
			case e.ts < first || e.ts > last:
			case lastWire[e.dir] == 0:
				r.early[e.dir]++
			case e.wire == lastWire[e.dir]:
				r.copied[e.dir]++
			default:
				r.stale[e.dir]++
			}
		}
	}
	for k := range r.labDir {
		if r.labDir[k], err = defense.Tally(undefDir[k], defDir[k]); err != nil {
			return err
		}
	}
	r.lab, err = defense.Tally(undefended, defended)
	return err
}

func dirIndex(out bool) int {
	if out {
		return 1
	}
	return 0
}

// tallyByDir costs the inbound [0] and outbound [1] packets apart, out
// telling a packet's direction.
func tallyByDir(undefended, defended []defense.Packet, out func(defense.Packet) bool) ([2]defense.Cost, error) {
	var c [2]defense.Cost
	for k := range c {
		otherWay := func(p defense.Packet) bool { return dirIndex(out(p)) != k }
		var err error
		if c[k], err = defense.Tally(slices.DeleteFunc(slices.Clone(undefended), otherWay), slices.DeleteFunc(slices.Clone(defended), otherWay)); err != nil {
			return c, err
		}
	}
	return c, nil
}

// wanSize is what the cost needs of a WAN packet.
type wanSize struct {
	ts          int64
	wire, ipLen int
	src         netip.Addr
	udp         []byte // the UDP payload, where the shim's trailer is
}

func readWANSizes(path string) ([]wanSize, error) {
	var out []wanSize
	err := eachFrame(path, func(fr capture.Frame) {
		w := wanSize{ts: fr.CI.Timestamp.UnixNano(), wire: fr.CI.Length}
		if h, err := gateway.ParseHeader(fr.LinkType, fr.Data); err == nil {
			w.ipLen, w.src = h.Len, h.Src
			if h.Proto == gateway.ProtoUDP && !h.Later {
				if a, b := h.IPStart+h.L4+8, h.IPStart+h.Len; a <= b && b <= len(fr.Data) {
					w.udp = append([]byte(nil), fr.Data[a:b]...)
				}
			}
		}
		out = append(out, w)
	})
	return out, err
}

// emulatedCost runs the emulator's OpenVPN gateway (AES-256-GCM) on the
// lab's LAN capture and costs the defence on its WAN view, in all and per
// direction (inbound [0], outbound [1]).
func emulatedCost(ctx context.Context, lanPath string, spec defense.Spec) (c defense.Cost, dir [2]defense.Cost, err error) {
	src, err := capture.OpenFile(lanPath)
	if err != nil {
		return c, dir, err
	}
	defer src.Close()
	cfg := gateway.DefaultConfig()
	cfg.Mode, cfg.Cipher, cfg.Seed = gateway.VPN, gateway.AES256GCM, 1
	cfg.WANAddr = netip.MustParseAddr(gwWANAddr)
	home := features.HomeConfig{LANNets: []netip.Prefix{netip.MustParsePrefix(lanNet)}}
	pkts, _, err := defense.WANView(ctx, src, home, cfg)
	if err != nil {
		return c, dir, fmt.Errorf("emulate %s: %w", lanPath, err)
	}
	out, c, err := defense.Apply(pkts, spec, defense.Options{Mode: gateway.VPN, WANAddr: cfg.WANAddr, Cipher: cfg.Cipher, Seed: 1})
	if err != nil {
		return c, dir, fmt.Errorf("defend the emulated WAN view of %s: %w", lanPath, err)
	}
	// A dummy's frame is a copy of a real packet's of its direction, so
	// the frame's source tells every packet's direction.
	dir, err = tallyByDir(pkts, out, func(p defense.Packet) bool {
		h, err := gateway.ParseHeader(features.LinkTypeEthernet, p.Frame)
		return err == nil && h.Src == cfg.WANAddr
	})
	if err != nil {
		return c, dir, fmt.Errorf("cost the emulated WAN view of %s per direction: %w", lanPath, err)
	}
	return c, dir, nil
}

// defencesMain runs each defence of list in a fresh lab and prints the
// table; none, when listed, must come first.
func defencesMain(ctx context.Context, in, list, outDir string, lim limits) error {
	var specs []string
	for _, d := range strings.Split(list, ",") {
		d = strings.TrimSpace(d)
		if _, err := parseLabDefence(d); err != nil {
			return err
		}
		specs = append(specs, d)
	}
	if spec, _ := parseLabDefence(specs[0]); !spec.IsZero() {
		return fmt.Errorf("--defenses %s: start with none: its tunnel delay is the others' undefended time", list)
	}
	keep := outDir != ""
	s, outDir, cleanup, err := prepare(ctx, in, outDir, lim)
	defer cleanup()
	if err != nil {
		return err
	}
	var rows []defenceRow
	var base *[2]time.Duration
	for i, d := range specs {
		dir := filepath.Join(outDir, "defense-"+strings.NewReplacer(":", "-", "+", "_").Replace(d))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		fmt.Printf("\n== %s\n", d)
		r, err := runDefended(ctx, s, d, dir, base)
		if err != nil {
			return fmt.Errorf("%s: %w", d, err)
		}
		fmt.Printf("%d LAN packets (%d crossed in no WAN packet, %d in several, %d never reached the VPN server's net0, %d reordered within their flow); tunnel order %s; %d WAN packets neither real nor dummies; WAN data packets/s in %.1f out %.1f\n",
			r.lan, r.lost, r.dup, r.unarrived, r.reordered, r.orderNote, r.other, r.rate[0], r.rate[1])
		if spec, _ := parseLabDefence(d); spec.Pad > 0 {
			fmt.Printf("padding: %d real WAN packets not at their bucket's size or with a trailer that does not give their tunnel datagram's\n", r.padWrong)
		}
		if i == 0 {
			base = &r.base
			fmt.Printf("tunnel's own delay: inbound %s, outbound %s (median); WireGuard's own padding (plaintext to 16 bytes) would add %.1f %% to these packets' WireGuard bytes\n",
				r.base[0], r.base[1], 100*r.wgPad)
		}
		rows = append(rows, r)
	}
	fmt.Println()
	printDefences(os.Stdout, rows)
	if keep {
		fmt.Printf("captures in %s\n", outDir)
	}
	return nil
}

// printDefences prints the lab's costs beside the emulator's.
func printDefences(w io.Writer, rows []defenceRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "defence\twhere\treal pkts\tdummies\tbyte overhead %\tin\tout\tpacket overhead %\tKB/s\tlatency mean ms\tp99 ms\t")
	for _, r := range rows {
		for _, x := range []struct {
			where string
			c     defense.Cost
			dir   [2]defense.Cost
		}{{"lab", r.lab, r.labDir}, {"emulator", r.emu, r.emuDir}} {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\t%.2f\t\n", r.spec, x.where, x.c.RealPackets, x.c.Dummies,
				100*x.c.ByteOverhead(), 100*x.dir[0].ByteOverhead(), 100*x.dir[1].ByteOverhead(),
				100*x.c.PacketOverhead(), x.c.KBps(), ms(x.c.LatencyMean), ms(x.c.LatencyP99))
		}
	}
	tw.Flush()
	for _, r := range rows {
		if n := r.copied[0] + r.stale[0] + r.early[0] + r.copied[1] + r.stale[1] + r.early[1]; n > 0 {
			fmt.Fprintf(w, "%s: the lab's dummies the size of the last real packet that left their way: inbound %d of %d, outbound %d of %d (%d and %d before any had)\n",
				r.spec, r.copied[0], r.copied[0]+r.stale[0], r.copied[1], r.copied[1]+r.stale[1], r.early[0], r.early[1])
		}
	}
	fmt.Fprintln(w, "(Shaped, the emulator shapes what the lab's home received, already shaped by the lab: its inbound bytes are not the lab's.)")
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
