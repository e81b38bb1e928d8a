// Package embedded runs the two servers of the embedded mode in-process: a
// NATS server with JetStream on local disk and an S3-compatible server on
// local disk. Workers reach them through the same clients (nats.go,
// minio-go) and the same code paths they use against a cluster; only the
// endpoints differ.
package embedded

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3afero"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/afero"
)

// CredentialsFile is where Start writes the endpoints and this run's keys
// (mode 0600, inside the state folder), as HOMEMOLE_* lines a shell or
// another process can source; Close removes it.
const CredentialsFile = "credentials.env"

// Servers are the running embedded servers.
//
// Both listen on loopback only, yet loopback is shared with every local
// user and every web page the user's browser runs: each Start draws new
// random credentials, NATS refuses connections without them and the S3
// gate refuses unsigned, wrongly signed and cross-origin requests.
type Servers struct {
	// NATSURL carries this run's user and password (nats://user:pass@host:port);
	// nats.go logs in with them. Print it through bus's redaction only.
	NATSURL    string
	S3Endpoint string // host:port, plain HTTP
	// S3AccessKey and S3SecretKey are this run's S3 keys.
	S3AccessKey, S3SecretKey string
	// NATSUser and NATSPassword are this run's NATS login (also in NATSURL).
	NATSUser, NATSPassword string
	// Credentials is the path of the credentials file.
	Credentials string

	nats *server.Server
	s3   *http.Server
	log  *slog.Logger
}

// Option adjusts how Start runs the servers.
type Option func(*options)

type options struct {
	natsPort               int
	natsUser, natsPassword string
	noNATS                 bool
}

// WithoutNATS starts the S3 server only, for commands that read and write
// objects and publish nothing (predict, dataset ls): they then neither
// start JetStream nor touch its store.
func WithoutNATS() Option { return func(o *options) { o.noNATS = true } }

// NATSPort makes NATS listen on a fixed port instead of one the kernel
// picks: a server restarted on the state of a stopped one is then reachable
// at the same URL, as a cluster node coming back is.
func NATSPort(port int) Option { return func(o *options) { o.natsPort = port } }

// Login fixes the NATS user and password instead of drawing new ones: a
// server restarted under clients that still hold its URL (a node coming
// back, in tests) must accept the login they have.
func Login(user, password string) Option {
	return func(o *options) { o.natsUser, o.natsPassword = user, password }
}

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
	dirs := []string{natsDir, s3Dir}
	if o.noNATS {
		dirs = dirs[1:]
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create embedded state folder: %w (set HOMEMOLE_HOME to a writable folder)", err)
		}
	}
	keys, err := newKeys()
	if err != nil {
		return nil, err
	}
	if o.natsUser != "" {
		keys.natsUser, keys.natsPassword = o.natsUser, o.natsPassword
	}
	ns, err := startNATS(o, keys, natsDir)
	if err != nil {
		return nil, err
	}
	// shutdown stops NATS, if it runs, on the way out of a failed start.
	shutdown := func() {
		if ns != nil {
			ns.Shutdown()
		}
	}

	base, err := s3afero.NewBasePathFs(afero.NewOsFs(), s3Dir, s3afero.FsPathCreate)
	if err != nil {
		shutdown()
		return nil, fmt.Errorf("open embedded S3 folder %s: %w", s3Dir, err)
	}
	backend, err := s3afero.MultiBucket(base)
	if err != nil {
		shutdown()
		return nil, fmt.Errorf("open embedded S3 buckets in %s: %w", s3Dir, err)
	}
	faker := gofakes3.New(backend, gofakes3.WithTimeSkewLimit(0), gofakes3.WithLogger(gofakes3.DiscardLog()))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		shutdown()
		return nil, fmt.Errorf("listen for embedded S3: %w", err)
	}
	up, err := newUploads(filepath.Join(dir, "s3-uploads"), backend)
	if err != nil {
		shutdown()
		return nil, err
	}
	gate := &s3Gate{next: faker.Server(), uploads: up, accessKey: keys.s3Access, secretKey: keys.s3Secret, now: time.Now, log: log}
	hs := &http.Server{Handler: gate, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("embedded S3 stopped", "err", err)
		}
	}()
	var natsURL, natsClientURL string
	if ns != nil {
		natsClientURL = ns.ClientURL()
		natsURL = fmt.Sprintf("nats://%s:%s@%s", keys.natsUser, keys.natsPassword, strings.TrimPrefix(natsClientURL, "nats://"))
	}
	s := &Servers{NATSURL: natsURL, S3Endpoint: ln.Addr().String(),
		S3AccessKey: keys.s3Access, S3SecretKey: keys.s3Secret, NATSUser: keys.natsUser, NATSPassword: keys.natsPassword,
		Credentials: filepath.Join(dir, CredentialsFile), nats: ns, s3: hs, log: log}
	if err := s.writeCredentials(); err != nil {
		s.Close()
		return nil, err
	}
	log.Debug("embedded servers up", "nats", natsClientURL, "s3", s.S3Endpoint, "dir", dir)
	return s, nil
}

// startNATS starts the embedded JetStream server, or none under WithoutNATS.
func startNATS(o options, keys runKeys, natsDir string) (*server.Server, error) {
	if o.noNATS {
		return nil, nil
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "homemole-embedded",
		Username:   keys.natsUser,
		Password:   keys.natsPassword,
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
	return ns, nil
}

// Close stops both servers; JetStream flushes its store first.
func (s *Servers) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.s3.Shutdown(ctx)
	if s.nats != nil {
		s.nats.Shutdown()
		s.nats.WaitForShutdown()
	}
	_ = os.Remove(s.Credentials)
}

// Env is what the credentials file holds: the HOMEMOLE_* settings that
// reach these servers.
func (s *Servers) Env() string {
	return fmt.Sprintf("HOMEMOLE_NATS_URL=%s\nHOMEMOLE_S3_ENDPOINT=%s\nHOMEMOLE_S3_ACCESS_KEY=%s\nHOMEMOLE_S3_SECRET_KEY=%s\n",
		s.NATSURL, s.S3Endpoint, s.S3AccessKey, s.S3SecretKey)
}

func (s *Servers) writeCredentials() error {
	// Written to a fresh file and renamed, so the file never exists with
	// wider permissions or half written.
	tmp := s.Credentials + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write embedded credentials %s: %w (set HOMEMOLE_HOME to a writable folder)", s.Credentials, err)
	}
	if _, err := f.WriteString(s.Env()); err != nil {
		f.Close()
		return fmt.Errorf("write embedded credentials %s: %w", s.Credentials, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write embedded credentials %s: %w", s.Credentials, err)
	}
	if err := os.Rename(tmp, s.Credentials); err != nil {
		return fmt.Errorf("write embedded credentials %s: %w", s.Credentials, err)
	}
	return nil
}

type runKeys struct{ s3Access, s3Secret, natsUser, natsPassword string }

// newKeys draws this run's credentials from crypto/rand.
func newKeys() (runKeys, error) {
	var k runKeys
	for _, f := range []struct {
		dst    *string
		prefix string
		n      int
	}{{&k.s3Access, "hm", 16}, {&k.s3Secret, "", 40}, {&k.natsUser, "hm-", 12}, {&k.natsPassword, "", 40}} {
		b := make([]byte, f.n)
		if _, err := rand.Read(b); err != nil {
			return k, fmt.Errorf("draw embedded credentials: %w", err)
		}
		*f.dst = f.prefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))[:f.n]
	}
	return k, nil
}
