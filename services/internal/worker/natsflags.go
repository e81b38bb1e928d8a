package worker

import (
	"context"
	"flag"
	"os"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/metrics"
	"github.com/homemole/homemole/services/internal/cli"
)

// NATSFlags are the flags of a worker that reads a campaign's streams
// straight from NATS and whose replicas split the campaign's homes (the
// labeler, the detector): where NATS is and how to log in to it, which
// replica this is, the streams' retention, and where metrics are served.
type NATSFlags struct {
	URL         string
	MetricsAddr string
	Partition   bus.Partition
	Auth        bus.Auth
	retention   func(campaign.Retention) (bus.Retention, error)
}

// RegisterNATSFlags registers the flags on fs, their defaults from the
// environment where it names them.
func RegisterNATSFlags(fs *flag.FlagSet) *NATSFlags {
	f := &NATSFlags{Auth: bus.AuthFromEnv()}
	fs.StringVar(&f.URL, "nats", os.Getenv("HOMEMOLE_NATS_URL"), "NATS URL (env HOMEMOLE_NATS_URL)")
	fs.StringVar(&f.MetricsAddr, "metrics-addr", metrics.Addr(), metrics.Flag)
	f.Partition.RegisterFlags(fs)
	f.Auth.RegisterFlags(fs)
	f.retention = bus.RetentionFlags(fs)
	return f
}

// Start starts the worker's runtime and connects it to NATS, the streams
// bounded as c and the flags say. A retention they get wrong is a usage
// error, found before anything is served; a connection that fails closes
// the runtime again.
func (f *NATSFlags) Start(ctx context.Context, name string, env Env, c *campaign.Campaign) (*Runtime, *bus.Conn, error) {
	ret, err := f.retention(c.Retention)
	if err != nil {
		return nil, nil, cli.Usagef("%v", err)
	}
	rt, err := Start(ctx, name, f.MetricsAddr, env)
	if err != nil {
		return nil, nil, err
	}
	conn, err := rt.Connect(ctx, bus.Config{URL: f.URL, Replicas: bus.ReplicasFromEnv(), Auth: f.Auth, Retention: ret})
	if err != nil {
		rt.Close()
		return nil, nil, err
	}
	return rt, conn, nil
}
