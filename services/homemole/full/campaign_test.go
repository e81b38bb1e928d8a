package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/homemole/homemole/internal/chromiumtest"
	"github.com/homemole/homemole/pipeline/bus"
	"github.com/homemole/homemole/pipeline/campaign"
	"github.com/homemole/homemole/pipeline/campaignstatus"
	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/endpoints"
	"github.com/homemole/homemole/pipeline/homegen"
	"github.com/homemole/homemole/schemas"
	"github.com/nats-io/nats.go"
)

// statusFixture builds a small campaign ("cs": two generated homes, each
// with its LAN capture and the NAPT gateway's WAN capture of it) through
// the embedded mode, and leaves one dead letter of home-1 in the DLQ: a
// batch of a tap no labeler reads, given up on by a real consumer.
func statusFixture(t *testing.T) (home string, m *dataset.Manifest) {
	t.Helper()
	t.Setenv("HOMEMOLE_NATS_URL", "")
	t.Setenv("HOMEMOLE_S3_ENDPOINT", "")
	dir := t.TempDir()
	c := &campaign.Campaign{Name: "cs"}
	for i, seed := range []uint64{5, 6} {
		name := fmt.Sprintf("home-%d", i+1)
		h, err := homegen.Generate(homegen.Config{Seed: seed, Sessions: 2, SessionDuration: 2 * time.Minute}, filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		var wan []string
		for j, f := range h.Files {
			out := filepath.Join(dir, name, "wan", filepath.Base(f))
			if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
				t.Fatal(err)
			}
			args := []string{"--in", f, "--mode", "napt", "--seed", fmt.Sprint(j + 1), "--out", out, "--truth", out + ".csv"}
			if err := runGateway(context.Background(), quiet(), io.Discard, args); err != nil {
				t.Fatal(err)
			}
			wan = append(wan, out)
		}
		ch := h.CampaignHome(name)
		ch.Taps = append(ch.Taps, campaign.Tap{Name: "wan", Files: wan})
		c.Homes = append(c.Homes, ch)
	}
	c.Defaults()
	file := filepath.Join(dir, "campaign.yaml")
	if err := writeCampaign(file, c); err != nil {
		t.Fatal(err)
	}
	home = filepath.Join(dir, "state")
	var out bytes.Buffer
	if err := runBuild(context.Background(), quiet(), &out, []string{"--home", home, "--campaign", file, "--dataset", "cs", "--window", "20"}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := openHome(t, home)
	defer env.Close()
	var err error
	if m, err = dataset.Load(ctx, env.Store, "cs", "v1"); err != nil {
		t.Fatal(err)
	}
	b := &schemas.Batch{Kind: schemas.KindPackets, Campaign: "cs", Home: "home-1", Tap: "dmz", Source: "cs/home-1/dmz/x.pcap", Session: "dmz-x", Final: true}
	deadLetter(ctx, t, env.Bus, b, "labeler-dmz", "hm.pkt.cs.*.dmz", `tap "dmz": only the lan tap can be labeled from the inventory`)
	return home, m
}

// TestCampaignStatusCommand: `homemole campaign status` reports the built
// home's sessions, windows and dead letter, matching the manifest.
func TestCampaignStatusCommand(t *testing.T) {
	home, m := statusFixture(t)
	ctx := context.Background()
	var out bytes.Buffer
	if err := runCampaign(ctx, quiet(), &out, []string{"status", "--home", home, "--json", "--interval", "0"}); err != nil {
		t.Fatal(err)
	}
	var rep campaignstatus.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("campaign status --json: %v\n%s", err, out.String())
	}
	checkReport(t, &rep, m)
	out.Reset()
	if err := runCampaign(ctx, quiet(), &out, []string{"status", "--home", home, "--interval", "0"}); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	w1, _, s1 := homeParts(m, "home-1")
	w2, _, s2 := homeParts(m, "home-2")
	for _, want := range []string{"home-1", "home-2", "wan", fmt.Sprintf("%d in %d sessions", w1, s1), fmt.Sprintf("%d in %d sessions", w2, s2), "only the lan tap", "labeler-cs"} {
		if !strings.Contains(text, want) {
			t.Errorf("campaign status lacks %q:\n%s", want, text)
		}
	}
	t.Logf("campaign status:\n%s", text)
	if err := runCampaign(ctx, quiet(), &out, []string{"status", "--home", home, "--campaign", filepath.Join(home, "missing.yaml")}); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("a missing campaign file: %v, want an error naming it", err)
	}
}

// homeParts sums the manifest's parts of one home.
func homeParts(m *dataset.Manifest, home string) (windows, packets, sessions int) {
	for _, p := range m.Parts {
		if p.Home == home {
			windows, packets, sessions = windows+p.Windows, packets+p.Packets, sessions+1
		}
	}
	return windows, packets, sessions
}

// checkReport compares a report with the manifest the build wrote: each
// home's windows, packets and sessions, each lan and wan tap's session at
// the offset of its part's packets, the pairing, the dead letter, the lag.
func checkReport(t *testing.T, rep *campaignstatus.Report, m *dataset.Manifest) {
	t.Helper()
	if len(rep.Homes) != 2 || rep.Homes[0].Home != "home-1" || rep.Homes[1].Home != "home-2" || rep.Homes[0].Campaign != "cs" {
		t.Fatalf("homes %+v, want cs/home-1 and cs/home-2", rep.Homes)
	}
	for _, h := range rep.Homes {
		windows, packets, sessions := homeParts(m, h.Home)
		if windows == 0 || h.Windowed.Windows != windows || h.Windowed.Packets != packets || h.Windowed.Sessions != sessions {
			t.Errorf("%s windowed %+v, want the manifest's %d windows, %d packets, %d sessions", h.Home, h.Windowed, windows, packets, sessions)
		}
		for _, tap := range h.Taps {
			if tap.Name != "lan" {
				continue // the dataset windows the LAN view
			}
			view := "lan"
			found := false
			for _, p := range m.Parts {
				if p.Home == h.Home && p.View == view && p.Session == tap.Session {
					found = true
					if uint64(p.Packets) != tap.Offset || !tap.Final {
						t.Errorf("%s %s tap at offset %d (final %v) of session %s, whose part has %d packets", h.Home, tap.Name, tap.Offset, tap.Final, tap.Session, p.Packets)
					}
				}
			}
			if !found {
				t.Errorf("%s %s tap's session %q has no %s part in the manifest", h.Home, tap.Name, tap.Session, view)
			}
		}
		if p := h.Pairing; p == nil || p.Rate == nil || *p.Rate < 0.9 || *p.Rate > 1.1 || p.LAN.Packets == 0 || p.WAN.Packets == 0 {
			t.Errorf("%s pairing %+v, want a rate about 1 (every WAN packet of the emulated gateway pairs)", h.Home, p)
		}
	}
	if e := rep.Homes[0].LastError; e == nil || !strings.Contains(e.Reason, "only the lan tap") || e.Subject != "hm.pkt.cs.home-1.dmz" {
		t.Errorf("home-1's last error %+v, want the dmz tap's dead letter", e)
	}
	if e := rep.Homes[1].LastError; e != nil {
		t.Errorf("home-2's last error %+v, want none", e)
	}
	lag := map[string]campaignstatus.Consumer{}
	for _, c := range rep.Consumers {
		lag[c.Name] = c
	}
	// The build's labeler stopped before the dmz batch came: that batch is
	// its lag; the windower has been delivered everything. (A fetch in
	// flight when the build stopped may stay ack pending until its ack
	// wait runs out: not checked.)
	for name, pending := range map[string]uint64{"labeler-cs": 1, "windower-cs-v1": 0} {
		c, ok := lag[name]
		if !ok {
			t.Errorf("consumers %+v lack %s", rep.Consumers, name)
		} else if c.Pending != pending {
			t.Errorf("%s: %d pending, want %d", name, c.Pending, pending)
		}
	}
}

// TestCampaignStatusPage starts `homemole serve` on the built campaign,
// loads /campaign in headless Chromium and checks that the page, after its
// scripts ran, shows the home with the manifest's counts; it saves a
// screenshot under the test's folder (and to $HOMEMOLE_STATUS_SCREENSHOT
// when set, which is how docs/campaign-status.png is made).
func TestCampaignStatusPage(t *testing.T) {
	chromium := chromiumtest.Find(t)
	home, m := statusFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, quiet(), pw, []string{"--home", home, "--http", "127.0.0.1:0"})
		pw.Close()
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	var url, natsURL string
	sc := bufio.NewScanner(pr)
	for url == "" && sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "# campaign status: "); ok {
			url = u
		}
		if u, ok := strings.CutPrefix(sc.Text(), "HOMEMOLE_NATS_URL="); ok {
			natsURL = u
		}
	}
	go io.Copy(io.Discard, pr)
	if !strings.HasPrefix(url, "http://127.0.0.1:") || !strings.HasSuffix(url, "/campaign") {
		t.Fatalf("serve printed status URL %q, want http://127.0.0.1:PORT/campaign", url)
	}

	// What an online detector publishes on core NATS while no stream keeps
	// it: the server hears it.
	nc, err := nats.Connect(natsURL, nats.CustomInboxPrefix("_INBOX.test"))
	if err != nil {
		t.Fatalf("connect to serve's NATS %q: %v", natsURL, err)
	}
	defer nc.Close()
	for home, ds := range map[string][]schemas.SeenDetection{
		"home-1": {{Device: "camera", Count: 2, Score: 0.93}, {Device: "plug", Count: 1, Score: 0.88}},
		"home-2": {{Device: "speaker", Count: 1, Score: 0.91}},
	} {
		b, _ := json.Marshal(schemas.Seen{Version: schemas.SeenVersion, Campaign: "cs", Home: home, SeenWindow: schemas.SeenWindow{StartNs: 0, EndNs: 10e9, Detections: ds}})
		if err := nc.Publish(schemas.SeenSubject("cs", home), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// The JSON the page polls, and the cross-origin refusal.
	resp, err := http.Get(url + "/status.json")
	if err != nil {
		t.Fatal(err)
	}
	var rep campaignstatus.Report
	err = json.NewDecoder(resp.Body).Decode(&rep)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status.json: %d, %v", resp.StatusCode, err)
	}
	checkReport(t, &rep, m)
	for _, hdr := range []struct{ name, value string }{{"Origin", "https://evil.example"}, {"Host", "evil.example"}} {
		req, _ := http.NewRequest(http.MethodGet, url+"/status.json", nil)
		if hdr.name == "Host" {
			req.Host = hdr.value
		} else {
			req.Header.Set(hdr.name, hdr.value)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("status.json with %s %s: %d, want 403", hdr.name, hdr.value, resp.StatusCode)
		}
	}

	dom := chromiumtest.Run(t, chromium, "--dump-dom", "--virtual-time-budget=5000", url)
	// Columns: campaign, home, tap, session, packets, packets/s, labeled
	// batches, windows, pairing, devices seen, last error.
	rows := regexp.MustCompile(`(?s)<tr class="(home|tap)" data-home="cs/(home-\d)" data-tap="(\w+)">(.*?)</tr>`).FindAllStringSubmatch(dom, -1)
	cellRE := regexp.MustCompile(`<td[^>]*>([^<]*)</td>`)
	shown := map[string][]string{} // home/tap: the row's cells
	var page []string
	for _, r := range rows {
		var cells []string
		for _, c := range cellRE.FindAllStringSubmatch(r[4], -1) {
			cells = append(cells, c[1])
		}
		if len(cells) != 11 {
			t.Fatalf("row %s/%s has %d cells, want 11: %q", r[2], r[3], len(cells), cells)
		}
		shown[r[2]+"/"+r[3]] = cells
		if r[1] == "home" {
			shown[r[2]] = cells
		}
		page = append(page, strings.Join(cells, " | "))
	}
	for _, h := range rep.Homes {
		row := shown[h.Home]
		if row == nil {
			t.Fatalf("the page shows no row for cs/%s after its scripts ran:\n%s", h.Home, dom)
		}
		windows, _, sessions := homeParts(m, h.Home)
		if row[1] != h.Home || row[7] != fmt.Sprintf("%s in %d sessions", comma(windows), sessions) || row[8] != fmt.Sprintf("%.1f %%", 100**h.Pairing.Rate) {
			t.Errorf("the page's row of %s: %q; want its windows %d in %d sessions and pairing %.3f", h.Home, row, windows, sessions, *h.Pairing.Rate)
		}
		for _, tap := range h.Taps {
			cells := shown[h.Home+"/"+tap.Name]
			if cells == nil || cells[3] != tap.Session+" (ended)" || cells[4] != comma(int(tap.Offset)) {
				t.Errorf("the page's %s %s tap: %q, want session %s at %d packets", h.Home, tap.Name, cells, tap.Session, tap.Offset)
			}
		}
	}
	if row := shown["home-1"]; row == nil || row[9] != "camera x2, plug" {
		t.Errorf("the page's home-1 row: %q, want devices seen camera x2, plug", row)
	}
	if row := shown["home-1"]; row == nil || !strings.Contains(row[10], "only the lan tap") {
		t.Errorf("the page's home-1 row lacks its last error: %q", row)
	}
	if !strings.Contains(dom, `data-consumer="labeler-cs"`) {
		t.Errorf("the page lacks the labeler's lag")
	}
	t.Logf("page rows:\n%s", strings.Join(page, "\n"))

	// A second apart from the first sample, the page shows packet rates
	// (0.0 for the ended sessions).
	time.Sleep(1100 * time.Millisecond)
	shot := filepath.Join(t.TempDir(), "campaign-status.png")
	chromiumtest.Run(t, chromium, "--screenshot="+shot, "--window-size=1600,640", "--virtual-time-budget=5000", "--hide-scrollbars", url)
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) || len(png) < 10_000 {
		t.Fatalf("screenshot %s: %v, %d bytes, want a PNG", shot, err, len(png))
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
	if dst := os.Getenv("HOMEMOLE_STATUS_SCREENSHOT"); dst != "" {
		if err := os.WriteFile(dst, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// comma writes n as the page does (toLocaleString("en-US")).
func comma(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// TestDLQCommand: a batch a consumer gave up on shows in `homemole dlq ls`
// with why, and `homemole dlq replay` puts it back on its subject.
func TestDLQCommand(t *testing.T) {
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env, err := endpoints.Open(ctx, endpoints.Config{Home: home, S3Bucket: "homemole"}, "test", quiet())
	if err != nil {
		t.Fatal(err)
	}
	b := &schemas.Batch{Kind: schemas.KindPackets, Campaign: "c", Home: "home-2", Tap: "lan", Source: "c/home-2/lan/s.pcap", Session: "lan-s", Final: true}
	subj := deadLetter(ctx, t, env.Bus, b, "labeler-c", "hm.pkt.>", `home "home-2" is not in campaign c`)
	env.Close()

	run := func(args ...string) string {
		var out bytes.Buffer
		if err := runDLQ(ctx, quiet(), &out, append(args, "--home", home)); err != nil {
			t.Fatalf("dlq %v: %v", args, err)
		}
		return out.String()
	}
	ls := run("ls")
	for _, want := range []string{subj, "labeler-c", `home "home-2" is not in campaign c`, "1 dead letters"} {
		if !strings.Contains(ls, want) {
			t.Errorf("dlq ls lacks %q:\n%s", want, ls)
		}
	}
	if err := runDLQ(ctx, quiet(), &bytes.Buffer{}, []string{"discard", "--home", home}); err == nil {
		t.Error("dlq discard without --subject or --seq: no error")
	}
	if got := run("discard", "--subject", "hm.pkt.c.home-9.>"); !strings.Contains(got, "discarded 0 of 0") {
		t.Errorf("dlq discard of another home: %s", got)
	}
	if got := run("replay", "--subject", "hm.pkt.c.home-2.>"); !strings.Contains(got, "replayed 1 of 1") {
		t.Errorf("dlq replay: %s", got)
	}
	if got := run("ls"); !strings.Contains(got, "0 dead letters") {
		t.Errorf("dlq ls after the replay:\n%s", got)
	}
	env, err = endpoints.Open(ctx, endpoints.Config{Home: home, S3Bucket: "homemole"}, "test", quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	s, err := env.Bus.JS.Stream(ctx, schemas.StreamPackets)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("PACKETS holds %d messages: want the original and its replay", info.State.Msgs)
	}
	var usage bytes.Buffer
	if err := runDLQ(ctx, quiet(), &usage, nil); err == nil {
		t.Error("dlq without a subcommand: no error")
	}
	t.Logf("%s", ls)
}

// deadLetter publishes b on its packet subject, which it returns, and has
// a consumer (durable, filter) give up on it for why; it returns once the
// batch is in the DLQ.
func deadLetter(ctx context.Context, t *testing.T, c *bus.Conn, b *schemas.Batch, durable, filter, why string) string {
	t.Helper()
	subj := schemas.PacketSubject(b.Campaign, b.Home, b.Tap)
	if err := c.Publish(ctx, subj, b); err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(cctx, bus.ConsumerConfig{Stream: schemas.StreamPackets, Durable: durable, Filter: filter}, func(context.Context, *bus.Delivery) error {
			return bus.Permanent(errors.New(why))
		})
	}()
	for len(deadLetters(t, c)) == 0 {
		if ctx.Err() != nil {
			t.Fatal("no dead letter")
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	<-done
	return subj
}

func deadLetters(t *testing.T, c *bus.Conn) []bus.DeadLetter {
	t.Helper()
	dls, err := c.DeadLetters(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return dls
}
