package window

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/embedded"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
)

// TestIdleSessionCutShort: a session whose producer died mid-way (no final
// batch) is closed by the windower's idle timeout: its windows so far are
// written, its part says it was cut short, and every delivery is acked, so
// the consumer holds nothing. A session that ends normally is not marked.
func TestIdleSessionCutShort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	srv, err := embedded.Start(ctx, t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	conn, err := bus.Connect(ctx, bus.Config{URL: srv.NATSURL}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := store.OpenS3(ctx, store.S3Config{Endpoint: srv.S3Endpoint, AccessKey: embedded.S3AccessKey, SecretKey: embedded.S3SecretKey, Bucket: "homemole"})
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{Dataset: "d", Version: "v1", Kind: schemas.KindNoise, Size: 10, Labels: []string{"plug", "cam", "bulb", "hub"}}
	// benchSession's batches: the dead session loses its last (final) one.
	dead := benchSession("h", "lan-dead", 400, 50, 1)
	dead = dead[:len(dead)-1]
	whole := benchSession("h", "lan-whole", 200, 50, 2)
	for _, b := range append(dead, whole...) {
		if err := conn.Publish(ctx, schemas.LabeledSubject(b.Campaign, b.Home, b.View), b); err != nil {
			t.Fatal(err)
		}
	}
	w, err := New(spec, st, log)
	if err != nil {
		t.Fatal(err)
	}
	w.IdleTimeout = time.Second
	parts := make(chan Part, 4)
	w.OnPart = func(p Part) { parts <- p }
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	cc := bus.ConsumerConfig{Stream: schemas.StreamLabeled, Durable: "windower", Filter: "hm.lbl.>", MaxAckPending: 1000}
	go w.Sweeper(cctx)
	go func() { done <- conn.Consume(cctx, cc, w.Handle) }()

	got := map[string]Part{}
	started := time.Now()
	for len(got) < 2 {
		select {
		case p := <-parts:
			got[p.Session] = p
			if p.Session == "lan-dead" && time.Since(started) < w.IdleTimeout {
				t.Errorf("the unfinished session was closed after %s, before its idle timeout", time.Since(started))
			}
		case <-ctx.Done():
			t.Fatalf("parts %v after %s; %d sessions held", got, time.Since(started), w.Held())
		}
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	deadPkts := 0
	for _, b := range dead {
		deadPkts += len(b.Packets)
	}
	if p := got["lan-dead"]; !p.CutShort || p.Packets != deadPkts || p.Windows == 0 {
		t.Errorf("dead session's part: cut short %v, %d packets, %d windows; want cut short with its %d packets", p.CutShort, p.Packets, p.Windows, deadPkts)
	}
	if p := got["lan-whole"]; p.CutShort || p.Packets != 200 {
		t.Errorf("whole session's part: cut short %v, %d packets", p.CutShort, p.Packets)
	}
	data, err := st.Get(ctx, path.Join(spec.Prefix(), "lan", "h", "lan-dead", PartSuffix))
	if err != nil {
		t.Fatal(err)
	}
	var stored map[string]any
	if err := json.Unmarshal(data, &stored); err != nil || stored["cut_short"] != true {
		t.Errorf("stored part does not record the cut: %s", data)
	}
	cons, err := conn.JS.Consumer(ctx, schemas.StreamLabeled, "windower")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 || w.Held() != 0 {
		t.Errorf("after the sweep %d deliveries await an ack, %d are pending, %d sessions held: want none", info.NumAckPending, info.NumPending, w.Held())
	}
}
