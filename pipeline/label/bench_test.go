package label

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/gateway"
	"github.com/homemole/homemole/schemas"
)

// benchBatches cuts records into the batches an agent would publish for
// one session.
func benchBatches(home, tap, session string, pkts []schemas.Packet, size int) []*schemas.Batch {
	var out []*schemas.Batch
	for lo := 0; lo < len(pkts); lo += size {
		hi := min(lo+size, len(pkts))
		out = append(out, &schemas.Batch{Kind: schemas.KindPackets, Campaign: "c", Home: home, Tap: tap,
			Source: "c/" + home + "/" + tap + "/" + session, Session: session, FirstOffset: pkts[lo].Offset,
			Final: hi == len(pkts), Packets: pkts[lo:hi]})
	}
	return out
}

// BenchmarkLabel measures packets per second through the labeler on
// embedded NATS: consuming packet batches, labeling (and, for the paired
// home, pairing its WAN sessions), publishing labeled batches and acking.
func BenchmarkLabel(b *testing.B) {
	conn, log := startBus(b)
	c := pairedCampaign(b, gateway.NAPT, 1, 10*time.Minute)
	paired := c.Homes[0]
	hc, err := features.HomeFromCampaign(paired)
	if err != nil {
		b.Fatal(err)
	}
	lan, wan := capturetest.Packets(b, paired.Taps[0].Files[0], hc), capturetest.Packets(b, paired.Taps[1].Files[0], hc)
	const copies = 40
	// The copies are sessions of their own: the campaign names them, so
	// that the labeler waits for each LAN session's WAN session.
	for ti := range paired.Taps {
		paired.Taps[ti].Files = nil
		for k := range copies {
			paired.Taps[ti].Files = append(paired.Taps[ti].Files, fmt.Sprintf("s%03d.pcap", k))
		}
	}
	for _, home := range []string{"lanonly", "paired"} {
		var batches []*schemas.Batch
		for k := range copies {
			s := fmt.Sprintf("s%03d", k)
			batches = append(batches, benchBatches(home, "lan", "lan-"+s, lan, 4096)...)
			if home == "paired" {
				batches = append(batches, benchBatches(home, "wan", "wan-"+s, wan, 4096)...)
			}
		}
		total := embeddedtest.PublishAll(b, conn, func(bt *schemas.Batch) string { return schemas.PacketSubject("c", bt.Home, bt.Tap) }, batches)
		// runs names each labeler's durable consumer. -count runs this
		// closure again with the same b.N, and a durable consumer of an
		// earlier run, its messages all acked, would hand the new labeler
		// nothing.
		runs := 0
		b.Run(home, func(b *testing.B) {
			elapsed := time.Duration(0)
			for i := 0; i < b.N; i++ {
				l, err := New(c)
				if err != nil {
					b.Fatal(err)
				}
				ctx, stop := context.WithCancel(context.Background())
				runs++
				cc := l.ConsumerConfig(fmt.Sprintf("bench-%s-%d", home, runs))
				cc.Filter = schemas.PacketSubject("c", home, "*")
				done := make(chan error, 1)
				start := time.Now()
				go func() {
					done <- conn.Consume(ctx, cc, func(hctx context.Context, d *bus.Delivery) error { return l.Handle(hctx, conn, d, log) })
				}()
				deadline := time.After(2 * time.Minute)
				for l.Stats()[home].Packets < total {
					select {
					case err := <-done:
						b.Fatalf("labeler stopped: %v", err)
					case <-deadline:
						b.Fatalf("consumer %s: %d of %d packets labeled after 2 min", cc.Durable, l.Stats()[home].Packets, total)
					case <-time.After(time.Millisecond):
					}
				}
				elapsed += time.Since(start)
				stop()
				<-done
				if st := l.Stats()[home].PerTap["wan"]; home == "paired" && st.Paired < st.Packets*99/100 {
					b.Fatalf("%d of %d WAN packets paired", st.Paired, st.Packets)
				}
			}
			b.ReportMetric(float64(total)*float64(b.N)/elapsed.Seconds(), "packets/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
