// Command detector is the online sequence-profile detector: it consumes a
// campaign's packet batches from the PACKETS stream (one tap per home, the
// observer's: wan by default), matches every SP of a model from
// `homemole sp train` (--model FILE, or --model-object KEY) against each
// home's stream, judges a CNN window every --step, and publishes each
// window's device types and counts as JSON (schemas.Seen) on
// hm.seen.<campaign>.<home>, kept by the SEEN stream. Each home's place is
// checkpointed in a JetStream key-value bucket (hm_detector), so a
// restarted detector goes on without a gap or a repeated window. Replicas
// split the homes (--partition I --partitions N) as the labeler's do.
//
// With --hosts FILE (or --hosts-object KEY), a host model from `homemole
// hosts learn`, it counts each home's LAN hosts by unit instead
// (pipeline/homecount; no torch model is loaded): it reads the lan tap
// (the default with --hosts), and
// publishes a window of --window every --every, judged --late after it
// ends (a window a new host is active in waits for it up to --settle
// after its first packet), its Seen method "hosts", on the same subjects under message ids of
// their own. A home's gateway MAC, where the campaign file names it, is
// never counted. Each home's host table is kept in the key-value bucket
// hm_detector_hosts, so a restarted detector goes on from it without a
// gap or a repeated window.
package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/detect"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/homecount"
	"github.com/homemole/homemole/pipeline/metrics"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/cli"
	"github.com/homemole/homemole/services/internal/worker"
)

// SeenWindows is the metric of the windows the detector published.
const SeenWindows = "homemole_seen_windows_total"

// A long-running worker: stopped by SIGTERM it shuts down and exits 0.
func main() { worker.Serve(run) }

func run(ctx context.Context, args []string, env worker.Env) error {
	log := env.Log
	fs := flag.NewFlagSet("detector", flag.ContinueOnError)
	modelPath := fs.String("model", "", "model file from `homemole sp train`")
	modelKey := fs.String("model-object", "", "read the model from this key of the object store instead (HOMEMOLE_S3_ENDPOINT, HOMEMOLE_S3_BUCKET, HOMEMOLE_S3_ACCESS_KEY, HOMEMOLE_S3_SECRET_KEY): how a pod gets one")
	file := fs.String("campaign", "", "campaign file (YAML): its name and homes")
	home := fs.String("home", "*", "home to watch, or * for all the campaign's homes (of this partition)")
	tap := fs.String("tap", "wan", "tap whose packets are judged: the view beyond the gateway (wan), or lan (with --hosts, the default is the host model's: lan, or wan for one of `hosts learn --wan`)")
	step := fs.Int("step", 1, "bins between two reports per home (1: every bin of the model, 10 s by default)")
	hostsPath := fs.String("hosts", "", "count each home's LAN hosts by unit with this host model from `homemole hosts learn` (or, with one of `hosts learn --wan`, its units beyond a NAPT by their IP ID sequences), instead of a sequence-profile model")
	hostsKey := fs.String("hosts-object", "", "read the host model from this key of the object store instead (as --model-object): how a pod gets one")
	live := homecount.DefaultLiveConfig()
	window := fs.Duration("window", live.Window, "with --hosts: how long a counted window is (a whole number of --every)")
	every := fs.Duration("every", live.Step, "with --hosts: how often a window ends")
	late := fs.Duration("late", live.Late, "with --hosts: how long after a window ends it is counted, so a host is known by what it sends just after")
	settle := fs.Duration("settle", live.Settle, "with --hosts on a lan tap: how long a new host is given to show what it is; a window it is active in and not yet named waits for it, up to this long after its first packet (0: no window waits)")
	ackWait := fs.Duration("ack-wait", time.Minute, "how long a batch delivered to a detector that died waits before it goes to its replacement")
	nf := worker.RegisterNATSFlags(fs)
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	models := 0
	for _, s := range []string{*modelPath, *modelKey, *hostsPath, *hostsKey} {
		if s != "" {
			models++
		}
	}
	if models != 1 || *file == "" || nf.URL == "" {
		return cli.Usagef("detector needs one of --model FILE, --model-object KEY, --hosts FILE or --hosts-object KEY, and --campaign FILE and --nats URL")
	}
	hostsMode := *hostsPath != "" || *hostsKey != ""
	if hostsMode {
		if !given["tap"] {
			*tap = "" // the model's: lan, or wan for a model of `hosts learn --wan`
		}
		if given["step"] {
			return cli.Usagef("--step is the sequence-profile detector's: with --hosts, a window of --window ends every --every")
		}
		live.Window, live.Step, live.Late, live.Settle = *window, *every, *late, *settle
		if err := live.Validate(); err != nil {
			return cli.Usagef("--window %s --every %s --late %s --settle %s: %v", *window, *every, *late, *settle, err)
		}
	} else {
		for _, f := range []string{"window", "every", "late", "settle"} {
			if given[f] {
				return cli.Usagef("--%s is the host counter's: give it with --hosts FILE", f)
			}
		}
	}
	part := nf.Partition
	if err := part.Validate(); err != nil {
		return cli.Usagef("%v", err)
	}
	if err := schemas.ValidateToken("--tap", *tap); err != nil && *tap != "" {
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
	if hostsMode {
		return runHosts(ctx, *hostsPath, *hostsKey, c, Config{Campaign: c.Name, Homes: c.HomeNames(), Home: *home, Tap: *tap, Partition: part,
			Replicas: bus.ReplicasFromEnv(), AckWait: *ackWait, Method: homecount.MethodHosts, Live: live}, nf, env)
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
	log.Info("detector running", "mode", "sequence profiles", "campaign", c.Name, "home", *home, "tap", *tap, "device_types", len(m.Devices), "partition", part.Index, "partitions", part.Count)
	return Run(ctx, conn, m, cfg, rt)
}

// runHosts runs the detector in hosts mode: cfg counts the hosts of the
// campaign's homes with the host model at path, each home's gateway the
// one the campaign file names.
func runHosts(ctx context.Context, path, key string, c *campaign.Campaign, cfg Config, nf *worker.NATSFlags, env worker.Env) error {
	var hm *homecount.HostModel
	var err error
	if path != "" {
		hm, err = homecount.LoadHostModel(path)
	} else {
		var data []byte
		var where string
		if data, where, err = readObject(ctx, "--hosts-object", key, endpoints.FromEnv()); err == nil {
			if hm, err = homecount.ReadHostModel(bytes.NewReader(data)); err != nil {
				err = fmt.Errorf("%s: %w", where, err)
			}
		}
	}
	if err != nil {
		return err
	}
	if path == "" {
		path = key
	}
	// A WAN model's hosts are IP ID sequences beyond the gateway; a LAN
	// model's are MACs. The other tap would count nothing, silently.
	wan := hm.Chains != nil
	if cfg.Tap == "" {
		cfg.Tap = map[bool]string{false: "lan", true: "wan"}[wan]
	}
	if wan != (cfg.Tap == "wan") {
		want := "lan (a LAN model; learn one for a WAN tap with `homemole hosts learn --wan`)"
		if wan {
			want = "wan (a model of `hosts learn --wan` counts beyond the gateway)"
		}
		return cli.Usagef("detector: --hosts model %s with --tap %s: want --tap %s", path, cfg.Tap, want)
	}
	cfg.Gateways = map[string]schemas.MAC{}
	named := 0
	for _, h := range c.Homes {
		if mac := h.GatewayMAC(); !mac.IsZero() {
			cfg.Gateways[h.Name] = mac
			named++
		}
	}
	rt, conn, err := nf.Start(ctx, "detector", env, c)
	if err != nil {
		return err
	}
	defer rt.Close()
	env.Log.Info("detector running", "mode", "hosts", "host_model", path, "units", len(hm.Units), "campaign", c.Name, "home", cfg.Home, "tap", cfg.Tap,
		"window", cfg.Live.Window, "every", cfg.Live.Step, "late", cfg.Live.Late, "settle", cfg.Live.Settle, "gateways_named", named, "partition", cfg.Partition.Index, "partitions", cfg.Partition.Count)
	return RunHosts(ctx, conn, hm, cfg, rt)
}

// loadModel reads the model from a file, or from key of the object store
// that ep names.
func loadModel(ctx context.Context, path, key string, ep endpoints.Config) (*detect.Model, error) {
	if path != "" {
		return detect.LoadFile(path)
	}
	data, where, err := readObject(ctx, "--model-object", key, ep)
	if err != nil {
		return nil, err
	}
	m, err := detect.Load(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return m, nil
}

// readObject reads key of the object store that ep names (flag says which
// flag asked for it), and says where it was.
func readObject(ctx context.Context, flag, key string, ep endpoints.Config) ([]byte, string, error) {
	if ep.S3 == "" {
		return nil, "", cli.Usagef("%s %s: no object store: set HOMEMOLE_S3_ENDPOINT (and HOMEMOLE_S3_BUCKET, HOMEMOLE_S3_ACCESS_KEY, HOMEMOLE_S3_SECRET_KEY)", flag, key)
	}
	if err := ep.S3Err(); err != nil {
		// A TLS setting that is no boolean is refused, not read as false.
		return nil, "", cli.Usagef("%s %s: %v", flag, key, err)
	}
	st, err := store.OpenS3(ctx, store.S3Config{Endpoint: ep.S3, AccessKey: ep.AccessKey, SecretKey: ep.SecretKey, Bucket: ep.S3Bucket, TLS: ep.S3TLS})
	if err != nil {
		return nil, "", err
	}
	data, err := st.Get(ctx, key)
	if err != nil {
		return nil, "", fmt.Errorf("read %s %s: %w (upload the model file there)", flag, st.Location(key), err)
	}
	return data, st.Location(key), nil
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
	// Method is homecount.MethodHosts where the replica counts LAN hosts
	// with a host model (--hosts), empty where it runs a sequence-profile
	// model. Live is then how its windows are made, and Gateways the
	// gateway MAC the campaign names per home (none: the counter finds it).
	Method   string
	Live     homecount.LiveConfig
	Gateways map[string]schemas.MAC
}

// Consumer is the durable PACKETS consumer of cfg: one per campaign, home
// (or all homes) and tap, and per partition; a host counter's are its own
// (hostcounter-...), so both methods may read one tap.
func (cfg Config) Consumer() bus.ConsumerConfig {
	scope := cfg.Home
	if scope == "*" {
		scope = "all"
	}
	prefix := "detector-"
	if cfg.Method == homecount.MethodHosts {
		prefix = "hostcounter-"
	}
	cc := bus.ConsumerConfig{
		Stream:  schemas.StreamPackets,
		Durable: prefix + cfg.Campaign + "-" + scope + "-" + cfg.Tap,
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
	o, err := newOnline(ctx, conn, m, cfg, rt.Log)
	if err != nil {
		return err
	}
	return serve(ctx, conn, o, cfg, rt)
}

// newOnline is the detector of cfg, its checkpoints in the bucket and its
// windows stored in SEEN; log hears of what a home's replay stepped over.
func newOnline(ctx context.Context, conn *bus.Conn, m *detect.Model, cfg Config, log *slog.Logger) (*detect.Online, error) {
	cps, err := detect.OpenKVCheckpoints(ctx, conn.JS, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	return &detect.Online{Model: m, Step: cfg.Step, Lag: 1, Checkpoints: cps, Replay: detect.StreamReplayer(conn.JS, log),
		Publish: publishSeen(conn),
	}, nil
}

// publishSeen stores a window in SEEN under its message id, so one
// published twice (after a restart) is stored once.
func publishSeen(conn *bus.Conn) func(ctx context.Context, subject, msgID string, data []byte) error {
	return func(ctx context.Context, subject, msgID string, data []byte) error {
		_, err := conn.JS.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data}, jetstream.WithMsgID(msgID))
		return err
	}
}

// online is what serve feeds: the sequence-profile detector
// (*detect.Online) or the host counter (*homecount.Online).
type online interface {
	HandleAt(ctx context.Context, seq uint64, b *schemas.Batch) error
}

// serve feeds o the batches of cfg's consumer, counted in rt's metrics,
// until ctx ends. A batch the host counter refuses (homecount.ErrRefused:
// not one of a LAN tap), or of a home the detector can never restore (its
// checkpoint damaged, or its batches removed by retention: the error wraps
// bus.ErrPermanent), goes to the dead letters rather than hold up its
// partition.
func serve(ctx context.Context, conn *bus.Conn, o online, cfg Config, rt *worker.Runtime) error {
	var in, windows atomic.Int64
	count := func(schemas.Seen) { windows.Add(1) }
	switch o := o.(type) {
	case *detect.Online:
		o.OnWindow = count
	case *homecount.Online:
		o.OnWindow = count
	default:
		return fmt.Errorf("detector: cannot count the windows of a %T", o)
	}
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
			if errors.Is(err, homecount.ErrRefused) {
				return bus.Permanent(err)
			}
			return err
		}
		return d.Ack()
	})
}
