package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/schemas"
)

// TestDLQCommand: a batch a consumer gave up on shows in `homemole dlq ls`
// with why, and `homemole dlq replay` puts it back on its subject.
func TestDLQCommand(t *testing.T) {
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env, err := endpoints.Open(ctx, endpoints.Config{Home: home, S3Bucket: "homemole"}, "test", quiet())
	if err != nil {
		t.Fatal(err)
	}
	b := &schemas.Batch{Kind: schemas.KindPackets, Campaign: "c", Home: "home-2", Tap: "lan", Source: "c/home-2/lan/s.pcap", Session: "lan-s", Final: true}
	subj := deadLetter(ctx, t, env.Bus, b, "labeler-c", "hm.pkt.>", `home "home-2" is not in campaign c`)
	env.Close()

	run := func(args ...string) string {
		var out bytes.Buffer
		if err := runDLQ(ctx, quiet(), &out, append(args, "--home", home)); err != nil {
			t.Fatalf("dlq %v: %v", args, err)
		}
		return out.String()
	}
	ls := run("ls")
	for _, want := range []string{subj, "labeler-c", `home "home-2" is not in campaign c`, "1 dead letters"} {
		if !strings.Contains(ls, want) {
			t.Errorf("dlq ls lacks %q:\n%s", want, ls)
		}
	}
	if err := runDLQ(ctx, quiet(), &bytes.Buffer{}, []string{"discard", "--home", home}); err == nil {
		t.Error("dlq discard without --subject or --seq: no error")
	}
	if got := run("discard", "--subject", "hm.pkt.c.home-9.>"); !strings.Contains(got, "discarded 0 of 0") {
		t.Errorf("dlq discard of another home: %s", got)
	}
	if got := run("replay", "--subject", "hm.pkt.c.home-2.>"); !strings.Contains(got, "replayed 1 of 1") {
		t.Errorf("dlq replay: %s", got)
	}
	if got := run("ls"); !strings.Contains(got, "0 dead letters") {
		t.Errorf("dlq ls after the replay:\n%s", got)
	}
	env, err = endpoints.Open(ctx, endpoints.Config{Home: home, S3Bucket: "homemole"}, "test", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	s, err := env.Bus.JS.Stream(ctx, schemas.StreamPackets)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("PACKETS holds %d messages: want the original and its replay", info.State.Msgs)
	}
	var usage bytes.Buffer
	if err := runDLQ(ctx, quiet(), &usage, nil); err == nil {
		t.Error("dlq without a subcommand: no error")
	}
	t.Logf("%s", ls)
}

// deadLetter publishes b on its packet subject, which it returns, and has
// a consumer (durable, filter) give up on it for why; it returns once the
// batch is in the DLQ.
func deadLetter(ctx context.Context, t *testing.T, c *bus.Conn, b *schemas.Batch, durable, filter, why string) string {
	t.Helper()
	subj := schemas.PacketSubject(b.Campaign, b.Home, b.Tap)
	if err := c.Publish(ctx, subj, b); err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(cctx, bus.ConsumerConfig{Stream: schemas.StreamPackets, Durable: durable, Filter: filter}, func(context.Context, *bus.Delivery) error {
			return bus.Permanent(errors.New(why))
		})
	}()
	for len(deadLetters(t, c)) == 0 {
		if ctx.Err() != nil {
			t.Fatal("no dead letter")
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	<-done
	return subj
}

func deadLetters(t *testing.T, c *bus.Conn) []bus.DeadLetter {
	t.Helper()
	dls, err := c.DeadLetters(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return dls
}
