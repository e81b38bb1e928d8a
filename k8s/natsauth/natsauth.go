// Package natsauth makes what a NATS cluster of HomeMole needs to trust its
// clients and be trusted by them: a CA and a server certificate, one user
// per worker and per home with only the permissions its work needs (each
// home's agent may publish only its own home's packets; every user may
// subscribe only under its own inbox prefix), and the passwords. The same
// users serve the local cluster of the tests (tools/cluster) and the
// Kubernetes manifests (k8s/base/nats.yaml, made by `go run ./tools/natsauth`).
package natsauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/schemas"
)

// Account is the account the users and the JetStream streams live in.
const Account = "HOMEMOLE"

// Worker roles with a user each (capture agents get one per home).
const (
	Admin    = "admin"
	Labeler  = "labeler"
	Windower = "windower"
	Trainer  = "trainer"
	Detector = "detector"
)

// User is a NATS user with the subjects it may publish to and subscribe
// to (nil: all, for the admin only).
type User struct {
	Name, Password     string
	Publish, Subscribe []string
}

// CaptureUser is the user of a home's capture agent.
func CaptureUser(home string) string { return "capture-" + home }

// Users are the campaign's users, passwords empty: an admin (operators:
// declaring streams, `homemole dlq replay`), the labeler, windower,
// trainer and online detector with what their work needs, and one capture
// agent per home that may publish only its own home's packets.
func Users(c *campaign.Campaign) []User {
	declare := func(streams ...string) []string {
		out := []string{"$JS.API.INFO"}
		for _, s := range streams {
			out = append(out, "$JS.API.STREAM.INFO."+s, "$JS.API.STREAM.CREATE."+s, "$JS.API.STREAM.UPDATE."+s)
		}
		return out
	}
	consume := func(stream string) []string {
		return append(declare(schemas.StreamPackets, schemas.StreamLabeled, bus.StreamSeen, schemas.StreamDeadLetter),
			"$JS.API.CONSUMER.CREATE."+stream+".>", "$JS.API.CONSUMER.DURABLE.CREATE."+stream+".>",
			"$JS.API.CONSUMER.INFO."+stream+".>", "$JS.API.CONSUMER.MSG.NEXT."+stream+".>",
			"$JS.ACK."+stream+".>",
			// What can never be processed is kept in the DLQ.
			"hm.dlq.>",
		)
	}
	// Replies (acks, API answers, the messages a consumer pulls) arrive
	// under the user's own inbox prefix (bus.Auth.Inbox), and it may
	// subscribe nowhere else: with a shared _INBOX.> any home's agent read
	// the other homes' packets as the labeler pulled them.
	inbox := func(user string) []string { return []string{bus.Auth{User: user}.Inbox() + ".>"} }
	// The detector's key-value buckets: its checkpoints, and the host
	// tables of the detector counting LAN hosts (--hosts). It declares,
	// writes and reads each.
	var kvs []string
	for _, bucket := range []string{bus.DetectorCheckpoints, bus.DetectorHostTables} {
		kvStream := "KV_" + bucket
		kvs = append(kvs, "$JS.API.STREAM.INFO."+kvStream, "$JS.API.STREAM.CREATE."+kvStream, "$JS.API.STREAM.UPDATE."+kvStream,
			"$KV."+bucket+".>", "$JS.API.DIRECT.GET."+kvStream+".>", "$JS.API.STREAM.MSG.GET."+kvStream)
	}
	us := []User{
		{Name: Admin},
		{Name: Labeler, Publish: append(consume(schemas.StreamPackets), "hm.lbl."+c.Name+".>"), Subscribe: inbox(Labeler)},
		{Name: Windower, Publish: consume(schemas.StreamLabeled), Subscribe: inbox(Windower)},
		{Name: Trainer, Publish: declare(schemas.StreamPackets, schemas.StreamLabeled, bus.StreamSeen), Subscribe: inbox(Trainer)},
		{Name: Detector, Subscribe: inbox(Detector), Publish: append(append(consume(schemas.StreamPackets),
			// Its windows, and reading a home's batches back after a restart.
			"hm.seen."+c.Name+".>", "$JS.API.STREAM.MSG.GET."+schemas.StreamPackets),
			kvs...)},
	}
	for _, h := range c.Homes {
		name := CaptureUser(h.Name)
		us = append(us, User{Name: name, Subscribe: inbox(name), Publish: []string{
			schemas.PacketSubject(c.Name, h.Name, ">"),
			"$JS.API.STREAM.INFO." + schemas.StreamPackets, "$JS.API.STREAM.INFO." + schemas.StreamLabeled, "$JS.API.STREAM.INFO." + bus.StreamSeen,
		}})
	}
	return us
}

// NewPassword is a random password of 144 bits.
func NewPassword() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// WithPasswords gives every user a new random password.
func WithPasswords(us []User) []User {
	out := make([]User, len(us))
	for i, u := range us {
		u.Password = NewPassword()
		out[i] = u
	}
	return out
}

// AccountsConf is the accounts block of a server's configuration: the
// users in Account, with JetStream, and their permissions. hash stores
// bcrypt hashes instead of the passwords (the server accepts both), so the
// server's Secret does not hold them.
func AccountsConf(us []User, hash bool) (string, error) {
	list := func(subjects []string) string {
		q := make([]string, len(subjects))
		for i, s := range subjects {
			q[i] = fmt.Sprintf("%q", s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "accounts {\n  %s {\n    jetstream: enabled\n    users: [\n", Account)
	for _, u := range us {
		if u.Password == "" {
			return "", fmt.Errorf("user %s has no password", u.Name)
		}
		pw := u.Password
		if hash {
			h, err := bcrypt.GenerateFromPassword([]byte(pw), 11)
			if err != nil {
				return "", fmt.Errorf("hash the password of %s: %w", u.Name, err)
			}
			pw = string(h)
		}
		fmt.Fprintf(&b, "      {user: %q, password: %q", u.Name, pw)
		if u.Publish != nil || u.Subscribe != nil {
			b.WriteString(", permissions: {")
			if u.Publish != nil {
				fmt.Fprintf(&b, "publish: {allow: %s}, ", list(u.Publish))
			}
			if u.Subscribe != nil {
				fmt.Fprintf(&b, "subscribe: {allow: %s}", list(u.Subscribe))
			}
			b.WriteString("}")
		}
		b.WriteString("}\n")
	}
	b.WriteString("    ]\n  }\n}\n")
	return b.String(), nil
}

// Certs are a CA and a certificate signed by it, PEM encoded.
type Certs struct {
	CA, Cert, Key []byte
}

// NewCerts makes a CA and a certificate for names and ips (servers and
// routes: server and client use), valid for validity.
func NewCerts(names []string, ips []net.IP, validity time.Duration) (Certs, error) {
	now := time.Now()
	serial := func() *big.Int { n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62)); return n }
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "homemole NATS CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	ca, caKey, err := issue(caTmpl, nil, nil)
	if err != nil {
		return Certs{}, fmt.Errorf("create the CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "homemole nats"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    names, IPAddresses: ips,
	}
	cert, key, err := issue(tmpl, ca, caKey)
	if err != nil {
		return Certs{}, fmt.Errorf("create the server certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Certs{}, fmt.Errorf("encode the server key: %w", err)
	}
	return Certs{
		CA:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}),
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// issue makes a P-256 key and the certificate tmpl describes for it,
// signed by parent's key; with no parent the certificate signs itself (a
// CA).
func issue(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("make a key: %w", err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// KubernetesNames are the names the NATS Service and the StatefulSet's pods
// (through the headless Service) are reached by in namespace ns.
func KubernetesNames(ns string) []string {
	var out []string
	for _, suffix := range []string{"", "." + ns, "." + ns + ".svc", "." + ns + ".svc.cluster.local"} {
		out = append(out, "nats"+suffix, "*.nats-headless"+suffix)
	}
	return out
}

// Files names what Write makes under its folder, as the manifests mount
// them: server/ is the Secret nats-server (the NATS pods), workers/ the
// Secret homemole-nats (the labeler, windower, trainer and detector pods: the CA and
// one password per role), gateways/<home>/ what goes onto each home's
// gateway (/etc/homemole/nats: the CA and that home's password only), and
// admin/ the operators' login.
var Files = struct {
	ServerCA, ServerCert, ServerKey, ServerAuth string
	WorkersCA                                   string
}{"ca.crt", "tls.crt", "tls.key", "auth.conf", "ca.crt"}

// PasswordKey is the key of a role's password in the Secret homemole-nats.
func PasswordKey(role string) string { return role + "-password" }

// Write makes the certificates and users of campaign c for a cluster in
// namespace ns under dir, every file mode 0600, and returns the users.
// extraNames and extraIPs are the addresses gateways outside the cluster
// reach NATS by.
func Write(dir string, c *campaign.Campaign, ns string, extraNames []string, extraIPs []net.IP, validity time.Duration) ([]User, error) {
	certs, err := NewCerts(append(KubernetesNames(ns), extraNames...), extraIPs, validity)
	if err != nil {
		return nil, err
	}
	us := WithPasswords(Users(c))
	conf, err := AccountsConf(us, true)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"server/" + Files.ServerCA: certs.CA, "server/" + Files.ServerCert: certs.Cert, "server/" + Files.ServerKey: certs.Key,
		"server/" + Files.ServerAuth: []byte(conf),
		"workers/" + Files.WorkersCA: certs.CA,
		"admin/ca.crt":               certs.CA,
	}
	for _, u := range us {
		switch {
		case u.Name == Admin:
			files["admin/user"], files["admin/password"] = []byte(u.Name), []byte(u.Password)
		case strings.HasPrefix(u.Name, "capture-"):
			home := strings.TrimPrefix(u.Name, "capture-")
			files["gateways/"+home+"/ca.crt"] = certs.CA
			files["gateways/"+home+"/user"] = []byte(u.Name)
			files["gateways/"+home+"/password"] = []byte(u.Password)
		default:
			files["workers/"+PasswordKey(u.Name)] = []byte(u.Password)
		}
	}
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", p, err)
		}
	}
	return us, nil
}
