package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"github.com/homemole/homemole/pipeline/forest"
	captures "github.com/homemole/homemole/pipeline/forest/sentinel"
)

// forestBench times the Random Forest baseline against scikit-learn's
// RandomForestClassifier: 100 trees on both cores, trained and scored on
// the very same per-packet rows (the Go model's encoding, exported after
// the port PCA), so the only difference is the tree builder.
func forestBench() error {
	ctx := context.Background()
	fmt.Println("forest: Random Forest (100 trees, 2 cores) on the IoT Sentinel captures, Go against scikit-learn ...")
	data, err := captures.Load(ctx, sentinel, 100, 0)
	if err != nil {
		return fmt.Errorf("forest bench: %w", err)
	}
	train, test := data.Split()
	cfg := forest.DefaultConfig()
	cfg.Workers = 2
	start, cpu0 := time.Now(), cpuSeconds()
	m, err := forest.Train(ctx, cfg, train, len(data.Devices), nil)
	if err != nil {
		return fmt.Errorf("forest bench: %w", err)
	}
	goSec, goCPU := time.Since(start).Seconds(), cpuSeconds()-cpu0

	trainRows, err := m.Encode(train)
	if err != nil {
		return fmt.Errorf("forest bench: %w", err)
	}
	testRows, err := m.Encode(test)
	if err != nil {
		return fmt.Errorf("forest bench: %w", err)
	}
	trainRows, testRows = labeledRows(trainRows), labeledRows(testRows)
	goAcc := rowAccuracy(m.PredictRows(testRows), testRows.Label)
	n := float64(trainRows.Len())
	fmt.Printf("forest: %d training rows x %d columns (port PCA keeps %.1f %% of variance), %d held-out rows\n",
		trainRows.Len(), trainRows.Cols, 100*m.ExplainedVariance(), testRows.Len())
	fmt.Printf("forest: HomeMole     %6.2f s (%6.2f s CPU)  %7.0f rows/s  accuracy %.4f  (PCA and encoding included)\n", goSec, goCPU, n/goSec, goAcc)
	fmt.Printf("forest: importance %v\n", m.Importance())

	sk, err := sklearnForest(trainRows, testRows)
	if err != nil {
		fmt.Printf("forest: scikit-learn not measured: %v\n", err)
		return nil
	}
	fmt.Printf("forest: scikit-learn %6.2f s (%6.2f s CPU)  %7.0f rows/s  accuracy %.4f  (fit only)\n", sk.sec, sk.cpu, n/sk.sec, sk.acc)
	verdict := "met"
	if goSec > sk.sec || goAcc < sk.acc-0.01 {
		verdict = "MISSED"
	}
	// CPU seconds are printed beside the wall clock because the machine
	// is shared: another job stretches one side's wall time, not its CPU.
	fmt.Printf("forest: speed %.2fx scikit-learn (%.2fx in CPU time), accuracy %+.2f points: %s (target: at least equal speed, accuracy within one point)\n",
		sk.sec/goSec, sk.cpu/goCPU, 100*(goAcc-sk.acc), verdict)
	return nil
}

// labeledRows keeps the rows with a label: those are the ones both
// implementations train on and are scored on.
func labeledRows(r forest.Rows) forest.Rows {
	out := forest.Rows{Cols: r.Cols}
	for i, l := range r.Label {
		if l >= 0 {
			out.X = append(out.X, r.X[i*r.Cols:(i+1)*r.Cols]...)
			out.Label = append(out.Label, l)
		}
	}
	return out
}

func rowAccuracy(pred, label []int32) float64 {
	right := 0
	for i, p := range pred {
		if p == label[i] {
			right++
		}
	}
	return float64(right) / float64(len(label))
}

// cpuSeconds is the CPU time this process has used, all threads.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

type refResult struct{ sec, cpu, acc float64 }

// sklearnForest writes the rows as raw little-endian arrays and runs
// forest_ref.py on them with two jobs, as Go has two workers.
func sklearnForest(train, test forest.Rows) (refResult, error) {
	var res refResult
	dir, err := os.MkdirTemp("", "benchref-forest-")
	if err != nil {
		return res, fmt.Errorf("temporary folder for the rows: %w", err)
	}
	defer os.RemoveAll(dir)
	for name, r := range map[string]forest.Rows{"train": train, "test": test} {
		if err := writeArray(filepath.Join(dir, name+".x.f32"), r.X); err != nil {
			return res, err
		}
		if err := writeArray(filepath.Join(dir, name+".y.i32"), r.Label); err != nil {
			return res, err
		}
	}
	out, err := exec.Command("/usr/bin/python3", "tools/benchref/forest_ref.py", dir, strconv.Itoa(train.Cols), "2").CombinedOutput()
	if err != nil {
		return res, fmt.Errorf("scikit-learn reference failed (is python3-sklearn installed?): %v: %s", err, bytes.TrimSpace(out))
	}
	m := regexp.MustCompile(`fit_s ([0-9.]+) cpu_s ([0-9.]+) accuracy ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		return res, fmt.Errorf("scikit-learn reference printed %q", out)
	}
	for i, dst := range []*float64{&res.sec, &res.cpu, &res.acc} {
		if *dst, err = strconv.ParseFloat(string(m[i+1]), 64); err != nil {
			return res, fmt.Errorf("scikit-learn reference printed %q: %w", m[0], err)
		}
	}
	return res, nil
}

func writeArray[T float32 | int32](path string, v []T) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("export rows: %w", err)
	}
	w := bufio.NewWriter(f)
	if err := binary.Write(w, binary.LittleEndian, v); err != nil {
		f.Close()
		return fmt.Errorf("export rows to %s: %w", path, err)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("export rows to %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("export rows to %s: %w", path, err)
	}
	return nil
}
