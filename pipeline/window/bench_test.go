package window

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/schemas"
)

// benchDevices is a home's inventory: mostly IoT devices, so that most
// packets end up in ind windows, and one laptop whose packets are background.
var benchDevices = []schemas.Device{
	{Name: "plug", Category: "iot"}, {Name: "cam", Category: "iot"}, {Name: "bulb", Category: "iot"},
	{Name: "hub", Category: "iot"}, {Name: "speaker", Category: "iot"}, {Name: "tv", Category: "iot"},
	{Name: "thermostat", Category: "iot"}, {Name: "doorbell", Category: "iot"}, {Name: "laptop", Category: "non-iot"},
}

// benchSession makes the labeled batches a labeler would publish for one
// session of n packets: devices interleaved, a few unlabeled packets, header
// fields that vary as real traffic does so the encoder cannot coast.
func benchSession(home, session string, n, batch int, seed uint64) []*schemas.Batch {
	r := rand.New(rand.NewPCG(seed, 7))
	pkts := make([]schemas.Packet, n)
	labels := make([]int32, n)
	ts := int64(1_700_000_000) * 1e9
	for i := range pkts {
		ts += int64(r.ExpFloat64() * 2e6)
		tcp := r.IntN(3) > 0
		p := schemas.Packet{TsNs: ts, Offset: uint64(i), DPort: int32(r.IntN(65536)), ProtoBits: schemas.ProtoIP | schemas.ProtoUDP,
			Direction: int8(r.IntN(2)), FrameLen: uint32(60 + r.IntN(1400)), TTL: uint8(64 + r.IntN(64)), Transport: 17,
			PayloadLen: uint32(r.IntN(1400))}
		if tcp {
			p.ProtoBits, p.Transport = schemas.ProtoIP|schemas.ProtoTCP|schemas.ProtoTLS, 6
			p.TCPFlags, p.TCPWindow, p.TCPOptionsLen = uint16(r.IntN(512)), uint16(r.IntN(65536)), uint8(4*r.IntN(11))
		}
		p.IPLen = uint16(p.FrameLen - 14)
		pkts[i] = p
		labels[i] = int32(r.IntN(len(benchDevices)))
		if r.IntN(50) == 0 {
			labels[i] = schemas.Unlabeled
		}
	}
	var out []*schemas.Batch
	for lo := 0; lo < n; lo += batch {
		hi := min(lo+batch, n)
		out = append(out, &schemas.Batch{Kind: schemas.KindLabeled, Campaign: "c", Home: home, View: "lan",
			Source: "c/" + home + "/lan/" + session, Session: session, FirstOffset: uint64(lo), Final: hi == n,
			Devices: benchDevices, Labels: labels[lo:hi], Packets: pkts[lo:hi]})
	}
	return out
}

// BenchmarkWindower measures the windowing worker end to end on the
// embedded servers: labeled batches already in JetStream are consumed, cut
// into ind windows of 100 packets, encoded as Arrow, stored in S3 with each
// session's part record, and acknowledged. The clock stops when the last
// session's part is stored, so packets/s counts packets whose windows S3
// has acknowledged.
func BenchmarkWindower(b *testing.B) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	conn, st := embeddedServers(b, log)

	const sessions, perSession = 8, 200_000
	var batches []*schemas.Batch
	for k := range sessions {
		batches = append(batches, benchSession(fmt.Sprintf("h%d", k%2), fmt.Sprintf("lan-s%02d", k), perSession, 4096, uint64(k))...)
	}
	total := embeddedtest.PublishAll(b, conn, func(bt *schemas.Batch) string { return schemas.LabeledSubject("c", bt.Home, bt.View) }, batches)
	labels := make([]string, len(benchDevices))
	for i, d := range benchDevices {
		labels[i] = d.Name
	}

	b.ResetTimer()
	elapsed, cpu := time.Duration(0), time.Duration(0)
	for i := 0; i < b.N; i++ {
		spec := Spec{Dataset: "bench", Version: fmt.Sprintf("v%d-%d", b.N, i), Kind: schemas.KindInd, Size: 100, Labels: labels, Cap: 5000, CapSeed: 1}
		w, err := New(spec, st, log)
		if err != nil {
			b.Fatal(err)
		}
		var mu sync.Mutex
		parts, packets := 0, 0
		allDone := make(chan struct{})
		w.OnPart = func(p Part) {
			mu.Lock()
			defer mu.Unlock()
			parts++
			packets += p.Packets
			if parts == sessions {
				close(allDone)
			}
		}
		cctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		start, cpuStart := time.Now(), cpuTime(b)
		go func() {
			done <- conn.Consume(cctx, ConsumerConfig(spec, "c", 0), w.Handle)
		}()
		select {
		case <-allDone:
		case err := <-done:
			b.Fatalf("windower stopped: %v", err)
		case <-time.After(5 * time.Minute):
			b.Fatalf("%d of %d sessions windowed after 5 minutes", parts, sessions)
		}
		elapsed += time.Since(start)
		cpu += cpuTime(b) - cpuStart
		stop()
		<-done
		if packets != total {
			b.Fatalf("parts count %d packets, %d were published", packets, total)
		}
	}
	b.ReportMetric(float64(total)*float64(b.N)/elapsed.Seconds(), "packets/s")
	// CPU time per packet, of the worker and of the in-process servers
	// together, is steadier than the rate on a machine others share.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(total*b.N), "cpu-ns/packet")
	b.ReportMetric(0, "ns/op")
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatalf("read the CPU time used: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
