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
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// version is the MinIO the tests run against. MinIO's releases carry
// +incompatible tags the proxy does not list, so the pin is the pseudo-version
// `go list -m github.com/minio/minio@latest` resolves to.
const version = "v0.0.0-20260212201848-7aac2a2c5b7c"

const (
	module = "github.com/minio/minio"
	binDir = ".build/bin"
	// Loopback only and gone with the process: fixed test credentials
	// protect nothing and are no secret.
	accessKey = "homemole-test"
	secretKey = "homemole-test-secret"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("minio: ")
	installOnly := flag.Bool("install", false, "only build MinIO into "+binDir+" (if missing) and print its path")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: go run ./tools/minio [-install] [--] COMMAND [ARG...]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	bin, err := install()
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

// install builds the pinned MinIO unless the binary there is of that version.
func install() (string, error) {
	dir, err := filepath.Abs(binDir)
	if err != nil {
		return "", err
	}
	bin, stamp := filepath.Join(dir, "minio"), filepath.Join(dir, "minio.version")
	if got, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(got)) == version {
		if _, err := os.Stat(bin); err == nil {
			return bin, nil
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	log.Printf("building MinIO %s into %s (minutes on a cold Go build cache)", version, dir)
	start := time.Now()
	cmd := exec.Command("go", "install", module+"@"+version)
	// Outside the module and any workspace: MinIO's own go.mod decides.
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOWORK=off", "GOFLAGS=-buildvcs=false")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go install %s@%s: %w (is the Go module proxy reachable?)", module, version, err)
	}
	if err := os.WriteFile(stamp, []byte(version+"\n"), 0o644); err != nil {
		return "", err
	}
	log.Printf("built MinIO in %s", time.Since(start).Round(time.Second))
	return bin, nil
}

// run starts MinIO, runs the command against it and stops MinIO.
func run(bin string, command []string) (int, error) {
	data, err := os.MkdirTemp("", "homemole-minio-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(data)
	addr, err := freeAddr()
	if err != nil {
		return 0, err
	}
	srv := exec.Command(bin, "server", "--quiet", "--address", addr, data)
	srv.Env = append(os.Environ(), "MINIO_ROOT_USER="+accessKey, "MINIO_ROOT_PASSWORD="+secretKey, "MINIO_BROWSER=off")
	logFile := filepath.Join(data, "minio.log")
	lf, err := os.Create(logFile)
	if err != nil {
		return 0, err
	}
	defer lf.Close()
	srv.Stdout, srv.Stderr = lf, lf
	// Its own process group: a Ctrl-C meant for the command does not kill
	// MinIO under it before the command is done.
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := srv.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	defer stop(srv, exited)

	if err := waitHealthy(addr, exited, 60*time.Second); err != nil {
		out, _ := os.ReadFile(logFile)
		return 0, fmt.Errorf("%w\nMinIO's log:\n%s", err, out)
	}
	log.Printf("MinIO %s up at %s (data in %s)", version, addr, data)

	cmd := exec.Command(command[0], command[1:]...)
	cmd.Env = append(os.Environ(),
		"HOMEMOLE_TEST_MINIO="+addr,
		"HOMEMOLE_TEST_MINIO_ACCESS_KEY="+accessKey,
		"HOMEMOLE_TEST_MINIO_SECRET_KEY="+secretKey,
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

// freeAddr asks the kernel for a free loopback port. It is released before
// MinIO binds it; another process could take it in between, in which case
// MinIO fails to start and says so.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port for MinIO: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitHealthy(addr string, exited <-chan error, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	url := "http://" + addr + "/minio/health/live"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("MinIO exited before it was healthy: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("MinIO not healthy at %s within %s", url, timeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stop asks MinIO to shut down and kills it if it has not within 10 s.
func stop(srv *exec.Cmd, exited <-chan error) {
	_ = srv.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-srv.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}
