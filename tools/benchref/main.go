// Command benchref runs HomeMole's headline benchmarks and the reference
// tools on the same input in the same run, and prints the ratios: absolute
// figures on shared machines vary, ratios hold.
package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

const sentinel = "../shared/data/iot-sentinel-dev"

type row struct {
	what, unit     string
	ours, ref      float64
	reference, why string
	// target, when set, says whether the row meets its goal and what the goal is.
	target func(ours, ref float64) (bool, string)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchref:", err)
		os.Exit(1)
	}
}

func run() error {
	files, err := filepath.Glob(filepath.Join(sentinel, "*", "*.pcap"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no captures under %s: the IoT Sentinel captures must sit beside the project (go tool task data fetches them)", sentinel)
	}
	sort.Strings(files)
	var rows []row

	merged, err := oneCoreRows(files)
	if err != nil {
		return err
	}
	rows = append(rows, merged...)

	// JetStream is measured alone: no other tool does capture -> broker,
	// so the row has a target instead of a ratio.
	fmt.Println("agent: capture file -> embedded JetStream, every batch acknowledged (both cores) ...")
	ours, err := goBench("./pipeline/agent/", "BenchmarkPublishSentinel", "packets/s", "20x")
	if err != nil {
		return err
	}
	rows = append(rows, row{what: "(c) capture -> JetStream, acked (2 cores)", unit: "packets/s", ours: ours, reference: "none",
		target: func(ours, _ float64) (bool, string) { return ours >= 2e6, ">= 2M/s" }})

	fmt.Println("labeler: packet batches in -> labeled batches acknowledged, NAPT pairing (both cores) ...")
	ours, err = goBench("./pipeline/label/", "BenchmarkLabel/paired", "packets/s", "3x")
	if err != nil {
		return err
	}
	rows = append(rows, row{what: "labeler with NAPT pairing, JetStream (2 cores)", unit: "packets/s", ours: ours, reference: "none",
		target: func(ours, _ float64) (bool, string) { return ours >= 1e6, ">= 1M/s" }})

	if err := windowingBench.run(); err != nil {
		return err
	}
	if err := seqprofileBench.run(); err != nil {
		return err
	}

	fmt.Println("learn: one BLSTM epoch over 640 windows of 100 packets ...")
	// Three alternating rounds, best of each: a neighbour's burst on these
	// shared machines then slows one round, not one side.
	r := row{what: "BLSTM training (n=100, batch 64, 1 thread)", unit: "windows/s", reference: "PyTorch (Debian python3-torch)"}
	for range 3 {
		rate, err := goBench("./pipeline/learn/", "BenchmarkTrain", "windows/s", "1x")
		if err != nil {
			return err
		}
		r.ours = max(r.ours, rate)
		if ref, err := pytorchRate(); err != nil {
			r.why = err.Error()
		} else {
			r.ref = max(r.ref, ref)
		}
	}
	rows = append(rows, r)

	defRows, err := defaultModelRows()
	if err != nil {
		return err
	}
	rows = append(rows, defRows...)

	if err := forestBench(); err != nil {
		return err
	}

	fmt.Printf("\n%-48s %12s %12s %9s  %-34s %s\n", "benchmark", "HomeMole", "reference", "ratio", "target", "reference tool (unit)")
	missed := 0
	for _, r := range rows {
		ref, ratio := "n/a", "n/a"
		if r.ref > 0 {
			ref, ratio = fmt.Sprintf("%.0f", r.ref), fmt.Sprintf("%.2fx", r.ours/r.ref)
		}
		target := ""
		if r.target != nil {
			ok, goal := r.target(r.ours, r.ref)
			target = "met: " + goal
			if !ok {
				target, missed = "MISSED: "+goal, missed+1
			}
		}
		fmt.Printf("%-48s %12.0f %12s %9s  %-34s %s (%s)\n", r.what, r.ours, ref, ratio, target, r.reference, r.unit)
		if r.why != "" {
			fmt.Printf("%48s   reference not measured: %s\n", "", r.why)
		}
	}
	if missed > 0 {
		fmt.Printf("\n%d target(s) missed\n", missed)
	}
	return nil
}

// tsharkFields are the fields of the features CSV as tshark names them.
var tsharkFields = []string{
	"frame.time_epoch", "tcp.dstport", "udp.dstport", "frame.len", "frame.time_delta",
	"ip.ttl", "ipv6.hlim", "ip.len", "ipv6.plen", "ip.proto", "ipv6.nxt",
	"tcp.flags", "tcp.window_size_value", "tcp.hdr_len", "tcp.len", "udp.length",
}

// oneCoreRows measures, on one merged capture and on CPU 0 alone, the agent's
// read-and-decode path and the features CSV against tshark printing the
// same fields.
func oneCoreRows(files []string) ([]row, error) {
	for _, tool := range []string{"mergecap", "tshark"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is not installed (Debian package tshark; go tool task bench installs it)", tool)
		}
	}
	dir, err := os.MkdirTemp("", "benchref-")
	if err != nil {
		return nil, fmt.Errorf("temporary folder for the merged capture: %w", err)
	}
	defer os.RemoveAll(dir)
	merged := filepath.Join(dir, "merged.pcapng")
	fmt.Printf("merging %d captures into one (mergecap -a) ...\n", len(files))
	if out, err := exec.Command("mergecap", append([]string{"-a", "-w", merged}, files...)...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mergecap -a -w %s: %w: %s", merged, err, bytes.TrimSpace(out))
	}

	pin, how := oneCore()
	fmt.Printf("records and features CSV over the merged capture on one core (%s) ...\n", how)
	testBin := filepath.Join(dir, "capture.test")
	if out, err := exec.Command("go", "test", "-c", "-o", testBin, "./pipeline/capture/").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the capture benchmarks: %w\n%s", err, out)
	}
	rates, err := runBench(pin, testBin, "pipeline/capture", merged, "packets/s", "BenchmarkRecordsMerged", "BenchmarkCSVMerged")
	if err != nil {
		return nil, err
	}

	fmt.Println("tshark -T fields over the merged capture on the same core ...")
	ref, packets, err := tsharkMergedRate(pin, merged)
	why := ""
	if err != nil {
		why = err.Error()
	}
	atLeast := func(abs, times float64) func(ours, ref float64) (bool, string) {
		return func(ours, ref float64) (bool, string) {
			goal := fmt.Sprintf(">= %.0fx tshark", times)
			if abs > 0 {
				goal = fmt.Sprintf(">= %.0fM/s and ", abs/1e6) + goal
			}
			return ours >= abs && ref > 0 && ours >= times*ref, goal
		}
	}
	tool := fmt.Sprintf("tshark -T fields -e (%d fields), 1 core, start-up excluded", len(tsharkFields))
	if packets > 0 {
		fmt.Printf("tshark printed %d rows, one per packet of the merged capture\n", packets)
	}
	return []row{
		{what: "(a) records: read + decode (merged, 1 core)", unit: "packets/s", ours: rates["BenchmarkRecordsMerged"], ref: ref,
			reference: tool, why: why, target: atLeast(3e6, 50)},
		{what: "(b) homemole features CSV to /dev/null (1 core)", unit: "packets/s", ours: rates["BenchmarkCSVMerged"], ref: ref,
			reference: tool, why: why, target: atLeast(0, 10)},
	}, nil
}

// oneCore returns the command prefix that pins a process to CPU 0, and
// how the run is confined, for the printout.
func oneCore() ([]string, string) {
	if _, err := exec.LookPath("taskset"); err != nil {
		return nil, "GOMAXPROCS=1; taskset not found, so not pinned to one CPU"
	}
	return []string{"taskset", "-c", "0"}, "taskset -c 0, GOMAXPROCS=1"
}

// runBench runs Go benchmarks from a built test binary in its package folder
// with GOMAXPROCS=1 and returns each one's metric.
func runBench(pin []string, testBin, dir, merged, metric string, names ...string) (map[string]float64, error) {
	args := append(append([]string(nil), pin...), testBin, "-test.run", "^$", "-test.bench", "^("+strings.Join(names, "|")+")$",
		"-test.benchtime", "3s", "-test.cpu", "1")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1", "HOMEMOLE_BENCH_CAPTURE="+merged)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", strings.Join(names, ", "), err, out)
	}
	rates := map[string]float64{}
	for _, name := range names {
		re := regexp.MustCompile(`(?m)^` + name + `(?:-\d+)?\s.*?([0-9.e+]+) ` + regexp.QuoteMeta(metric))
		m := re.FindSubmatch(out)
		if m == nil {
			return nil, fmt.Errorf("%s printed no %s metric:\n%s", name, metric, out)
		}
		if rates[name], err = strconv.ParseFloat(string(m[1]), 64); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return rates, nil
}

// tsharkMergedRate times tshark printing the CSV's fields over the merged
// capture, best of two runs, less the time tshark takes to start and read
// one packet: HomeMole's figures leave process start-up out too.
func tsharkMergedRate(pin []string, merged string) (float64, int, error) {
	run := func(extra ...string) (time.Duration, int, error) {
		args := append(append([]string(nil), pin...), "tshark", "-n", "-r", merged)
		args = append(args, extra...)
		args = append(args, "-T", "fields")
		for _, f := range tsharkFields {
			args = append(args, "-e", f)
		}
		cmd := exec.Command(args[0], args[1:]...)
		start := time.Now()
		out, err := cmd.Output()
		took := time.Since(start)
		if err != nil {
			return 0, 0, fmt.Errorf("tshark -r %s: %w", merged, err)
		}
		return took, bytes.Count(out, []byte("\n")), nil
	}
	startup, _, err := run("-c", "1")
	if err != nil {
		return 0, 0, err
	}
	best, packets := time.Duration(0), 0
	for range 2 {
		took, n, err := run()
		if err != nil {
			return 0, 0, err
		}
		if best == 0 || took < best {
			best, packets = took, n
		}
	}
	return float64(packets) / (best - startup).Seconds(), packets, nil
}

// goBench runs one Go benchmark and returns its metric.
func goBench(pkg, name, metric, benchtime string) (float64, error) {
	cmd := exec.Command("go", "test", "-run", "^$", "-bench", "^"+name+"$", "-benchtime", benchtime, pkg)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("%s: %w\n%s", name, err, out)
	}
	re := regexp.MustCompile(`([0-9.e+]+) ` + regexp.QuoteMeta(metric))
	m := re.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("%s printed no %s metric:\n%s", name, metric, out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// defaultModelRows times the model people train (learn.DefaultConfig:
// frame-length embedding, stream context) against blstm_ref.py --model
// default on one thread each, and our trainer on two threads, intra-op
// and data-parallel, against itself on one. Rounds alternate, best of
// each, as the paper model's row does. The two-thread figures depend on a
// second core being free: nproc and the load average are printed beside.
func defaultModelRows() ([]row, error) {
	fmt.Println("learn: the default model, the best of epochs 2 and 3 over 640 windows of 100 packets (PyTorch likewise), on 1 thread, 2 intra-op threads and 2 data-parallel copies ...")
	var best = map[string]float64{}
	var ref float64
	why := ""
	for range 3 {
		rates, err := goBenchSubs("./pipeline/learn/", "BenchmarkTrainDefault", "windows/s", "1x")
		if err != nil {
			return nil, err
		}
		for k, v := range rates {
			best[k] = max(best[k], v)
		}
		// Three epochs, the best after the first counted, on both sides
		// (BenchmarkTrainDefault too): a model's first epoch also pays for
		// its optimizer state and allocations.
		if r, err := pytorchRate("--model", "default", "--epochs", "3"); err != nil {
			why = err.Error()
		} else {
			ref = max(ref, r)
		}
	}
	for _, sub := range []string{"threads=1", "threads=2", "data=2"} {
		if best[sub] == 0 {
			return nil, fmt.Errorf("BenchmarkTrainDefault/%s printed no windows/s", sub)
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("default model: nproc %d, load average %s\n", runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " "))
	speedUp := func(ours, ref float64) (bool, string) { return ref > 0 && ours >= 1.5*ref, ">= 1.5x one thread" }
	return []row{
		{what: "default BLSTM training (n=100, batch 64, 1 thread)", unit: "windows/s", ours: best["threads=1"], ref: ref, why: why,
			reference: "PyTorch blstm_ref.py --model default",
			target:    func(ours, ref float64) (bool, string) { return ref > 0 && ours >= ref, ">= 1.0x PyTorch" }},
		{what: "default BLSTM, 2 intra-op threads vs 1", unit: "windows/s", ours: best["threads=2"], ref: best["threads=1"],
			reference: "HomeMole on 1 thread", target: speedUp},
		{what: "default BLSTM, 2 data-parallel copies vs 1", unit: "windows/s", ours: best["data=2"], ref: best["threads=1"],
			reference: "HomeMole on 1 thread", target: speedUp},
	}, nil
}

// goBenchSubs runs one Go benchmark's sub-benchmarks and returns each
// one's metric by sub-benchmark name.
func goBenchSubs(pkg, name, metric, benchtime string) (map[string]float64, error) {
	cmd := exec.Command("go", "test", "-run", "^$", "-bench", "^"+name+"$", "-benchtime", benchtime, pkg)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", name, err, out)
	}
	re := regexp.MustCompile(`(?m)^` + name + `/(\S+?)(?:-\d+)?\s.*?([0-9.e+]+) ` + regexp.QuoteMeta(metric))
	rates := map[string]float64{}
	for _, m := range re.FindAllSubmatch(out, -1) {
		v, err := strconv.ParseFloat(string(m[2]), 64)
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", name, m[1], err)
		}
		rates[string(m[1])] = v
	}
	if len(rates) == 0 {
		return nil, fmt.Errorf("%s printed no %s metric:\n%s", name, metric, out)
	}
	return rates, nil
}

func pytorchRate(args ...string) (float64, error) {
	cmd := exec.Command("/usr/bin/python3", append([]string{"tools/benchref/blstm_ref.py"}, args...)...)
	// pipeline/learn holds OpenBLAS to one thread and raises glibc's mmap
	// and trim thresholds in-process (learn.SetTorchThreads, tuneMalloc):
	// the reference runs with the same settings, so the ratio compares the
	// trainers, not their allocators.
	cmd.Env = append(os.Environ(), "OPENBLAS_NUM_THREADS=1", "MALLOC_MMAP_THRESHOLD_=33554432", "MALLOC_TRIM_THRESHOLD_=67108864")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("PyTorch reference failed (is python3-torch installed?): %v: %s", err, bytes.TrimSpace(out))
	}
	m := regexp.MustCompile(`windows/s ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("PyTorch reference printed %q", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}
