package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestRunOnCPU runs tools/gpu/run.sh end to end against Debian's CPU
// libtorch, small: prepare (binaries linked to libtch.so, the layer's
// source), the layer built by `gpu layer` and stubbed from the compiler's
// errors, the benchmark beside PyTorch, a generated home built through the
// pipeline, homemole train and predict. Everything a GPU run does but the
// GPU: what is left for a device is the device.
func TestRunOnCPU(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the GPU script's CPU run compiles gotch's C layer (minutes)")
	}
	if _, err := os.Stat("/usr/include/torch/csrc/api/include/torch/version.h"); err != nil {
		t.Skip("libtorch-dev is not installed (`go tool task setup` installs it): the GPU script's CPU test builds against Debian's libtorch")
	}
	for _, tool := range []string{"g++", "gcc", "gzip", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: the GPU script needs it", tool)
		}
	}
	root := repoRoot(t)
	tmp := t.TempDir()
	carry, work := filepath.Join(tmp, "carry"), filepath.Join(tmp, "work")
	python := "/usr/bin/python3"
	withTorch := exec.Command(python, "-c", "import torch").Run() == nil
	cmd := exec.Command("bash", "tools/gpu/run.sh", "all", "--libtorch", "/usr", "--device", "cpu", "--small",
		"--carry", carry, "--work", work, "--python", python)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "OUT=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("run.sh: %v\n%s", err, tail(out, 80))
	}
	log := string(out)
	for _, want := range []string{`msg="torch device" asked=cpu using=cpu`, "data_ms_per_step=", "compute_ms_per_step=", "== summary: device cpu"} {
		if !strings.Contains(log, want) {
			t.Errorf("run.sh printed no %q:\n%s", want, tail(out, 80))
		}
	}

	// What travels to a device must fit its 64 MiB, with the repository.
	var size int64
	filepath.Walk(carry, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			size += info.Size()
		}
		return nil
	})
	if size == 0 || size > 48<<20 {
		t.Errorf("prepare wrote %d bytes to carry; the device takes 64 MiB with the repository", size)
	}

	// The layer stubs what gotchsetup stubs for the same libtorch.
	stubbed, err := os.ReadFile(filepath.Join(work, "layer", "stubbed.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if ref, err := os.ReadFile(filepath.Join(root, ".build", "gotch", ".homemole-stubbed")); err == nil && !bytes.Equal(ref, stubbed) {
		t.Errorf("the layer stubbed\n%s\ngotchsetup stubbed\n%s", stubbed, ref)
	}

	sum, err := os.ReadFile(filepath.Join(work, "summary.txt"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("run.sh's summary:\n%s", sum)
	rows := 0
	row := regexp.MustCompile(`^(paper|default)\s+(\d+)\s+(\S+)\s+(\S+)\s+\S+\s+(\S+)\s+(\S+)`)
	sc := bufio.NewScanner(bytes.NewReader(sum))
	for sc.Scan() {
		m := row.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		rows++
		cols := []string{m[3], m[5]} // HomeMole's train and inference windows/s
		if withTorch {
			cols = append(cols, m[4], m[6])
		}
		for _, c := range cols {
			if v, err := strconv.ParseFloat(c, 64); err != nil || !(v > 0) {
				t.Errorf("summary row %q: windows/s %q", sc.Text(), c)
			}
		}
	}
	if rows != 4 {
		t.Errorf("%d benchmark rows, want 4 (paper and default, batches 16 and 64):\n%s", rows, sum)
	}
	acc := regexp.MustCompile(`train gpu-cpu\s+on cpu\s+accuracy\s+([\d.]+) %`).FindSubmatch(sum)
	if acc == nil {
		t.Fatalf("no train accuracy in the summary:\n%s", sum)
	}
	if v, _ := strconv.ParseFloat(string(acc[1]), 64); v < 50 {
		t.Errorf("train accuracy %s %% on a generated home; the demo's devices are easy", acc[1])
	}
	pred := regexp.MustCompile(`predict: (\d+) packets, (\d+) of (\d+) inventoried hosts named right`).FindSubmatch(sum)
	if pred == nil {
		t.Fatalf("no predict line in the summary:\n%s", sum)
	}
	right, _ := strconv.Atoi(string(pred[2]))
	named, _ := strconv.Atoi(string(pred[3]))
	// A model of a few epochs on a few minutes of traffic: predict must
	// find the home's hosts and name some of them; how well is train's
	// accuracy above, and the GPU run's figures.
	if named < 5 || right < 1 {
		t.Errorf("predict named %d of %d inventoried hosts right", right, named)
	}
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
