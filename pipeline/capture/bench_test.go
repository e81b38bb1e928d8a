package capture

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"

	"github.com/homemole/homemole/internal/sentineldata"
	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/schemas"
)

// mergedCaptureEnv names a capture that already holds every IoT Sentinel
// capture merged: tools/benchref merges once and times tshark on the same file.
const mergedCaptureEnv = "HOMEMOLE_BENCH_CAPTURE"

// mergedSentinel returns all IoT Sentinel captures as one file, in the
// order of their names, as `mergecap -a` writes it (pcapng).
func mergedSentinel(tb testing.TB) string {
	tb.Helper()
	if path := os.Getenv(mergedCaptureEnv); path != "" {
		return path
	}
	sentineldata.Need(tb)
	files, _ := filepath.Glob(filepath.Join(sentinelDir, "*", "*.pcap"))
	if len(files) == 0 {
		tb.Skipf("IoT Sentinel captures not available under %s", sentinelDir)
	}
	sort.Strings(files)
	mergecap, err := exec.LookPath("mergecap")
	if err != nil {
		tb.Skip("mergecap not installed (Debian package tshark)")
	}
	path := filepath.Join(tb.TempDir(), "merged.pcapng")
	if out, err := exec.Command(mergecap, append([]string{"-a", "-w", path}, files...)...).CombinedOutput(); err != nil {
		tb.Fatalf("mergecap -a over %d captures: %v\n%s", len(files), err, out)
	}
	return path
}

// BenchmarkRecordsMerged is the capture agent's path over the merged
// capture: open the file, read every frame, decode it into the next record
// of a batch.
func BenchmarkRecordsMerged(b *testing.B) {
	path := mergedSentinel(b)
	batch := make([]schemas.Packet, 512)
	var packets uint64
	for b.Loop() {
		src, err := OpenFile(path)
		if err != nil {
			b.Fatal(err)
		}
		dec := features.NewDecoder(sentinelHome)
		n := 0
		for {
			f, err := src.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					b.Fatal(err)
				}
				break
			}
			if err := dec.Decode(f.LinkType, f.Data, f.CI, f.Offset, &batch[n]); err != nil {
				b.Fatal(err)
			}
			if n++; n == len(batch) {
				n = 0
			}
			packets++
		}
		src.Close()
	}
	b.ReportMetric(float64(packets)/b.Elapsed().Seconds(), "packets/s")
}

// BenchmarkCSVMerged is `homemole features --in merged --out /dev/null`
// without the process around it: WriteCSV, as the command calls it.
func BenchmarkCSVMerged(b *testing.B) {
	path := mergedSentinel(b)
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devNull.Close()
	var packets uint64
	for b.Loop() {
		src, err := OpenFile(path)
		if err != nil {
			b.Fatal(err)
		}
		st, err := WriteCSV(context.Background(), src, sentinelHome, devNull)
		if err != nil {
			b.Fatal(err)
		}
		src.Close()
		packets += st.Packets
	}
	b.ReportMetric(float64(packets)/b.Elapsed().Seconds(), "packets/s")
}
