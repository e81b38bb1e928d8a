// Command minio runs a command against a real MinIO server: it builds MinIO
// once (a pinned version, with go install, into the git-ignored .build/bin),
// starts it on a free loopback port with its data in a temporary folder,
// waits until it is healthy, runs the command with the endpoint and
// credentials in the environment, and stops MinIO afterwards, whatever the
// command's outcome. Its exit code is the command's.
//
// Run from the repository root:
//
//	go run ./tools/minio -- go test -run MinIO ./pipeline/...
//
// The command sees HOMEMOLE_TEST_MINIO (host:port) and
// HOMEMOLE_TEST_MINIO_ACCESS_KEY and HOMEMOLE_TEST_MINIO_SECRET_KEY, the
// variables the MinIO tests read (they skip without them).
//
// MinIO is built from source because the Go module proxy is how this
// project gets its tools; a cold build takes minutes, a rebuild with a warm
// Go build cache seconds, and a binary already built for the pinned version
// is reused as it is (a stamp beside it records the version).
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/homemole/homemole/tools/internal/servers"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("minio: ")
	installOnly := flag.Bool("install", false, "only build MinIO into "+servers.BinDir+" (if missing) and print its path")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: go run ./tools/minio [-install] [--] COMMAND [ARG...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	bin, err := servers.InstallMinIO()
	if err != nil {
		log.Fatal(err)
	}
	if *installOnly {
		fmt.Println(bin)
		return
	}
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	code, err := run(bin, flag.Args())
	if err != nil {
		log.Print(err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// run starts MinIO, runs the command against it and stops MinIO.
func run(bin string, command []string) (int, error) {
	data, err := os.MkdirTemp("", "homemole-minio-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(data)
	m, err := servers.StartMinIO(bin, data)
	if err != nil {
		return 0, err
	}
	defer m.Stop()
	log.Printf("MinIO %s up at %s (data in %s)", servers.MinIOVersion, m.Addr, data)

	cmd := exec.Command(command[0], command[1:]...)
	cmd.Env = append(os.Environ(),
		"HOMEMOLE_TEST_MINIO="+m.Addr,
		"HOMEMOLE_TEST_MINIO_ACCESS_KEY="+servers.MinIOAccessKey,
		"HOMEMOLE_TEST_MINIO_SECRET_KEY="+servers.MinIOSecretKey,
	)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", command[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			// Passed on; MinIO is stopped once the command has ended.
			_ = cmd.Process.Signal(s)
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode(), nil
			}
			return 0, err
		}
	}
}
