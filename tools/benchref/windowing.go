package main

// windowingTarget is the windowing worker's goal on the 2-core machine.
const windowingTarget = 1e6

// windowingBench measures the windowing worker end to end on the embedded
// servers (labeled batches in JetStream -> ind windows of 100 packets ->
// Arrow objects acknowledged by S3) and prints packets/s against its goal.
// No other tool cuts windows from a broker, so there is no reference.
func windowingBench() error {
	return goalBench{
		intro: "windower: labeled batches in JetStream -> Arrow windows acknowledged by S3 (both cores) ...",
		pkg:   "./pipeline/window/", bench: "BenchmarkWindower", benchtime: "3x",
		what:   "windowing",
		result: "windowing, JetStream -> S3 acked (2 cores)",
		goal:   windowingTarget,
	}.run()
}
