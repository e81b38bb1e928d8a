package agent

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/schemas"
)

// TestStreamFullSpools: a stream at its retention's max bytes refuses the
// agent's batches; the agent keeps them in its spool, stops reading when
// the spool is full, and sends them in order once the limit is raised:
// every packet stored exactly once.
func TestStreamFullSpools(t *testing.T) {
	srv := startNATS(t, t.TempDir())
	defer srv.Close()
	ctx := context.Background()
	admin, err := bus.Connect(ctx, bus.Config{URL: srv.NATSURL, Retention: bus.Retention{MaxBytes: 24 << 10}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	conn := connect(t, srv.NATSURL, true)
	home := testHome(t, "h", 3)
	ag, err := New(testConfig(home, t.TempDir(), testLog(t)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ag.RunFiles(ctx, conn) }()
	deadline := time.Now().Add(20 * time.Second)
	for ag.Stats().Outages == 0 || ag.Stats().Spooled == 0 {
		select {
		case err := <-done:
			t.Fatalf("the agent finished (%v) into a stream of 24 KiB: %+v", err, ag.Stats())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the full stream never made the agent spool: %+v", ag.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s, err := admin.JS.Stream(ctx, schemas.StreamPackets)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxBytes = -1
	if _, err := admin.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the agent did not finish once the stream took batches again: %+v", ag.Stats())
	}
	st := ag.Stats()
	t.Logf("%d batches, %d spooled during %d refusals", st.Batches, st.Spooled, st.Outages)
	exactlyOnce(t, conn, want(t, "c", home))
}
