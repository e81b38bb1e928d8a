package main

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/homecount"
	"github.com/homemole/homemole/schemas"
	"github.com/homemole/homemole/services/internal/worker"
)

// HostTableBucket is the JetStream key-value bucket of the host tables of
// a detector run with --hosts (its stream is KV_<bucket>).
const HostTableBucket = bus.DetectorHostTables

// KVHostTables keeps each home's host table (homecount.LiveHome.State) in
// a JetStream key-value bucket under <campaign>.<home>.<tap>: a restarted
// detector anywhere in the cluster finds them, replicated as the streams
// are. A table is bounded by the counter's limits
// (homecount.DefaultLiveConfig keeps it to a few hundred KB), under the
// 1 MiB a NATS message may hold.
type KVHostTables struct {
	*bus.HomeKV
}

// OpenKVHostTables declares the bucket (idempotently) and opens it.
func OpenKVHostTables(ctx context.Context, js jetstream.JetStream, replicas int) (*KVHostTables, error) {
	kv, err := bus.OpenHomeKV(ctx, js, HostTableBucket, "host counter tables of the online detector (--hosts), one per campaign, home and tap", replicas)
	if err != nil {
		return nil, err
	}
	return &KVHostTables{kv}, nil
}

// Load reads a home's host table; false when it has none.
func (k *KVHostTables) Load(ctx context.Context, campaign, home, tap string) ([]byte, bool, error) {
	data, ok, err := k.Get(ctx, campaign, home, tap)
	if err != nil {
		return nil, false, fmt.Errorf("%w (%s starts the home afresh)", err, k.Forget(campaign, home, tap))
	}
	return data, ok, nil
}

// Save writes a home's host table.
func (k *KVHostTables) Save(ctx context.Context, campaign, home, tap string, state []byte) error {
	return k.Put(ctx, campaign, home, tap, state)
}

// RunHosts is Run for a detector that counts each home's LAN hosts with a
// host model (homecount.Online) instead of running a sequence-profile
// model: a batch is acked once the windows it completes are stored in the
// SEEN stream and its home's host table is saved, so a detector
// restarted at any point goes on from each home's table: no window is
// skipped, and one published twice keeps its message id and is stored
// once.
func RunHosts(ctx context.Context, conn *bus.Conn, hm *homecount.HostModel, cfg Config, rt *worker.Runtime) error {
	o, err := newHostsOnline(ctx, conn, hm, cfg)
	if err != nil {
		return err
	}
	o.Log = rt.Log
	return serve(ctx, conn, o, cfg, rt)
}

// newHostsOnline is the host counter of cfg, its tables in the bucket and
// its windows stored in SEEN.
func newHostsOnline(ctx context.Context, conn *bus.Conn, hm *homecount.HostModel, cfg Config) (*homecount.Online, error) {
	tables, err := OpenKVHostTables(ctx, conn.JS, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	return &homecount.Online{Model: hm, Config: cfg.Live, States: tables,
		Gateways: func(_, home string) schemas.MAC { return cfg.Gateways[home] },
		Publish:  publishSeen(conn),
	}, nil
}
