// Command benchref runs HomeMole's headline benchmarks and the reference
// tools on the same input in the same run, and prints the ratios: absolute
// figures on shared machines vary, ratios hold.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"time"
)

const sentinel = "../shared/data/iot-sentinel-dev"

type row struct {
	what, unit     string
	ours, ref      float64
	reference, why string
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
		return fmt.Errorf("no captures under %s: the shared data must sit beside the project", sentinel)
	}
	sort.Strings(files)
	var rows []row

	fmt.Println("capture: reading and decoding every IoT Sentinel capture ...")
	ours, err := goBench("./pipeline/capture/", "BenchmarkReadSentinel", "packets/s", "3x")
	if err != nil {
		return err
	}
	r := row{what: "read + decode pcap (IoT Sentinel, all files)", unit: "packets/s", ours: ours, reference: "tshark -T fields"}
	if ref, err := tsharkRate(files); err != nil {
		r.why = err.Error()
	} else {
		r.ref = ref
	}
	rows = append(rows, r)

	fmt.Println("learn: one BLSTM epoch over 640 windows of 100 packets ...")
	ours, err = goBench("./pipeline/learn/", "BenchmarkTrain", "windows/s", "1x")
	if err != nil {
		return err
	}
	r = row{what: "BLSTM training (n=100, batch 64, CPU)", unit: "windows/s", ours: ours, reference: "PyTorch (Debian python3-torch)"}
	if ref, err := pytorchRate(); err != nil {
		r.why = err.Error()
	} else {
		r.ref = ref
	}
	rows = append(rows, r)

	fmt.Printf("\n%-46s %14s %14s %8s  %s\n", "benchmark", "HomeMole", "reference", "ratio", "reference tool")
	for _, r := range rows {
		ref, ratio := "n/a", "n/a"
		if r.ref > 0 {
			ref, ratio = fmt.Sprintf("%.0f", r.ref), fmt.Sprintf("%.2fx", r.ours/r.ref)
		}
		fmt.Printf("%-46s %14.0f %14s %8s  %s (%s)\n", r.what, r.ours, ref, ratio, r.reference, r.unit)
		if r.why != "" {
			fmt.Printf("%46s   reference not measured: %s\n", "", r.why)
		}
	}
	return nil
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

// tsharkRate times tshark printing the fields HomeMole extracts, over files.
func tsharkRate(files []string) (float64, error) {
	if _, err := exec.LookPath("tshark"); err != nil {
		return 0, errors.New("tshark is not installed (go tool task bench installs it)")
	}
	start := time.Now()
	lines := 0
	for _, f := range files {
		cmd := exec.Command("tshark", "-n", "-r", f, "-T", "fields",
			"-e", "frame.time_epoch", "-e", "frame.len", "-e", "ip.ttl", "-e", "ip.len", "-e", "ip.proto",
			"-e", "tcp.dstport", "-e", "udp.dstport", "-e", "tcp.flags", "-e", "tcp.window_size_value")
		out, err := cmd.Output()
		if err != nil {
			return 0, fmt.Errorf("tshark -r %s: %w", f, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			lines++
		}
	}
	return float64(lines) / time.Since(start).Seconds(), nil
}

func pytorchRate() (float64, error) {
	out, err := exec.Command("/usr/bin/python3", "tools/benchref/blstm_ref.py").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("PyTorch reference failed (is python3-torch installed?): %v: %s", err, bytes.TrimSpace(out))
	}
	m := regexp.MustCompile(`windows/s ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("PyTorch reference printed %q", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}
