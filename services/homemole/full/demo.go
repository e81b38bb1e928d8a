//go:build torch

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/homemole/homemole/pipeline/build"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/modelflag"
)

func runDemo(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	ep := endpoints.FromEnv()
	fs := newFlags("demo", "[--window N] [--sessions N] [--epochs N] [--model rf|lstm|blstm]",
		"Runs the whole pipeline on one machine with embedded NATS and S3:\n"+
			"  1. generates a demo smart home (smart plug, camera, voice assistant, hub, and a\n"+
			"     phone as background) as LAN captures, one per session, plus its inventory;\n"+
			"  2. a capture agent publishes the packets to JetStream, a labeler labels them by\n"+
			"     MAC, a windower writes traffic windows as Arrow objects to S3;\n"+
			"  3. a BLSTM (the HomeMole paper's model) trains on some sessions and labels every\n"+
			"     packet of the held-out sessions; accuracy per device is printed and a report\n"+
			"     written. The demo's state is rebuilt from scratch on every run.")
	fs.StringVar(&ep.Home, "home", ep.Home, "folder for the demo's state (env HOMEMOLE_HOME); the demo uses its demo/ subfolder")
	size := fs.Int("window", 100, "packets per window")
	gen := homegen.DefaultConfig()
	// Ten half-hour sessions give the sparse devices (smart plugs) enough
	// windows to hold two sessions out and still train on eight.
	gen.Sessions, gen.SessionDuration = 10, 30*time.Minute
	fs.IntVar(&gen.Sessions, "sessions", gen.Sessions, "capture sessions to generate")
	fs.DurationVar(&gen.SessionDuration, "session-length", gen.SessionDuration, "length of each capture session")
	fs.Uint64Var(&gen.Seed, "seed", gen.Seed, "seed of the generated home, the split and the training")
	model := modelflag.Register(fs)
	trainToo := fs.Bool("train", true, "train and report; false stops after the dataset build, leaving it (dataset demo, version v1) in the demo's state folder for homemole train --home HOME/demo/state")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *trainToo {
		if err := modelflag.UseDevice(log, model.Learn.Device); err != nil {
			return err
		}
	}
	start := time.Now()
	dir := filepath.Join(ep.Home, "demo")
	// Every run starts clean: a demo that reused an old stream or dataset
	// would show the old run's figures.
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clear the demo folder %s: %w", dir, err)
	}
	step(out, 1, "generating a demo home: %d sessions of %s", gen.Sessions, gen.SessionDuration)
	home, err := homegen.Generate(gen, filepath.Join(dir, "captures"))
	if err != nil {
		return fmt.Errorf("generate demo home: %w", err)
	}
	c := home.Campaign("demo", "home-1")
	if err := c.Validate(); err != nil {
		return fmt.Errorf("demo campaign: %w", err)
	}
	if err := writeCampaign(filepath.Join(dir, "campaign.yaml"), c); err != nil {
		return err
	}
	for _, d := range home.Inventory {
		fmt.Fprintf(out, "     %-18s %-8s %s\n", d.Name, d.Category, d.MAC)
	}

	ep.Home = filepath.Join(dir, "state")
	ep.NATSURL, ep.S3 = "", ""
	env, err := endpoints.Open(ctx, ep, "homemole-demo", log)
	if err != nil {
		return err
	}
	defer env.Close()
	step(out, 2, "capture -> label -> window through embedded JetStream (%s) and S3 (%s)", bus.RedactURL(env.NATSURL), env.S3Endpoint)
	spec := window.Spec{Dataset: "demo", Version: "v1", Kind: schemas.KindInd, Size: *size, Labels: build.LabelsOf(c)}
	res, err := (&build.Build{Campaign: c, Spec: spec, Bus: env.Bus, Store: env.Store, Log: log}).Run(ctx)
	if err != nil {
		return err
	}
	printBuild(out, res, env)
	if !*trainToo {
		fmt.Fprintf(out, "\n  dataset demo/v1 built in %s; train on it with: homemole train --home %s --dataset demo\n",
			time.Since(start).Round(time.Second), ep.Home)
		return nil
	}

	step(out, 3, "training a %s (%d epochs) on the training sessions", model.Name, model.Learn.Epochs)
	model.Learn.Seed = int64(gen.Seed)
	run, err := trainAndReport(ctx, log, env, train.Job{
		Dataset: spec.Dataset, Version: spec.Version, RunName: "demo-" + model.Name, Spec: *model, Seed: gen.Seed,
	}, filepath.Join(dir, "reports"))
	if err != nil {
		return err
	}

	step(out, 4, "summary")
	m := res.Manifest
	packets := 0
	for _, st := range res.Agents {
		packets += st.Packets
	}
	fmt.Fprintf(out, "  packets read:     %d from %d captures\n", packets, len(home.Files))
	fmt.Fprintf(out, "  windows written:  %d (%d packets each, %s)\n", m.Windows, m.WindowSize, m.Kind)
	fmt.Fprint(out, indent(run.Report.Summary()))
	fmt.Fprintf(out, "  dataset:  %s (on disk under %s)\n", env.Store.Location("datasets/demo/v1/manifest.json"), filepath.Join(ep.Home, "s3"))
	fmt.Fprintf(out, "  model:    %s\n", env.Store.Location(run.Checkpoint))
	fmt.Fprintf(out, "  report:   %s\n", run.ReportHTML)
	fmt.Fprintf(out, "  campaign: %s (rerun the build with `homemole build --campaign %s --dataset mine`)\n",
		filepath.Join(dir, "campaign.yaml"), filepath.Join(dir, "campaign.yaml"))
	fmt.Fprintf(out, "  done in %s\n", time.Since(start).Round(time.Second))
	return nil
}

func step(out io.Writer, n int, format string, args ...any) {
	fmt.Fprintf(out, "\n[%d/4] %s\n", n, fmt.Sprintf(format, args...))
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}
