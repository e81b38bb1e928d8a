package bus

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/homemole/homemole/schemas"
)

// TestPartitionOfMatchesServer: a home's partition is the one NATS subject
// mapping's partition(n, home) gives, so the split can move into the
// server's mapping without homes changing hands.
func TestPartitionOfMatchesServer(t *testing.T) {
	for _, n := range []int{2, 3, 5} {
		tr, err := server.NewSubjectTransform("hm.pkt.*.*.*", fmt.Sprintf("hm.pkt.{{wildcard(1)}}.{{partition(%d,2)}}.{{wildcard(2)}}.{{wildcard(3)}}", n))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 200 {
			home := fmt.Sprintf("home-%03d", i)
			got, err := tr.Match(schemas.PacketSubject("c", home, "lan"))
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("hm.pkt.c.%d.%s.lan", PartitionOf(home, n), home); got != want {
				t.Fatalf("%d partitions, %s: server maps to %s, PartitionOf to %s", n, home, got, want)
			}
		}
	}
}

func TestPartitionValidate(t *testing.T) {
	for _, p := range []Partition{{Index: 0, Count: 0}, {Index: 0, Count: 1}, {Index: 0, Count: 2}, {Index: 1, Count: 2}} {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
	for _, p := range []Partition{{Index: 2, Count: 2}, {Index: -1, Count: 2}, {Index: 1, Count: 1}, {Index: 0, Count: -1}} {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v: accepted", p)
		}
	}
}

// TestPartitionFromEnv: HOMEMOLE_PARTITION and HOMEMOLE_PARTITIONS are
// whole numbers. Anything else (a pod's name, a word) is an error naming
// the variable, where it used to be partition 0 of 1: with two replicas
// given HOMEMOLE_PARTITION=labeler-1 both read partition 0 and partition 1
// was never read. --partition and --partitions, when given, win over the
// variables and their errors.
func TestPartitionFromEnv(t *testing.T) {
	parse := func(args ...string) Partition {
		t.Helper()
		var p Partition
		fs := flag.NewFlagSet("labeler", flag.ContinueOnError)
		p.RegisterFlags(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv(EnvPartition, "1")
	t.Setenv(EnvPartitions, "2")
	if p := parse(); p.Index != 1 || p.Count != 2 || p.Validate() != nil {
		t.Errorf("HOMEMOLE_PARTITION=1 HOMEMOLE_PARTITIONS=2: partition %d of %d, %v", p.Index, p.Count, p.Validate())
	}
	for _, bad := range []struct{ name, value string }{{EnvPartition, "labeler-1"}, {EnvPartition, " 1"}, {EnvPartitions, "two"}, {EnvPartitions, "2.0"}} {
		t.Run(bad.name+"="+bad.value, func(t *testing.T) {
			t.Setenv(bad.name, bad.value)
			err := parse().Validate()
			if err == nil || !strings.Contains(err.Error(), bad.name+"=") || !strings.Contains(err.Error(), "whole number") {
				t.Errorf("got %v, want an error naming %s and what it takes", err, bad.name)
			}
			if p := parse("--partition", "1", "--partitions", "2"); p.Validate() != nil || p.Index != 1 || p.Count != 2 {
				t.Errorf("with the flags given: partition %d of %d, %v", p.Index, p.Count, p.Validate())
			}
		})
	}
	t.Setenv(EnvPartition, "3")
	if err := parse().Validate(); err == nil || !strings.Contains(err.Error(), EnvPartition) {
		t.Errorf("HOMEMOLE_PARTITION=3 of 2: %v, want an error naming the variable", err)
	}
}

// TestPartitionedConsumers: replicas of two partitions each get every
// batch of their own homes, in order, and none of the others'; a
// partition without homes idles.
func TestPartitionedConsumers(t *testing.T) {
	c := connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	homes := []string{"h1", "h2", "h3", "h4", "h5", "h6"}
	for _, h := range homes {
		for off := uint64(0); off < 50; off += 10 {
			b := batch(off, 10)
			b.Home, b.Source = h, "c/"+h+"/lan/x.pcap"
			if err := c.Publish(ctx, schemas.PacketSubject("c", h, "lan"), b); err != nil {
				t.Fatal(err)
			}
		}
	}
	subject := func(h string) string { return schemas.PacketSubject("c", h, "*") }
	base := ConsumerConfig{Stream: schemas.StreamPackets, Durable: "labeler-c", Filter: schemas.PacketSubject("c", "*", "*")}
	var mu sync.Mutex
	got := map[int]map[string][]uint64{}
	var wg sync.WaitGroup
	for i := range 2 {
		cc := Partition{Index: i, Count: 2}.Apply(base, homes, subject)
		if want := fmt.Sprintf("labeler-c-p%dof2", i); cc.Durable != want {
			t.Fatalf("durable %q, want %q", cc.Durable, want)
		}
		got[i] = map[string][]uint64{}
		pctx, stop := context.WithCancel(ctx)
		defer stop()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Consume(pctx, cc, func(_ context.Context, d *Delivery) error {
				mu.Lock()
				got[i][d.Batch.Home] = append(got[i][d.Batch.Home], d.Batch.FirstOffset)
				n := 0
				for _, m := range got {
					for _, offs := range m {
						n += len(offs)
					}
				}
				mu.Unlock()
				if n == len(homes)*5 {
					cancel()
				}
				return d.Ack()
			})
		}()
	}
	wg.Wait()
	for i, m := range got {
		for _, h := range homes {
			offs, own := m[h], PartitionOf(h, 2) == i
			switch {
			case own && fmt.Sprint(offs) != "[0 10 20 30 40]":
				t.Errorf("partition %d, its home %s: batches %v, want every one in order", i, h, offs)
			case !own && len(offs) > 0:
				t.Errorf("partition %d got batches of %s, a home of the other partition", i, h)
			}
		}
	}
	// More partitions than homes: some replica has none and waits.
	empty := -1
	for i := range 10 {
		if cc := (Partition{Index: i, Count: 10}).Apply(base, homes[:1], subject); len(cc.Filters) == 0 {
			empty = i
			idle, stop := context.WithTimeout(context.Background(), 200*time.Millisecond)
			err := c.Consume(idle, cc, func(context.Context, *Delivery) error { t.Error("a partition without homes got a batch"); return nil })
			stop()
			if err != context.DeadlineExceeded {
				t.Errorf("a partition without homes: %v, want it idle until its context ends", err)
			}
			break
		}
	}
	if empty < 0 {
		t.Fatal("no empty partition among 10 for one home")
	}
}
