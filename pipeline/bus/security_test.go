package bus

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/internal/natstest"
	"github.com/homemole/homemole/schemas"
)

// homeUsers starts a JetStream server whose users are an admin and one
// capture agent per home, each allowed to publish only on its home's
// subjects, as tools/cluster sets them up.
func homeUsers(t *testing.T, homes ...string) string {
	t.Helper()
	users := []*server.User{{Username: "admin", Password: "admin-pw"}}
	for _, h := range homes {
		users = append(users, &server.User{Username: h, Password: h + "-pw", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{schemas.PacketSubject("c", h, ">"), "$JS.API.STREAM.INFO.*"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}})
	}
	return natstest.Server(t, users...)
}

// TestSecurityMessageIDHijack (finding 2): JetStream deduplicates message
// ids across the whole stream, and a publisher sets any id it likes. home-1
// publishes, on its own subject, batches under every id it can work out
// home-2's next batch will use (the batch's own id, and that id scoped to
// home-2's subject); home-2's genuine batch must still be stored, not
// dropped as a duplicate.
func TestSecurityMessageIDHijack(t *testing.T) {
	url := homeUsers(t, "home-1", "home-2")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	admin, err := Connect(ctx, Config{URL: url, Auth: Auth{User: "admin", Password: "admin-pw"}}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	dial := func(home string) *Conn {
		auth := Auth{User: home, Password: home + "-pw"}
		c, err := Connect(ctx, Config{URL: url, Auth: auth, IDKey: auth.IDKey()}, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	home1, home2 := dial("home-1"), dial("home-2")

	genuine := &schemas.Batch{Kind: schemas.KindPackets, Campaign: "c", Home: "home-2", Tap: "lan", Source: "c/home-2/lan/session-01.pcap", Session: "lan-session-01", Final: true,
		Packets: []schemas.Packet{{Offset: 0, TsNs: 1, FrameLen: 60}}}
	subj1, subj2 := schemas.PacketSubject("c", "home-1", "lan"), schemas.PacketSubject("c", "home-2", "lan")
	data, err := genuine.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	guesses := []string{genuine.MsgID(), MsgID(subj2, genuine.MsgID(), nil), MsgID(subj1, genuine.MsgID(), nil)}
	for _, id := range guesses {
		// Raw nats.go, as an attacker would: any header it likes.
		if _, err := home1.JS.PublishMsg(ctx, &nats.Msg{Subject: subj1, Data: data}, jetstream.WithMsgID(id)); err != nil {
			t.Fatalf("home-1 publishing on its own subject: %v", err)
		}
	}
	msg := &nats.Msg{Subject: subj2, Data: data}
	ack, err := home2.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(MsgID(subj2, genuine.MsgID(), home2.cfg.IDKey)))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Duplicate {
		t.Errorf("home-2's genuine batch was dropped as a duplicate of home-1's forgery")
	}
	// And through the bus, as the agent publishes.
	f, err := home2.PublishAsync(subj2, genuine.MsgID(), data)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-f.Ok():
		if !a.Duplicate || a.Sequence != ack.Sequence {
			t.Errorf("the agent's retry of its own batch: duplicate %v, sequence %d, want a duplicate of %d", a.Duplicate, a.Sequence, ack.Sequence)
		}
	case err := <-f.Err():
		t.Fatal(err)
	}
	t.Logf("attack: home-1 publishes under home-2's next message ids | expected: home-2's batch stored | observed: %d guesses published, home-2's batch duplicate=%v", len(guesses), ack.Duplicate)
}

// TestSecurityPlainCredentials (finding 12): a password over plain nats://
// draws a warning, and --require-tls refuses it before a byte is sent.
func TestSecurityPlainCredentials(t *testing.T) {
	url := homeUsers(t, "home-1")
	var buf strings.Builder
	log := slog.New(slog.NewTextHandler(&buf, nil))
	auth := Auth{User: "admin", Password: "admin-pw"}
	c, err := Connect(context.Background(), Config{URL: url, Auth: auth}, log)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	warned := strings.Contains(buf.String(), "plain text")
	if !warned {
		t.Errorf("no warning for a password over %s; log: %s", url, buf.String())
	}
	if strings.Contains(buf.String(), "admin-pw") {
		t.Errorf("the warning shows the password: %s", buf.String())
	}
	// A listener that only counts who knocks: nothing may.
	addr, knocks := knockCounter(t)
	auth = Auth{User: "home-1", Password: "home-1-pw", RequireTLS: true}
	for _, u := range []string{"nats://" + addr, "nats://home-1:home-1-pw@" + addr, "tls://" + addr + ",nats://" + addr} {
		a := auth
		if strings.Contains(u, "@") {
			a.Password = ""
		}
		_, err = Connect(context.Background(), Config{URL: u, Auth: a}, slog.New(slog.DiscardHandler))
		if !errors.Is(err, ErrPlainCredentials) || strings.Contains(err.Error(), "home-1-pw") {
			t.Errorf("--require-tls with %s: %v, want ErrPlainCredentials without the password", redactURL(u), err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if n := knocks.Load(); n != 0 {
		t.Errorf("%d connections were opened to send credentials in the clear", n)
	}
	t.Logf("attack: NATS password over plain nats:// | expected: warning; --require-tls refuses | observed: warned=%v, refused with %v, %d connections opened", warned, ErrPlainCredentials, knocks.Load())
}

// TestInboxPrefix: a user's replies come under its own inbox prefix, the
// one a server can restrict its subscriptions to.
func TestInboxPrefix(t *testing.T) {
	for _, c := range []struct {
		auth Auth
		want string
	}{
		{Auth{User: "capture-home-1"}, "_INBOX.capture-home-1"},
		{Auth{User: "capture-home-1", InboxPrefix: "_I.h1"}, "_I.h1"},
		{Auth{User: "a.b"}, ""},
		{Auth{}, ""},
	} {
		if got := c.auth.Inbox(); got != c.want {
			t.Errorf("%+v: inbox %q, want %q", c.auth, got, c.want)
		}
	}
}

// knockCounter listens on a loopback port and counts the connections
// opened to it (each closed at once): a test that nothing may connect
// checks the count stays 0.
func knockCounter(t *testing.T) (addr string, knocks *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	knocks = new(atomic.Int64)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			knocks.Add(1)
			conn.Close()
		}
	}()
	return ln.Addr().String(), knocks
}
