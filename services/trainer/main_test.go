package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/build"
	"github.com/homemole/homemole/pipeline/train"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/workertest"
)

// TestTrainerTrainsRandomForest runs the trainer's main in-process on a
// dataset built from a generated home in embedded S3: with --model rf it
// fits the Random Forest, judges it on held-out sessions, and leaves a
// model that loads back and a report that beats the commonest-device guess.
func TestTrainerTrainsRandomForest(t *testing.T) {
	ctx, r := workertest.New(t, 3*time.Minute, 4, 5*time.Minute)
	spec := window.Spec{Dataset: "wt", Version: "v1", Kind: schemas.KindInd, Size: 20, Labels: build.LabelsOf(r.Campaign)}
	if _, err := (&build.Build{Campaign: r.Campaign, Spec: spec, Bus: r.Conn, Store: r.Store, Log: r.Log}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	env := workertest.Env(t)
	env.Out = &out
	err := run(ctx, []string{"--dataset", "wt", "--run", "wt-rf", "--model", "rf", "--trees", "20", "--test-share", "0.25",
		"--nats", r.Servers.NATSURL, "--s3", r.Servers.S3Endpoint}, env)
	if err != nil {
		t.Fatal(err)
	}
	m, meta, err := train.LoadModel(ctx, r.Store, "wt-rf")
	if err != nil {
		t.Fatalf("the trainer's model: %v", err)
	}
	m.Close()
	if meta.Model != "rf" || meta.Window != 20 || meta.Unknown == nil {
		t.Errorf("model.json: %+v; want an rf model of windows of 20 with an unknown-device threshold", meta)
	}
	data, err := r.Store.Get(ctx, "reports/wt-rf/report.json")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Model         string   `json:"model"`
		Accuracy      float64  `json:"accuracy"`
		MajorityShare float64  `json:"majority_class_share"`
		TestGroups    []string `json:"test_groups"`
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("held-out accuracy %.3f, commonest device %.3f, held out %v", rep.Accuracy, rep.MajorityShare, rep.TestGroups)
	if rep.Model != "rf" || len(rep.TestGroups) != 1 || rep.Accuracy <= rep.MajorityShare {
		t.Errorf("report: model %s, %d held-out sessions, accuracy %.3f against the commonest device's %.3f", rep.Model, len(rep.TestGroups), rep.Accuracy, rep.MajorityShare)
	}
	if !strings.Contains(out.String(), "checkpoint s3://") {
		t.Errorf("the trainer printed %q, want where the checkpoint went", out.String())
	}
}

// TestTrainerRefusesBadFlags: usage mistakes end the worker before it
// connects, naming the flag.
func TestTrainerRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--dataset", "d", "--run", "r", "--nats", "nats://h:1", "--s3", "h:2", "--model", "svm"},
		{"--dataset", "d", "--run", "../x", "--nats", "nats://h:1", "--s3", "h:2"},
		{"--dataset", "d", "--run", "r", "--nats", "nats://h:1", "--s3", "h:2", "--context", "everything"},
	} {
		if err := run(context.Background(), args, workertest.Env(t)); err == nil {
			t.Errorf("%q: ran", args)
		} else {
			t.Logf("%q: %v", args, err)
		}
	}
	// Numbers out of range were clamped or taken for the default, and a
	// checkpoint stored: --test-share 1 trained on one session, 0 held out
	// 0.2, -0.5 and NaN one session, --trees 0 and -5 grew 100 trees.
	for _, c := range [][2]string{
		{"--test-share", "1"}, {"--test-share", "0"}, {"--test-share", "-0.5"}, {"--test-share", "NaN"}, {"--test-share", "1.5"},
		{"--trees", "0"}, {"--trees", "-5"}, {"--epochs", "0"}, {"--batch", "0"}, {"--lr", "0"}, {"--lr", "Inf"},
		{"--hidden", "0"}, {"--dropout", "1"}, {"--label-smoothing", "-0.1"}, {"--len-embed", "-1"}, {"--port-sessions", "-1"}, {"--threads", "-2"},
	} {
		args := []string{"--dataset", "d", "--run", "r", "--nats", "nats://h:1", "--s3", "h:2", c[0], c[1]}
		err := run(context.Background(), args, workertest.Env(t))
		if !errors.Is(err, cli.ErrUsage) || !strings.Contains(err.Error(), "-"+c[0][2:]) {
			t.Errorf("%s %s: %v, want a usage error naming %s", c[0], c[1], err, c[0])
		}
	}
}
