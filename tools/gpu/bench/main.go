// Command bench times pipeline/learn's training and inference on synthetic
// windows, for the models and batch sizes given, on the device given, and
// prints one line per run that tools/gpu/run.sh puts beside PyTorch's
// (tools/benchref/blstm_ref.py, same shapes).
//
//	bench --device cuda --models paper,default --batches 64,1024
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/schemas"
)

// The shapes of tools/benchref/blstm_ref.py.
const (
	classes = 6
	ports   = 512
	lengths = 1000
	perStr  = 8 // windows per stream, for the default model's stream context
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	device := flag.String("device", learn.DeviceAuto, "cpu, cuda, cuda:N or auto")
	models := flag.String("models", "paper,default", "paper (the paper's BLSTM, as blstm_ref.py builds it) and/or default (HomeMole's: frame-length embedding, stream context)")
	batches := flag.String("batches", "64,1024", "batch sizes")
	steps := flag.Int("steps", 20, "optimisation steps per epoch (windows = steps x batch)")
	epochs := flag.Int("epochs", 3, "epochs; the first warms up (allocator, cuDNN) and the best of the others counts")
	n := flag.Int("n", 100, "packets per window")
	threads := flag.Int("threads", 0, "libtorch threads (0: libtorch's default)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *threads > 0 {
		if err := learn.SetTorchThreads(*threads); err != nil {
			return err
		}
	}
	dev, err := learn.ResolveDevice(*device)
	if err != nil {
		return err
	}
	log.Info("torch device", dev.LogArgs()...)
	for _, model := range strings.Split(*models, ",") {
		for _, bs := range strings.Split(*batches, ",") {
			batch, err := strconv.Atoi(bs)
			if err != nil || batch <= 0 {
				return fmt.Errorf("--batches: %q is not a batch size", bs)
			}
			cfg := learn.DefaultConfig()
			switch model {
			case "paper":
				cfg.LenEmbedDim, cfg.Context = 0, learn.ContextNone
			case "default":
			default:
				return fmt.Errorf("--models: %q: want paper or default", model)
			}
			cfg.BatchSize, cfg.Epochs, cfg.Device, cfg.Threads = batch, max(*epochs, 1), *device, *threads
			if err := bench(log, model, cfg, windows(*steps*batch, *n), dev.Using); err != nil {
				return fmt.Errorf("%s model, batch %d: %w", model, batch, err)
			}
		}
	}
	return nil
}

func bench(log *slog.Logger, model string, cfg learn.Config, ws []*schemas.Window, using string) error {
	best := learn.EpochStats{}
	m, err := learn.Train(context.Background(), cfg, ws, classes, func(e learn.EpochStats) {
		log.Info("epoch", "model", model, "batch", cfg.BatchSize, "epoch", e.Epoch, "windows_per_s", fmt.Sprintf("%.0f", e.WindowsPerSec),
			"data_wait_ms_per_step", ms(e.DataWait, e.Steps), "compute_ms_per_step", ms(e.Compute, e.Steps), "prepare_ms_per_step", ms(e.Prepare, e.Steps))
		if (e.Epoch > 1 || cfg.Epochs == 1) && e.WindowsPerSec > best.WindowsPerSec {
			best = e
		}
	})
	if err != nil {
		return err
	}
	defer m.Close()
	if _, err := m.Predict(ws[:min(len(ws), cfg.BatchSize)]); err != nil { // warm-up
		return err
	}
	start := time.Now()
	if _, err := m.Predict(ws); err != nil {
		return err
	}
	infer := float64(len(ws)) / time.Since(start).Seconds()
	fmt.Printf("homemole model=%s batch=%d device=%s windows=%d train_windows_per_s=%.0f infer_windows_per_s=%.0f data_wait_ms_per_step=%s compute_ms_per_step=%s prepare_ms_per_step=%s\n",
		model, cfg.BatchSize, using, len(ws), best.WindowsPerSec, infer, ms(best.DataWait, best.Steps), ms(best.Compute, best.Steps), ms(best.Prepare, best.Steps))
	return nil
}

func ms(d time.Duration, steps int) string {
	return fmt.Sprintf("%.3f", d.Seconds()*1e3/float64(max(steps, 1)))
}

// windows makes count labeled windows of n packets: each of perStr
// consecutive windows is one stream, of one device mostly.
func windows(count, n int) []*schemas.Window {
	rng := rand.New(rand.NewPCG(9, 9))
	ws := schemas.NewWindows(count, n)
	for k, w := range ws {
		w.ID = fmt.Sprintf("s%d/%d", k/perStr, k%perStr)
		w.Len = n
		c := int16(rng.IntN(classes))
		for i := range n {
			w.DPort[i] = int32(1 + rng.IntN(ports))
			w.ProtoBits[i] = uint8(rng.IntN(128))
			w.Direction[i] = int8(rng.IntN(2))
			w.FrameLen[i] = int32(60 + rng.IntN(lengths))
			w.Interval[i] = float32(rng.ExpFloat64())
			w.Label[i] = c
			if rng.IntN(10) == 0 {
				w.Label[i] = int16(rng.IntN(classes))
			}
		}
	}
	return ws
}
