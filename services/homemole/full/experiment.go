//go:build torch

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/evaluate"
	"github.com/homemole/homemole/pipeline/experiment"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/modelflag"
)

func runExperiment(ctx context.Context, log *slog.Logger, out io.Writer, args []string) error {
	ep := endpoints.FromEnv()
	ep.Home = ""
	fs := newFlags("experiment", "--train DIR --test DIR [--view lan|napt|vpn] [--model rf|lstm|blstm] [--window N] [--epochs N] --json OUT",
		"Builds a dataset from each folder (laid out like the IoT Sentinel captures: one folder\n"+
			"per device with its captures and _iotdevice-mac.txt), trains the model on the first,\n"+
			"labels every packet of the second and writes a JSON summary: per-packet accuracy,\n"+
			"accuracy per device, and per test capture the device its packets voted for.\n"+
			"Packets of no inventory device (the phone doing the setup, the router) are\n"+
			"background: the model may see them, they are not scored.\n\n"+
			"Without --nats and --s3 it runs embedded servers in a fresh temporary --home that is\n"+
			"removed afterwards (kept with --keep).")
	ep.Register(fs)
	trainDir := fs.String("train", "", "folder of device folders to train on")
	testDir := fs.String("test", "", "folder of device folders to test on (the same devices, other captures)")
	view := viewFlags(fs)
	kind := fs.String("kind", schemas.KindInd, "ind (windows of one device's packets) or noise (windows of the whole capture, background included)")
	win := fs.Int("window", 20, "packets per window (20: the best of 20, 40 and 100 in the window-size study, README)")
	jsonOut := fs.String("json", "", "file to write the JSON summary to")
	reportOut := fs.String("report", "", "file to write the HTML report to (default: beside --json, .html)")
	keep := fs.Bool("keep", false, "keep the temporary embedded state (datasets, emulated captures)")
	seed := fs.Int64("seed", 1, "seed of the training")
	save := fs.String("save", "", "store the trained model as models/RUN/ (for homemole predict; give --home to keep it)")
	familiesFrom := fs.String("families", "", "cv.json of a cross-validation of the training captures: name each capture's vendor family and confidence, and score family-level accuracy")
	pool := fs.Bool("pool", false, "ind windows: label each window's packets with the class its packets jointly find likeliest (summed log-probabilities; lstm, blstm)")
	spec := modelflag.Register(fs)
	if err := parseInMemory(fs, args, spec); err != nil {
		return err
	}
	if *trainDir == "" || *testDir == "" || *jsonOut == "" {
		return cli.Usagef("experiment needs --train DIR, --test DIR and --json OUT")
	}
	if err := modelflag.UseDevice(log, spec.Learn.Device); err != nil {
		return err
	}
	if *kind != schemas.KindInd && *kind != schemas.KindNoise {
		return cli.Usagef("--kind %q: want ind or noise", *kind)
	}
	for _, d := range []string{*trainDir, *testDir} {
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			return cli.Usagef("%s is not a folder of device folders", d)
		}
	}
	if ep.Home == "" {
		dir, err := os.MkdirTemp("", "homemole-experiment-")
		if err != nil {
			return fmt.Errorf("temporary state folder: %w", err)
		}
		ep.Home = dir
		if *keep {
			fmt.Fprintf(out, "embedded state kept in %s\n", dir)
		} else {
			defer os.RemoveAll(dir)
		}
	}
	env, err := endpoints.Open(ctx, ep, "homemole-experiment", log)
	if err != nil {
		return err
	}
	defer env.Close()
	spec.Learn.Seed = *seed
	var families map[string]string
	if *familiesFrom != "" {
		if families, err = readFamilies(*familiesFrom); err != nil {
			return err
		}
	}
	res, err := experiment.Run(ctx, experiment.Config{Families: families,
		TrainDir: *trainDir, TestDir: *testDir, View: view.name, Cipher: view.cipher, Kind: *kind, Window: *win,
		Spec: *spec, Pool: *pool, SaveAs: *save, WorkDir: ep.Home, Bus: env.Bus, Store: env.Store, Log: log,
	})
	if err != nil {
		return err
	}
	if err := writeReports(*jsonOut, reportOut, res.JSON, res.Report.HTML); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n%s on the %s view, windows of %d (%s): %d test captures in %.0f s\n", res.Model, res.View, res.Window, res.Kind, len(res.Sessions)+len(res.Unscored), res.Seconds)
	fmt.Fprintf(out, "  per-packet accuracy  %5.1f %%   macro F1 %.3f\n", 100*res.OverallAccuracy, res.MacroF1)
	fmt.Fprintf(out, "  session accuracy     %5.1f %%   (device types: %.1f %%)\n", 100*res.SessionAccuracy, 100*res.SessionAccuracyTypes)
	if families != nil {
		fmt.Fprintf(out, "  family accuracy      %5.1f %%   (families from %s)\n", 100*res.SessionAccuracyFamilies, *familiesFrom)
	}
	for _, s := range res.Sessions {
		if evaluate.TypeOf(s.True) != evaluate.TypeOf(s.Predicted) {
			fmt.Fprintf(out, "    miss: %-40s %s taken for %s (%.0f %% of %d packets)\n", s.File, s.True, s.Predicted, 100*s.Share, s.Packets)
		}
	}
	fmt.Fprintf(out, "  summary: %s\n  report:  %s\n", *jsonOut, *reportOut)
	return nil
}

// readFamilies reads the families a cross-validation learned (cv.json).
func readFamilies(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--families: %w", err)
	}
	var cv train.CVResult
	if err := json.Unmarshal(data, &cv); err != nil {
		return nil, fmt.Errorf("--families %s: not a cv.json: %w", path, err)
	}
	if cv.Family == nil {
		return nil, fmt.Errorf("--families %s: the run learned no families (it needs two folds or more, and a homemole that scores families): run homemole cv on the training captures", path)
	}
	return evaluate.FamilyOf(cv.Family.Families), nil
}
