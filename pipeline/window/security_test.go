package window

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/embedded/embeddedtest"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/store"
	"github.com/homemole/homemole/schemas"
)

// TestSecurityWindowPathTraversal (finding 1): a labeled batch whose
// session climbs out of the dataset ("../../../../victim/...") must write
// nothing anywhere: it goes to the dead-letter stream. Before, the windower
// wrote a part record and an Arrow object under datasets/victim/.
func TestSecurityWindowPathTraversal(t *testing.T) {
	ctx := embeddedtest.Context(t, 30*time.Second)
	log := slog.New(slog.DiscardHandler)
	env, err := endpoints.Open(ctx, endpoints.Config{Home: t.TempDir(), S3Bucket: "homemole"}, "security-test", log)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	spec := Spec{Dataset: "ds", Version: "v1", Kind: schemas.KindNoise, Size: 4, Labels: []string{"plug"}}
	w, err := New(spec, env.Store, log)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- env.Bus.Consume(wctx, ConsumerConfig(spec, "c", 0), w.Handle)
	}()
	defer func() {
		stop()
		<-done
	}()
	labeled := func(home, session, source string) *schemas.Batch {
		b := &schemas.Batch{Kind: schemas.KindLabeled, Campaign: "c", Home: home, View: "lan", Source: source, Session: session,
			Final: true, Devices: []schemas.Device{{Name: "plug", Category: "iot"}}}
		for i := range 8 {
			b.Packets = append(b.Packets, schemas.Packet{Offset: uint64(i), TsNs: int64(i) * 1e6, FrameLen: 90})
			b.Labels = append(b.Labels, 0)
		}
		return b
	}
	subj := schemas.LabeledSubject("c", "home-2", "lan")
	for _, b := range []*schemas.Batch{
		labeled("home-2", "../../../../victim/v1/lan/home-2/lan-session-01", "c/home-2/lan/session-01.pcap"),
		labeled("home-2", "lan-session-01", "c/home-2/lan/../../x"),
		labeled("home-2", "lan-session-02", "c/home-2/lan/session-02.pcap"), // genuine
	} {
		if err := env.Bus.Publish(ctx, subj, b); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		objs, _ := env.Store.List(ctx, "datasets/ds/v1/lan/home-2/lan-session-02/")
		if len(objs) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the genuine session was never windowed")
		}
	}
	objs, err := env.Store.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var outside []string
	for _, o := range objs {
		if !strings.HasPrefix(o.Key, "datasets/ds/v1/lan/home-2/lan-session-02/") {
			outside = append(outside, o.Key)
		}
	}
	if len(outside) > 0 {
		t.Errorf("objects written outside the genuine session: %v", outside)
	}
	dls, err := env.Bus.DeadLetters(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 2 {
		t.Fatalf("%d dead letters, want the two forged batches: %+v", len(dls), dls)
	}
	t.Logf("attack: labeled batch with session ../../../../victim/... | expected: nothing written outside the dataset, dead-lettered | observed: %d objects outside, %d dead letters (%s)", len(outside), len(dls), dls[0].Reason)
}

// TestSecurityStoreRefusesClimbingKeys (finding 1): the store itself
// refuses keys with "..", "." or empty segments. The embedded S3 server
// resolves "../" on disk: such a key landed in another bucket.
func TestSecurityStoreRefusesClimbingKeys(t *testing.T) {
	ctx := context.Background()
	env, err := endpoints.Open(ctx, endpoints.Config{Home: t.TempDir(), S3Bucket: "homemole"}, "security-test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	refused := 0
	bad := []string{"../other-bucket/x.arrow", "datasets/d/v1/../../../../other/x", "datasets//x", "datasets/./x", "/datasets/x", "datasets\\..\\x", ""}
	for _, k := range bad {
		if _, err := env.Store.Put(ctx, k, []byte("x"), ""); !errors.Is(err, store.ErrBadKey) {
			t.Errorf("Put(%q): %v, want ErrBadKey", k, err)
		} else {
			refused++
		}
	}
	if _, err := store.Key("datasets", "ds", "v1", "lan", "home-2", ".."); !errors.Is(err, store.ErrBadKey) {
		t.Errorf("store.Key with a \"..\" segment: %v", err)
	}
	if _, err := env.Store.Put(ctx, "datasets/d/v1/lan/h/s/ind-w000000-000001.arrow", []byte("x"), ""); err != nil {
		t.Errorf("a well-formed key was refused: %v", err)
	}
	t.Logf("attack: object keys that climb (../, ./, //, \\) | expected: refused by the store | observed: %d of %d refused", refused, len(bad))
}
