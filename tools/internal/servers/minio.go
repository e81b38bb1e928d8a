package servers

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Loopback only and gone with the process: fixed test credentials protect
// nothing and are no secret.
const (
	MinIOAccessKey = "homemole-test"
	MinIOSecretKey = "homemole-test-secret"
)

// MinIO is a MinIO server on a loopback port with its data in Dir. Stop
// and Start make it unavailable for a while and bring it back on the same
// address with the same data, as a restarted server would be.
type MinIO struct {
	Addr string // host:port, plain HTTP
	Dir  string
	bin  string
	proc *Proc
}

// StartMinIO starts bin on a free port with its data under dir.
func StartMinIO(bin, dir string) (*MinIO, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	m := &MinIO{Addr: fmt.Sprintf("127.0.0.1:%d", port), Dir: dir, bin: bin}
	if err := m.Start(); err != nil {
		return nil, err
	}
	return m, nil
}

// Start (re)starts the server and waits until it is healthy.
func (m *MinIO) Start() error {
	data := filepath.Join(m.Dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	p, err := Start("minio", m.bin, []string{"server", "--quiet", "--address", m.Addr, data},
		[]string{"MINIO_ROOT_USER=" + MinIOAccessKey, "MINIO_ROOT_PASSWORD=" + MinIOSecretKey, "MINIO_BROWSER=off"},
		filepath.Join(m.Dir, "minio.log"))
	if err != nil {
		return err
	}
	m.proc = p
	if err := waitHealthy("http://"+m.Addr+"/minio/health/live", p.Exited(), 60*time.Second); err != nil {
		p.Kill()
		out, _ := os.ReadFile(p.LogFile)
		return fmt.Errorf("MinIO %w\nMinIO's log:\n%s", err, out)
	}
	return nil
}

// Stop shuts the server down (SIGTERM, then SIGKILL after 10 s).
func (m *MinIO) Stop() {
	if m.proc != nil {
		m.proc.Stop(10 * time.Second)
	}
}

// Env is what the workers read the endpoint and credentials from.
func (m *MinIO) Env() []string {
	return []string{"HOMEMOLE_S3_ENDPOINT=" + m.Addr, "HOMEMOLE_S3_ACCESS_KEY=" + MinIOAccessKey, "HOMEMOLE_S3_SECRET_KEY=" + MinIOSecretKey}
}
