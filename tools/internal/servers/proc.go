// Package servers runs the real servers and worker processes of the local
// cluster (tools/cluster) and of the MinIO tests (tools/minio): it builds
// the binaries once into .build/bin, starts each as its own process group
// on loopback, and stops, kills or restarts them on demand.
package servers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a running child process in a process group of its own, so a
// Ctrl-C meant for the parent does not reach it before the parent is done.
type Proc struct {
	Name string
	// LogFile holds the process's stdout and stderr.
	LogFile string

	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	err    error
}

// Start runs bin with args and env appended to this process's environment;
// output goes to logFile (appended, so a restarted process keeps one log).
func Start(name, bin string, args, env []string, logFile string) (*Proc, error) {
	lf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(lf, "--- %s started %s\n", name, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &Proc{Name: name, LogFile: logFile, cmd: cmd, exited: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(lf, "--- %s ended %s: %v\n", name, time.Now().UTC().Format(time.RFC3339Nano), err)
		lf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.exited)
	}()
	return p, nil
}

// Exited is closed once the process has ended.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Err is how the process ended (nil while it runs or after a clean exit).
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Kill sends SIGKILL to the process group and waits for the end: nothing
// the process buffered survives. It reports whether the process was still
// running, so a test knows its kill landed.
func (p *Proc) Kill() (wasRunning bool) {
	select {
	case <-p.exited:
		return false
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
	return true
}

// Stop sends SIGTERM and kills the process if it has not ended within
// timeout.
func (p *Proc) Stop(timeout time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(timeout):
		p.Kill()
	}
}

// Wait waits for the process to end and returns its error.
func (p *Proc) Wait() error {
	<-p.exited
	return p.Err()
}

// ExitCode is the exit code of an ended process, -1 when killed.
func ExitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// FreePorts asks the kernel for n distinct free loopback ports, holding
// each until all are found so that none is handed out twice.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// FreePort asks the kernel for a free loopback port. It is released before
// the server binds it; another process could take it in between, in which
// case the server fails to start and says so.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// PeakRSS is the process's peak resident set (VmHWM) in MiB. Read it while
// the process runs: its /proc entry goes with it.
func (p *Proc) PeakRSS() (float64, error) {
	pid := p.Pid()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("peak RSS of %s (pid %d): %w", p.Name, pid, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, fmt.Errorf("peak RSS of %s: %q: %w", p.Name, line, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("peak RSS of %s: no VmHWM in /proc/%d/status", p.Name, pid)
}

// errExited says a server's process ended before its health URL answered.
var errExited = errors.New("exited before it was healthy")

// waitHealthy polls a server's health URL until it answers 200 OK, the
// process ends (exited closes: errExited) or timeout passes; the caller
// names the server and adds its log.
func waitHealthy(url string, exited <-chan struct{}, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return fmt.Errorf("not healthy at %s within %s", url, timeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
