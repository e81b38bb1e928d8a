// Command realnoise measures Dataset-Noise-style accuracy on real device
// traffic: homes assembled from IoT Sentinel's per-device captures
// (pipeline/realhome), training homes from each device's earlier captures
// and test homes from its later ones, run through the emulated NAPT or VPN
// gateway and the real pipeline (agents, JetStream, labeler, windower, S3)
// into noise windows of the whole capture; each model is trained on the
// early homes and labels every packet of the late ones. It prints per-packet
// and per-session accuracy beside the paper's noisy figures (Sec. 4.3,
// Figs. 9-10) and writes realnoise.json and realnoise.md.
//
//	go run ./tools/realnoise [--models rf,blstm] [--views napt,vpn] [--train-homes 4] [--test-homes 2] [--duration 10m] [--epochs 15]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/tools/internal/toolmain"
)

func main() { toolmain.Main("realnoise", run) }

func run(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("realnoise", flag.ContinueOnError)
	fs.SetOutput(errOut)
	dir := fs.String("out", filepath.Join(".homemole", "realnoise"), "work folder, rebuilt from scratch: homes, WAN views, embedded NATS and S3 state, realnoise.json, realnoise.md")
	sentinel := fs.String("from-dir", filepath.Join("..", "shared", "data", "iot-sentinel-dev"), "device folders, one per device with its MAC (the IoT Sentinel layout)")
	models := fs.String("models", "rf,blstm", "models, comma-separated: rf, lstm, blstm")
	views := fs.String("views", "napt,vpn", "gateway views, comma-separated")
	trainHomes := fs.Int("train-homes", 4, "homes assembled from the early captures (training)")
	testHomes := fs.Int("test-homes", 2, "homes assembled from the late captures (held out)")
	devices := fs.Int("devices", 0, "device types per home (0: every device folder)")
	duration := fs.Duration("duration", 10*time.Minute, "length of each home; captures start at random times in it")
	size := fs.Int("window", 100, "packets per window (the paper: 100)")
	seed := fs.Uint64("seed", 1, "seed of the homes, the gateways and the training")
	lc := learn.DefaultConfig()
	fs.IntVar(&lc.Epochs, "epochs", 15, "training epochs (LSTM, BLSTM; the paper: 15)")
	fs.IntVar(&lc.BatchSize, "batch", 16, "windows per optimisation step")
	fs.IntVar(&lc.Threads, "threads", 0, "libtorch threads (0: libtorch's default)")
	verbose := fs.Bool("v", false, "log the pipeline's workers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	lc.Seed = int64(*seed)
	if err := lc.Validate(); err != nil {
		return err
	}
	cfg := Config{Dir: *dir, Sentinel: *sentinel, TrainHomes: *trainHomes, TestHomes: *testHomes, Devices: *devices, Duration: *duration,
		Views: toolmain.Split(*views), Models: toolmain.Split(*models), Learn: lc, Window: *size, Seed: *seed,
		Log: toolmain.Logger(errOut, *verbose), Out: out}
	res, err := Run(ctx, cfg)
	if err != nil {
		return err
	}
	md := Markdown(res)
	fmt.Fprint(out, md)
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{"realnoise.json": js, "realnoise.md": []byte(md)} {
		if err := os.WriteFile(filepath.Join(*dir, name), data, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	fmt.Fprintf(out, "wrote %s and %s\n", filepath.Join(*dir, "realnoise.json"), filepath.Join(*dir, "realnoise.md"))
	return nil
}

// Markdown is the result as a table beside the paper's noisy figures.
func Markdown(r *Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| view | model | per-packet accuracy, late homes | session accuracy (device) | session accuracy (type) | busiest device's share | paper, noisy (Figs. 9-10) |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, c := range r.Cells {
		fmt.Fprintf(&b, "| %s | %s | %.1f %% (%d packets) | %.1f %% of %d | %.1f %% | %.1f %% | %.1f %% |\n", c.View, c.Model, 100*c.Accuracy, c.Packets,
			100*c.SessionAccuracy, c.Sessions, 100*c.TypeSessionAccuracy, 100*c.MajorityShare, c.Paper)
	}
	fmt.Fprintf(&b, "\n%d training homes (early captures), %d test homes (late captures), %.0f min each, %d device types, windows of %d, %d epochs.\n",
		r.TrainHomes, r.TestHomes, r.Minutes, len(r.Devices), r.Window, r.Epochs)
	return b.String()
}
