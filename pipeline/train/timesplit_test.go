package train

import (
	"strings"
	"testing"

	"github.com/homemole/homemole/pipeline/dataset"
	"github.com/homemole/homemole/pipeline/window"
	"github.com/homemole/homemole/schemas"
)

func TestTimeFolds(t *testing.T) {
	m := &dataset.Manifest{Dataset: "d", Version: "v", Groups: []string{
		"Cam/Setup-A-1-STA", "Cam/Setup-C-2-STA", "Cam/Setup-A-3-STA", "Cam/Setup-C-10-STA",
		"Plug/Setup-A-5-STA", "Plug/Setup-A-7-STA", "Plug/Setup-B-6-STA",
		"Hub/Setup-A-1-STA",
	}}
	fs, err := timeFolds(m, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 1 || fs[0].testGroups != 3 {
		t.Fatalf("%d folds, %d groups held out; want 1 fold holding out 3", len(fs), fs[0].testGroups)
	}
	late := map[string]bool{"Cam/Setup-A-3-STA": true, "Cam/Setup-C-10-STA": true, "Plug/Setup-A-7-STA": true}
	for _, g := range m.Groups {
		w := &schemas.Window{Group: g}
		if fs[0].test(w) != late[g] || fs[0].train(w) == late[g] {
			t.Errorf("group %s: test %v train %v, want held out %v", g, fs[0].test(w), fs[0].train(w), late[g])
		}
	}
	// Five folds: the later fifth, rounded down, of each device (Cam's
	// 4 and Plug's 3 sessions keep all of theirs in training).
	m.Groups = append(m.Groups, "Plug/Setup-A-9-STA", "Plug/Setup-A-11-STA")
	if fs, err = timeFolds(m, 5); err != nil {
		t.Fatal(err)
	}
	if fs[0].testGroups != 1 || !fs[0].test(&schemas.Window{Group: "Plug/Setup-A-11-STA"}) {
		t.Errorf("five folds: %d groups held out, want Plug's last (Setup-A-11) alone", fs[0].testGroups)
	}
	if _, err := timeFolds(m, 1); err == nil || !strings.Contains(err.Error(), "folds") {
		t.Errorf("one fold: %v, want an error naming the folds", err)
	}
	for _, bad := range []*dataset.Manifest{
		{Groups: []string{"home/lan-20240101", "home/lan-20240102"}},
		{Groups: []string{"a/Setup-A-1-STA", "b/Setup-A-1-STA"}},
	} {
		if _, err := timeFolds(bad, 2); err == nil || !strings.Contains(err.Error(), "time split") {
			t.Errorf("timeFolds(%v) = %v, want an error explaining the time split", bad.Groups, err)
		}
	}
}

// TestTimeFoldsByFirstPacket: where the part records date the sessions,
// the later ones are those that began later, whatever their numbers say
// (IoT Sentinel's Setup-A and Setup-C captures interleave in time); a
// session's LAN and WAN parts date it by the earlier of their first
// packets, and sessions named without numbers are split too.
func TestTimeFoldsByFirstPacket(t *testing.T) {
	m := &dataset.Manifest{Dataset: "d", Version: "v", Groups: []string{
		"Cam/Setup-A-1-STA", "Cam/Setup-C-2-STA", "Cam/Setup-A-3-STA", "Cam/Setup-C-10-STA",
		"gw/20240101", "gw/20240102",
	}}
	part := func(home, session string, first int64) window.Part {
		return window.Part{Home: home, Session: session, FirstTs: first}
	}
	m.Parts = []window.Part{
		part("Cam", "lan-Setup-C-10-STA", 100), part("Cam", "lan-Setup-A-3-STA", 200),
		part("Cam", "lan-Setup-A-1-STA", 400), part("Cam", "napt-Setup-A-1-STA", 300),
		part("Cam", "lan-Setup-C-2-STA", 350),
		part("gw", "lan-20240101", 20), part("gw", "lan-20240102", 10),
	}
	fs, err := timeFolds(m, 2)
	if err != nil {
		t.Fatal(err)
	}
	late := map[string]bool{"Cam/Setup-A-1-STA": true, "Cam/Setup-C-2-STA": true, "gw/20240101": true}
	for _, g := range m.Groups {
		if got := fs[0].test(&schemas.Window{Group: g}); got != late[g] {
			t.Errorf("group %s held out %v, want %v", g, got, late[g])
		}
	}
}
