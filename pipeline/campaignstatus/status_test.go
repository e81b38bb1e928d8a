package campaignstatus

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/schemas"
)

// startWatcher runs the embedded NATS and S3 servers and a watcher of them.
func startWatcher(t *testing.T) (*Watcher, *bus.Conn) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	env, err := endpoints.Open(context.Background(), endpoints.Config{Home: t.TempDir(), S3Bucket: "homemole"}, "status-test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	return &Watcher{JS: env.Bus.JS, Store: env.Store, Log: log}, env.Bus
}

// publish sends n packets of a live session from offset first.
func publish(t *testing.T, conn *bus.Conn, session string, first, n int) {
	t.Helper()
	b := &schemas.Batch{Kind: schemas.KindPackets, Campaign: "cs", Home: "h1", Tap: "lan", Source: "cs/h1/lan/" + session, Session: session, FirstOffset: uint64(first)}
	for i := range n {
		b.Packets = append(b.Packets, schemas.Packet{TsNs: int64(first+i) * 1e6, Offset: uint64(first + i), FrameLen: 60})
	}
	if err := conn.Publish(context.Background(), schemas.PacketSubject("cs", "h1", "lan"), b); err != nil {
		t.Fatal(err)
	}
}

func tapOf(t *testing.T, r *Report) Tap {
	t.Helper()
	if len(r.Homes) != 1 || r.Homes[0].Home != "h1" || len(r.Homes[0].Taps) != 1 {
		t.Fatalf("homes %+v, want h1 with one tap", r.Homes)
	}
	return r.Homes[0].Taps[0]
}

// TestPacketRates: a tap's session and offset come from its newest batch,
// and its rate from two samples; across a session change only the new
// session's packets count.
func TestPacketRates(t *testing.T) {
	w, conn := startWatcher(t)
	ctx := context.Background()
	const s1, s2 = "lan-20261204T181500_000Z", "lan-20261204T183000_000Z"
	publish(t, conn, s1, 0, 100)
	publish(t, conn, s1, 100, 200)
	r, err := w.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tap := tapOf(t, r); tap.Session != s1 || tap.Offset != 300 || tap.Batches != 2 || tap.PacketsPerSec != nil {
		t.Fatalf("first sample %+v, want %s at offset 300 in 2 batches, no rate", tap, s1)
	}
	t0 := time.Now()
	publish(t, conn, s1, 300, 250)
	time.Sleep(1100 * time.Millisecond)
	before := time.Since(t0)
	r, err = w.Collect(ctx)
	after := time.Since(t0) + 100*time.Millisecond
	if err != nil {
		t.Fatal(err)
	}
	tap := tapOf(t, r)
	if time.Duration(r.RateOver) < before || time.Duration(r.RateOver) > after {
		t.Errorf("rates over %s, want %s to %s", time.Duration(r.RateOver), before, after)
	}
	if tap.Offset != 550 || tap.PacketsPerSec == nil {
		t.Fatalf("second sample %+v, want offset 550 and a rate", tap)
	}
	rate := *tap.PacketsPerSec
	if lo, hi := 250/after.Seconds(), 250/before.Seconds(); *tap.PacketsPerSec < lo || *tap.PacketsPerSec > hi {
		t.Errorf("rate %.1f packets/s, want 250 packets over %s to %s: %.1f to %.1f", *tap.PacketsPerSec, before, after, lo, hi)
	}
	publish(t, conn, s2, 0, 40)
	time.Sleep(1100 * time.Millisecond)
	if r, err = w.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	if tap := tapOf(t, r); tap.Session != s2 || tap.Offset != 40 || tap.PacketsPerSec == nil || *tap.PacketsPerSec > 40/1.1 || *tap.PacketsPerSec < 40/3.0 {
		t.Errorf("after the rotation %+v, want %s at offset 40 and a rate of its 40 packets over about 1.1 s", tap, s2)
	}
	t.Logf("rate %.1f packets/s for 250 packets over %s; %.1f packets/s after the rotation", rate, before, *tapOf(t, r).PacketsPerSec)
}

// TestDevicesSeen: the newest hm.seen message of a home, heard on core
// NATS while no stream keeps them (a cluster from before the SEEN stream),
// and read from a stream once one does.
func TestDevicesSeen(t *testing.T) {
	w, conn := startWatcher(t)
	ctx := context.Background()
	if err := conn.JS.DeleteStream(ctx, bus.StreamSeen); err != nil {
		t.Fatal(err)
	}
	publish(t, conn, "lan-x", 0, 10)
	sub, err := w.Listen(conn.NC)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	seen := func(end int64, device string, count int) []byte {
		b, _ := json.Marshal(schemas.Seen{Version: schemas.SeenVersion, Campaign: "cs", Home: "h1", SeenWindow: schemas.SeenWindow{
			StartNs: end - 10e9, EndNs: end, Detections: []schemas.SeenDetection{{Device: device, Count: count, Score: 0.9}}}})
		return b
	}
	for i, d := range []string{"plug", "camera"} {
		if err := conn.NC.Publish(schemas.SeenSubject("cs", "h1"), seen(int64(i+1)*10e9, d, i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.NC.Publish(schemas.SeenSubject("cs", "h1"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if err := conn.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	var r *Report
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if r, err = w.Collect(ctx); err != nil {
			t.Fatal(err)
		}
		if s := r.Homes[0].Seen; s != nil && s.EndNs == 20e9 || time.Now().After(deadline) {
			break
		}
	}
	if s := r.Homes[0].Seen; s == nil || len(s.Detections) != 1 || s.Detections[0].Device != "camera" || s.Detections[0].Count != 2 {
		t.Fatalf("seen %+v, want the newest message: camera x2", s)
	}
	if len(r.Notes) == 0 || !strings.Contains(r.Notes[0], "no stream keeps hm.seen") {
		t.Errorf("notes %q, want one saying no stream keeps hm.seen", r.Notes)
	}

	// A stream that keeps them: the watcher reads its newest message, also
	// one from before it started (a fresh watcher hears nothing).
	if _, err := conn.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "SEEN", Subjects: []string{"hm.seen.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.JS.Publish(ctx, schemas.SeenSubject("cs", "h1"), seen(30e9, "speaker", 1)); err != nil {
		t.Fatal(err)
	}
	fresh := &Watcher{JS: w.JS, Store: w.Store}
	if r, err = fresh.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	if s := r.Homes[0].Seen; s == nil || s.EndNs != 30e9 || s.Detections[0].Device != "speaker" || len(r.Notes) != 0 {
		t.Errorf("seen from the stream %+v, notes %q; want speaker and no note", s, r.Notes)
	}
}

// TestSecurityStatusOrigin: a web page's cross-origin request, or one
// through a DNS name rebound to the loopback address, is refused; the
// page's own requests are answered.
func TestSecurityStatusOrigin(t *testing.T) {
	w, conn := startWatcher(t)
	publish(t, conn, "lan-x", 0, 10)
	srv := httptest.NewServer(Handler(w))
	defer srv.Close()
	get := func(path string, set func(*http.Request)) (int, string) {
		req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		set(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	none := func(*http.Request) {}
	if code, body := get("/campaign", none); code != http.StatusOK || !strings.Contains(body, "/campaign/status.json") {
		t.Fatalf("/campaign: %d", code)
	}
	if code, body := get("/campaign/status.json", func(r *http.Request) { r.Header.Set("Origin", srv.URL) }); code != http.StatusOK || !strings.Contains(body, `"home":"h1"`) {
		t.Errorf("status.json from its own origin: %d %s", code, body)
	}
	refused := 0
	attacks := map[string]func(*http.Request){
		"cross-origin":       func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") },
		"null origin":        func(r *http.Request) { r.Header.Set("Origin", "null") },
		"rebound host":       func(r *http.Request) { r.Host = "evil.example:80"; r.Header.Set("Origin", "http://evil.example:80") },
		"rebound, no origin": func(r *http.Request) { r.Host = "evil.example" },
	}
	for name, set := range attacks {
		for _, path := range []string{"/campaign", "/campaign/status.json"} {
			if code, body := get(path, set); code != http.StatusForbidden || strings.Contains(body, "h1") {
				t.Errorf("%s %s: %d, want 403 without the report", name, path, code)
			} else {
				refused++
			}
		}
	}
	t.Logf("attack: a web page reads the campaign status cross-origin or through a rebound DNS name | expected: 403, no data | observed: %d of %d requests refused", refused, 2*len(attacks))
}

// TestCampaignFileHomes: with a campaign, its homes and taps are reported
// before their first batch, and other campaigns' batches are left out;
// without homes, the text says why the table is empty.
func TestCampaignFileHomes(t *testing.T) {
	w, conn := startWatcher(t)
	ctx := context.Background()
	var out strings.Builder
	r, err := w.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteText(&out, r); err != nil {
		t.Fatal(err)
	}
	if len(r.Homes) != 0 || !strings.Contains(out.String(), "no homes") {
		t.Errorf("an empty bus: %d homes, text:\n%s", len(r.Homes), out.String())
	}
	publish(t, conn, "lan-x", 0, 10) // campaign cs
	w.Campaign = &campaign.Campaign{Name: "other", Homes: []*campaign.Home{{Name: "g1", Taps: []campaign.Tap{{Name: "lan"}, {Name: "wan"}}}}}
	if r, err = w.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	if len(r.Homes) != 1 || r.Homes[0].Campaign != "other" || r.Homes[0].Home != "g1" || len(r.Homes[0].Taps) != 2 || r.Homes[0].Taps[0].Session != "" {
		t.Errorf("homes %+v, want other/g1 with lan and wan taps and no session", r.Homes)
	}
}

// TestDevicesText: a home's newest detections as the status page prints
// them, the LAN host counter's with the hosts it did not count.
func TestDevicesText(t *testing.T) {
	for _, c := range []struct {
		seen *schemas.Seen
		want string
	}{
		{nil, "-"},
		{&schemas.Seen{SeenWindow: schemas.SeenWindow{Detections: []schemas.SeenDetection{{Device: "plug", Count: 1}, {Device: "camera", Count: 2}}}}, "camera x2, plug"},
		{&schemas.Seen{SeenWindow: schemas.SeenWindow{Method: "hosts", Hosts: 5, Detections: []schemas.SeenDetection{{Device: "EdimaxCam", Count: 2}}}}, "EdimaxCam x2 (LAN hosts: 2 of 5 active counted)"},
		{&schemas.Seen{SeenWindow: schemas.SeenWindow{Method: "hosts", Hosts: 1}}, "none (LAN hosts: 0 of 1 active counted)"},
		{&schemas.Seen{SeenWindow: schemas.SeenWindow{Method: "ip-id", Hosts: 3, Detections: []schemas.SeenDetection{{Device: "Lightify", Count: 3}}}}, "Lightify x3 (beyond the gateway, by IP ID sequences)"},
	} {
		if got := devices(Home{Seen: c.seen}); got != c.want {
			t.Errorf("devices(%+v) = %q, want %q", c.seen, got, c.want)
		}
	}
}
