package heartbeat

import (
	"context"
	"testing"
	"time"

	"github.com/homemole/homemole/pipeline/features"
	"github.com/homemole/homemole/pipeline/realhome"
	"github.com/homemole/homemole/pipeline/realhome/realhometest"
	"github.com/homemole/homemole/schemas"
)

// learnSplit learns every device's heartbeats from its captures of split.
func learnSplit(t *testing.T, split realhome.Split) ([]realhome.Device, map[string][]Profile) {
	t.Helper()
	devs := realhometest.Devices(t)
	out := map[string][]Profile{}
	for _, d := range devs {
		var sessions [][]Beat
		for _, f := range split.Pick(d.Files) {
			mac := d.MAC
			bs, err := ReadBeats(context.Background(), f, features.PrivateHome(), func(p *schemas.Packet) bool { return p.SrcMAC == mac })
			if err != nil {
				t.Fatal(err)
			}
			sessions = append(sessions, bs)
		}
		out[d.Name] = Learn(d.Name, sessions, DefaultConfig())
	}
	return devs, out
}

func TestLearnOnDevData(t *testing.T) {
	devs, profiles := learnSplit(t, realhome.EarlySessions)
	with := 0
	for _, d := range devs {
		ps := profiles[d.Name]
		if len(ps) > 0 {
			with++
		}
		for _, p := range ps {
			t.Logf("%-20s %-22s every %-8s in %d of %d early sessions", d.Name, p.Key, p.Period, p.Sessions, len(realhome.EarlySessions.Pick(d.Files)))
		}
	}
	t.Logf("%d of %d device types show a heartbeat", with, len(devs))
	// The TP-Link plugs' cloud keepalive is a real one: a TLS record to
	// port 50443 every 7.3 s in most of their captures.
	if with < 4 {
		t.Fatalf("%d device types show a heartbeat, 6 did", with)
	}
	ps := profiles["TP-LinkPlugHS110"]
	if len(ps) == 0 || ps[0].Key.Port != 50443 || ps[0].Period < 7*time.Second || ps[0].Period > 7600*time.Millisecond {
		t.Fatalf("TP-LinkPlugHS110 heartbeats %+v, want tcp/50443 every 7.3 s", ps)
	}
}
