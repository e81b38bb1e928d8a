// Package endpoints decides where a process finds NATS and S3: the
// endpoints it is given (cluster mode), or embedded servers it starts itself
// (the default). Everything after this point is the same code in both modes.
package endpoints

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/embedded"
	"github.com/homemole/homemole/pipeline/store"
)

// Config holds the endpoint settings every worker shares. Each field has a
// flag and an environment variable; the flag wins.
type Config struct {
	Home      string // HOMEMOLE_HOME: embedded state, default ./.homemole
	NATSURL   string // HOMEMOLE_NATS_URL
	Replicas  int    // HOMEMOLE_NATS_REPLICAS
	S3        string // HOMEMOLE_S3_ENDPOINT (host:port)
	S3Bucket  string // HOMEMOLE_S3_BUCKET
	S3TLS     bool   // HOMEMOLE_S3_TLS
	AccessKey string // HOMEMOLE_S3_ACCESS_KEY (never a flag: flags show in ps)
	SecretKey string // HOMEMOLE_S3_SECRET_KEY (never a flag)
	// NATSAuth is the NATS user and TLS files (HOMEMOLE_NATS_USER,
	// HOMEMOLE_NATS_PASSWORD, HOMEMOLE_NATS_CREDS, HOMEMOLE_NATS_CA, ...;
	// never flags).
	NATSAuth bus.Auth
	// Retention limits the streams (see bus.Retention); zero leaves them.
	Retention bus.Retention

	// s3TLSErr is why HOMEMOLE_S3_TLS could not be read (cleared by
	// --s3-tls); Open and OpenStore report it.
	s3TLSErr error
}

// EnvS3TLS is the variable that says S3 speaks https.
const EnvS3TLS = "HOMEMOLE_S3_TLS"

// FromEnv reads the environment. A setting it cannot read (HOMEMOLE_S3_TLS
// or HOMEMOLE_NATS_REQUIRE_TLS not a boolean, HOMEMOLE_NATS_REPLICAS not 1
// to 5) is an error Open and OpenStore report naming the variable, unless
// a flag replaces it.
func FromEnv() Config {
	s3TLS, s3TLSErr := bus.EnvBool(EnvS3TLS)
	c := Config{
		Home:      os.Getenv("HOMEMOLE_HOME"),
		NATSURL:   os.Getenv("HOMEMOLE_NATS_URL"),
		S3:        os.Getenv("HOMEMOLE_S3_ENDPOINT"),
		S3Bucket:  os.Getenv("HOMEMOLE_S3_BUCKET"),
		S3TLS:     s3TLS,
		AccessKey: os.Getenv("HOMEMOLE_S3_ACCESS_KEY"),
		SecretKey: os.Getenv("HOMEMOLE_S3_SECRET_KEY"),
		Replicas:  bus.ReplicasFromEnv(),
		NATSAuth:  bus.AuthFromEnv(),
		s3TLSErr:  s3TLSErr,
	}
	if c.Home == "" {
		c.Home = ".homemole"
	}
	if c.S3Bucket == "" {
		c.S3Bucket = "homemole"
	}
	return c
}

// S3Err is why an S3 setting of the environment could not be read, unless
// its flag replaced it: for callers that open the store themselves
// (store.OpenS3) rather than through Open or OpenStore, which report it.
func (c Config) S3Err() error { return c.s3TLSErr }

// Register adds the endpoint flags to fs, defaulting to the environment.
func (c *Config) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.Home, "home", c.Home, "folder for embedded state: JetStream store, S3 buckets, demo captures, reports (env HOMEMOLE_HOME)")
	fs.StringVar(&c.NATSURL, "nats", c.NATSURL, "NATS URL of a JetStream cluster; empty starts an embedded server (env HOMEMOLE_NATS_URL)")
	fs.StringVar(&c.S3, "s3", c.S3, "S3 endpoint host:port (MinIO); empty starts an embedded S3 server; keys from HOMEMOLE_S3_ACCESS_KEY and HOMEMOLE_S3_SECRET_KEY (env HOMEMOLE_S3_ENDPOINT)")
	fs.StringVar(&c.S3Bucket, "bucket", c.S3Bucket, "S3 bucket for datasets, models and reports (env HOMEMOLE_S3_BUCKET)")
	bus.BoolVarEnv(fs, &c.S3TLS, &c.s3TLSErr, "s3-tls", "use TLS to S3 (env "+EnvS3TLS+"=true)")
	c.NATSAuth.RegisterFlags(fs)
}

// Env is an opened set of endpoints.
type Env struct {
	Bus   *bus.Conn
	Store store.Store
	// Embedded is true when this process runs its own servers.
	Embedded bool
	// NATSURL and S3Endpoint are the endpoints in use.
	NATSURL, S3Endpoint string
	servers             *embedded.Servers
}

// Open connects to the configured endpoints, starting embedded servers
// for whichever is not configured.
func Open(ctx context.Context, c Config, name string, log *slog.Logger) (*Env, error) {
	// Settings that could not be read are wrong whichever servers run,
	// embedded ones too.
	if err := errors.Join(c.s3TLSErr, c.NATSAuth.EnvErr(), bus.CheckReplicas(c.Replicas)); err != nil {
		return nil, err
	}
	env := &Env{}
	natsURL, s3 := c.NATSURL, store.S3Config{Endpoint: c.S3, AccessKey: c.AccessKey, SecretKey: c.SecretKey, Bucket: c.S3Bucket, TLS: c.S3TLS}
	if natsURL == "" || s3.Endpoint == "" {
		dir, err := filepath.Abs(c.Home)
		if err != nil {
			return nil, fmt.Errorf("embedded state folder %q: %w", c.Home, err)
		}
		srv, err := embedded.Start(ctx, dir, log)
		if err != nil {
			return nil, err
		}
		env.servers, env.Embedded = srv, true
		if natsURL == "" {
			natsURL = srv.NATSURL
		}
		if s3.Endpoint == "" {
			s3 = store.S3Config{Endpoint: srv.S3Endpoint, AccessKey: srv.S3AccessKey, SecretKey: srv.S3SecretKey, Bucket: c.S3Bucket}
		}
	}
	auth, replicas := c.NATSAuth, c.Replicas
	if natsURL != c.NATSURL {
		// The embedded server is one node; its per-run login is in its URL.
		auth, replicas = bus.Auth{InProcess: true}, 1
	}
	conn, err := bus.Connect(ctx, bus.Config{URL: natsURL, Replicas: replicas, Name: name, Auth: auth, Retention: c.Retention}, log)
	if err != nil {
		env.Close()
		return nil, err
	}
	env.Bus, env.NATSURL, env.S3Endpoint = conn, natsURL, s3.Endpoint
	st, err := store.OpenS3(ctx, s3)
	if err != nil {
		env.Close()
		return nil, err
	}
	env.Store = st
	return env, nil
}

// OpenStore opens the object store only, starting an embedded S3 server
// (and no NATS) when none is configured. Commands that only read and
// write objects (predict, train, cv, dataset ls|inspect|verify|assemble|export)
// use it: they neither wait for JetStream nor need a cluster to reach one,
// and --nats is ignored. Env.Bus is nil.
func OpenStore(ctx context.Context, c Config, log *slog.Logger) (*Env, error) {
	if c.s3TLSErr != nil {
		return nil, c.s3TLSErr
	}
	env := &Env{}
	s3 := store.S3Config{Endpoint: c.S3, AccessKey: c.AccessKey, SecretKey: c.SecretKey, Bucket: c.S3Bucket, TLS: c.S3TLS}
	if s3.Endpoint == "" {
		dir, err := filepath.Abs(c.Home)
		if err != nil {
			return nil, fmt.Errorf("embedded state folder %q: %w", c.Home, err)
		}
		srv, err := embedded.Start(ctx, dir, log, embedded.WithoutNATS())
		if err != nil {
			return nil, err
		}
		env.servers, env.Embedded = srv, true
		s3 = store.S3Config{Endpoint: srv.S3Endpoint, AccessKey: srv.S3AccessKey, SecretKey: srv.S3SecretKey, Bucket: c.S3Bucket}
	}
	st, err := store.OpenS3(ctx, s3)
	if err != nil {
		env.Close()
		return nil, err
	}
	env.Store, env.S3Endpoint = st, s3.Endpoint
	return env, nil
}

// Servers are the embedded servers this process runs, or nil.
func (e *Env) Servers() *embedded.Servers { return e.servers }

// Close releases the connection and stops embedded servers.
func (e *Env) Close() {
	if e.Bus != nil {
		e.Bus.Close()
	}
	if e.servers != nil {
		e.servers.Close()
	}
}
