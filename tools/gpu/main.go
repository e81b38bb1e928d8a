// Command gpu prepares and runs HomeMole's trainer against a libtorch other
// than the one the build machine has, for a GPU machine without Go:
//
//	gpu prepare --out DIR   (here, with Go) builds the trainer and the
//	                        benchmark linked dynamically to gotch's C layer,
//	                        and copies that layer's C++ source beside them
//	gpu layer --libtorch T --src S --out O   (there, no Go needed: a static
//	                        binary) compiles the C layer against libtorch T
//	                        into O/libtch.so, stubbing what T lacks
//	gpu heldout, gpu summary   (there) pick the capture predict judges, and
//	                        print the figures of the run
//
// tools/gpu/run.sh drives both; see README.md, "The trainer on a GPU".
package main

import (
	"fmt"
	"log"
	"os"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("gpu: ")
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gpu prepare --out DIR | layer --libtorch DIR --src DIR --out DIR | heldout ... | summary ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "prepare":
		err = runPrepare(os.Args[2:])
	case "layer":
		err = runLayer(os.Args[2:])
	case "heldout":
		err = runHeldout(os.Args[2:])
	case "summary":
		err = runSummary(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q: want prepare, layer, heldout or summary", os.Args[1])
	}
	if err != nil {
		log.Fatalf("error: %v", err)
	}
}
