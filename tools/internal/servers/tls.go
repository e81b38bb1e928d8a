package servers

import (
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/homemole/homemole/k8s/natsauth"
)

// TLSFiles are a throwaway CA and a server certificate it signed for
// loopback (127.0.0.1, ::1, localhost), as PEM files.
type TLSFiles struct {
	CA, Cert, Key string
}

// NewTLS writes a fresh CA and server certificate into dir. They live as
// long as the run: nothing is reused, nothing is secret beyond it.
func NewTLS(dir string) (TLSFiles, error) {
	certs, err := natsauth.NewCerts([]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, 24*time.Hour)
	if err != nil {
		return TLSFiles{}, err
	}
	f := TLSFiles{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "server.pem"), Key: filepath.Join(dir, "server-key.pem")}
	for path, data := range map[string][]byte{f.CA: certs.CA, f.Cert: certs.Cert, f.Key: certs.Key} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return TLSFiles{}, err
		}
	}
	return f, nil
}
