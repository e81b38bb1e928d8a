package servers

import (
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// BinDir is where the binaries are built, git-ignored, relative to the
// repository root (the tools run from there).
const BinDir = ".build/bin"

// MinIOVersion is the MinIO the tests run against. MinIO's releases carry
// +incompatible tags the proxy does not list, so the pin is the
// pseudo-version `go list -m github.com/minio/minio@latest` resolves to.
const MinIOVersion = "v0.0.0-20260212201848-7aac2a2c5b7c"

// InstallMinIO builds the pinned MinIO into BinDir unless the binary there
// is of that version (a stamp beside it records the version). MinIO is
// built from source because the Go module proxy is how this project gets
// its tools; a cold build takes minutes, a rebuild with a warm Go build
// cache seconds.
func InstallMinIO() (string, error) {
	return installStamped("minio", MinIOVersion, func(dir string) *exec.Cmd {
		cmd := exec.Command("go", "install", "github.com/minio/minio@"+MinIOVersion)
		// Outside the module and any workspace: MinIO's own go.mod decides.
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOWORK=off", "GOFLAGS=-buildvcs=false")
		return cmd
	})
}

// InstallNATS builds nats-server into BinDir at the version this module
// requires (go.mod pins github.com/nats-io/nats-server/v2, the library the
// embedded mode runs), so the cluster runs the same server release with
// nothing more to download.
func InstallNATS() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/nats-io/nats-server/v2").Output()
	if err != nil {
		return "", fmt.Errorf("find the nats-server version in go.mod: %w (run from the repository root)", err)
	}
	version := strings.TrimSpace(string(out))
	return installStamped("nats-server", version, func(dir string) *exec.Cmd {
		return exec.Command("go", "build", "-o", filepath.Join(dir, "nats-server"), "github.com/nats-io/nats-server/v2")
	})
}

func installStamped(name, version string, build func(dir string) *exec.Cmd) (string, error) {
	dir, err := filepath.Abs(BinDir)
	if err != nil {
		return "", err
	}
	bin, stamp := filepath.Join(dir, name), filepath.Join(dir, name+".version")
	if got, err := os.ReadFile(stamp); err == nil && strings.TrimSpace(string(got)) == version {
		if _, err := os.Stat(bin); err == nil {
			return bin, nil
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	log.Printf("building %s %s into %s", name, version, dir)
	start := time.Now()
	cmd := build(dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build %s %s: %w (is the Go module proxy reachable?)", name, version, err)
	}
	if err := os.WriteFile(stamp, []byte(version+"\n"), 0o644); err != nil {
		return "", err
	}
	log.Printf("built %s in %s", name, time.Since(start).Round(time.Second))
	return bin, nil
}

// BuildServices builds the named services (services/NAME) of this module
// into BinDir; go build's cache makes a rebuild of unchanged code quick.
func BuildServices(names ...string) (string, error) {
	dir, err := filepath.Abs(BinDir)
	if err != nil {
		return "", err
	}
	args := []string{"build", "-o", dir + "/"}
	for _, n := range names {
		args = append(args, "github.com/homemole/homemole/services/"+n)
	}
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build the services %v: %w", names, err)
	}
	return dir, nil
}
