package main

import "fmt"

// goalBench is a Go benchmark of packets/s judged against a goal alone:
// no other tool does the same work, so there is no reference to run.
type goalBench struct {
	intro      string // printed before the run, saying what is measured
	pkg, bench string // the package and its benchmark
	benchtime  string // go test -benchtime
	what       string // the bench's name in an error
	result     string // what the result line says was measured
	goal       float64
}

// run runs the benchmark and prints its packets/s against the goal.
func (b goalBench) run() error {
	fmt.Println(b.intro)
	ours, err := goBench(b.pkg, b.bench, "packets/s", b.benchtime)
	if err != nil {
		return fmt.Errorf("%s bench: %w", b.what, err)
	}
	verdict := "met"
	if ours < b.goal {
		verdict = "MISSED"
	}
	fmt.Printf("%s: %.0f packets/s (%s: >= %.0fM/s)\n", b.result, ours, verdict, b.goal/1e6)
	return nil
}
