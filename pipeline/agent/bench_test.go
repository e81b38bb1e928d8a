package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/capture/capturetest"
	"github.com/homemole/homemole/pipeline/embedded"
)

const sentinel = "../../../shared/data/iot-sentinel-dev"

// sentinelFiles lists the IoT Sentinel captures in a stable order.
func sentinelFiles(tb testing.TB) []string {
	tb.Helper()
	sentineldata.Need(tb)
	files, err := filepath.Glob(filepath.Join(sentinel, "*", "*.pcap"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("the IoT Sentinel captures must sit beside the project (%s): %v", sentinel, err)
	}
	sort.Strings(files)
	return files
}

// mergeCaptures appends the frames of files into one Ethernet pcap, as
// `mergecap -a` would, and returns its path and frame count.
func mergeCaptures(tb testing.TB, dir string, files []string) (string, int) {
	tb.Helper()
	path := filepath.Join(dir, "merged.pcap")
	out, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	w := pcapgo.NewWriterNanos(bw)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, f := range files {
		src := capturetest.Open(tb, f)
		for {
			fr, err := src.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				tb.Fatalf("%s: %v", f, err)
			}
			if err := w.WritePacket(fr.CI, fr.Data); err != nil {
				tb.Fatal(err)
			}
			n++
		}
		src.Close()
	}
	if err := bw.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := out.Close(); err != nil {
		tb.Fatal(err)
	}
	return path, n
}

// startNATS runs an embedded JetStream server with its state in dir.
func startNATS(tb testing.TB, dir string, opts ...embedded.Option) *embedded.Servers {
	tb.Helper()
	srv, err := embedded.Start(context.Background(), dir, slog.New(slog.DiscardHandler), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return srv
}

func connect(tb testing.TB, url string, spooling bool) *bus.Conn {
	tb.Helper()
	c, err := bus.Connect(context.Background(), bus.Config{
		URL: url, RetryConnect: spooling, NoReconnectBuffer: spooling, ReconnectWait: 50e6,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

func fileHome(name string, files ...string) *campaign.Home {
	return &campaign.Home{Name: name, Taps: []campaign.Tap{{Name: "lan", Files: files}}}
}

// BenchmarkPublishSentinel measures capture file -> JetStream: every IoT
// Sentinel capture merged into one file, read, decoded, encoded, published
// to an in-process JetStream server and acknowledged, with the spool and
// progress files a gateway agent keeps. Each round is a new home, so no
// message is a duplicate the server could skip.
func BenchmarkPublishSentinel(b *testing.B) {
	dir := b.TempDir()
	merged, frames := mergeCaptures(b, dir, sentinelFiles(b))
	srv := startNATS(b, filepath.Join(dir, "state"))
	defer srv.Close()
	conn := connect(b, srv.NATSURL, false)
	ctx := context.Background()
	packets, round := 0, 0
	b.ResetTimer()
	for b.Loop() {
		round++
		// A gateway's agent creates its spool folders once in its life, and
		// this disk takes milliseconds a folder: not what is measured here.
		b.StopTimer()
		spoolDir := filepath.Join(dir, "spool", fmt.Sprint(round))
		for _, sub := range []string{"spool", "progress"} {
			if err := os.MkdirAll(filepath.Join(spoolDir, sub), 0o755); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		ag, err := New(Config{Campaign: "bench", Home: fileHome(fmt.Sprintf("home-%d", round), merged), SpoolDir: spoolDir})
		if err != nil {
			b.Fatal(err)
		}
		if err := ag.RunFiles(ctx, conn); err != nil {
			b.Fatal(err)
		}
		st := ag.Stats()
		if st.Packets+st.DecodeErrors != frames || st.Acked != st.Batches {
			b.Fatalf("published %d packets (+%d undecodable) of %d frames, %d of %d batches acknowledged", st.Packets, st.DecodeErrors, frames, st.Acked, st.Batches)
		}
		packets += st.Packets
	}
	b.ReportMetric(float64(packets)/b.Elapsed().Seconds(), "packets/s")
	b.ReportMetric(float64(packets)/float64(b.N), "packets/op")
}
