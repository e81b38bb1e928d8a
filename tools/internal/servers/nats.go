package servers

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/homemole/homemole/k8s/natsauth"
)

// User is a NATS user of the cluster's one application account
// (natsauth.Account), with the subjects it may publish to and subscribe to
// (nil: all).
type User = natsauth.User

// NewPassword is a random password for a throwaway user.
func NewPassword() string { return natsauth.NewPassword() }

// NATSCluster is a JetStream cluster of nodes on loopback: clients speak
// TLS to them and log in as Users; routes between nodes stay on loopback.
type NATSCluster struct {
	Nodes []*NATSNode
	TLS   TLSFiles
	// URL lists every node (tls://127.0.0.1:P1,tls://...), as clients take it.
	URL string
}

// NATSNode is one server of the cluster.
type NATSNode struct {
	Name     string
	Port     int
	HTTPPort int
	dir      string
	bin      string
	conf     string
	proc     *Proc
}

// StartNATSCluster starts n nodes with their state under dir and waits
// until JetStream has a meta leader and every node reports healthy.
func StartNATSCluster(bin, dir string, n int, tlsFiles TLSFiles, users []User) (*NATSCluster, error) {
	// A port found free can be taken by another process before the node
	// binds it (other tests' servers start at the same time): a node that
	// failed only for that is started again, on new ports, a few times.
	var err error
	for attempt := 1; ; attempt++ {
		var c *NATSCluster
		c, err = startNATSCluster(bin, dir, n, tlsFiles, users)
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			return c, err
		}
		if rmErr := os.RemoveAll(dir); rmErr != nil {
			return nil, errors.Join(err, rmErr)
		}
	}
}

func startNATSCluster(bin, dir string, n int, tlsFiles TLSFiles, users []User) (*NATSCluster, error) {
	c := &NATSCluster{TLS: tlsFiles}
	ports, err := FreePorts(3 * n)
	if err != nil {
		return nil, err
	}
	routePorts := make([]int, n)
	for i := range n {
		node := &NATSNode{Name: fmt.Sprintf("n%d", i+1), bin: bin, dir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			Port: ports[3*i], HTTPPort: ports[3*i+1]}
		routePorts[i] = ports[3*i+2]
		c.Nodes = append(c.Nodes, node)
	}
	accounts, err := natsauth.AccountsConf(users, false)
	if err != nil {
		return nil, err
	}
	var urls []string
	for i, node := range c.Nodes {
		if err := os.MkdirAll(node.dir, 0o755); err != nil {
			return nil, err
		}
		var routes []string
		for j, p := range routePorts {
			if j != i {
				routes = append(routes, fmt.Sprintf("%q", fmt.Sprintf("nats-route://127.0.0.1:%d", p)))
			}
		}
		conf := fmt.Sprintf(`server_name: %s
listen: "127.0.0.1:%d"
http: "127.0.0.1:%d"
max_payload: 8MB
jetstream {
  store_dir: %q
  max_memory_store: 256MB
  max_file_store: 8GB
}
cluster {
  name: homemole
  listen: "127.0.0.1:%d"
  routes: [%s]
}
tls {
  cert_file: %q
  key_file: %q
  ca_file: %q
  timeout: 5
}
%s`, node.Name, node.Port, node.HTTPPort, filepath.Join(node.dir, "jetstream"), routePorts[i], strings.Join(routes, ", "),
			tlsFiles.Cert, tlsFiles.Key, tlsFiles.CA, accounts)
		node.conf = filepath.Join(node.dir, "nats.conf")
		if err := os.WriteFile(node.conf, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		urls = append(urls, fmt.Sprintf("tls://127.0.0.1:%d", node.Port))
	}
	c.URL = strings.Join(urls, ",")
	for _, node := range c.Nodes {
		if err := node.start(); err != nil {
			c.Close()
			return nil, err
		}
	}
	for _, node := range c.Nodes {
		if err := node.WaitHealthy(90 * time.Second); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (n *NATSNode) start() error {
	p, err := Start("nats-"+n.Name, n.bin, []string{"-c", n.conf}, nil, filepath.Join(n.dir, "nats.log"))
	if err != nil {
		return err
	}
	n.proc = p
	return nil
}

// Restart starts a stopped node again on its state.
func (n *NATSNode) Restart() error {
	if err := n.start(); err != nil {
		return err
	}
	return n.WaitHealthy(90 * time.Second)
}

// Stop shuts the node down (lame duck, then SIGKILL after 15 s).
func (n *NATSNode) Stop() {
	if n.proc != nil {
		n.proc.Stop(15 * time.Second)
	}
}

// Kill ends the node with SIGKILL.
func (n *NATSNode) Kill() {
	if n.proc != nil {
		n.proc.Kill()
	}
}

// WaitHealthy waits until the node's /healthz says it and its JetStream
// are ready (a meta leader is known, its streams are current).
func (n *NATSNode) WaitHealthy(timeout time.Duration) error {
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", n.HTTPPort)
	if err := waitHealthy(url, n.proc.Exited(), timeout); err != nil {
		if errors.Is(err, errExited) {
			err = fmt.Errorf("%w: %v", err, n.proc.Err())
		}
		out, _ := os.ReadFile(n.proc.LogFile)
		return fmt.Errorf("NATS node %s %w\nits log:\n%s", n.Name, err, out)
	}
	return nil
}

// Close stops every node.
func (c *NATSCluster) Close() {
	for _, n := range c.Nodes {
		n.Stop()
	}
}
