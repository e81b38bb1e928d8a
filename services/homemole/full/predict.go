//go:build torch

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/detect"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/identify"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/modelflag"
)

func runPredict(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs, ep := newStoreFlags("predict", "--model RUN --in CAPTURE [--json OUT] [--wan]",
		"Labels every packet of a capture with a stored model (models/RUN/, written by\n"+
			"homemole train, cv or experiment --save RUN) and says which devices it saw: on a LAN\n"+
			"capture, per home-side MAC the device most of its packets were labeled as; on a\n"+
			"capture taken beyond the gateway (--wan: NAPT or VPN), for the capture as a whole.\n"+
			"The gateway (--gateway-mac, else inferred) is reported apart, never as a device; a host\n"+
			"unlike every trained device is \"unknown\" when the model has a calibrated threshold:\n"+
			"its confidence is below it, or its familiarity (the share of its packets of a direction,\n"+
			"transport and frame length the named device's training traffic holds) below its own.")
	run := fs.String("model", "", "run name of the stored model")
	in := fs.String("in", "", "capture file (pcap or pcapng, optionally compressed with gzip, zstd or lz4)")
	jsonOut := fs.String("json", "", "also write the result as JSON to this file")
	wan := fs.Bool("wan", false, "the capture was taken beyond the gateway: do not split it by MAC")
	familiesFrom := fs.String("families", "", "cv.json of a cross-validation of the model's training captures: name each host's vendor family by its families instead of those the model learned when it was saved")
	home := homeFlags(fs, "gateway-mac")
	var device string
	modelflag.Device(fs, &device)
	if err := parseRequired(fs, args, "predict needs --model RUN and --in CAPTURE", run, in); err != nil {
		return err
	}
	if err := modelflag.UseDevice(log, device); err != nil {
		return err
	}
	if _, err := os.Stat(*in); err != nil {
		return cli.Usagef("--in: %v", err)
	}
	var families [][]string
	if *familiesFrom != "" {
		var err error
		if families, err = readFamilies(*familiesFrom); err != nil {
			return err
		}
	}
	env, err := endpoints.OpenStore(ctx, *ep, log)
	if err != nil {
		return err
	}
	defer env.Close()
	model, meta, err := train.LoadModelOn(ctx, env.Store, *run, device)
	if err != nil {
		return err
	}
	defer model.Close()
	if families != nil {
		meta.Families = families
	}
	// Beyond the gateway there is no home side to infer: the flags or
	// the private ranges decide.
	hc, note := home.Flags(), ""
	if !*wan {
		if hc, note, err = home.Resolve(ctx, "predict", *in); err != nil {
			return err
		}
	}
	res, err := identify.File(ctx, model, meta, *in, hc, !*wan)
	if err != nil {
		return err
	}
	if *jsonOut != "" {
		js, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, append(js, '\n'), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", *jsonOut, err)
		}
	}
	fmt.Fprintf(out, "%s: %d packets, model %s (%s, windows of %d, %d devices)\n", *in, res.Packets, *run, meta.Model, meta.Window, len(meta.Labels))
	if note != "" {
		fmt.Fprintf(out, "  %s\n", note)
	}
	switch {
	case res.Gateway != "":
		fmt.Fprintf(out, "  gateway %s (%d packets to or from it left out: the gateway is no device)\n", res.Gateway, res.GatewayPackets)
	case !*wan:
		fmt.Fprintf(out, "  gateway not known (--gateway-mac names it)\n")
	}
	for _, r := range res.Repeaters {
		fmt.Fprintf(out, "  repeater %s (MAC-NAT: each device behind it is a host ADDR@MAC by its IPv4 address)\n", r)
	}
	if res.RepeaterPackets > 0 {
		fmt.Fprintf(out, "  %d packets of repeaters that name no device behind them left out: a repeater is no device\n", res.RepeaterPackets)
	}
	switch {
	case res.FamiliarityThreshold != nil:
		fmt.Fprintf(out, "  a host is \"%s\" when its confidence (%s) is below %.3f or its familiarity (the share of its packets of a direction, transport and frame length its device's training traffic holds) below %.3f, both calibrated on held-out training sessions\n",
			train.Unknown, meta.Unknown.Score, *res.Threshold, *res.FamiliarityThreshold)
	case res.Threshold != nil:
		fmt.Fprintf(out, "  a host is \"%s\" when its confidence (%s) is below %.3f, calibrated on held-out training sessions\n", train.Unknown, meta.Unknown.Score, *res.Threshold)
	default:
		fmt.Fprintf(out, "  the model has no unknown-device threshold (saved before it existed): every host is named its likeliest device\n")
	}
	switch {
	case *familiesFrom != "":
		fmt.Fprintf(out, "  families from %s: %s\n", *familiesFrom, evaluate.FamilyList(meta.Families))
	case meta.Families != nil:
		fmt.Fprintf(out, "  families the model learned from its held-out calibration sessions: %s\n", evaluate.FamilyList(meta.Families))
	}
	w := 19 // a MAC; a host behind a repeater, ADDR@MAC, is wider
	for _, h := range res.Hosts {
		w = max(w, len(h.Host))
	}
	fmt.Fprintf(out, "  %-*s %8s  %-24s %10s %11s  %s\n", w, "host", "packets", "device", "confidence", "familiarity", "share of its packets")
	for _, h := range res.Hosts {
		dev := h.Device
		if h.Likeliest != "" {
			dev += " (nearest " + h.Likeliest + ")"
		}
		share := fmt.Sprintf("%5.1f %%", 100*h.Share)
		if h.Family != "" {
			dev += " [family " + h.Family + "]"
			share += fmt.Sprintf(" (family %.1f %%)", 100*h.FamilyShare)
		}
		familiar := "-"
		if h.Familiarity != nil {
			familiar = fmt.Sprintf("%.3f", *h.Familiarity)
		}
		fmt.Fprintf(out, "  %-*s %8d  %-24s %10.3f %11s  %s\n", w, h.Host, h.Packets, dev, h.Confidence, familiar, share)
	}
	return nil
}

// detectOutput is the JSON `homemole detect` writes.
type detectOutput struct {
	Model   string               `json:"model"`
	Capture string               `json:"capture"`
	Packets int                  `json:"packets"`
	Windows []schemas.SeenWindow `json:"windows"`
}

func runDetect(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs := newFlags("detect", "--model MODEL --in CAPTURE [--window 360s] --json OUT",
		"Reports which device types are in a capture, window by window, and how many of each,\n"+
			"with a model from `homemole sp train`: every sequence profile of every type is\n"+
			"matched against all the capture's packets (one pass, whatever the addresses: a\n"+
			"capture beyond a NAT is one address), and per window each type's detector CNN\n"+
			"decides, then its counter CNN estimates the number.\n\n"+
			"Windows are aligned to the capture's first bin. A window longer than the model's\n"+
			"is judged by model windows every quarter model window inside it; a shorter one\n"+
			"by the model window ending where it ends (it looks back into the traffic before).\n"+
			"The JSON is {model, capture, packets, windows: [{start_ns, end_ns, detections:\n"+
			"[{device, count, score}]}]}; score is the detector's probability.")
	modelPath := fs.String("model", "", "model file from `homemole sp train`")
	in := fs.String("in", "", "capture to judge (pcap or pcapng, gzip, zstd or lz4 too)")
	window := fs.Duration("window", 0, "report window (default: the model's, 360s unless trained otherwise)")
	jsonOut := fs.String("json", "", "file to write the detections to (- for standard output)")
	var device string
	modelflag.Device(fs, &device)
	if err := parseRequired(fs, args, "detect needs --model MODEL, --in CAPTURE and --json OUT", modelPath, in, jsonOut); err != nil {
		return err
	}
	if err := modelflag.UseDevice(log, device); err != nil {
		return err
	}
	m, err := detect.LoadFileOn(*modelPath, device)
	if err != nil {
		return err
	}
	defer m.Close()
	if *window != 0 && (*window < m.Config.Match.Bin || *window%m.Config.Match.Bin != 0) {
		return cli.Usagef("--window %v: want a multiple of the model's bin, %v", *window, m.Config.Match.Bin)
	}
	t0 := time.Now()
	windows, packets, err := m.DetectFile(ctx, *in, *window)
	if err != nil {
		return err
	}
	log.Debug("detected", "packets", packets, "windows", len(windows), "took", time.Since(t0))
	res := detectOutput{Model: *modelPath, Capture: *in, Packets: int(packets), Windows: windows}
	if res.Windows == nil {
		res.Windows = []schemas.SeenWindow{}
	}
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode detections: %w", err)
	}
	js = append(js, '\n')
	if *jsonOut == "-" {
		_, err = out.Write(js)
		return err
	}
	if err := os.WriteFile(*jsonOut, js, 0o644); err != nil {
		return fmt.Errorf("write detections: %w", err)
	}
	seen := map[string]int{}
	unknown := 0
	for _, w := range windows {
		if w.Unknown {
			unknown++
		}
		for _, d := range w.Detections {
			seen[d.Device] = max(seen[d.Device], d.Count)
		}
	}
	var names []string
	for n, c := range seen {
		names = append(names, fmt.Sprintf("%s (up to %d)", n, c))
	}
	if unknown > 0 {
		// The model's unknown-device rule: traffic no trained type explains.
		names = append(names, fmt.Sprintf("unknown (%d of %d windows)", unknown, len(windows)))
	}
	fmt.Fprintf(out, "%d packets, %d windows; device types seen: %s\ndetections: %s\n", packets, len(windows), strings.Join(orNone(names), ", "), *jsonOut)
	return nil
}

func orNone(s []string) []string {
	if len(s) == 0 {
		return []string{"none"}
	}
	slices.Sort(s)
	return s
}
