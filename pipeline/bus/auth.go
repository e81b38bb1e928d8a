package bus

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/homemole/homemole/schemas"
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
	// InboxPrefix is where replies to this connection arrive (JetStream
	// acks, API answers, pulled messages); HOMEMOLE_NATS_INBOX. Empty:
	// "_INBOX.<user>" for a user whose name is a subject token, else
	// nats.go's shared "_INBOX". A server that lets each user subscribe
	// only under its own prefix keeps one home from reading the batches a
	// labeler pulls (tools/cluster, k8s/base/nats.yaml).
	InboxPrefix string
	// RequireTLS refuses to send a password or credentials over plain
	// nats:// (HOMEMOLE_NATS_REQUIRE_TLS=true, --require-tls); without it
	// such a connection is made with a warning.
	RequireTLS bool
	// InProcess marks the embedded server of this very process: a
	// loopback connection that never leaves it, so no plain-text warning.
	InProcess bool

	// fileErr is why HOMEMOLE_NATS_PASSWORD_FILE could not be read;
	// Connect reports it.
	fileErr error
	// envErr is why HOMEMOLE_NATS_REQUIRE_TLS could not be read (cleared
	// by --require-tls); Connect reports it.
	envErr error
}

// EnvErr is why HOMEMOLE_NATS_REQUIRE_TLS could not be read, unless
// --require-tls replaced it; Connect reports it too. (An unreadable
// HOMEMOLE_NATS_PASSWORD_FILE only Connect reports.)
func (a Auth) EnvErr() error { return a.envErr }

// Inbox is the inbox prefix the connection uses (see InboxPrefix); "" for
// nats.go's default.
func (a Auth) Inbox() string {
	if a.InboxPrefix != "" {
		return a.InboxPrefix
	}
	if a.User != "" && schemas.ValidateToken("user", a.User) == nil {
		return "_INBOX." + a.User
	}
	return ""
}

// RegisterFlags adds --require-tls to fs; given, it wins over
// HOMEMOLE_NATS_REQUIRE_TLS.
func (a *Auth) RegisterFlags(fs *flag.FlagSet) {
	BoolVarEnv(fs, &a.RequireTLS, &a.envErr, "require-tls", "refuse to send NATS credentials over a plain nats:// connection; give tls:// URLs and HOMEMOLE_NATS_CA (env "+EnvRequireTLS+"=true)")
}

// ErrPlainCredentials is what RequireTLS refuses.
var ErrPlainCredentials = errors.New("NATS credentials would go over a plain-text connection")

// plainCredentials reports why credentials would go in the clear to url:
// a password or credentials file (in the URL too) with neither a CA nor a
// client certificate, to a server list not all tls://. nats.go upgrades
// every connection once a CA is given, whatever the URL says. The embedded
// server a process runs itself (InProcess: its per-run login is in its
// loopback URL) is no path anyone else reads.
func (a Auth) plainCredentials(url string) error {
	secret := a.Password != "" || a.CredsFile != "" || strings.Contains(url, "@")
	if !secret || a.CAFile != "" || a.CertFile != "" || a.InProcess {
		return nil
	}
	for p := range strings.SplitSeq(url, ",") {
		p = strings.TrimSpace(p)
		if !strings.HasPrefix(p, "tls://") && !strings.HasPrefix(p, "wss://") {
			return fmt.Errorf("%w to %s: use tls:// URLs and set HOMEMOLE_NATS_CA to the servers' CA", ErrPlainCredentials, redactURL(p))
		}
	}
	return nil
}

// AuthFromEnv reads the HOMEMOLE_NATS_* credentials and TLS files. The
// password may come from a file instead (HOMEMOLE_NATS_PASSWORD_FILE: a
// gateway holding its own home's password only, mounted from the host).
func AuthFromEnv() Auth {
	a := authFromEnv()
	if f := os.Getenv("HOMEMOLE_NATS_PASSWORD_FILE"); f != "" && a.Password == "" {
		data, err := os.ReadFile(f)
		if err != nil {
			a.fileErr = fmt.Errorf("read the NATS password from HOMEMOLE_NATS_PASSWORD_FILE: %w", err)
		}
		a.Password = strings.TrimRight(string(data), "\r\n")
	}
	return a
}

// Env variables of the NATS settings that are not secrets.
const (
	EnvRequireTLS = "HOMEMOLE_NATS_REQUIRE_TLS"
	EnvReplicas   = "HOMEMOLE_NATS_REPLICAS"
)

func authFromEnv() Auth {
	requireTLS, err := EnvBool(EnvRequireTLS)
	return Auth{
		User:      os.Getenv("HOMEMOLE_NATS_USER"),
		Password:  os.Getenv("HOMEMOLE_NATS_PASSWORD"),
		CredsFile: os.Getenv("HOMEMOLE_NATS_CREDS"),
		CAFile:    os.Getenv("HOMEMOLE_NATS_CA"),
		CertFile:  os.Getenv("HOMEMOLE_NATS_CERT"),
		KeyFile:   os.Getenv("HOMEMOLE_NATS_KEY"),

		InboxPrefix: os.Getenv("HOMEMOLE_NATS_INBOX"),
		RequireTLS:  requireTLS,
		envErr:      err,
	}
}

// MaxReplicas is the most replicas JetStream gives a stream.
const MaxReplicas = 5

// ReplicasFromEnv is the stream replica count HOMEMOLE_NATS_REPLICAS asks
// for: 3 on a 3-node cluster; 1 when unset. Every worker declares the
// streams, so every worker of a cluster must say 3 (a worker never scales
// streams down, but one that starts first with 1 would make them R1). A
// value that is not a whole number 1 to MaxReplicas gives a count that
// CheckReplicas, and so Connect, refuses with an error naming the variable,
// never a silent 1.
func ReplicasFromEnv() int {
	n, err := replicasFromEnv()
	if err != nil {
		return badReplicasEnv
	}
	return n
}

// badReplicasEnv is what ReplicasFromEnv gives for a value it cannot use.
const badReplicasEnv = -1 << 20

func replicasFromEnv() (int, error) {
	v := os.Getenv(EnvReplicas)
	if v == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxReplicas {
		return 0, fmt.Errorf("%s=%q: want the replicas of each stream, a whole number 1 to %d and at most the NATS servers of the cluster (3 on a 3-node cluster; 1, or unset, on one server)", EnvReplicas, v, MaxReplicas)
	}
	return n, nil
}

// CheckReplicas refuses a stream replica count JetStream does not take
// (0 is the default, 1), naming HOMEMOLE_NATS_REPLICAS when the count is
// what ReplicasFromEnv made of a value it could not use.
func CheckReplicas(n int) error {
	if n == badReplicasEnv {
		if _, err := replicasFromEnv(); err != nil {
			return err
		}
		return fmt.Errorf("%s could not be read (and has changed since): want a whole number 1 to %d", EnvReplicas, MaxReplicas)
	}
	if n < 0 || n > MaxReplicas {
		return fmt.Errorf("stream replicas %d: want 1 to %d (%s)", n, MaxReplicas, EnvReplicas)
	}
	return nil
}

// LogValue keeps secrets out of logs: only which settings are present.
func (a Auth) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("user", a.User),
		slog.Bool("password", a.Password != ""),
		slog.Bool("creds", a.CredsFile != ""),
		slog.Bool("tls", a.CAFile != ""),
		slog.Bool("client_cert", a.CertFile != ""),
		slog.String("inbox", a.Inbox()),
		slog.Bool("require_tls", a.RequireTLS),
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
	if p := a.Inbox(); p != "" {
		opts = append(opts, nats.CustomInboxPrefix(p))
	}
	return opts
}

// RedactURL hides the passwords of a NATS URL list (nats://user:pass@host,
// ...) so output can name the servers: the embedded server's URL carries
// its per-run login.
func RedactURL(s string) string { return redactURL(s) }

func redactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
