// Command matrix reproduces the HomeMole paper's Section 4 matrix on a
// generated home: gateway NAPT or VPN × pure IoT (Dataset-Ind) or noisy
// (Dataset-Noise) traffic, one model cross-validated on each of the four
// datasets, printed beside the paper's figures and written as matrix.json
// and matrix.html (with each cell's cross-validation report beside them).
//
//	go run ./tools/matrix [--model blstm] [--epochs 15] [--folds 5] [--window 100] [--sessions 8] [--out DIR]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/learn"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/tools/internal/toolmain"
)

func main() { toolmain.Main("matrix", run) }

// Defaults sized to finish in under ten minutes on two shared cores: 8
// sessions of 4 minutes of the paper household (about 60,000 LAN packets)
// give about 310 ind and 540 noise windows of 100 packets per view, each
// trained 15 epochs on 4 of 5 folds (10 sessions took 587 s with the
// machine's load average at 10). So few windows need small batches to take
// enough optimisation steps.
const (
	defaultSessions = 8
	defaultMinutes  = 4
	defaultBatch    = 16
	defaultLenEmbed = 16
)

func run(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("matrix", flag.ContinueOnError)
	fs.SetOutput(errOut)
	dir := fs.String("out", filepath.Join(".homemole", "matrix"), "work folder, rebuilt from scratch: captures, embedded NATS and S3 state, matrix.json, matrix.html, one report per cell")
	model := fs.String("model", "blstm", "rf, lstm or blstm")
	lc := learn.DefaultConfig()
	fs.IntVar(&lc.Epochs, "epochs", 15, "training epochs (LSTM, BLSTM; the paper's Table 3: 15)")
	fs.IntVar(&lc.LenEmbedDim, "len-embed", defaultLenEmbed, "frame-length embedding width (the project's BLSTM); 0 is the paper's model exactly")
	fs.StringVar(&lc.Context, "context", lc.Context, "what each packet's output sees beside its LSTM state: stream (which kinds of packet its stream holds) or none (the paper)")
	fs.BoolVar(&lc.Balance, "balance", false, "weigh classes by inverse packet share in the loss (the paper does not)")
	fs.IntVar(&lc.BatchSize, "batch", defaultBatch, "windows per optimisation step")
	fs.Float64Var(&lc.LR, "lr", lc.LR, "Adam learning rate (the paper: 0.001)")
	fs.IntVar(&lc.Threads, "threads", 0, "libtorch threads (0: libtorch's default)")
	mode := fs.String("cv", "grouped", "cross-validation: grouped (windows of a capture session on one side) or random (windows dealt at random, as the paper does; it flatters)")
	folds := fs.Int("folds", 5, "cross-validation folds, grouped by capture session (the paper: 5)")
	size := fs.Int("window", 100, "packets per window (the paper: 100)")
	sessions := fs.Int("sessions", defaultSessions, "capture sessions to generate (each a fold unit)")
	minutes := fs.Duration("session-length", defaultMinutes*time.Minute, "length of each generated session")
	seed := fs.Uint64("seed", 1, "seed of the home, the gateways, the folds and the training")
	capN := fs.Int("cap", 0, "windows kept per device (the paper: 5,000; 0 keeps all)")
	parallel := fs.Int("parallel", 1, "folds trained at once (they share the cores)")
	views := fs.String("views", "napt,vpn", "gateway views, comma-separated")
	kinds := fs.String("kinds", "ind,noise", "dataset kinds, comma-separated: ind (pure IoT) and noise (noisy)")
	cipher := fs.String("cipher", string(gateway.AES256CBC), "VPN data-channel cipher: aes-256-cbc (the paper's OpenVPN used CBC) or aes-256-gcm")
	keepPorts := fs.Bool("keep-ports", true, "NAPT keeps a flow's LAN source port when free, as the paper's Linux gateway does; false draws external ports at random")
	verbose := fs.Bool("v", false, "log the pipeline's workers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := lc.Validate(); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	c, err := gateway.ParseCipher(*cipher)
	if err != nil {
		return err
	}
	lc.Seed = int64(*seed)
	cfg := Config{
		Dir:   *dir,
		Home:  homegen.Config{Seed: *seed, Sessions: *sessions, SessionDuration: *minutes},
		Views: toolmain.Split(*views), Kinds: toolmain.Split(*kinds), Model: *model, Learn: lc, Cipher: c, KeepPorts: *keepPorts,
		Window: *size, Folds: *folds, CVMode: *mode, Seed: *seed, Cap: *capN, Parallel: *parallel,
		Log: toolmain.Logger(errOut, *verbose), Out: out,
	}
	for _, k := range cfg.Kinds {
		if k != schemas.KindInd && k != schemas.KindNoise {
			return fmt.Errorf("--kinds: %q is neither %s nor %s", k, schemas.KindInd, schemas.KindNoise)
		}
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		return err
	}
	PrintTable(out, res)
	js, err := res.JSON()
	if err != nil {
		return err
	}
	html, err := HTML(res)
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{"matrix.json": js, "matrix.html": html, "matrix.md": []byte(MarkdownTable(res))} {
		if err := os.WriteFile(filepath.Join(*dir, name), data, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	fmt.Fprintf(out, "wrote %s, %s and %s\n", filepath.Join(*dir, "matrix.json"), filepath.Join(*dir, "matrix.html"), filepath.Join(*dir, "matrix.md"))
	return nil
}
