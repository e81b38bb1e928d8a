// Package embedded runs the two servers of the embedded mode in-process: a
// NATS server with JetStream on local disk and an S3-compatible server on
// local disk. Workers reach them through the same clients (nats.go,
// minio-go) and the same code paths they use against a cluster; only the
// endpoints differ.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3afero"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/afero"
)

// Credentials of the embedded S3 server. It listens on loopback only, so
// fixed credentials protect nothing and are not a secret.
const (
	S3AccessKey = "homemole"
	S3SecretKey = "homemole-embedded"
)

// Servers are the running embedded servers.
type Servers struct {
	NATSURL    string
	S3Endpoint string // host:port, plain HTTP

	nats *server.Server
	s3   *http.Server
	log  *slog.Logger
}

// Option adjusts how Start runs the servers.
type Option func(*options)

type options struct {
	natsPort int
}

// NATSPort makes NATS listen on a fixed port instead of one the kernel
// picks: a server restarted on the state of a stopped one is then reachable
// at the same URL, as a cluster node coming back is.
func NATSPort(port int) Option { return func(o *options) { o.natsPort = port } }

// Start starts both servers with their state under dir (JetStream in
// dir/nats, buckets in dir/s3). Ports are chosen by the kernel (unless
// NATSPort fixes NATS's) so several instances (tests in parallel) never
// collide.
func Start(ctx context.Context, dir string, log *slog.Logger, opts ...Option) (*Servers, error) {
	o := options{natsPort: server.RANDOM_PORT}
	for _, opt := range opts {
		opt(&o)
	}
	natsDir := filepath.Join(dir, "nats")
	s3Dir := filepath.Join(dir, "s3")
	for _, d := range []string{natsDir, s3Dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create embedded state folder: %w (set HOMEMOLE_HOME to a writable folder)", err)
		}
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "homemole-embedded",
		Host:       "127.0.0.1",
		Port:       o.natsPort,
		JetStream:  true,
		StoreDir:   natsDir,
		NoSigs:     true,
		NoLog:      true,
		// Batches are small (about 20 bytes a packet) but a home may send
		// thousands a second; 8 MiB leaves room for large batches.
		MaxPayload: 8 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("configure embedded NATS: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS did not start within 30 s (state in %s; is the folder locked by another homemole?)", natsDir)
	}

	base, err := s3afero.NewBasePathFs(afero.NewOsFs(), s3Dir, s3afero.FsPathCreate)
	if err != nil {
		ns.Shutdown()
		return nil, fmt.Errorf("open embedded S3 folder %s: %w", s3Dir, err)
	}
	backend, err := s3afero.MultiBucket(base)
	if err != nil {
		ns.Shutdown()
		return nil, fmt.Errorf("open embedded S3 buckets in %s: %w", s3Dir, err)
	}
	faker := gofakes3.New(backend, gofakes3.WithTimeSkewLimit(0), gofakes3.WithLogger(gofakes3.DiscardLog()))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ns.Shutdown()
		return nil, fmt.Errorf("listen for embedded S3: %w", err)
	}
	hs := &http.Server{Handler: faker.Server(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("embedded S3 stopped", "err", err)
		}
	}()
	s := &Servers{NATSURL: ns.ClientURL(), S3Endpoint: ln.Addr().String(), nats: ns, s3: hs, log: log}
	log.Debug("embedded servers up", "nats", s.NATSURL, "s3", s.S3Endpoint, "dir", dir)
	return s, nil
}

// Close stops both servers; JetStream flushes its store first.
func (s *Servers) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.s3.Shutdown(ctx)
	s.nats.Shutdown()
	s.nats.WaitForShutdown()
}
