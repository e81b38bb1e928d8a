package metrics_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/homemole/homemole/pipeline/internal/natstest"
	"github.com/homemole/homemole/pipeline/metrics"
)

// scrape fetches /metrics over HTTP and parses it as Prometheus would.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("%s missing from /metrics", name)
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("%s has no sample with labels %v", name, labels)
	return 0
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeHealthReadinessAndTotals(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := metrics.New("labeler")
	var in, out float64
	if err := m.Report(metrics.Totals{
		PacketsIn:   func() float64 { return in },
		PacketsOut:  func() float64 { return out },
		Errors:      func() float64 { return 2 },
		PairingRate: func() float64 { return 0.988 },
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.Report(metrics.Totals{}); err == nil {
		t.Error("a second Report was accepted: totals would be counted twice")
	}
	addr, err := metrics.Serve(ctx, "127.0.0.1:0", m, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}

	if code, _ := get(t, "http://"+addr+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d, want 200 while the process runs", code)
	}
	if code, _ := get(t, "http://"+addr+"/readyz"); code != 503 {
		t.Errorf("/readyz before SetReady: %d, want 503", code)
	}
	m.SetReady(func() error { return errors.New("NATS disconnected") })
	if code, body := get(t, "http://"+addr+"/readyz"); code != 503 || !strings.Contains(body, "NATS disconnected") {
		t.Errorf("/readyz while not ready: %d %q", code, body)
	}
	m.SetReady(func() error { return nil })
	if code, _ := get(t, "http://"+addr+"/readyz"); code != 200 {
		t.Errorf("/readyz when ready: %d, want 200", code)
	}

	// Totals are read at scrape time, not copied when registered.
	in, out = 1000, 990
	_ = m.Fail(nil)
	if err := m.Fail(errors.New("store down")); err == nil {
		t.Error("Fail swallowed the error")
	}
	fams := scrape(t, addr)
	w := map[string]string{"worker": "labeler"}
	for name, want := range map[string]float64{
		metrics.PacketsIn: 1000, metrics.PacketsOut: 990, metrics.Errors: 3, metrics.PairingRate: 0.988,
	} {
		if got := value(t, fams, name, w); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if _, ok := fams[metrics.WindowsWritten]; ok {
		t.Errorf("%s reported by a worker that writes no windows", metrics.WindowsWritten)
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("Go runtime metrics missing")
	}

	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := http.Get("http://" + addr + "/healthz"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("listener still answers after its context ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServeDisabledAndPortTaken(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	if addr, err := metrics.Serve(ctx, "", metrics.New("x"), log); addr != "" || err != nil {
		t.Errorf("empty address: %q, %v; want nothing served", addr, err)
	}
	addr, err := metrics.Serve(ctx, "127.0.0.1:0", metrics.New("a"), log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.Serve(ctx, addr, metrics.New("b"), log); err == nil {
		t.Error("a taken port did not fail at start")
	}
}

// TestConsumerLag runs a real JetStream server: lag is only known to it.
func TestConsumerLag(t *testing.T) {
	nc, err := nats.Connect(natstest.Server(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PACKETS", Subjects: []string{"hm.pkt.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "PACKETS", jetstream.ConsumerConfig{Durable: "labeler-c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := js.Publish(ctx, "hm.pkt.c.h1.lan", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	batch, err := cons.Fetch(2)
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}

	m := metrics.New("labeler")
	if err := m.WatchConsumer(js, "PACKETS", "labeler-c"); err != nil {
		t.Fatal(err)
	}
	if err := m.WatchConsumer(js, "PACKETS", "gone"); err != nil {
		t.Fatal(err)
	}
	addr, err := metrics.Serve(ctx, "127.0.0.1:0", m, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"worker": "labeler", "stream": "PACKETS", "consumer": "labeler-c"}
	// The lag is the server's num_pending, which it may report as 0 for a
	// moment after a fetch on a busy machine (seen in a CI run); the metric
	// must show 3 once the server does, within a few scrapes.
	fams := scrape(t, addr)
	for deadline := time.Now().Add(5 * time.Second); value(t, fams, metrics.ConsumerLag, labels) != 3 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		fams = scrape(t, addr)
	}
	if got := value(t, fams, metrics.ConsumerLag, labels); got != 3 {
		t.Errorf("lag %v, want 3 (5 published, 2 delivered)", got)
	}
	if got := value(t, fams, metrics.AckPending, labels); got != 2 {
		t.Errorf("ack pending %v, want 2", got)
	}
	for _, s := range fams[metrics.ConsumerLag].Metric {
		for _, l := range s.Label {
			if l.GetValue() == "gone" {
				t.Error("a consumer JetStream does not know reported a lag")
			}
		}
	}

	ready := metrics.NATSReady(nc)
	if err := ready(); err != nil {
		t.Errorf("ready while connected: %v", err)
	}
	nc.Close()
	if err := ready(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("ready with the connection closed: %v", err)
	}
}
