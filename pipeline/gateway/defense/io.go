package defense

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/homemole/homemole/internal/atomicfile"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
)

// WANView runs the gateway emulator on a LAN capture and returns its WAN
// packets, each with the LAN packet it came from, in WAN time order.
func WANView(ctx context.Context, src capture.Source, home features.HomeConfig, cfg gateway.Config) ([]Packet, gateway.Stats, error) {
	var wan, truth bytes.Buffer
	flows := &flowRecorder{Source: src, flows: map[int64]flowKey{}}
	if cfg.Mode == gateway.VPN {
		src = flows
	}
	st, err := gateway.Emulate(ctx, src, home, cfg, &wan, &truth)
	if err != nil {
		return nil, st, err
	}
	lan, err := gateway.ReadTruth(&truth, "the emulator's ground truth")
	if err != nil {
		return nil, st, err
	}
	r, err := pcapgo.NewReader(&wan)
	if err != nil {
		return nil, st, fmt.Errorf("read the emulated WAN view: %w", err)
	}
	var pkts []Packet
	for i := 0; ; i++ {
		data, ci, err := r.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, st, fmt.Errorf("read the emulated WAN view, packet %d: %w", i, err)
		}
		if i >= len(lan) {
			return nil, st, fmt.Errorf("the emulated WAN view has more packets than its ground truth (%d)", len(lan))
		}
		p := Packet{TS: ci.Timestamp.UnixNano(), Frame: bytes.Clone(data), Wire: ci.Length, LAN: lan[i]}
		p.inner, p.hasInner = flows.flows[p.LAN]
		pkts = append(pkts, p)
	}
	if len(pkts) != len(lan) {
		return nil, st, fmt.Errorf("the emulated WAN view has %d packets, its ground truth %d", len(pkts), len(lan))
	}
	return pkts, st, nil
}

// flowRecorder notes the flow of every LAN packet it passes on, by its
// place in the capture (the LAN index of the emulator's truth).
type flowRecorder struct {
	capture.Source
	flows map[int64]flowKey
}

func (r *flowRecorder) Next() (capture.Frame, error) {
	f, err := r.Source.Next()
	if err == nil {
		r.flows[int64(f.Offset)] = keyOfLink(f.LinkType, f.Data)
	}
	return f, err
}

// Write writes packets as a WAN capture (Ethernet pcap, nanosecond
// timestamps) to wan and one "wan_index,lan_index" row each to truth, the
// lan_index empty for a dummy, as gateway.Emulate does.
func Write(pkts []Packet, wan, truth io.Writer) error {
	bw := bufio.NewWriterSize(wan, 1<<16)
	pw := pcapgo.NewWriterNanos(bw)
	if err := pw.WriteFileHeader(262144, layers.LinkTypeEthernet); err != nil {
		return fmt.Errorf("write WAN capture header: %w", err)
	}
	lan := make([]int64, len(pkts))
	for i, p := range pkts {
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(0, p.TS).UTC(), CaptureLength: len(p.Frame), Length: p.Wire}
		if err := pw.WritePacket(ci, p.Frame); err != nil {
			return fmt.Errorf("write WAN capture: %w", err)
		}
		lan[i] = p.LAN
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write WAN capture: %w", err)
	}
	return gateway.WriteTruth(truth, lan)
}

// File emulates the gateway on the LAN capture at lanPath, defends its WAN
// view with spec and writes the defended WAN capture and ground truth.
// The LAN capture is opened first and both outputs are created (as
// temporary files beside them) before anything is written, and they get
// their names only once both are whole: a wrong input, a missing folder or
// an error part-way leaves no output behind.
func File(ctx context.Context, lanPath, wanPath, truthPath string, home features.HomeConfig, cfg gateway.Config, spec Spec, opt Options) (gateway.Stats, Cost, error) {
	src, err := capture.OpenFile(lanPath)
	if err != nil {
		return gateway.Stats{}, Cost{}, err
	}
	defer src.Close()
	wan, err := atomicfile.Create(wanPath)
	if err != nil {
		return gateway.Stats{}, Cost{}, fmt.Errorf("defend the WAN view of %s: %w", lanPath, err)
	}
	defer wan.Abort()
	truth, err := atomicfile.Create(truthPath)
	if err != nil {
		return gateway.Stats{}, Cost{}, fmt.Errorf("defend the WAN view of %s: %w", lanPath, err)
	}
	defer truth.Abort()
	pkts, st, err := WANView(ctx, src, home, cfg)
	if err != nil {
		return st, Cost{}, fmt.Errorf("emulate the WAN view of %s: %w", lanPath, err)
	}
	opt.Mode = cfg.Mode
	if cfg.WANAddr.IsValid() {
		opt.WANAddr = cfg.WANAddr
	}
	def, cost, err := Apply(pkts, spec, opt)
	if err != nil {
		return st, cost, fmt.Errorf("defend the WAN view of %s: %w", lanPath, err)
	}
	if err := Write(def, wan, truth); err != nil {
		return st, cost, fmt.Errorf("defend the WAN view of %s: %w", lanPath, err)
	}
	if err := atomicfile.Commit(wan, truth); err != nil {
		return st, cost, err
	}
	return st, cost, nil
}

// ViewsOfDir is the WAN view of every capture in dir (.pcap, .pcapng,
// optionally .gz) through a gateway configured like the home's, each
// capture's home side inferred: the traffic mimic:DEVICE imitates.
func ViewsOfDir(ctx context.Context, dir string, cfg gateway.Config) ([][]Packet, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("captures of the device to imitate: %w", err)
	}
	var views [][]Packet
	for _, e := range entries {
		name := e.Name()
		if _, ok := campaign.CaptureBase(name); e.IsDir() || !ok {
			continue
		}
		path := filepath.Join(dir, name)
		r, err := capture.InferHome(ctx, path)
		if err != nil {
			return nil, err
		}
		src, err := capture.OpenFile(path)
		if err != nil {
			return nil, err
		}
		v, _, err := WANView(ctx, src, r.Home, cfg)
		src.Close()
		if err != nil {
			return nil, fmt.Errorf("emulate the WAN view of %s: %w", path, err)
		}
		views = append(views, v)
	}
	if len(views) == 0 {
		return nil, fmt.Errorf("no captures (.pcap, .pcapng, optionally .gz) in %s", dir)
	}
	return views, nil
}
