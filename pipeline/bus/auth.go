package bus

import (
	"log/slog"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

// Auth says who a connection is and which servers it trusts. Secrets come
// from the environment (or a mounted Kubernetes Secret the environment
// points at), never from flags, which show in ps; they are never logged.
type Auth struct {
	// User and Password log in as a user of the server's accounts
	// (HOMEMOLE_NATS_USER, HOMEMOLE_NATS_PASSWORD).
	User, Password string
	// CredsFile is a NATS credentials file (a user JWT and its nkey seed,
	// HOMEMOLE_NATS_CREDS), for servers run in operator mode.
	CredsFile string
	// CAFile is the PEM file of the CA the servers' certificates chain to
	// (HOMEMOLE_NATS_CA); setting it requires TLS.
	CAFile string
	// CertFile and KeyFile are a client certificate for servers that verify
	// clients (HOMEMOLE_NATS_CERT, HOMEMOLE_NATS_KEY).
	CertFile, KeyFile string
}

// AuthFromEnv reads the HOMEMOLE_NATS_* credentials and TLS files.
func AuthFromEnv() Auth {
	return Auth{
		User:      os.Getenv("HOMEMOLE_NATS_USER"),
		Password:  os.Getenv("HOMEMOLE_NATS_PASSWORD"),
		CredsFile: os.Getenv("HOMEMOLE_NATS_CREDS"),
		CAFile:    os.Getenv("HOMEMOLE_NATS_CA"),
		CertFile:  os.Getenv("HOMEMOLE_NATS_CERT"),
		KeyFile:   os.Getenv("HOMEMOLE_NATS_KEY"),
	}
}

// ReplicasFromEnv is the stream replica count HOMEMOLE_NATS_REPLICAS asks
// for: 3 on a cluster; anything else is 1. Every worker declares the
// streams, so every worker of a cluster must say 3, or the first one to
// start with 1 would scale the streams down.
func ReplicasFromEnv() int {
	if os.Getenv("HOMEMOLE_NATS_REPLICAS") == "3" {
		return 3
	}
	return 1
}

// LogValue keeps secrets out of logs: only which settings are present.
func (a Auth) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("user", a.User),
		slog.Bool("password", a.Password != ""),
		slog.Bool("creds", a.CredsFile != ""),
		slog.Bool("tls", a.CAFile != ""),
		slog.Bool("client_cert", a.CertFile != ""),
	)
}

// IDKey is secret material of this identity to key message ids with
// (Config.IDKey): the password, else the credentials file, else the client
// key; nil for an anonymous connection, whose publishers all trust one
// another anyway. A file that cannot be read gives nil here: connecting
// with it fails and says why.
func (a Auth) IDKey() []byte {
	switch {
	case a.Password != "":
		return []byte("password\x00" + a.User + "\x00" + a.Password)
	case a.CredsFile != "":
		data, _ := os.ReadFile(a.CredsFile)
		return data
	case a.KeyFile != "":
		data, _ := os.ReadFile(a.KeyFile)
		return data
	}
	return nil
}

func (a Auth) options() []nats.Option {
	var opts []nats.Option
	if a.User != "" {
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	}
	if a.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	}
	if a.CAFile != "" {
		opts = append(opts, nats.RootCAs(a.CAFile))
	}
	if a.CertFile != "" {
		opts = append(opts, nats.ClientCert(a.CertFile, a.KeyFile))
	}
	return opts
}

// redactURL hides the passwords of a NATS URL list (nats://user:pass@host,
// ...) so errors and logs can name the servers.
func redactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
