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
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/modelflag"
)

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
	in := fs.String("in", "", "capture to judge (pcap or pcapng, gzip too)")
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
