// Package metrics gives every worker the same health endpoints and the same
// Prometheus metrics, so one dashboard and one set of probes fit them all.
//
// Workers already count what they do (label.Labeler.Stats, agent.Agent.Stats,
// window parts); the metrics here read those counts when Prometheus scrapes
// rather than being incremented on the hot path, so a packet costs nothing
// extra and the counts cannot drift from what the worker reports at exit.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric names, shared by every worker and told apart by the worker label.
const (
	PacketsIn      = "homemole_packets_in_total"
	PacketsOut     = "homemole_packets_out_total"
	BatchesOut     = "homemole_batches_out_total"
	WindowsWritten = "homemole_windows_written_total"
	Errors         = "homemole_errors_total"
	PairingRate    = "homemole_pairing_rate"
	ConsumerLag    = "homemole_consumer_lag_messages"
	AckPending     = "homemole_consumer_ack_pending_messages"
	Epochs         = "homemole_train_epochs_total"
)

// Totals are running totals a worker already keeps, read at scrape time.
// A nil func leaves its metric out: a capture agent has no windows.
type Totals struct {
	PacketsIn      func() float64
	PacketsOut     func() float64
	BatchesOut     func() float64
	WindowsWritten func() float64
	// Errors adds the worker's own error counts (undecodable packets,
	// unreadable captures) to the failures counted through Fail.
	Errors func() float64
	// PairingRate is the share of WAN packets paired with their LAN packet.
	PairingRate func() float64
	// Epochs counts a trainer's finished training epochs.
	Epochs func() float64
}

// Metrics is one worker's registry and readiness.
type Metrics struct {
	reg    *prometheus.Registry
	labels prometheus.Labels
	fails  atomic.Uint64

	mu     sync.Mutex
	extra  func() float64
	ready  func() error
	counts bool
}

// New makes the registry of the worker named worker, with the Go runtime and
// process metrics and the errors counter already in it.
func New(worker string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), labels: prometheus.Labels{"worker": worker}}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: Errors, Help: "Batches whose handling failed, plus the worker's own error counts (undecodable packets, unreadable captures).",
		ConstLabels: m.labels,
	}, func() float64 {
		m.mu.Lock()
		extra := m.extra
		m.mu.Unlock()
		n := float64(m.fails.Load())
		if extra != nil {
			n += extra()
		}
		return n
	}))
	return m
}

// Registry is where a worker may add metrics of its own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Fail counts err, if there is one, and returns it unchanged, so a handler
// can be wrapped as `return m.Fail(handle(...))`.
func (m *Metrics) Fail(err error) error {
	if err != nil {
		m.fails.Add(1)
	}
	return err
}

// Report registers the worker's totals. It may be called once: the totals
// are the worker's, and a second set would double them.
func (m *Metrics) Report(t Totals) error {
	m.mu.Lock()
	if m.counts {
		m.mu.Unlock()
		return errors.New("metrics: Report called twice")
	}
	m.counts, m.extra = true, t.Errors
	m.mu.Unlock()
	for _, c := range []struct {
		name, help string
		fn         func() float64
		gauge      bool
	}{
		{PacketsIn, "Packets read (capture) or delivered to the worker (labeler, windower; a redelivery counts again).", t.PacketsIn, false},
		{PacketsOut, "Packets the worker passed on: labeled and published (labeler), windowed and stored (windower).", t.PacketsOut, false},
		{BatchesOut, "Batches published and acknowledged by JetStream.", t.BatchesOut, false},
		{WindowsWritten, "Windows written to S3.", t.WindowsWritten, false},
		{Epochs, "Training epochs finished.", t.Epochs, false},
		{PairingRate, "Share of WAN packets paired with their LAN packet, over the worker's life.", t.PairingRate, true},
	} {
		if c.fn == nil {
			continue
		}
		var col prometheus.Collector
		if c.gauge {
			col = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: c.name, Help: c.help, ConstLabels: m.labels}, c.fn)
		} else {
			col = prometheus.NewCounterFunc(prometheus.CounterOpts{Name: c.name, Help: c.help, ConstLabels: m.labels}, c.fn)
		}
		if err := m.reg.Register(col); err != nil {
			return fmt.Errorf("metrics: register %s: %w", c.name, err)
		}
	}
	return nil
}

// WatchConsumer reports a durable consumer's lag (messages in the stream it
// has not been given yet) and its unacknowledged messages. They are asked of
// JetStream at scrape time, since only the server knows them; a scrape while
// JetStream does not answer leaves them out rather than reporting a stale 0.
func (m *Metrics) WatchConsumer(js jetstream.JetStream, stream, durable string) error {
	labels := prometheus.Labels{"worker": m.labels["worker"], "stream": stream, "consumer": durable}
	return m.reg.Register(&consumerCollector{
		js: js, stream: stream, durable: durable,
		lag:     prometheus.NewDesc(ConsumerLag, "Messages in the stream the consumer has not been delivered yet (JetStream num_pending).", nil, labels),
		pending: prometheus.NewDesc(AckPending, "Messages delivered to the consumer and not yet acknowledged.", nil, labels),
	})
}

type consumerCollector struct {
	js              jetstream.JetStream
	stream, durable string
	lag, pending    *prometheus.Desc
}

func (c *consumerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.lag; ch <- c.pending }

func (c *consumerCollector) Collect(ch chan<- prometheus.Metric) {
	// Well under Prometheus's default 10 s scrape timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cons, err := c.js.Consumer(ctx, c.stream, c.durable)
	if err != nil {
		return
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(info.NumPending))
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(info.NumAckPending))
}

// SetReady sets what /readyz asks: nil means ready. Until it is set the
// worker is starting and not ready.
func (m *Metrics) SetReady(fn func() error) {
	m.mu.Lock()
	m.ready = fn
	m.mu.Unlock()
}

func (m *Metrics) readiness() error {
	m.mu.Lock()
	fn := m.ready
	m.mu.Unlock()
	if fn == nil {
		return errors.New("starting")
	}
	return fn()
}

// Handler serves /healthz (the process answers: liveness), /readyz (the
// worker can do work: readiness) and /metrics.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := m.readiness(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return mux
}

// Serve listens on addr and serves Handler until ctx ends. The listener is
// opened before Serve returns, so a port already taken fails the worker at
// start rather than leaving it unobservable. An empty addr serves nothing
// and returns "". The address returned is the one listened on (for ":0").
func Serve(ctx context.Context, addr string, m *Metrics, log *slog.Logger) (string, error) {
	if addr == "" {
		return "", nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("metrics listener: %w", err)
	}
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics listener stopped", "err", err)
		}
	}()
	context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	log.Debug("metrics and health", "addr", ln.Addr().String())
	return ln.Addr().String(), nil
}

// Start makes the worker's metrics and serves them on addr (nothing when
// addr is empty).
func Start(ctx context.Context, worker, addr string, log *slog.Logger) (*Metrics, error) {
	m := New(worker)
	_, err := Serve(ctx, addr, m, log)
	return m, err
}

// NATSReady is the readiness of a worker that can only work while NATS is
// connected.
func NATSReady(nc *nats.Conn) func() error {
	return func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("NATS %s", strings.ToLower(nc.Status().String()))
		}
		return nil
	}
}

// Flag is the --metrics-addr flag's help, the same in every worker.
const Flag = "address (e.g. :9090) of the /healthz, /readyz and /metrics (Prometheus) listener; empty disables it (env HOMEMOLE_METRICS_ADDR)"

// Addr is the flag's default. It is empty unless the environment sets it,
// because several replicas of a worker on one machine (the local cluster,
// the fault tests) would otherwise fight over one port and fail at start;
// the Kubernetes manifests set :9090, where every pod has its own.
func Addr() string { return os.Getenv("HOMEMOLE_METRICS_ADDR") }

// Port is the port the Kubernetes manifests probe and scrape.
const Port = 9090
