// Command natsauth makes the certificates and NATS users of a HomeMole
// cluster on Kubernetes from its campaign file: a CA and a server
// certificate for the NATS StatefulSet, one user per worker and per home
// (each home's agent may publish only its own packets; every user may
// subscribe only under its own inbox), random passwords, and the commands
// that turn them into the Secrets k8s/base/nats.yaml and the workers mount.
//
//	go run ./tools/natsauth --campaign k8s/base/campaign.yaml --out nats-auth/
//
// The output holds secrets (mode 0600): keep it out of the repository.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/homemole/homemole/k8s/natsauth"
	"github.com/homemole/homemole/pipeline/campaign"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "natsauth:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("natsauth", flag.ContinueOnError)
	file := fs.String("campaign", "k8s/base/campaign.yaml", "campaign file: one capture user per home")
	out := fs.String("out", "", "folder to write into (must not exist yet: nothing is overwritten)")
	ns := fs.String("namespace", "homemole", "namespace of the NATS Service and StatefulSet")
	days := fs.Int("days", 365, "validity of the CA and the certificate")
	var names, ips list
	fs.Var(&names, "name", "another DNS name gateways reach NATS by (repeatable)")
	fs.Var(&ips, "ip", "an IP address gateways reach NATS at (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("give --out DIR")
	}
	if _, err := os.Stat(*out); err == nil {
		return fmt.Errorf("%s exists: choose a new folder (passwords are never overwritten in place)", *out)
	}
	var addrs []net.IP
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return fmt.Errorf("--ip %q is not an IP address", s)
		}
		addrs = append(addrs, ip)
	}
	c, err := campaign.Load(*file)
	if err != nil {
		return err
	}
	us, err := natsauth.Write(*out, c, *ns, names, addrs, time.Duration(*days)*24*time.Hour)
	if err != nil {
		return err
	}
	fmt.Printf("wrote %d users, a CA and a server certificate under %s\n\n", len(us), *out)
	fmt.Printf("kubectl -n %s create secret generic nats-server --from-file=%s\n", *ns, filepath.Join(*out, "server"))
	fmt.Printf("kubectl -n %s create secret generic homemole-nats --from-file=%s\n", *ns, filepath.Join(*out, "workers"))
	fmt.Printf("\nthen copy %s/gateways/<home>/ to /etc/homemole/nats/ on that home's gateway (mode 0600, root):\n", *out)
	fmt.Printf("each holds the CA and that home's password only. %s/admin/ is the operators' login (homemole dlq replay).\n", *out)
	return nil
}
