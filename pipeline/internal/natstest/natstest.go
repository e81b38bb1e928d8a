// Package natstest starts a JetStream server of a test's own, for tests
// that need the server itself (its users and permissions, what only it
// knows, such as a consumer's lag) rather than the whole embedded stack
// embeddedtest starts.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server starts a JetStream server on a free local port, with users when
// any are given, stores its streams under the test's temporary folder,
// shuts it down when the test ends and returns its client URL.
func Server(tb testing.TB, users ...*server.User) string {
	tb.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: tb.TempDir(), NoSigs: true, NoLog: true, Users: users})
	if err != nil {
		tb.Fatalf("make the NATS server: %v", err)
	}
	go ns.Start()
	tb.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		tb.Fatal("NATS server did not start")
	}
	return ns.ClientURL()
}
