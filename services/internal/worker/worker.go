// Package worker is the runtime the pipeline's workers (labeler, windower,
// detector, trainer) share: each is a function run(ctx, args, env) that a
// thin main calls and a test calls in-process, and each gets its metrics
// and health listener, its connections, its partitioned consumer and its
// shutdown order from here rather than wiring them again.
package worker

import (
	"context"
	"io"
	"log/slog"
	"os"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/metrics"
	"github.com/homemole/homemole/services/internal/cli"
)

// Env is what the process gives a worker: the logger (the only way a
// worker gets one) and where it prints its results.
type Env struct {
	Log *slog.Logger
	Out io.Writer
}

// Run is a worker: it parses args and works until ctx ends or it is done.
type Run func(ctx context.Context, args []string, env Env) error

// Main runs a one-shot worker (the trainer, a Job's) as a program: the
// command line's arguments, the signal-aware context and exit codes of
// cli.Main, so an interrupted run exits 130 or 143, never 0.
func Main(run Run) {
	cli.Main(func(ctx context.Context, log *slog.Logger) error {
		return run(ctx, os.Args[1:], Env{Log: log, Out: os.Stdout})
	})
}

// Serve runs a long-running worker (labeler, windower, detector) as a
// program, with the exit codes of cli.Serve: stopped by SIGTERM, it
// shuts down and exits 0.
func Serve(run Run) {
	cli.Serve(func(ctx context.Context, log *slog.Logger) error {
		return run(ctx, os.Args[1:], Env{Log: log, Out: os.Stdout})
	})
}

// Runtime is one worker's shared machinery once its flags are parsed.
// Close releases it in the reverse of the order it was set up: the
// consume loop (the source) has stopped by then, so the connections (the
// sinks) close after every stored result is acknowledged, and the health
// listener goes last, so a probe sees the worker until it is gone.
type Runtime struct {
	Name    string
	Log     *slog.Logger
	Metrics *metrics.Metrics
	closers []func()
}

// Start makes the worker's metrics and serves them, with /healthz and
// /readyz, on addr (nothing when addr is empty).
func Start(ctx context.Context, name, addr string, env Env) (*Runtime, error) {
	mctx, stop := context.WithCancel(ctx)
	m, err := metrics.Start(mctx, name, addr, env.Log)
	if err != nil {
		stop()
		return nil, err
	}
	return &Runtime{Name: name, Log: env.Log, Metrics: m, closers: []func(){stop}}, nil
}

// Open connects to NATS and S3 (embedded servers for whichever ep leaves
// empty); Close closes them.
func (r *Runtime) Open(ctx context.Context, ep endpoints.Config) (*endpoints.Env, error) {
	env, err := endpoints.Open(ctx, ep, r.Name, r.Log)
	if err != nil {
		return nil, err
	}
	r.closers = append(r.closers, env.Close)
	return env, nil
}

// Connect connects to NATS alone; Close closes the connection.
func (r *Runtime) Connect(ctx context.Context, cfg bus.Config) (*bus.Conn, error) {
	cfg.Name = r.Name
	conn, err := bus.Connect(ctx, cfg, r.Log)
	if err != nil {
		return nil, err
	}
	r.closers = append(r.closers, conn.Close)
	return conn, nil
}

// Consumer is a worker's consumer contract and how its replicas split it.
type Consumer struct {
	Config    bus.ConsumerConfig
	Partition bus.Partition
	// Homes are the campaign's homes, Subject the subject of one home's
	// messages: a partitioned replica reads only its homes (every session
	// of a home comes to one replica), under a durable of its own.
	Homes   []string
	Subject func(home string) string
}

// Consume reads the consumer until ctx ends, counting each failed
// delivery. The worker reports ready only from here, and only while NATS
// is connected, and the consumer's lag and pending counts are exported.
func (r *Runtime) Consume(ctx context.Context, conn *bus.Conn, c Consumer, handle func(context.Context, *bus.Delivery) error) error {
	cc := c.Config
	if c.Subject != nil {
		cc = c.Partition.Apply(cc, c.Homes, c.Subject)
	}
	if err := r.Metrics.WatchConsumer(conn.JS, cc.Stream, cc.Durable); err != nil {
		return err
	}
	r.Metrics.SetReady(metrics.NATSReady(conn.NC))
	r.Log.Info(r.Name+" consuming", "stream", cc.Stream, "consumer", cc.Durable, "partition", c.Partition.Index, "partitions", c.Partition.Count)
	return conn.Consume(ctx, cc, func(ctx context.Context, d *bus.Delivery) error {
		return r.Metrics.Fail(handle(ctx, d))
	})
}

// Close releases what Start, Open and Connect set up, last first. It is
// safe to call more than once.
func (r *Runtime) Close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
	r.closers = nil
}

// Bare is a runtime whose metrics are kept but not served and which opens
// nothing yet: a worker's loop run inside another program or a test.
func Bare(name string, m *metrics.Metrics, log *slog.Logger) *Runtime {
	if m == nil {
		m = metrics.New(name)
	}
	return &Runtime{Name: name, Log: log, Metrics: m}
}
