package build

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/agent"
	"github.com/homemole/homemole/pipeline/capture"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
)

// dyingPublisher stands for a capture agent's process: once killed, nothing
// it sends reaches the stream any more, its final batch included.
type dyingPublisher struct {
	agent.Publisher
	dead atomic.Bool
}

var errAgentKilled = errors.New("agent killed")

func (p *dyingPublisher) PublishAsync(subject, msgID string, data []byte) (jetstream.PubAckFuture, error) {
	if p.dead.Load() {
		return nil, errAgentKilled
	}
	return p.Publisher.PublishAsync(subject, msgID, data)
}

// streamSessions counts the packets of each session in the PACKETS stream.
func streamSessions(t *testing.T, r *liveRig) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, b := range embeddedtest.Batches(t, r.conn, schemas.StreamPackets) {
		out[b.Session] += len(b.Packets)
	}
	return out
}

// TestLiveAgentKilled kills a live agent mid-session (nothing more of it
// reaches the stream, no final batch) and starts another: the windower
// closes the killed agent's session after the idle timeout, cut short, with
// every packet that reached the stream; the new agent's session has another
// name and ends normally; no packet is windowed twice.
func TestLiveAgentKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := window.Spec{Dataset: "killed", Version: "v1", Kind: schemas.KindNoise, Size: 100, FlushWindows: 64}
	r := newLiveRig(t, ctx, time.Hour, spec, time.Second)
	home := r.c.Homes[0]

	run := func(pub agent.Publisher, limit int64, kill func(*agent.Agent) bool) (*agent.Agent, error) {
		ag, err := agent.New(agent.Config{Campaign: r.c.Name, Home: home, BatchSize: 256, Log: r.log})
		if err != nil {
			t.Fatal(err)
		}
		actx, stop := context.WithCancel(ctx)
		defer stop()
		src := homegen.NewLiveSource(r.g.Files, limit)
		done := make(chan error, 1)
		go func() {
			done <- ag.Run(actx, pub, []agent.Input{{Tap: "lan", Name: "syn0", Live: true, Open: func() (capture.Source, error) { return src, nil }}})
		}()
		for kill != nil && !kill(ag) {
			time.Sleep(time.Millisecond)
		}
		if kill != nil {
			stop()
		}
		return ag, <-done
	}
	dying := &dyingPublisher{Publisher: r.conn}
	// What the killed agent returns does not matter: a killed process
	// returns nothing.
	first, _ := run(dying, 1<<40, func(ag *agent.Agent) bool {
		if ag.Stats().Acked < 40 {
			return false
		}
		dying.dead.Store(true) // kill -9: the batches in flight and the final one never arrive
		return true
	})
	// The restarted agent: a session of its own, which ends.
	time.Sleep(5 * time.Millisecond) // session names resolve milliseconds
	second, err := run(r.conn, 20_000, nil)
	if err != nil {
		t.Fatal(err)
	}
	killedSession, newSession := first.Stats().LastSessions[0], second.Stats().LastSessions[0]
	if killedSession == newSession {
		t.Fatalf("the restarted agent reused the killed agent's session %s", newSession)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.parts)
		r.mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d parts after 30 s: the killed agent's session was not closed by the idle timeout (%d sessions held)", n, r.w.Held())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	r.stop()
	inStream := streamSessions(t, r)
	r.mu.Lock()
	defer r.mu.Unlock()
	killed, fresh := r.parts["lan/"+killedSession], r.parts["lan/"+newSession]
	t.Logf("killed agent's session %s: %d packets reached the stream, %d windowed, cut short %v; the new agent's %s: %d packets, %d windowed, cut short %v",
		killedSession, inStream[killedSession], killed.Packets, killed.CutShort, newSession, inStream[newSession], fresh.Packets, fresh.CutShort)
	if !killed.CutShort || killed.Packets == 0 || killed.Packets != inStream[killedSession] {
		t.Errorf("killed session: part cut short %v with %d packets; the stream holds %d of it", killed.CutShort, killed.Packets, inStream[killedSession])
	}
	if fresh.CutShort || fresh.Packets != 20_000 || inStream[newSession] != 20_000 {
		t.Errorf("new session: part cut short %v with %d packets, %d in the stream; want 20000 in a normal part", fresh.CutShort, fresh.Packets, inStream[newSession])
	}
	for s, n := range r.count {
		if n != 1 {
			t.Errorf("session %s written %d times", s, n)
		}
	}
}
