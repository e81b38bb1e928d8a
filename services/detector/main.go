// Command detector is the online sequence-profile detector: it consumes a
// campaign's packet batches from the PACKETS stream (one tap per home, the
// observer's: wan by default), matches every SP of a model from
// `homemole sp train` against each home's stream, judges a CNN window
// every --step, and publishes each window's device types and counts as
// JSON (schemas.Seen) on hm.seen.<campaign>.<home>, kept by the SEEN stream.
// Each home's place is checkpointed in a JetStream key-value bucket, so a
// restarted detector goes on without a gap or a repeated window. Replicas
// split the homes (--partition I --partitions N) as the labeler's do.
package main

import (
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/detect"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/metrics"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/worker"
)

// SeenWindows is the metric of the windows the detector published.
const SeenWindows = "homemole_seen_windows_total"

func main() { worker.Main(run) }

func run(ctx context.Context, args []string, env worker.Env) error {
	log := env.Log
	fs := flag.NewFlagSet("detector", flag.ContinueOnError)
	modelPath := fs.String("model", "", "model file from `homemole sp train`")
	modelKey := fs.String("model-object", "", "read the model from this key of the object store instead (HOMEMOLE_S3_ENDPOINT, HOMEMOLE_S3_BUCKET, HOMEMOLE_S3_ACCESS_KEY, HOMEMOLE_S3_SECRET_KEY): how a pod gets one")
	file := fs.String("campaign", "", "campaign file (YAML): its name and homes")
	home := fs.String("home", "*", "home to watch, or * for all the campaign's homes (of this partition)")
	tap := fs.String("tap", "wan", "tap whose packets are judged: the view beyond the gateway (wan), or lan")
	step := fs.Int("step", 1, "bins between two reports per home (1: every bin of the model, 10 s by default)")
	ackWait := fs.Duration("ack-wait", time.Minute, "how long a batch delivered to a detector that died waits before it goes to its replacement")
	nf := worker.RegisterNATSFlags(fs)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if (*modelPath == "") == (*modelKey == "") || *file == "" || nf.URL == "" {
		return cli.Usagef("detector needs --model FILE (or --model-object KEY), --campaign FILE and --nats URL")
	}
	part := nf.Partition
	if err := part.Validate(); err != nil {
		return cli.Usagef("%v", err)
	}
	if err := schemas.ValidateToken("--tap", *tap); err != nil {
		return cli.Usagef("%v", err)
	}
	if *home != "*" {
		if err := schemas.ValidateToken("--home", *home); err != nil {
			return cli.Usagef("%v", err)
		}
		if part.Count > 1 {
			return cli.Usagef("--home %s with --partitions %d: a single home is not partitioned; give --home '*'", *home, part.Count)
		}
	}
	c, err := campaign.Load(*file)
	if err != nil {
		return err
	}
	m, err := loadModel(ctx, *modelPath, *modelKey, endpoints.FromEnv())
	if err != nil {
		return err
	}
	defer m.Close()
	rt, conn, err := nf.Start(ctx, "detector", env, c)
	if err != nil {
		return err
	}
	defer rt.Close()
	cfg := Config{Campaign: c.Name, Homes: c.HomeNames(), Home: *home, Tap: *tap, Step: *step, Partition: part, Replicas: bus.ReplicasFromEnv(), AckWait: *ackWait}
	log.Info("detector running", "campaign", c.Name, "home", *home, "tap", *tap, "device_types", len(m.Devices), "partition", part.Index, "partitions", part.Count)
	return Run(ctx, conn, m, cfg, rt)
}

// loadModel reads the model from a file, or from key of the object store
// that ep names.
func loadModel(ctx context.Context, path, key string, ep endpoints.Config) (*detect.Model, error) {
	if path != "" {
		return detect.LoadFile(path)
	}
	if ep.S3 == "" {
		return nil, cli.Usagef("--model-object %s: no object store: set HOMEMOLE_S3_ENDPOINT (and HOMEMOLE_S3_BUCKET, HOMEMOLE_S3_ACCESS_KEY, HOMEMOLE_S3_SECRET_KEY)", key)
	}
	st, err := store.OpenS3(ctx, store.S3Config{Endpoint: ep.S3, AccessKey: ep.AccessKey, SecretKey: ep.SecretKey, Bucket: ep.S3Bucket, TLS: ep.S3TLS})
	if err != nil {
		return nil, err
	}
	data, err := st.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read the model %s: %w (upload the file `homemole sp train` wrote there)", st.Location(key), err)
	}
	m, err := detect.Load(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", st.Location(key), err)
	}
	return m, nil
}

// Config is what one detector replica watches.
type Config struct {
	Campaign string
	// Homes are the campaign's homes, split among the partitions; Home is
	// the one home watched, or "*" for all (of the partition).
	Homes []string
	Home  string
	Tap   string
	Step  int
	// Partition is this replica's share of Homes (zero: all of them).
	Partition bus.Partition
	// Replicas of the checkpoint bucket (1 embedded, 3 on a cluster).
	Replicas int
	// AckWait is how long a batch delivered to a detector that died stays
	// with it before it is delivered again (default 1 min).
	AckWait time.Duration
}

// Consumer is the durable PACKETS consumer of cfg: one per campaign, home
// (or all homes) and tap, and per partition.
func (cfg Config) Consumer() bus.ConsumerConfig {
	scope := cfg.Home
	if scope == "*" {
		scope = "all"
	}
	cc := bus.ConsumerConfig{
		Stream:  schemas.StreamPackets,
		Durable: "detector-" + cfg.Campaign + "-" + scope + "-" + cfg.Tap,
		Filter:  schemas.PacketSubject(cfg.Campaign, cfg.Home, cfg.Tap),
		AckWait: cmp.Or(cfg.AckWait, time.Minute),
		// One batch at a time keeps each home's packets in order.
		MaxAckPending: 1,
	}
	if cfg.Home != "*" {
		return cc
	}
	return cfg.Partition.Apply(cc, cfg.Homes, func(home string) string { return schemas.PacketSubject(cfg.Campaign, home, cfg.Tap) })
}

// Run consumes until ctx ends. A batch is acked once the windows it
// completes are stored in the SEEN stream and its home's checkpoint is
// written, so a detector restarted at any point resumes each home at its
// checkpoint: no window is skipped, and one published twice keeps its
// message id and is stored once. rt's metrics count what it does.
func Run(ctx context.Context, conn *bus.Conn, m *detect.Model, cfg Config, rt *worker.Runtime) error {
	o, err := newOnline(ctx, conn, m, cfg)
	if err != nil {
		return err
	}
	return serve(ctx, conn, o, cfg, rt)
}

// newOnline is the detector of cfg, its checkpoints in the bucket and its
// windows stored in SEEN.
func newOnline(ctx context.Context, conn *bus.Conn, m *detect.Model, cfg Config) (*detect.Online, error) {
	cps, err := detect.OpenKVCheckpoints(ctx, conn.JS, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	return &detect.Online{Model: m, Step: cfg.Step, Lag: 1, Checkpoints: cps, Replay: detect.StreamReplayer(conn.JS),
		Publish: func(ctx context.Context, subject, msgID string, data []byte) error {
			_, err := conn.JS.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data}, jetstream.WithMsgID(msgID))
			return err
		},
	}, nil
}

// serve feeds o the batches of cfg's consumer, counted in rt's metrics,
// until ctx ends.
func serve(ctx context.Context, conn *bus.Conn, o *detect.Online, cfg Config, rt *worker.Runtime) error {
	var in, windows atomic.Int64
	o.OnWindow = func(schemas.Seen) { windows.Add(1) }
	met := rt.Metrics
	if err := met.Report(metrics.Totals{PacketsIn: func() float64 { return float64(in.Load()) }}); err != nil {
		return err
	}
	if err := met.Registry().Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: SeenWindows, Help: "Time windows judged and stored in the SEEN stream (a window republished after a restart counts again).",
		ConstLabels: prometheus.Labels{"worker": "detector"},
	}, func() float64 { return float64(windows.Load()) })); err != nil {
		return err
	}
	// cfg.Consumer applies the partition itself: a single watched home
	// is not partitioned.
	return rt.Consume(ctx, conn, worker.Consumer{Config: cfg.Consumer(), Partition: cfg.Partition}, func(ctx context.Context, d *bus.Delivery) error {
		in.Add(int64(len(d.Batch.Packets)))
		if err := o.HandleAt(ctx, d.Seq(), d.Batch); err != nil {
			return err
		}
		return d.Ack()
	})
}
