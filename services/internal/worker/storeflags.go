package worker

import (
	"flag"

	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/metrics"
)

// StoreFlags are the flags of a worker that reaches both NATS and S3 (the
// windower, the trainer): the endpoints, their defaults from the
// environment, and where metrics are served.
type StoreFlags struct {
	Endpoints   endpoints.Config
	MetricsAddr string
}

// RegisterStoreFlags registers the flags on fs.
func RegisterStoreFlags(fs *flag.FlagSet) *StoreFlags {
	f := &StoreFlags{Endpoints: endpoints.FromEnv()}
	f.Endpoints.Register(fs)
	fs.StringVar(&f.MetricsAddr, "metrics-addr", metrics.Addr(), metrics.Flag)
	return f
}

// Given says whether NATS and S3 were both given: a worker joins the
// cluster's servers and never starts embedded ones.
func (f *StoreFlags) Given() bool {
	return f.Endpoints.NATSURL != "" && f.Endpoints.S3 != ""
}
