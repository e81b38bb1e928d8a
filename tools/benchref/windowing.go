package main

import "fmt"

// windowingTarget is the windowing worker's goal on the 2-core machine.
const windowingTarget = 1e6

// windowingBench measures the windowing worker end to end on the embedded
// servers (labeled batches in JetStream -> ind windows of 100 packets ->
// Arrow objects acknowledged by S3) and prints packets/s against its goal.
// No other tool cuts windows from a broker, so there is no reference.
func windowingBench() error {
	fmt.Println("windower: labeled batches in JetStream -> Arrow windows acknowledged by S3 (both cores) ...")
	ours, err := goBench("./pipeline/window/", "BenchmarkWindower", "packets/s", "3x")
	if err != nil {
		return fmt.Errorf("windowing bench: %w", err)
	}
	verdict := "met"
	if ours < windowingTarget {
		verdict = "MISSED"
	}
	fmt.Printf("windowing, JetStream -> S3 acked (2 cores): %.0f packets/s (%s: >= %.0fM/s)\n", ours, verdict, windowingTarget/1e6)
	return nil
}
