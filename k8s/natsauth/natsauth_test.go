package natsauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/schemas"
)

// TestUsersOnARealServer: a server configured with what Write makes (TLS,
// bcrypt-hashed accounts) lets each user do its work and nothing more: a
// home's agent publishes its own packets and not another home's, and may
// not subscribe outside its inbox.
func TestUsersOnARealServer(t *testing.T) {
	dir := t.TempDir()
	c := &campaign.Campaign{Name: "c", Homes: []*campaign.Home{{Name: "home-1"}, {Name: "home-2"}}}
	us, err := Write(dir, c, "homemole", []string{"localhost"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv := filepath.Join(dir, "server")
	conf := fmt.Sprintf(`listen: "localhost:-1"
jetstream {store_dir: %q}
tls {cert_file: %q, key_file: %q, ca_file: %q, timeout: 5}
include ./auth.conf
`, filepath.Join(dir, "js"), filepath.Join(srv, Files.ServerCert), filepath.Join(srv, Files.ServerKey), filepath.Join(srv, Files.ServerCA))
	if err := os.WriteFile(filepath.Join(srv, "nats.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(filepath.Join(srv, "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	opts.NoSigs, opts.NoLog = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server did not start")
	}
	defer ns.Shutdown()
	url := fmt.Sprintf("tls://localhost:%d", ns.Addr().(*net.TCPAddr).Port)
	pw := map[string]string{}
	for _, u := range us {
		pw[u.Name] = u.Password
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	login := func(user string) (*bus.Conn, error) {
		auth := bus.Auth{User: user, Password: pw[user], CAFile: filepath.Join(dir, "workers", Files.WorkersCA), RequireTLS: true}
		return bus.Connect(ctx, bus.Config{URL: url, Auth: auth}, log)
	}
	// The labeler declares the streams, as it does in a fresh cluster.
	lab, err := login(Labeler)
	if err != nil {
		t.Fatalf("the labeler cannot log in and declare the streams: %v", err)
	}
	defer lab.Close()
	home1, err := login(CaptureUser("home-1"))
	if err != nil {
		t.Fatal(err)
	}
	defer home1.Close()
	b := &schemas.Batch{Kind: schemas.KindPackets, Campaign: "c", Home: "home-1", Tap: "lan", Source: "c/home-1/lan/s.pcap", Session: "lan-s", Final: true}
	if err := home1.Publish(ctx, schemas.PacketSubject("c", "home-1", "lan"), b); err != nil {
		t.Errorf("home-1 may not publish its own packets: %v", err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
	defer pcancel()
	if err := home1.Publish(pctx, schemas.PacketSubject("c", "home-2", "lan"), b); err == nil || !errors.Is(home1.NC.LastError(), nats.ErrPermissionViolation) {
		t.Errorf("home-1 publishing home-2's packets: %v (last error %v), want a permissions violation", err, home1.NC.LastError())
	}
	if _, err := home1.NC.SubscribeSync("_INBOX.>"); err == nil {
		_ = home1.NC.Flush()
		time.Sleep(100 * time.Millisecond)
		if !errors.Is(home1.NC.LastError(), nats.ErrPermissionViolation) {
			t.Errorf("home-1 may subscribe to _INBOX.>: last error %v", home1.NC.LastError())
		}
	}
	// The online detector: its checkpoint bucket, its windows in SEEN, a
	// home's batches read back; and not the labeler's output.
	det, err := login(Detector)
	if err != nil {
		t.Fatalf("the detector cannot log in: %v", err)
	}
	defer det.Close()
	kv, err := det.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.DetectorCheckpoints, History: 1})
	if err != nil {
		t.Fatalf("the detector may not declare its checkpoint bucket: %v", err)
	}
	if _, err := kv.Put(ctx, "c.home-1.wan", []byte("{}")); err != nil {
		t.Errorf("the detector may not write a checkpoint: %v", err)
	}
	if e, err := kv.Get(ctx, "c.home-1.wan"); err != nil || string(e.Value()) != "{}" {
		t.Errorf("the detector reads its checkpoint back as %v, %v", e, err)
	}
	// Counting LAN hosts (--hosts), it keeps each home's host table in a
	// bucket of its own (a request it may not make goes unanswered: a
	// context of its own keeps the wait from the checks below).
	hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
	defer hcancel()
	if hosts, err := det.JS.CreateOrUpdateKeyValue(hctx, jetstream.KeyValueConfig{Bucket: bus.DetectorHostTables, History: 1}); err != nil {
		t.Errorf("the detector may not declare its host table bucket: %v", err)
	} else if _, err := hosts.Put(hctx, "c.home-1.lan", []byte("{}")); err != nil {
		t.Errorf("the detector may not write a host table: %v", err)
	} else if e, err := hosts.Get(hctx, "c.home-1.lan"); err != nil || string(e.Value()) != "{}" {
		t.Errorf("the detector reads its host table back as %v, %v", e, err)
	}
	if _, err := det.JS.Publish(ctx, schemas.SeenSubject("c", "home-1"), []byte("{}"), jetstream.WithMsgID("w1")); err != nil {
		t.Errorf("the detector may not publish to SEEN: %v", err)
	}
	if s, err := det.JS.Stream(ctx, schemas.StreamPackets); err != nil {
		t.Error(err)
	} else if m, err := s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(schemas.PacketSubject("c", "home-1", "lan"))); err != nil || m.Subject != schemas.PacketSubject("c", "home-1", "lan") {
		t.Errorf("the detector may not read a home's batch back: %v", err)
	}
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	defer dcancel()
	if _, err := det.JS.Publish(dctx, schemas.LabeledSubject("c", "home-1", "lan"), []byte("x")); err == nil {
		t.Error("the detector may publish labeled packets")
	}
	if _, err := bus.Connect(ctx, bus.Config{URL: url, Auth: bus.Auth{CAFile: filepath.Join(dir, "workers", Files.WorkersCA)}}, log); err == nil {
		t.Error("a client without a user got in")
	}
	for _, f := range []string{"server/auth.conf", "workers/labeler-password", "gateways/home-1/password"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v: want 0600", f, err, fi.Mode().Perm())
		}
	}
	if data, _ := os.ReadFile(filepath.Join(srv, Files.ServerAuth)); len(data) == 0 || strings.Contains(string(data), pw[Labeler]) {
		t.Error("the server's accounts are empty or hold a password in the clear")
	}
}
